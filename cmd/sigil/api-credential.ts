import { readFileSync } from "node:fs";
import { join } from "node:path";

/**
 * The admin token the CLI presents to the control plane's HTTP API, and where it came from (so a
 * refusal can say which file was wrong). Taken from --token-file, else $SIGIL_TOKEN_FILE, else the
 * token file the control plane keeps in its default state directory on this host.
 */
export interface ApiCredential {
  readonly token: string;
  readonly source: string;
}

/** The control plane's default state directory, as the CLI finds it from where it runs. */
export const DEFAULT_DATA_DIR = process.env.SIGIL_DATA_DIR ?? ".sigil-data";
export const DEFAULT_TOKEN_FILE = join(DEFAULT_DATA_DIR, "http-token");

const HOW_TO =
  "pass --token-file <path> or set SIGIL_TOKEN_FILE to the control plane's admin token file " +
  "(<data-dir>/http-token on its host, or the file given to its --http-token-file)";

export function tokenFileOf(opts: { tokenFile?: string }): string {
  return opts.tokenFile || process.env.SIGIL_TOKEN_FILE || DEFAULT_TOKEN_FILE;
}

/** Reads the token file; a missing or empty file is an error that says how to point at the right one. */
export function loadApiCredential(opts: { tokenFile?: string }): ApiCredential {
  const file = tokenFileOf(opts);
  let token: string;
  try {
    token = readFileSync(file, "utf8").trim();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "does not exist" : (err as Error).message;
    throw new Error(`cannot read the API token file ${file}: ${why}; ${HOW_TO}`);
  }
  if (token === "") throw new Error(`the API token file ${file} is empty; ${HOW_TO}`);
  return { token, source: file };
}

export function authorizationHeader(credential: ApiCredential | undefined): Record<string, string> {
  return credential ? { authorization: `Bearer ${credential.token}` } : {};
}

/** The message for a 401: whose token was refused, the server's reason, and what to do about it. */
export function refusedTokenMessage(credential: ApiCredential | undefined, reason: string): string {
  const whose = credential ? `the token from ${credential.source}` : "a request without a token";
  return `the control plane refused ${whose} (HTTP 401: ${reason}); ${HOW_TO}`;
}
