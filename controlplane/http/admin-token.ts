import { randomBytes } from "node:crypto";
import { link, mkdir, readFile, stat, unlink, writeFile } from "node:fs/promises";
import { dirname } from "node:path";

/** The HTTP API's admin credential could not be loaded or created; the message names the file and why. */
export class AdminTokenError extends Error {}

/** Where the control plane keeps its admin token inside its state directory. */
export const ADMIN_TOKEN_FILE = "http-token";

/** Shortest token accepted from an operator's file: 32 characters of a 43-character generated one. */
const MIN_TOKEN_LENGTH = 32;
/** What an Authorization header can carry without quoting: the RFC 6750 token68 alphabet. */
const TOKEN_SYNTAX = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * Reads the admin token in `path`, creating a random 256-bit one (mode 0600) when the file does
 * not exist and `create` is set. Creation is atomic: the token is written to a private temporary
 * file and linked into place, so a concurrent reader or a second control plane never sees a partial
 * token, and a token that appeared meanwhile wins over ours.
 */
export async function loadAdminToken(path: string, create: boolean): Promise<string> {
  try {
    return await readTokenFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT" || !create) throw asTokenError(path, err);
  }
  const token = randomBytes(32).toString("base64url");
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await writeFile(tmp, `${token}\n`, { mode: 0o600, flag: "wx" });
    try {
      await link(tmp, path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      return await readTokenFile(path);
    }
    return token;
  } catch (err) {
    throw asTokenError(path, err);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

async function readTokenFile(path: string): Promise<string> {
  const info = await stat(path);
  if (!info.isFile()) throw new AdminTokenError(`${path} is not a regular file`);
  // The token grants every API operation: a file other users can read is already a leaked token.
  if ((info.mode & 0o007) !== 0)
    throw new AdminTokenError(
      `${path} is accessible to other users (mode ${(info.mode & 0o777).toString(8)}); chmod 600 it`,
    );
  const token = (await readFile(path, "utf8")).trim();
  if (token.length < MIN_TOKEN_LENGTH || !TOKEN_SYNTAX.test(token))
    throw new AdminTokenError(
      `${path} does not hold a usable token: one line of at least ${MIN_TOKEN_LENGTH} characters from A-Z a-z 0-9 - . _ ~ + /`,
    );
  return token;
}

function asTokenError(path: string, err: unknown): AdminTokenError {
  if (err instanceof AdminTokenError) return err;
  return new AdminTokenError(`admin token file ${path}: ${(err as Error).message}`);
}
