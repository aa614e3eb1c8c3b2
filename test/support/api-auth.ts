import { SignInLimit } from "../../controlplane/http/sign-in-limit.ts";
import { join } from "node:path";
import { loadAdminToken } from "../../controlplane/http/admin-token.ts";
import { HttpAuth, registerSessionRoutes } from "../../controlplane/http/auth.ts";
import { Router } from "../../controlplane/http/router.ts";

/**
 * A Router guarded like the control plane's, with its sign-in routes, and its admin token written
 * to `<dir>/http-token`.
 */
export interface GuardedApi {
  readonly router: Router;
  readonly auth: HttpAuth;
  readonly token: string;
  readonly tokenFile: string;
  /** Headers that authenticate a request as the admin. */
  readonly headers: Record<string, string>;
}

export async function guardedRouter(dir: string): Promise<GuardedApi> {
  const tokenFile = join(dir, "http-token");
  const token = await loadAdminToken(tokenFile, true);
  const auth = new HttpAuth({ token });
  const router = new Router(auth.guard);
  registerSessionRoutes(router, auth, { secure: false, limit: new SignInLimit({ attempts: 1000 }) });
  return {
    router,
    auth,
    token,
    tokenFile,
    headers: { authorization: `Bearer ${token}` },
  };
}
