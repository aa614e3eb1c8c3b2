import { fork, type ChildProcess } from "node:child_process";
import { appendFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command } from "commander";

/**
 * xDS scale benchmark: N simulated sidecars on real gRPC streams (TLS, loopback) against the
 * control plane's ADS server in a separate process. Measures the time from one policy change to
 * the last client's ACK, the CPU that change costs the control plane and the clients, and the
 * control plane's heap per connected client. Each run (size × protocol) is bounded in time and
 * printed, and appended to the results file, as soon as it ends.
 *
 *   npx tsx bench/xds/run.ts --clients 1000,10000,50000 --protocol sotw,delta
 */

const here = dirname(fileURLToPath(import.meta.url));
const opts = new Command()
  .option("--clients <list>", "client counts", "1000,10000")
  .option("--protocol <list>", "sotw, delta or both", "sotw,delta")
  .option("--per-connection <n>", "ADS streams per HTTP/2 connection", "250")
  .option("--client-procs <n>", "processes the simulated clients are spread over", "2")
  .option("--changes <n>", "policy changes measured per run", "5")
  .option("--run-timeout <s>", "time limit of one run (one size, one protocol), seconds", "300")
  .option(
    "--profile <dir>",
    "write CPU profiles of the control plane (initial sync, changes) per run to this directory",
  )
  .option("--out <file>", "results file (markdown, appended)", join(here, "RESULTS.md"))
  .parse()
  .opts<{
    clients: string;
    protocol: string;
    perConnection: string;
    clientProcs: string;
    changes: string;
    runTimeout: string;
    profile?: string;
    out: string;
  }>();

type Msg = { kind: string; [k: string]: unknown };

interface Child {
  proc: ChildProcess;
  next: (kind: string) => Promise<Msg>;
}

class RunTimeout extends Error {}

/** A child process speaking the bench's message protocol; every wait ends by the run's deadline. */
function child(script: string, deadline: number, errors: string[]): Child {
  const proc = fork(join(here, script), [], {
    execArgv: ["--import", "tsx", "--expose-gc", "--max-old-space-size=4096"],
  });
  const queue: Msg[] = [];
  const waiters: ((m: Msg) => void)[] = [];
  proc.on("message", (m: Msg) => {
    if (m.kind === "error") {
      // Many streams may fail the same way: keep the first few, count the rest.
      if (errors.length < 5) console.error(`${script}: ${String(m.message)}`);
      errors.push(String(m.message));
      return;
    }
    const w = waiters.shift();
    if (w) w(m);
    else queue.push(m);
  });
  const next = (kind: string) =>
    new Promise<Msg>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new RunTimeout(`${script}: no ${kind} before the run's time limit`)),
        Math.max(0, deadline - performance.now()),
      );
      const take = (m: Msg) => {
        clearTimeout(timer);
        if (m.kind !== kind) reject(new Error(`${script}: expected ${kind}, got ${m.kind}`));
        else resolve(m);
      };
      const queued = queue.shift();
      if (queued) take(queued);
      else waiters.push(take);
    });
  proc.on("exit", (code, signal) => {
    for (const w of waiters.splice(0)) w({ kind: `exit ${code ?? signal}` });
  });
  return { proc, next };
}

