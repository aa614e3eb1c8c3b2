import { readFile } from "node:fs/promises";
import type { Logger } from "pino";
import type { Peer } from "../../core/identity.ts";
import type { Decision } from "../../core/policy/index.ts";
import type { UserIdentity } from "../../core/user.ts";
import { refused } from "../authz/refusal.ts";
import { userFromClaims } from "./claims.ts";
import type { UserAccessConfig } from "./config.ts";
import type { Answer } from "./pages.ts";
import { page, unauthorized } from "./pages.ts";
import { OpenIdProvider } from "./provider.ts";
import { SealedCookies, parseSessionKey } from "./session.ts";
import { SignIn } from "./sign-in.ts";
import type { BearerIssuer } from "./tokens.ts";
import { BearerVerifier } from "./tokens.ts";
import { remoteIssuerKeys } from "./issuer-keys.ts";

/**
 * What a user-access port asks of each HTTP request before policy decides it. A bearer token, when
 * sent, must verify (else 401); a plaintext client (a browser) without one needs a session, else it
 * is sent to sign in (a page navigation) or refused with 401 (anything else). A mesh workload without
 * a token is decided as the workload alone. The sidecar's own paths (the callback, sign-out) are
 * answered here and never reach the application.
 */

export interface GateRequest {
  readonly method: string;
  /** The request-target as received. */
  readonly target: string;
  readonly headers: Readonly<Record<string, string | readonly string[]>>;
  readonly peer: Peer;
}

export type Admission =
  | { readonly kind: "forward"; readonly user: UserIdentity | null }
  | {
      readonly kind: "answer";
      readonly answer: Answer;
      readonly decision: Decision;
      readonly user: UserIdentity | null;
    };

function settled(reason: string): Decision {
  return { verdict: "allow", wouldDeny: false, policy: null, reason, logged: [] };
}

function first(value: string | readonly string[] | undefined): string | undefined {
  return typeof value === "string" ? value : value?.[0];
}

/** A top-level page load: a redirect to the provider helps; any other request gets 401. */
function isNavigation(req: GateRequest): boolean {
  return (
    (req.method === "GET" || req.method === "HEAD") && (first(req.headers.accept) ?? "").includes("text/html")
  );
}

/** A file the configuration names, read at start; the error names the setting and the file. */
async function readSetting(field: string, file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    throw new Error(`inbound.userAccess.${field}: cannot read ${file}: ${(err as Error).message}`);
  }
}

export interface UserAccessOptions {
  readonly log: Logger;
  /** Milliseconds since the epoch for session expiry; default the system clock. */
  readonly now?: () => number;
}

export class UserAccessGate {
  readonly ports: ReadonlySet<number>;

  private constructor(
    private readonly config: UserAccessConfig,
    private readonly signIn: SignIn,
    private readonly bearer: BearerVerifier,
    private readonly log: Logger,
  ) {
    this.ports = new Set(config.ports);
  }

  /** Reads the key and secret files; the provider is discovered on first need. */
  static async create(config: UserAccessConfig, options: UserAccessOptions): Promise<UserAccessGate> {
    const key = parseSessionKey(
      await readSetting("sessionKeyFile", config.sessionKeyFile),
      config.sessionKeyFile,
    );
    const secret =
      config.clientSecretFile === undefined
        ? undefined
        : (await readSetting("clientSecretFile", config.clientSecretFile)).trim();
    const provider = new OpenIdProvider({
      issuer: config.issuer,
      clientId: config.clientId,
      ...(secret === undefined ? {} : { clientSecret: secret }),
    });
    const issuers: BearerIssuer[] = config.bearer.trustedIssuers.map((t) => ({
      issuer: t.issuer,
      audiences: t.audiences,
      keys: remoteIssuerKeys(t.issuer, t.jwksUri),
    }));
    if (config.bearer.acceptProviderTokens)
      issuers.push({ issuer: config.issuer, audiences: [config.clientId], keys: () => provider.keys() });
    const sealed = new SealedCookies(key, options.now ?? Date.now);
    return new UserAccessGate(
      config,
      new SignIn(config, provider, sealed, options.log),
      new BearerVerifier(issuers),
      options.log,
    );
  }

  /** Never rejects: a failure on the way (provider down) is an answer that lets nothing through. */
  async admit(req: GateRequest): Promise<Admission> {
    try {
      return await this.admitOrThrow(req);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, "user access failed; refusing the request");
      return {
        kind: "answer",
        answer: page(
          502,
          "Sign-in unavailable",
          "The identity provider cannot be reached; try again shortly.",
        ),
        decision: refused({ kind: "user-access", problem: (err as Error).message }),
        user: null,
      };
    }
  }

  private async admitOrThrow(req: GateRequest): Promise<Admission> {
    const browser = req.peer.kind === "external";
    const url = new URL(req.target, "http://user-access.invalid");
    if (browser && this.signIn.isCallback(url.pathname)) {
      const outcome = await this.signIn.callback(url, req.headers.cookie);
      const decision =
        outcome.problem === null
          ? settled("user-access: signed in")
          : refused({ kind: "user-access", problem: `sign-in refused: ${outcome.problem}` });
      return { kind: "answer", answer: outcome.answer, decision, user: outcome.user };
    }
    if (browser && url.pathname === this.config.signOutPath)
      return {
        kind: "answer",
        answer: await this.signIn.signOut(),
        decision: settled("user-access: signed out"),
        user: null,
      };
    const authorization = first(req.headers.authorization);
    if (authorization !== undefined && /^bearer /i.test(authorization))
      return this.withBearer(authorization.slice(7).trim());
    if (!browser) return { kind: "forward", user: null };
    const session = await this.signIn.session(req.headers.cookie);
    if (session === null) {
      const decision = refused({ kind: "user-access", problem: "sign-in required" });
      if (!isNavigation(req))
        return { kind: "answer", answer: unauthorized("sign-in required", false), decision, user: null };
      return { kind: "answer", answer: await this.signIn.start(req.target), decision, user: null };
    }
    if (session.refreshed !== null)
      return {
        kind: "answer",
        answer: this.signIn.repeat(req.target, session.refreshed),
        decision: settled("user-access: session refreshed"),
        user: session.user,
      };
    return { kind: "forward", user: session.user };
  }

  private async withBearer(token: string): Promise<Admission> {
    try {
      const claims = await this.bearer.verify(token);
      return { kind: "forward", user: userFromClaims(claims, this.config.claims) };
    } catch (err) {
      const reason = `bearer token refused: ${(err as Error).message}`;
      return {
        kind: "answer",
        answer: unauthorized(reason, true),
        decision: refused({ kind: "user-access", problem: reason }),
        user: null,
      };
    }
  }

  /** A signed-in person refused by policy: a page saying so, never a redirect to sign in again. */
  denied(decision: Decision, user: UserIdentity): Answer {
    const by = decision.policy === null ? "no policy allows it" : `refused by ${decision.policy}`;
    return page(403, "Access denied", `Signed in as ${user.email ?? user.sub}: ${by}.`, [], {
      href: this.config.signOutPath,
      text: "Sign out",
    });
  }
}
