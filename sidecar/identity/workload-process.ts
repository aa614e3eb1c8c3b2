import { readdir, readFile, readlink, realpath } from "node:fs/promises";
import type { WireProcessFacts } from "../../core/svid/wire.ts";
import { collectProcessFacts, WorkloadFactsError } from "./workload-facts.ts";

/**
 * The workload named by its attributes rather than a process id, as on a VM where the application
 * is started (and restarted) by systemd after the sidecar: the processes running as `uid` (a number
 * or a user name) and, when given, from the executable `exe`.
 */
export interface WorkloadAttributes {
  readonly uid: number | string;
  readonly exe?: string;
}

export interface FindOptions {
  /** How long to wait for a matching process to appear (0 = look once). */
  readonly waitMs: number;
  /** How often /proc is read again while waiting. */
  readonly pollMs?: number;
  readonly passwdPath?: string;
  readonly procRoot?: string;
  /** Called once when no matching process runs yet and the wait begins (`what` names the attributes). */
  readonly onWaiting?: (what: string) => void;
}

const DIGITS = /^\d+$/;

/** The uid for a user name from the passwd file; a number is taken as it is. */
async function resolveUid(uid: number | string, passwdPath: string): Promise<number> {
  if (typeof uid === "number") return uid;
  if (DIGITS.test(uid)) return Number(uid);
  let passwd: string;
  try {
    passwd = await readFile(passwdPath, "utf8");
  } catch (err) {
    throw new WorkloadFactsError(
      `cannot read ${passwdPath} to find user "${uid}": ${(err as Error).message}`,
    );
  }
  for (const line of passwd.split("\n")) {
    const [name, , id] = line.split(":");
    if (name === uid && id !== undefined && DIGITS.test(id)) return Number(id);
  }
  throw new WorkloadFactsError(`no user named "${uid}" in ${passwdPath}`);
}

/** The executable as /proc/<pid>/exe shows it: symbolic links (python3 -> python3.11) resolved. */
async function resolveExe(exe: string): Promise<string> {
  try {
    return await realpath(exe);
  } catch (err) {
    throw new WorkloadFactsError(`workload executable ${exe}: ${(err as Error).message}`);
  }
}

const gone = (err: unknown): boolean => {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === "ENOENT" || code === "ESRCH";
};

/** Pids whose real uid is `uid` and whose executable is `exe` (when given); vanished ones are skipped. */
async function matchingPids(procRoot: string, uid: number, exe: string | undefined): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir(procRoot)) {
    if (!DIGITS.test(entry)) continue;
    let status: string;
    try {
      status = await readFile(`${procRoot}/${entry}/status`, "utf8");
    } catch (err) {
      if (gone(err)) continue;
      throw err;
    }
    const real = /^Uid:\s+(\d+)/m.exec(status)?.[1];
    if (real === undefined || Number(real) !== uid) continue;
    if (exe !== undefined) {
      let path: string;
      try {
        path = (await readlink(`${procRoot}/${entry}/exe`)).replace(/ \(deleted\)$/, "");
      } catch (err) {
        if (gone(err)) continue;
        if ((err as NodeJS.ErrnoException).code === "EACCES")
          throw new WorkloadFactsError(
            `cannot read the executable of process ${entry} (uid ${uid}): reading another user's /proc/<pid>/exe needs CAP_SYS_PTRACE`,
          );
        throw err;
      }
      if (path !== exe) continue;
    }
    pids.push(Number(entry));
  }
  return pids;
}

const sameFacts = (a: WireProcessFacts, b: WireProcessFacts): boolean =>
  a.uid === b.uid &&
  a.gid === b.gid &&
  a.user === b.user &&
  a.exePath === b.exePath &&
  a.exeSha256 === b.exeSha256;

/**
 * The workload's process facts, read from /proc of the processes its attributes name. Several
 * processes (a server and its forks) must agree on every fact, or the identity would depend on which
 * one was read: they are refused, naming them. None running yet is waited for up to `waitMs`.
 */
export async function findWorkloadProcess(
  attributes: WorkloadAttributes,
  options: FindOptions,
): Promise<WireProcessFacts> {
  const passwdPath = options.passwdPath ?? "/etc/passwd";
  const procRoot = options.procRoot ?? "/proc";
  const uid = await resolveUid(attributes.uid, passwdPath);
  const exe = attributes.exe === undefined ? undefined : await resolveExe(attributes.exe);
  const what = `uid ${uid}${exe === undefined ? "" : ` running ${exe}`}`;
  const deadline = Date.now() + options.waitMs;
  let waiting = false;
  for (;;) {
    const found: { pid: number; facts: WireProcessFacts }[] = [];
    for (const pid of await matchingPids(procRoot, uid, exe)) {
      try {
        found.push({ pid, facts: await collectProcessFacts(pid, { passwdPath }) });
      } catch (err) {
        // A process that exited between the scan and the read is not the workload any more.
        if (!(err instanceof WorkloadFactsError) || !gone(err.cause)) throw err;
      }
    }
    const first = found[0];
    if (first !== undefined) {
      const other = found.find((f) => !sameFacts(f.facts, first.facts));
      if (other !== undefined)
        throw new WorkloadFactsError(
          `processes of ${what} differ (pid ${first.pid}: gid ${first.facts.gid}, sha256 ${first.facts.exeSha256}; pid ${other.pid}: gid ${other.facts.gid}, sha256 ${other.facts.exeSha256}): which one is the workload is ambiguous`,
        );
      return first.facts;
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new WorkloadFactsError(`no process of ${what} is running`);
    if (!waiting) options.onWaiting?.(what);
    waiting = true;
    await new Promise((resolve) => setTimeout(resolve, Math.min(options.pollMs ?? 250, left)));
  }
}