interface Result {
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

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

async function clientCpu(loads: Child[]): Promise<number> {
  for (const l of loads) l.proc.send({ kind: "cpu" });
  return sum(await Promise.all(loads.map(async (l) => (await l.next("cpu")).ms as number)));
}

async function runOne(
  clients: number,
  protocol: "sotw" | "delta",
  perConnection: number,
  procs: number,
  changes: number,
  timeoutMs: number,
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
    if (opts.profile) await profile(server, "start");
    const t0 = performance.now();
    loads.forEach((l, k) =>
      l.proc.send({
        kind: "start",
        port: ready.port,
        certPem: ready.certPem,
        ...ranges[k],
        perConnection,
        protocol,
      }),
    );
    await Promise.all(loads.map((l) => l.next("synced")));
    result.syncMs = performance.now() - t0;
    if (opts.profile)
      await profile(server, join(opts.profile, `server-sync-${protocol}-${clients}.cpuprofile`));
    phase = "heap";
    server.proc.send({ kind: "heap" });
    const heap = await server.next("heap");
    result.heapPerClient = ((heap.heapUsed as number) - (ready.baselineHeap as number)) / clients;
    if (opts.profile) await profile(server, "start");
    for (let i = 0; i < changes; i++) {
      phase = `change ${i + 1}`;
      const before = await clientCpu(loads);
      server.proc.send({ kind: "change" });
      const done = await server.next("converged");
      result.clientCpuMs.push((await clientCpu(loads)) - before);
      result.convergeMs.push(done.ms as number);
      result.publishMs.push(done.publishMs as number);
      result.serverCpuMs.push(done.cpuMs as number);
    }
    if (opts.profile)
      await profile(server, join(opts.profile, `server-change-${protocol}-${clients}.cpuprofile`));
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

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const ms = (x: number) => (Number.isNaN(x) ? "–" : x.toFixed(0));

function summary(r: Result): string {
  if (r.convergeMs.length === 0) return `${r.protocol} clients=${r.clients}: ${r.incomplete ?? "no result"}`;
  return (
    `${r.protocol} clients=${r.clients}: initial sync ${ms(r.syncMs)} ms, change→last ACK median ${ms(median(r.convergeMs))} ms ` +
    `(max ${ms(Math.max(...r.convergeMs))}), heap/client ${(r.heapPerClient / 1024).toFixed(1)} KB, republish ${ms(median(r.publishMs))} ms, ` +
    `CPU per change: control plane ${ms(median(r.serverCpuMs))} ms, clients ${ms(median(r.clientCpuMs))} ms` +
    (r.incomplete ? ` (${r.incomplete})` : "")
  );
}

function row(r: Result): string {
  const cells =
    r.convergeMs.length === 0
      ? [ms(r.syncMs), "–", "–", "–", "–", "–", "–"]
      : [
          ms(r.syncMs),
          ms(median(r.convergeMs)),
          ms(Math.max(...r.convergeMs)),
          ms(median(r.publishMs)),
          ms(median(r.serverCpuMs)),
          ms(median(r.clientCpuMs)),
          (r.heapPerClient / 1024).toFixed(1),
        ];
  return `| ${[r.protocol, r.clients, r.connections, ...cells, r.incomplete ?? ""].join(" | ")} |`;
}

const command = `npx tsx bench/xds/run.ts ${process.argv.slice(2).join(" ")}`.trim();
await appendFile(
  opts.out,
  [
    `### ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC`,
    "",
    `Command: \`${command}\``,
    "",
    `Machine: ${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, Node ${process.version}; load average at the start ${loadavg()
      .map((l) => l.toFixed(1))
      .join(" / ")}.`,
    "",
    "| protocol | clients | HTTP/2 connections | initial sync (ms) | change → last ACK, median (ms) | max (ms) | republish (ms) | control-plane CPU / change (ms) | clients' CPU / change (ms) | heap / client (KB) | note |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    "",
  ].join("\n"),
);
for (const n of opts.clients.split(",").map(Number)) {
  for (const p of opts.protocol.split(",") as ("sotw" | "delta")[]) {
    const r = await runOne(
      n,
      p,
      Number(opts.perConnection),
      Number(opts.clientProcs),
      Number(opts.changes),
      Number(opts.runTimeout) * 1000,
    );
    console.log(summary(r));
    await appendFile(opts.out, row(r) + "\n");
  }
}
await appendFile(
  opts.out,
  `\nLoad average at the end: ${loadavg()
    .map((l) => l.toFixed(1))
    .join(" / ")}.\n\n`,
);
