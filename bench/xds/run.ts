import { appendFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { median, ms, runOne, type Result } from "./single.ts";

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
      opts.profile,
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
