import { lstat, unlink } from "node:fs/promises";
import net from "node:net";
import { dirname, isAbsolute } from "node:path";

/** The Workload API's socket path cannot be served safely, with the path and the reason. */
export class WorkloadSocketError extends Error {
  override readonly name = "WorkloadSocketError";
}

const STICKY = 0o1000;
const GROUP_OR_OTHER_WRITE = 0o022;

/** True when something accepts connections on the Unix socket at `path` (within `timeoutMs`). */
function answers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(path);
    const done = (live: boolean): void => {
      probe.destroy();
      resolve(live);
    };
    probe.setTimeout(timeoutMs, () => done(true));
    probe.once("connect", () => done(true));
    probe.once("error", () => done(false));
  });
}

/**
 * Makes `path` ready to be listened on. Workloads trust whatever answers there with their identity,
 * so: its directory must not let another user replace the socket (not writable by group or others
 * unless sticky, as /tmp is); an existing socket is removed only when this user owns it and nothing
 * answers on it (a previous run's leftover); anything else at the path is refused, never deleted.
 */
export async function prepareSocketPath(path: string, uid: number): Promise<void> {
  if (!isAbsolute(path))
    throw new WorkloadSocketError(`workload API socket ${path}: must be an absolute path`);
  const dir = dirname(path);
  const parent = await lstat(dir).catch((err: NodeJS.ErrnoException) => {
    throw new WorkloadSocketError(`workload API socket directory ${dir}: ${err.code ?? err.message}`);
  });
  if (!parent.isDirectory())
    throw new WorkloadSocketError(`workload API socket directory ${dir} is not a directory`);
  if ((parent.mode & GROUP_OR_OTHER_WRITE) !== 0 && (parent.mode & STICKY) === 0)
    throw new WorkloadSocketError(
      `workload API socket directory ${dir} is writable by other users (mode ${(parent.mode & 0o7777).toString(8)}): another user could replace the socket; use a directory only the sidecar's user can write, or a sticky one`,
    );
  const existing = await lstat(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return null;
    throw new WorkloadSocketError(`workload API socket ${path}: ${err.code ?? err.message}`);
  });
  if (!existing) return;
  if (!existing.isSocket() || existing.uid !== uid)
    throw new WorkloadSocketError(
      `workload API socket ${path} exists and is not a socket of uid ${uid}: refusing to replace it`,
    );
  if (await answers(path))
    throw new WorkloadSocketError(`workload API socket ${path} is in use by another server`);
  await unlink(path);
}
