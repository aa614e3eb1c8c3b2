import { appendFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { startEtcdCluster, type EtcdCluster } from "../../test/support/etcd-cluster.ts";
import { child, cpuOf, now, RunTimeout, sum, type Child, type Msg } from "./children.ts";
import { median, ms, runOne, type Result } from "./single.ts";

/**
 * The xDS bench with replicas: N simulated sidecars spread over R control-plane replicas that share
 * a real 3-member etcd cluster (Debian's etcd on PATH). A policy change is written through replica
 * 0; the time runs from the start of that write to the last ACK of the new PolicySet on any
 * replica, and is set against the single-process figure measured in the same run. Then the last
 * replica is killed (SIGKILL) and the time runs until every sidecar it served holds its full state
 * again from a survivor, each having reconnected after the sidecar client's backoff with jitter.
 *
 *   npx tsx bench/xds/replicated.ts --clients 50000
 */

const here = dirname(fileURLToPath(import.meta.url));
const opts = new Command()
  .option("--clients <n>", "simulated sidecars", "50000")
  .option("--replicas <n>", "control-plane replicas", "3")
  .option("--per-connection <n>", "ADS streams per HTTP/2 connection", "250")
  .option("--client-procs <n>", "processes the simulated clients are spread over", "2")
  .option("--changes <n>", "policy changes measured in each mode", "3")
  .option("--run-timeout <s>", "time limit of each mode's run, seconds", "600")
  .option("--out <file>", "results file (markdown, appended)", join(here, "RESULTS.md"))
  .parse()
  .opts<{
    clients: string;
    replicas: string;
    perConnection: string;
    clientProcs: string;
    changes: string;
    runTimeout: string;
    out: string;
  }>();

interface Replicated {
  syncMs: number;
  /** Start of the write through replica 0 → last ACK on any replica, per change. */
  convergeMs: number[];
  /** Start of the write → the last replica's watch saw it. */
  watchMs: number[];
  replicasCpuMs: number[];
  clientsCpuMs: number[];
  streamsPerReplica: number[];
  /** Streams the killed replica carried, and when the last of them was served again after the kill. */
  moved: number;
  backMs: number;
  /** First to last of those streams' first reconnect attempts (the jitter's spread). */
  attemptSpreadMs: number;
  firstAttemptMs: number;
  /** One change with the survivors only, after the failover. */
  afterFailoverMs: number;
  incomplete?: string;
}

/** One change through replica 0, timed to the last ACK among `replicas`. */
async function change(
  replicas: Child[],
  loads: Child[],
  r: Replicated,
): Promise<{ convergeMs: number; watchMs: number }> {
  const [cpuBefore, clientsBefore] = [await cpuOf(replicas), await cpuOf(loads)];
  (replicas[0] as Child).proc.send({ kind: "apply" });
  const [applied, watched, converged] = await Promise.all([
    (replicas[0] as Child).next("applied"),
    Promise.all(replicas.map((c) => c.next("watched"))),
    Promise.all(replicas.map((c) => c.next("converged"))),
  ]);
  r.replicasCpuMs.push((await cpuOf(replicas)) - cpuBefore);
  r.clientsCpuMs.push((await cpuOf(loads)) - clientsBefore);
  const last = (ms: Msg[]) => Math.max(...ms.map((m) => m.at as number));
  return {
    convergeMs: last(converged) - (applied.at as number),
    watchMs: last(watched) - (applied.at as number),
  };
}

async function streams(replicas: Child[]): Promise<number[]> {
  for (const c of replicas) c.proc.send({ kind: "heap" });
  return Promise.all(replicas.map(async (c) => (await c.next("heap")).streams as number));
}

async function runReplicated(clients: number, count: number, timeoutMs: number): Promise<Replicated> {
  const deadline = performance.now() + timeoutMs;
  const errors: string[] = [];
  const r: Replicated = {
    syncMs: NaN,
    convergeMs: [],
    watchMs: [],
    replicasCpuMs: [],
    clientsCpuMs: [],
    streamsPerReplica: [],
    moved: 0,
    backMs: NaN,
    attemptSpreadMs: NaN,
    firstAttemptMs: NaN,
    afterFailoverMs: NaN,
  };
  let etcd: EtcdCluster | undefined;
  const replicas: Child[] = [];
  const loads: Child[] = [];
  let phase = "etcd start";
  try {
    etcd = await startEtcdCluster(3);
    phase = "replicas start";
    for (let i = 0; i < count; i++)
      replicas.push(child("server.ts", deadline, errors, ["--etcd", etcd.endpoints.join(",")]));
    const ready = await Promise.all(replicas.map((c) => c.next("ready")));
    const procs = Number(opts.clientProcs);
    const share = Math.ceil(clients / procs);
    const ranges: { first: number; count: number }[] = [];
    for (let first = 0; first < clients; first += share) {
      ranges.push({ first, count: Math.min(share, clients - first) });
      loads.push(child("clients.ts", deadline, errors));
    }
    await Promise.all(loads.map((l) => l.next("ready")));
    phase = "populate";
    for (const c of replicas) c.proc.send({ kind: "populate", clients });
    await Promise.all(replicas.map((c) => c.next("populated")));
    phase = "initial sync";
    const t0 = performance.now();
    loads.forEach((l, k) =>
      l.proc.send({
        kind: "start",
        ports: ready.map((m) => m.port),
        certPems: ready.map((m) => m.certPem),
        ...ranges[k],
        perConnection: Number(opts.perConnection),
        protocol: "sotw",
      }),
    );
    await Promise.all(loads.map((l) => l.next("synced")));
    r.syncMs = performance.now() - t0;
    r.streamsPerReplica = await streams(replicas);
    for (let i = 0; i < Number(opts.changes); i++) {
      phase = `change ${i + 1}`;
      const c = await change(replicas, loads, r);
      r.convergeMs.push(c.convergeMs);
      r.watchMs.push(c.watchMs);
    }
    phase = "failover";
    const killed = count - 1;
    for (const l of loads) l.proc.send({ kind: "watch-failover", replica: killed });
    r.moved = sum(await Promise.all(loads.map(async (l) => (await l.next("watching")).streams as number)));
    const killedAt = now();
    (replicas[killed] as Child).proc.kill("SIGKILL");
    const done = await Promise.all(loads.map((l) => l.next("failed-over")));
    const moving = done.filter((d) => (d.streams as number) > 0);
    r.backMs = Math.max(...moving.map((d) => d.lastBackAt as number)) - killedAt;
    const first = Math.min(...moving.map((d) => d.firstAttemptAt as number));
    r.firstAttemptMs = first - killedAt;
    r.attemptSpreadMs = Math.max(...moving.map((d) => d.lastFirstAttemptAt as number)) - first;
    const survivors = replicas.slice(0, killed);
    const held = await streams(survivors);
    if (sum(held) !== clients)
      throw new Error(`after the failover the survivors hold ${sum(held)} streams, not ${clients}`);
    phase = "change after the failover";
    r.afterFailoverMs = (await change(survivors, loads, r)).convergeMs;
    r.replicasCpuMs.pop();
    r.clientsCpuMs.pop();
  } catch (err) {
    if (!(err instanceof RunTimeout)) throw err;
    r.incomplete = `no result within ${timeoutMs / 1000} s (stopped during ${phase})`;
  } finally {
    for (const p of [...replicas, ...loads]) p.proc.kill("SIGKILL");
    await etcd?.close();
  }
  if (errors.length > 0) r.incomplete = `${errors.length} errors, first: ${errors[0]}`;
  return r;
}

const clients = Number(opts.clients);
const count = Number(opts.replicas);
const timeoutMs = Number(opts.runTimeout) * 1000;
const loadBefore = loadavg();
const single: Result = await runOne(
  clients,
  "sotw",
  Number(opts.perConnection),
  Number(opts.clientProcs),
  Number(opts.changes),
  timeoutMs,
);
const replicated = await runReplicated(clients, count, timeoutMs);
const s = (x: number) => (Number.isNaN(x) ? "–" : `${(x / 1000).toFixed(2)} s`);
const max = (xs: number[]) => (xs.length === 0 ? NaN : Math.max(...xs));
const lines = [
  `### Replicated, ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC`,
  "",
  `Command: \`${`npx tsx bench/xds/replicated.ts ${process.argv.slice(2).join(" ")}`.trim()}\``,
  "",
  `Machine: ${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, Node ${process.version}; load average ${loadBefore
    .map((l) => l.toFixed(1))
    .join(" / ")} at the start, ${loadavg()
    .map((l) => l.toFixed(1))
    .join(
      " / ",
    )} at the end. SotW, ${opts.perConnection} streams per HTTP/2 connection, ${opts.clientProcs} client processes, ${opts.changes} changes per mode.`,
  "",
  "| mode | clients | initial sync | change → last ACK, median (max) | write → last replica's watch, median | control plane CPU / change | clients' CPU / change | note |",
  "| --- | --- | --- | --- | --- | --- | --- | --- |",
  `| one process | ${clients} | ${s(single.syncMs)} | ${s(median(single.convergeMs))} (${s(max(single.convergeMs))}) | – | ${ms(median(single.serverCpuMs))} ms | ${ms(median(single.clientCpuMs))} ms | ${single.incomplete ?? ""} |`,
  `| ${count} replicas over etcd | ${clients} (${replicated.streamsPerReplica.join(" / ")}) | ${s(replicated.syncMs)} | ${s(median(replicated.convergeMs))} (${s(max(replicated.convergeMs))}) | ${ms(median(replicated.watchMs))} ms | ${ms(median(replicated.replicasCpuMs))} ms (all replicas) | ${ms(median(replicated.clientsCpuMs))} ms | ${replicated.incomplete ?? ""} |`,
  "",
  `Replica ${count - 1} killed with SIGKILL: its ${replicated.moved} sidecars all held their full state from a survivor again ${s(replicated.backMs)} after the kill (target < 10 s); their first reconnect attempts ran from ${s(replicated.firstAttemptMs)} after the kill over ${s(replicated.attemptSpreadMs)} (jitter). A policy change through replica 0 then reached all ${clients} sidecars on the ${count - 1} survivors in ${s(replicated.afterFailoverMs)}.`,
  "",
];
console.log(lines.join("\n"));
await appendFile(opts.out, lines.join("\n") + "\n");
