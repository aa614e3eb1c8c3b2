import { fork, type ChildProcess } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The bench's child processes (control planes, replicas, simulated clients) and their messages. */

const here = dirname(fileURLToPath(import.meta.url));

export type Msg = { kind: string; [k: string]: unknown };

export interface Child {
  proc: ChildProcess;
  /** The next message of this kind (earlier ones queued); rejects at the run's deadline or if the child exits. */
  next: (kind: string) => Promise<Msg>;
}

export class RunTimeout extends Error {}

/**
 * Forks `script` (in this folder) with `args`; messages of kind "error" are collected in `errors`
 * instead of being handed to a waiter. Every wait ends by `deadline` (performance.now() time).
 */
export function child(script: string, deadline: number, errors: string[], args: string[] = []): Child {
  const proc = fork(join(here, script), args, {
    execArgv: ["--import", "tsx", "--expose-gc", "--max-old-space-size=4096"],
  });
  const queued = new Map<string, Msg[]>();
  const waiters = new Map<string, ((m: Msg) => void)[]>();
  let exited: string | undefined;
  proc.on("message", (m: Msg) => {
    if (m.kind === "error") {
      // Many streams may fail the same way: keep the first few, count the rest.
      if (errors.length < 5) console.error(`${script}: ${String(m.message)}`);
      errors.push(String(m.message));
      return;
    }
    const w = waiters.get(m.kind)?.shift();
    if (w) w(m);
    else queued.set(m.kind, [...(queued.get(m.kind) ?? []), m]);
  });
  const next = (kind: string) =>
    new Promise<Msg>((resolve, reject) => {
      const early = queued.get(kind)?.shift();
      if (early) return resolve(early);
      if (exited) return reject(new Error(`${script} exited (${exited}) before ${kind}`));
      const timer = setTimeout(
        () => reject(new RunTimeout(`${script}: no ${kind} before the run's time limit`)),
        Math.max(0, deadline - performance.now()),
      );
      const list = waiters.get(kind) ?? [];
      list.push((m) => {
        clearTimeout(timer);
        if (m.kind !== kind) reject(new Error(`${script} exited (${m.kind}) before ${kind}`));
        else resolve(m);
      });
      waiters.set(kind, list);
    });
  proc.on("exit", (code, signal) => {
    exited = String(code ?? signal);
    for (const list of waiters.values()) for (const w of list.splice(0)) w({ kind: `exit ${exited}` });
  });
  return { proc, next };
}

export const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** CPU time (user + system, ms) the processes have used so far, together. */
export async function cpuOf(children: Child[]): Promise<number> {
  for (const c of children) c.proc.send({ kind: "cpu" });
  return sum(await Promise.all(children.map(async (c) => (await c.next("cpu")).ms as number)));
}

/** Wall-clock time shared by every process on the machine, to the sub-millisecond. */
export function now(): number {
  return performance.timeOrigin + performance.now();
}
