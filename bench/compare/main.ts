/**
 * Sigil side by side with nginx and HAProxy: one run, the same load generator and the same backend
 * for every path. Writes results/<name>.json, the latency plot, and the results section of
 * BENCHMARKS.md (full runs only).
 *
 *   npx tsx bench/compare/main.ts            full run (about 10 minutes on 2 cores)
 *   npx tsx bench/compare/main.ts --quick    smoke run (short windows, 1,000 xDS clients)
 */
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { loadavg, setPriority, tmpdir } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { machineInfo } from "./machine.ts";
import { REPO, runIperf, runLoad, runXds } from "./measure.ts";
import { makePeerPki } from "./peer-pki.ts";
import { startPath } from "./paths.ts";
import { SIDECAR_NODE_FLAGS } from "../../inject/constants.ts";
import type { PathContext } from "./paths.ts";
import { MemorySampler } from "./memory-sampling.ts";
import { peakRss } from "./procstat.ts";
import { summarizeProfile } from "./profile-summary.ts";
import { publishRun } from "./publish.ts";
import { Supervisor, freePorts, waitForPort } from "./procs.ts";
import type { LoadMeasurement, PathResults, RunResults, TcpRow, XdsRow } from "./results.ts";
import { bundleDirFor } from "./sigil.ts";
import type { BackendPorts, PathName } from "./topology.ts";
import { fastPathThroughput } from "./fastpath.ts";

const opts = new Command()
  .option("--quick", "short windows and 1,000 xDS clients: a smoke run that leaves BENCHMARKS.md alone")
  .option("--paths <list>", "paths to measure", "direct,sigil,node-pipes,nginx,haproxy")
  .option("--rate <rps>", "fixed request rate for the latency runs", "1000")
  .option("--no-tcp", "skip the iperf3 runs")
  .option("--no-fastpath", "skip the fast-path run (network namespaces)")
  .option("--no-xds", "skip the control-plane convergence runs")
  .option(
    "--profile",
    "run the Sigil sidecars under node --cpu-prof and summarise the profiles into results/",
  )
  .option(
    "--loop-delay",
    "the Sigil sidecars also measure event-loop delay: a 1 ms timer that wakes them, so their CPU figures are not comparable",
  )
  .option(
    "--sidecar-node-flags <flags>",
    "Node/V8 flags for the Sigil sidecars, space-separated, instead of the bench's defaults (SIDECAR_NODE_FLAGS)",
  )
  .option(
    "--priority <n>",
    "nice value for the harness and everything it starts (it competes with other work)",
    "-10",
  )
  .parse()
  .opts<{
    quick?: boolean;
    profile?: boolean;
    loopDelay?: boolean;
    sidecarNodeFlags?: string;
    paths: string;
    rate: string;
    tcp: boolean;
    fastpath: boolean;
    xds: boolean;
    priority: string;
  }>();

const quick = opts.quick === true;
const durationSeconds = quick ? 3 : 10;
const warmupSeconds = quick ? 1 : 2;
/** Discarded fixed-rate run before each protocol's measured runs. */
const warmRateSeconds = quick ? 3 : 5;
const iperfSeconds = quick ? 2 : 5;
/** How often each proxy's RSS, PSS and USS are read during the fixed-rate runs. */
const MEMORY_SAMPLE_MS = 500;
const rate = Number(opts.rate);
const xdsClients = quick ? [1000] : [1000, 10_000, 50_000];
const sidecarNodeFlags =
  opts.sidecarNodeFlags === undefined
    ? SIDECAR_NODE_FLAGS
    : opts.sidecarNodeFlags.split(/\s+/).filter(Boolean);
const paths = opts.paths.split(",").map((p) => p.trim()) as PathName[];
for (const p of paths) {
  if (!["direct", "sigil", "node-pipes", "nginx", "haproxy"].includes(p))
    throw new Error(`--paths: unknown path "${p}"`);
}

try {
  setPriority(Number(opts.priority));
} catch (err) {
  console.warn(`could not set priority ${opts.priority}: ${(err as Error).message}`);
}

