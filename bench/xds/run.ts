import { fork, type ChildProcess } from "node:child_process";
import { appendFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command } from "commander";

/**
 * xDS scale benchmark: N simulated sidecars on real gRPC streams (TLS, loopback) against the
 * control plane's ADS server in a separate process. Measures the time from one policy change to
 * the last client's ACK and the control plane's heap per connected client.
 *
 *   npx tsx bench/xds/run.ts --clients 1000,10000 --protocol sotw,delta
 */

const here = dirname(fileURLToPath(import.meta.url));
const opts = new Command()
  .option("--clients <list>", "client counts", "1000,10000")
  .option("--protocol <list>", "sotw, delta or both", "sotw,delta")
  .option("--per-connection <n>", "ADS streams per HTTP/2 connection", "100")
  .option("--changes <n>", "policy changes measured per run", "5")
  .option("--out <file>", "results file (markdown, appended)", join(here, "RESULTS.md"))
  .parse()
  .opts<{ clients: string; protocol: string; perConnection: string; changes: string; out: string }>();

type Msg = { kind: string; [k: string]: unknown };

function child(script: string): {
  proc: ChildProcess;
  next: (kind: string, timeoutMs?: number) => Promise<Msg>;
} {
  const proc = fork(join(here, script), [], {
    execArgv: ["--import", "tsx", "--expose-gc", "--max-old-space-size=4096"],
  });
  const queue: Msg[] = [];
  const waiters: ((m: Msg) => void)[] = [];
  proc.on("message", (m: Msg) => {
    if (m.kind === "error") {
      console.error(`${script}: ${String(m.message)}`);
      return;
    }
    const w = waiters.shift();
    if (w) w(m);
    else queue.push(m);
  });
  const next = (kind: string, timeoutMs = 300_000) =>
    new Promise<Msg>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${script}: no ${kind} within ${timeoutMs} ms`)),
        timeoutMs,
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
  proc.on("exit", (code) => {
    if (code) for (const w of waiters.splice(0)) w({ kind: `exit ${code}` });
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
}

async function runOne(
  clients: number,
  protocol: "sotw" | "delta",
  perConnection: number,
  changes: number,
): Promise<Result> {
  const server = child("server.ts");
  const ready = await server.next("ready");
  const load = child("clients.ts");
  await load.next("ready");
  try {
    server.proc.send({ kind: "populate", clients });
    await server.next("populated");
    const t0 = performance.now();
    load.proc.send({
      kind: "start",
      port: ready.port,
      certPem: ready.certPem,
      clients,
      perConnection,
      protocol,
    });
    await load.next("synced");
    const syncMs = performance.now() - t0;
    server.proc.send({ kind: "heap" });
    const heap = await server.next("heap");
    const convergeMs: number[] = [];
    const publishMs: number[] = [];
    const serverCpuMs: number[] = [];
    const clientCpuMs: number[] = [];
    for (let i = 0; i < changes; i++) {
      load.proc.send({ kind: "cpu" });
      const before = (await load.next("cpu")).ms as number;
      server.proc.send({ kind: "change" });
      const done = await server.next("converged");
      load.proc.send({ kind: "cpu" });
      clientCpuMs.push(((await load.next("cpu")).ms as number) - before);
      convergeMs.push(done.ms as number);
      publishMs.push(done.publishMs as number);
      serverCpuMs.push(done.cpuMs as number);
    }
    return {
      protocol,
      clients,
      connections: Math.ceil(clients / perConnection),
      syncMs,
      convergeMs,
      publishMs,
      serverCpuMs,
      clientCpuMs,
      heapPerClient: ((heap.heapUsed as number) - (ready.baselineHeap as number)) / clients,
    };
  } finally {
    load.proc.send({ kind: "exit" });
    server.proc.send({ kind: "exit" });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const results: Result[] = [];
for (const n of opts.clients.split(",").map(Number)) {
  for (const p of opts.protocol.split(",") as ("sotw" | "delta")[]) {
    const r = await runOne(n, p, Number(opts.perConnection), Number(opts.changes));
    results.push(r);
    console.log(
      `${p} clients=${n}: initial sync ${r.syncMs.toFixed(0)} ms, change→last ACK median ${median(r.convergeMs).toFixed(0)} ms ` +
        `(max ${Math.max(...r.convergeMs).toFixed(0)}), heap/client ${(r.heapPerClient / 1024).toFixed(1)} KB, republish ${median(r.publishMs).toFixed(0)} ms, ` +
        `CPU per change: control plane ${median(r.serverCpuMs).toFixed(0)} ms, clients ${median(r.clientCpuMs).toFixed(0)} ms`,
    );
  }
}

const command = `npx tsx bench/xds/run.ts ${process.argv.slice(2).join(" ")}`.trim();
const lines = [
  `## ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC`,
  "",
  `Command: \`${command}\``,
  "",
  `Machine: ${cpus().length} × ${cpus()[0]?.model ?? "cpu"}, Node ${process.version}; load average at the end ${loadavg()
    .map((l) => l.toFixed(1))
    .join(" / ")} (other work on the machine competes with both processes).`,
  "",
  "| protocol | clients | HTTP/2 connections | initial sync (ms) | change → last ACK, median (ms) | max (ms) | republish (ms) | control-plane CPU / change (ms) | clients' CPU / change (ms) | heap / client (KB) |",
  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
  ...results.map(
    (r) =>
      `| ${r.protocol} | ${r.clients} | ${r.connections} | ${r.syncMs.toFixed(0)} | ${median(r.convergeMs).toFixed(0)} | ${Math.max(...r.convergeMs).toFixed(0)} | ${median(r.publishMs).toFixed(0)} | ${median(r.serverCpuMs).toFixed(0)} | ${median(r.clientCpuMs).toFixed(0)} | ${(r.heapPerClient / 1024).toFixed(1)} |`,
  ),
  "",
];
await appendFile(opts.out, lines.join("\n") + "\n");
