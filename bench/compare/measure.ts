import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { LoadResult } from "./latency.ts";
import type { LoopScrape } from "./loop-stats.ts";
import { loopWindow, parseLoopScrape } from "./loop-stats.ts";
import { cpuSeconds } from "./procstat.ts";
import type { Supervisor } from "./procs.ts";
import type { LoadMeasurement, TcpResult, XdsRow } from "./results.ts";
import type { PathUnderTest } from "./topology.ts";

/** One measurement each: a load run with the proxies' CPU in its window, an iperf3 run, the xDS bench. */

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = join(here, "..", "..");

export interface LoadSpec {
  readonly protocol: "h1" | "grpc";
  readonly mode: "rate" | "max";
  readonly port: number;
  readonly rate: number;
  readonly durationSeconds: number;
  readonly warmupSeconds: number;
}

let runs = 0;

export async function runLoad(
  sup: Supervisor,
  dir: string,
  path: PathUnderTest,
  spec: LoadSpec,
): Promise<LoadMeasurement> {
  const out = join(dir, `load-${runs++}.json`);
  const child = sup.start(
    `load generator (${path.name} ${spec.protocol} ${spec.mode})`,
    process.execPath,
    [
      "--import",
      "tsx",
      join(here, "loadgen.ts"),
      "--protocol",
      spec.protocol,
      "--port",
      String(spec.port),
      "--mode",
      spec.mode,
      "--rate",
      String(spec.rate),
      "--duration",
      String(spec.durationSeconds),
      "--warmup",
      String(spec.warmupSeconds),
      "--out",
      out,
    ],
    { cwd: REPO, stdio: ["ignore", "pipe", "pipe", "ipc"] },
  );
  const before = new Map<string, number>();
  const used = new Map<string, number>();
  const monitored = path.proxies.filter((p) => p.adminPort !== undefined);
  const scrapes: Record<"start" | "end", Promise<LoopScrape[] | null> | null> = {
    start: null,
    end: null,
  };
  child.proc.on("message", (m: { kind?: string; phase?: string }) => {
    if (m.kind !== "window") return;
    for (const { side, proc } of path.proxies) {
      const now = cpuSeconds(proc.pid);
      if (m.phase === "start") before.set(side, now);
      else used.set(side, now - (before.get(side) ?? now));
    }
    if (monitored.length > 0) {
      // Diagnostic only: a failed scrape leaves the window without loop figures, not the run failed.
      scrapes[m.phase === "start" ? "start" : "end"] = Promise.all(
        monitored.map((p) => scrapeLoop(p.adminPort as number)),
      ).catch((err: Error) => {
        console.warn(`sidecar loop metrics: ${err.message}`);
        return null;
      });
    }
  });
  const code = await sup.exitOf(child, (spec.durationSeconds + spec.warmupSeconds + 60) * 1000);
  if (code !== 0) throw new Error(`${child.name} exited with ${code}: ${child.output()}`);
  const load = JSON.parse(await readFile(out, "utf8")) as LoadResult;
  const [start, end] = await Promise.all([scrapes.start, scrapes.end]);
  return {
    load,
    proxies: path.proxies.map(({ side }) => ({ side, cpuSeconds: used.get(side) ?? NaN })),
    loop:
      start && end
        ? monitored.map((p, i) => loopWindow(p.side, start[i] as LoopScrape, end[i] as LoopScrape))
        : [],
  };
}

async function scrapeLoop(adminPort: number): Promise<LoopScrape> {
  const res = await fetch(`http://127.0.0.1:${adminPort}/stats/prometheus`);
  if (!res.ok) throw new Error(`admin :${adminPort}/stats/prometheus answered ${res.status}`);
  return parseLoopScrape(await res.text());
}

/** iperf3 client for `seconds` against `port` (the iperf3 server or a proxy in front of it). */
export async function runIperf(
  sup: Supervisor,
  dir: string,
  port: number,
  seconds: number,
  proxyPids: readonly number[],
): Promise<TcpResult> {
  const log = join(dir, `iperf-${runs++}.json`);
  const before = proxyPids.reduce((s, pid) => s + cpuSeconds(pid), 0);
  const child = sup.start("iperf3 client", "iperf3", [
    "-c",
    "127.0.0.1",
    "-p",
    String(port),
    "-t",
    String(seconds),
    "-J",
    "--logfile",
    log,
  ]);
  const code = await sup.exitOf(child, (seconds + 30) * 1000);
  const after = proxyPids.reduce((s, pid) => s + cpuSeconds(pid), 0);
  const report = JSON.parse(await readFile(log, "utf8")) as {
    error?: string;
    end?: { sum_received?: { bits_per_second?: number; seconds?: number } };
  };
  if (code !== 0 || report.error)
    throw new Error(`iperf3 against port ${port}: ${report.error ?? `exit ${code}`}`);
  const received = report.end?.sum_received;
  if (!received?.bits_per_second) throw new Error(`iperf3 against port ${port}: no receiver summary`);
  return {
    gbitPerSecond: received.bits_per_second / 1e9,
    proxyCpuSeconds: after - before,
    seconds: received.seconds ?? seconds,
  };
}

const XDS_LINE =
  /^(\w+) clients=(\d+): initial sync (\d+) ms, change→last ACK median (\d+) ms \(max (\d+)\), heap\/client ([\d.]+) KB/;

/** Parses the per-scale summary lines bench/xds/run.ts prints. */
export function parseXdsOutput(text: string): XdsRow[] {
  const rows: XdsRow[] = [];
  for (const line of text.split("\n")) {
    const m = XDS_LINE.exec(line.trim());
    if (!m) continue;
    rows.push({
      protocol: m[1] as string,
      clients: Number(m[2]),
      syncMs: Number(m[3]),
      convergeMedianMs: Number(m[4]),
      convergeMaxMs: Number(m[5]),
      heapPerClientKb: Number(m[6]),
    });
  }
  return rows;
}

/** Runs the xDS engineer's scale benchmark (bench/xds/run.ts) as it is, with its results file in `dir`. */
export async function runXds(
  sup: Supervisor,
  dir: string,
  clients: readonly number[],
  timeoutSeconds: number,
): Promise<XdsRow[]> {
  const child = sup.start(
    "xDS scale bench",
    process.execPath,
    [
      "--import",
      "tsx",
      join(REPO, "bench", "xds", "run.ts"),
      "--clients",
      clients.join(","),
      "--protocol",
      "sotw",
      "--changes",
      "3",
      "--out",
      join(dir, "xds-results.md"),
    ],
    { cwd: REPO },
  );
  let code: number | null;
  try {
    code = await sup.exitOf(child, timeoutSeconds * 1000);
  } catch (err) {
    const partial = parseXdsOutput(child.output());
    if (partial.length > 0) return partial;
    throw err;
  }
  const rows = parseXdsOutput(child.output());
  if (code !== 0 || rows.length === 0)
    throw new Error(`bench/xds/run.ts exited with ${code}: ${child.output().slice(-800)}`);
  return rows;
}
