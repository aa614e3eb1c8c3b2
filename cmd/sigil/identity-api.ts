import { authorizationHeader, loadApiCredential, refusedTokenMessage } from "./api-credential.ts";
import type { ApiCredential } from "./api-credential.ts";
import { apiFetch } from "./api-fetch.ts";
import { apiSettings } from "./cli-support.ts";
import type { ApiOptions } from "./cli-support.ts";
import { CliError, exitCodeForStatus } from "./exit-codes.ts";

/**
 * A request to the control plane's identity API failed; the message names the server's reason and
 * `status` (0 when it could not be reached) chooses the exit status.
 */
export class IdentityApiError extends CliError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message, exitCodeForStatus(status));
  }
}

/** The API a command talks to: its base URL and the admin token it presents. */
export interface ApiTarget {
  readonly url: string;
  readonly credential: ApiCredential;
  readonly fetch: typeof fetch;
}

/** The target named by a command's API options, its environment and its context (cli-support.ts). */
export function apiTarget(opts: ApiOptions): ApiTarget {
  const settings = apiSettings(opts);
  return { url: settings.url, credential: loadApiCredential(settings), fetch: apiFetch(settings.caFile) };
}

/** JSON over HTTP to the control plane's `/api/identity/*` routes. */
export async function identityApi<T>(
  target: ApiTarget,
  method: "GET" | "POST",
  path: string,
  body?: unknown,
): Promise<T> {
  const base = target.url;
  const url = new URL(path, base.endsWith("/") ? base : `${base}/`);
  let res: Response;
  try {
    res = await target.fetch(url, {
      method,
      headers: {
        ...authorizationHeader(target.credential),
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    const cause = (err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message;
    throw new IdentityApiError(0, `cannot reach the control plane API at ${base}: ${cause}`);
  }
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text === "" ? {} : JSON.parse(text);
  } catch {
    throw new IdentityApiError(
      res.status,
      `${method} ${url.pathname}: HTTP ${res.status} with a body that is not JSON`,
    );
  }
  if (!res.ok) {
    const message = (parsed as { error?: string }).error ?? `HTTP ${res.status}`;
    if (res.status === 401) throw new IdentityApiError(401, refusedTokenMessage(target.credential, message));
    throw new IdentityApiError(
      res.status,
      `${method} ${url.pathname} refused (HTTP ${res.status}): ${message}`,
    );
  }
  return parsed as T;
}

/** `30s`, `15m`, `1h`, `7d` or a number of seconds, as seconds. */
export function parseDuration(text: string, what: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(text.trim());
  if (!m) throw new Error(`${what} "${text}" is not a duration like 30s, 15m, 1h or 7d`);
  const n = Number(m[1]);
  const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86_400 }[m[2] as "" | "s" | "m" | "h" | "d"];
  const seconds = n * unit;
  if (seconds <= 0) throw new Error(`${what} "${text}" must be positive`);
  return seconds;
}

export { DEFAULT_DATA_DIR } from "./api-credential.ts";
