import { join } from "node:path";
import { child, cpuOf, RunTimeout, type Child } from "./children.ts";

/**
 * One run of the single-process bench: the control plane's ADS server alone in its process, N
 * simulated sidecars against it, `changes` policy changes each timed to the last ACK.
 */

export interface Result {
  protocol: string;
  clients: number;
  connections: number;
  syncMs: number;
  convergeMs: number[];
  publishMs: number[];
  serverCpuMs: number[];
  clientCpuMs: number[];
  heapPerClient: number;
  /** Set when the run did not finish: what it was waiting for. */
  incomplete?: string;
}

/** Starts the control plane's CPU profiler, or stops it and writes the profile to `file`. */
async function profile(server: Child, file: "start" | string): Promise<void> {
  if (file === "start") {
    server.proc.send({ kind: "profile-start" });
    await server.next("profiling");
  } else {
    server.proc.send({ kind: "profile-stop", file });
    await server.next("profiled");
  }
}

export async function runOne(
  clients: number,
  protocol: "sotw" | "delta",
  perConnection: number,
  procs: number,
  changes: number,
  timeoutMs: number,
  profileDir?: string,
): Promise<Result> {
  const deadline = performance.now() + timeoutMs;
  const errors: string[] = [];
  const result: Result = {
    protocol,
    clients,
    connections: 0,
    syncMs: NaN,
    convergeMs: [],
    publishMs: [],
    serverCpuMs: [],
    clientCpuMs: [],
    heapPerClient: NaN,
  };
  const server = child("server.ts", deadline, errors);
  const loads: Child[] = [];
  let phase = "control plane start";
  try {
    const ready = await server.next("ready");
    phase = "client processes start";
    const share = Math.ceil(clients / procs);
    const ranges: { first: number; count: number }[] = [];
    for (let first = 0; first < clients; first += share) {
      const count = Math.min(share, clients - first);
      ranges.push({ first, count });
      result.connections += Math.ceil(count / perConnection);
      loads.push(child("clients.ts", deadline, errors));
    }
    await Promise.all(loads.map((l) => l.next("ready")));
    phase = "populate";
    server.proc.send({ kind: "populate", clients });
    await server.next("populated");
    phase = "initial sync";
    if (profileDir) await profile(server, "start");
    const t0 = performance.now();
    loads.forEach((l, k) =>
      l.proc.send({
        kind: "start",
        ports: [ready.port],
        certPems: [ready.certPem],
        ...ranges[k],
        perConnection,
        protocol,
      }),
    );
    await Promise.all(loads.map((l) => l.next("synced")));
    result.syncMs = performance.now() - t0;
    if (profileDir) await profile(server, join(profileDir, `server-sync-${protocol}-${clients}.cpuprofile`));
    phase = "heap";
    server.proc.send({ kind: "heap" });
    const heap = await server.next("heap");
    result.heapPerClient = ((heap.heapUsed as number) - (ready.baselineHeap as number)) / clients;
    if (profileDir) await profile(server, "start");
    for (let i = 0; i < changes; i++) {
      phase = `change ${i + 1}`;
      const before = await cpuOf(loads);
      server.proc.send({ kind: "change" });
      const done = await server.next("converged");
      result.clientCpuMs.push((await cpuOf(loads)) - before);
      result.convergeMs.push(done.ms as number);
      result.publishMs.push(done.publishMs as number);
      result.serverCpuMs.push(done.cpuMs as number);
    }
    if (profileDir)
      await profile(server, join(profileDir, `server-change-${protocol}-${clients}.cpuprofile`));
  } catch (err) {
    if (!(err instanceof RunTimeout)) throw err;
    result.incomplete = `no result within ${timeoutMs / 1000} s (stopped during ${phase})`;
  } finally {
    for (const p of [server, ...loads]) p.proc.kill("SIGKILL");
  }
  if (errors.length > 0) {
    result.incomplete = `${errors.length} stream errors, first: ${errors[0]}`;
  }
  return result;
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
export const ms = (x: number) => (Number.isNaN(x) ? "–" : x.toFixed(0));