const log = (msg: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const started = performance.now();
const startedAt = new Date().toISOString();
const machine = machineInfo();
const sup = new Supervisor();
const dir = await mkdtemp(join(tmpdir(), "sigil-compare-"));

/** A path's results when it failed to start or to carry a request. */
function unmeasured(name: PathName, failure: string): { result: PathResults; tcp: null } {
  const empty = { rate: null, max: null };
  return {
    result: {
      path: name,
      failure,
      h1: empty,
      grpc: empty,
      peakRssHttpBytes: [],
      peakRssBytes: [],
      memory: [],
    },
    tcp: null,
  };
}

async function measurePath(
  ctx: PathContext,
  name: PathName,
): Promise<{ result: PathResults; tcp: TcpRow | null }> {
  log(`${name}: starting`);
  let path;
  try {
    path = await startPath(name, ctx);
  } catch (err) {
    const failure = (err as Error).message;
    log(`${name}: not measured: ${failure}`);
    return unmeasured(name, failure);
  }
  try {
    const memory = new MemorySampler(path.proxies.map(({ side, proc }) => ({ side, pid: proc.pid })));
    const byProtocol: Record<"h1" | "grpc", { rate: LoadMeasurement | null; max: LoadMeasurement | null }> = {
      h1: { rate: null, max: null },
      grpc: { rate: null, max: null },
    };
    for (const protocol of ["h1", "grpc"] as const) {
      const port = protocol === "h1" ? path.h1Port : path.grpcPort;
      // A fresh path pays once for JIT compilation, TLS handshakes and connection pools filling up;
      // at a fixed rate that cold start queues requests for seconds. Every path is warmed at the same
      // rate first (discarded), so the fixed-rate row measures the path in its steady state.
      const warm = await runLoad(sup, dir, path, {
        protocol,
        mode: "rate",
        port,
        rate,
        durationSeconds: warmRateSeconds,
        warmupSeconds: 0,
      });
      log(
        `${name} ${protocol} warm-up: p50 ${(warm.load.p50Us / 1000).toFixed(2)} ms, p99 ${(warm.load.p99Us / 1000).toFixed(2)} ms, errors ${warm.load.errors} (discarded)`,
      );
      for (const mode of ["rate", "max"] as const) {
        const load = (): Promise<LoadMeasurement> =>
          runLoad(sup, dir, path, { protocol, mode, port, rate, durationSeconds, warmupSeconds });
        // Memory under load is read during the fixed-rate runs, the load the RSS target is set at.
        const m = mode === "rate" ? await memory.during(MEMORY_SAMPLE_MS, load) : await load();
        byProtocol[protocol][mode] = m;
        const cpu = m.proxies.reduce((s, p) => s + p.cpuSeconds, 0);
        log(
          `${name} ${protocol} ${mode}: ${m.load.rps.toFixed(0)} rps, p50 ${(m.load.p50Us / 1000).toFixed(2)} ms, ` +
            `p99 ${(m.load.p99Us / 1000).toFixed(2)} ms, errors ${m.load.errors}${m.load.errorSamples.length ? ` (${m.load.errorSamples.join("; ")})` : ""}, proxy CPU ${cpu.toFixed(2)} s`,
        );
        for (const w of m.loop) {
          const delay =
            w.delayP99Ms === null || w.delayMaxMs === null
              ? ""
              : `loop delay p99 ${w.delayP99Ms.toFixed(2)} ms, max ${w.delayMaxMs.toFixed(1)} ms, `;
          log(
            `  ${w.side} sidecar: ${delay}GC ${w.gcPauseMs.toFixed(0)} ms in ${w.gcCount} collections (mark-compact ${w.gcMajorPauseMs.toFixed(0)} ms)`,
          );
        }
      }
    }
    // Read before iperf3: bulk TCP through a proxy holds read-ahead buffers the HTTP runs never need.
    const peakRssHttpBytes = path.proxies.map(({ side, proc }) => ({ side, bytes: peakRss(proc.pid) }));
    let tcp: TcpRow | null = null;
    if (opts.tcp && path.tcpPort !== null) {
      const label = {
        direct: "direct",
        sigil: "Sigil L7 proxy (mTLS)",
        "node-pipes": "bare Node mTLS pipes",
        haproxy: "HAProxy TCP mode with TLS",
        nginx: "nginx",
      }[name];
      try {
        const r = await runIperf(
          sup,
          dir,
          path.tcpPort,
          iperfSeconds,
          path.proxies.map((p) => p.proc.pid),
        );
        log(`${name} tcp: ${r.gbitPerSecond.toFixed(2)} Gbit/s`);
        tcp = { name: label, result: r, baselineGbitPerSecond: null, note: null };
      } catch (err) {
        tcp = { name: label, result: null, baselineGbitPerSecond: null, note: (err as Error).message };
      }
    }
    const peakRssBytes = path.proxies.map(({ side, proc }) => ({ side, bytes: peakRss(proc.pid) }));
    return {
      result: {
        path: name,
        failure: null,
        ...byProtocol,
        peakRssHttpBytes,
        peakRssBytes,
        memory: memory.readings(),
      },
      tcp,
    };
  } catch (err) {
    const failure = (err as Error).message;
    log(`${name}: failed: ${failure}`);
    return unmeasured(name, failure);
  } finally {
    // A profiled sidecar writes its profile while it drains, so it gets longer to exit.
    for (const { proc } of path.proxies) await sup.stop(proc, ctx.profileDir ? 20_000 : 3000);
    if (ctx.profileDir && name === "sigil") await saveProfiles(ctx.profileDir);
  }
}

/** One summary per sidecar profile, heaviest functions first, kept with the run's results. */
async function saveProfiles(from: string): Promise<void> {
  const files = (await readdir(from).catch(() => [] as string[])).filter((f) => f.endsWith(".cpuprofile"));
  const out = join(REPO, "bench", "compare", "results");
  await mkdir(out, { recursive: true });
  const text = [];
  for (const f of files) {
    const rows = summarizeProfile(
      JSON.parse(await readFile(join(from, f), "utf8")) as Parameters<typeof summarizeProfile>[0],
    );
    text.push(
      `# ${f}`,
      "self %  total %  function  location",
      ...rows
        .sort((a, b) => b.selfPercent - a.selfPercent)
        .slice(0, 40)
        .map(
          (r) =>
            `${r.selfPercent.toFixed(1).padStart(6)}  ${r.totalPercent.toFixed(1).padStart(7)}  ${r.name}  ${r.where}`,
        ),
      "",
    );
  }
  await writeFile(
    join(out, "sidecar-profile.txt"),
    text.length ? text.join("\n") : "no profile was written\n",
  );
  log(`sidecar profiles: ${files.length} summarised into bench/compare/results/sidecar-profile.txt`);
}

try {
  const [h1, grpc, iperf] = (await freePorts(3)) as [number, number, number];
  const backendPorts: BackendPorts = { h1, grpc, iperf };
  const backend = sup.start(
    "backend",
    process.execPath,
    ["--import", "tsx", join(REPO, "bench", "compare", "backend.ts"), String(h1), String(grpc)],
    {
      cwd: REPO,
    },
  );
  const iperfServer = sup.start("iperf3 server", "iperf3", ["-s", "-p", String(iperf), "-B", "127.0.0.1"]);
  await waitForPort("127.0.0.1", h1, backend);
  await waitForPort("127.0.0.1", grpc, backend);
  await waitForPort("127.0.0.1", iperf, iperfServer);
  const profileDir = opts.profile ? join(dir, "profiles") : undefined;
  const ctx: PathContext = {
    sup,
    dir,
    sidecarNodeFlags,
    backend: backendPorts,
    peerPki: await makePeerPki(dir),
    loopDelay: opts.loopDelay === true,
    ...(profileDir ? { profileDir } : {}),
  };

  const pathResults: PathResults[] = [];
  const tcp: TcpRow[] = [];
  for (const name of paths) {
    const { result, tcp: row } = await measurePath(ctx, name);
    pathResults.push(result);
    if (row) tcp.push(row);
  }
  if (opts.tcp) {
    if (opts.fastpath) {
      log("fast path: starting");
      const row = await fastPathThroughput(sup, iperfSeconds);
      log(`fast path: ${row.result ? `${row.result.gbitPerSecond.toFixed(2)} Gbit/s` : (row.note ?? "")}`);
      tcp.splice(1, 0, row);
    } else {
      tcp.splice(1, 0, {
        name: "Sigil fast path",
        result: null,
        baselineGbitPerSecond: null,
        note: "skipped (--no-fastpath)",
      });
    }
  }
  await sup.stop(backend);
  await sup.stop(iperfServer);

  let xds: XdsRow[] | null = null;
  let xdsNote: string | null = null;
  if (opts.xds) {
    log(`xDS: ${xdsClients.join(", ")} simulated sidecars`);
    try {
      xds = await runXds(sup, dir, xdsClients, quick ? 180 : 420);
      for (const r of xds)
        log(
          `xDS ${r.clients}: change → last ACK median ${r.convergeMedianMs} ms, heap/client ${r.heapPerClientKb} KB`,
        );
      const missing = xdsClients.filter((n) => !xds?.some((r) => r.clients === n));
      if (missing.length > 0)
        xdsNote = `not measured for ${missing.join(", ")} sidecars: the run exceeded its time budget`;
    } catch (err) {
      xdsNote = (err as Error).message;
      log(`xDS: ${xdsNote}`);
    }
  }

  const results: RunResults = {
    startedAt,
    // The sidecars' worker count and HTTP/2 engine come from the environment (sigil.ts): the
    // recorded command names them.
    command: `${sigilEnvironment()}npx tsx bench/compare/main.ts ${process.argv
      .slice(2)
      .map((a) => (a === "" || /\s/.test(a) ? `"${a}"` : a))
      .join(" ")}`.trim(),
    quick,
    rateRps: rate,
    durationSeconds,
    warmRateSeconds,
    sidecarNodeFlags,
    machine: { ...machine, loadAfter: loadavg() },
    paths: pathResults,
    tcp,
    xds,
    xdsNote,
    elapsedSeconds: (performance.now() - started) / 1000,
  };
  const report = await publishRun(results);
  log(quick ? `quick run: ${report} (BENCHMARKS.md left alone)` : `${report} updated`);
  log(`done in ${results.elapsedSeconds.toFixed(0)} s`);
} finally {
  await sup.stopAll();
  sup.dispose();
  await rm(dir, { recursive: true, force: true });
  await rm(bundleDirFor(dir), { recursive: true, force: true });
}

/** The SIGIL_* settings of this run that change what the Sigil pair is, as a command prefix. */
function sigilEnvironment(): string {
  return ["SIGIL_SIDECAR_WORKERS", "SIGIL_HTTP2_ENGINE"]
    .filter((name) => process.env[name])
    .map((name) => `${name}=${process.env[name]} `)
    .join("");
}
