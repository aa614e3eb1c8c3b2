import { randomBytes } from "node:crypto";
import { chmod, mkdir, open, readFile, rename, stat, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";

/** A key or state file whose permissions are looser than Sigil writes them. */
export class InsecureFileError extends Error {}

/** Makes `dir` (and parents) with 0700, tightening an existing directory we own. */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
}

/**
 * Writes `content` to `path` atomically with mode 0600: the data lands in a temporary file that
 * never had wider permissions, is flushed, then renamed over the target, so a crash leaves either
 * the old or the new file, never a torn or world-readable one.
 */
export async function writePrivateFile(path: string, content: string): Promise<void> {
  await ensurePrivateDir(dirname(path));
  const tmp = join(dirname(path), `.${randomBytes(6).toString("hex")}.tmp`);
  const handle = await open(tmp, "wx", 0o600);
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/** Reads a secret file, refusing one that group or others can read or write. */
export async function readPrivateFile(path: string): Promise<string> {
  const info = await stat(path);
  if ((info.mode & 0o077) !== 0) {
    throw new InsecureFileError(`${path} has mode ${(info.mode & 0o777).toString(8)}; keys must be 0600`);
  }
  return readFile(path, "utf8");
}
