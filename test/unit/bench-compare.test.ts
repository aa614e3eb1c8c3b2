import { describe, expect, it } from "vitest";
import { join } from "node:path";
import { check, resolveConfig } from "prettier";
import { parseFastPathOutput } from "../../bench/compare/fastpath.ts";
import { formatForRepo } from "../../bench/compare/format.ts";
import { haproxyServerConfig } from "../../bench/compare/haproxy.ts";
import { LatencyRecorder } from "../../bench/compare/latency.ts";
import { loopWindow, parseLoopScrape } from "../../bench/compare/loop-stats.ts";
import type { SidecarLoopWindow } from "../../bench/compare/loop-stats.ts";
import { parseXdsOutput } from "../../bench/compare/measure.ts";
import { nginxServerConfig } from "../../bench/compare/nginx.ts";
import { parseStat, parseVmHwm } from "../../bench/compare/procstat.ts";
import { BEGIN, END, renderResults, replaceResultsSection } from "../../bench/compare/report.ts";
import type { LoadMeasurement, RunResults } from "../../bench/compare/results.ts";
import { nines } from "../../bench/compare/svg.ts";

const pki = {
  caCert: "/x/ca.crt",
  server: { cert: "/x/s.crt", key: "/x/s.key", pem: "/x/s.pem" },
  client: { cert: "/x/c.crt", key: "/x/c.key", pem: "/x/c.pem" },
};
const ports = { clientH1: 1, clientGrpc: 2, clientTcp: 3, serverH1: 4, serverGrpc: 5, serverTcp: 6 };
const backend = { h1: 7, grpc: 8, iperf: 9 };

describe("bench/compare latency recorder", () => {
  it("reads nearest-rank percentiles from every sample", () => {
    const rec = new LatencyRecorder();
    for (let i = 100; i >= 1; i--) rec.record(i);
    expect(rec.percentile(50)).toBe(50);
    expect(rec.percentile(99)).toBe(99);
    expect(rec.percentile(100)).toBe(100);
    expect(rec.percentile(0)).toBe(1);
    expect(rec.mean()).toBe(50.5);
  });

  it("grows past its initial capacity and reports NaN when empty", () => {
    expect(new LatencyRecorder().percentile(50)).toBeNaN();
    const rec = new LatencyRecorder();
    for (let i = 0; i < 200_000; i++) rec.record(i);
    expect(rec.count).toBe(200_000);
    expect(rec.percentile(100)).toBe(199_999);
  });

  it("keeps spectrum points only where enough samples exist to support them", () => {
    const rec = new LatencyRecorder();
    for (let i = 0; i < 1000; i++) rec.record(i);
    const ps = rec.spectrum().map((p) => p.p);
    expect(Math.max(...ps)).toBeLessThanOrEqual(99.9);
    expect(ps[0]).toBe(0);
  });
});

describe("bench/compare /proc parsing", () => {
  it("reads ppid and CPU ticks after a command name with spaces and parentheses", () => {
    const line =
      "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 100 0 0 0 250 75 0 0 20 0 1 0 1000 1 1";
    expect(parseStat(line)).toEqual({ pid: 4242, ppid: 4241, ticks: 325 });
  });

  it("rejects a line it cannot read", () => {
    expect(() => parseStat("garbage")).toThrow(/unparseable/);
  });

  it("reads VmHWM in bytes and 0 when absent", () => {
    expect(parseVmHwm("Name:\tnode\nVmHWM:\t   51200 kB\nVmRSS:\t 40000 kB\n")).toBe(51200 * 1024);
    expect(parseVmHwm("Name:\tkthreadd\n")).toBe(0);
  });
});

describe("bench/compare output parsing of the benches it calls", () => {
  it("parses bench/xds/run.ts summary lines", () => {
    const out =
      "sotw clients=1000: initial sync 6651 ms, change→last ACK median 624 ms (max 1009), heap/client 8.8 KB, republish 294 ms\nnoise\n";
    expect(parseXdsOutput(out)).toEqual([
      {
        protocol: "sotw",
        clients: 1000,
        syncMs: 6651,
        convergeMedianMs: 624,
        convergeMaxMs: 1009,
        heapPerClientKb: 8.8,
      },
    ]);
  });

  it("parses bench/fastpath/run.ts table rows and refuses output without them", () => {
    const md = "| none (kernel only) | 30.10 | 1.000 | x |\n| Sigil fast path | 29.80 | 0.990 | x |\n";
    expect(parseFastPathOutput(md)).toEqual({ none: 30.1, fast: 29.8 });
    expect(parseFastPathOutput("| none (kernel only) | 30.10 |")).toBeNull();
  });
});

describe("bench/compare sidecar loop metrics", () => {
  const scrape = (gcMinor: number, gcMajor: number, count: number) => `# HELP x
sigil_sidecar_requests_total{direction="ingress",protocol="http",verdict="allow"} 5
sigil_bench_event_loop_delay_seconds{stat="p50"} 0.00105
sigil_bench_event_loop_delay_seconds{stat="p99"} 0.0042
sigil_bench_event_loop_delay_seconds{stat="max"} 0.031
sigil_bench_gc_pause_seconds_total{kind="minor"} ${gcMinor}
sigil_bench_gc_pause_seconds_total{kind="major"} ${gcMajor}
sigil_bench_gc_total{kind="minor"} ${count}
sigil_bench_gc_total{kind="major"} 1
`;

  it("reads delay in ms and turns cumulative GC counters into the window's share", () => {
    const start = parseLoopScrape(scrape(0.5, 0.1, 100));
    const end = parseLoopScrape(scrape(0.75, 0.13, 160));
    expect(end.delayP99Ms).toBeCloseTo(4.2);
    const w = loopWindow("server", start, end);
    expect(w).toMatchObject({ side: "server", delayP50Ms: 1.05, delayMaxMs: 31, gcCount: 60 });
    expect(w.gcPauseMs).toBeCloseTo(280);
    expect(w.gcMajorPauseMs).toBeCloseTo(30);
  });

  it("reads GC counters alone from a sidecar that does not measure event-loop delay", () => {
    const withoutDelay = scrape(0.5, 0.1, 100)
      .split("\n")
      .filter((line) => !line.startsWith("sigil_bench_event_loop_delay_seconds"))
      .join("\n");
    const start = parseLoopScrape(withoutDelay);
    expect(start).toMatchObject({ delayP50Ms: null, delayP99Ms: null, delayMaxMs: null });
    const w = loopWindow(
      "client",
      start,
      parseLoopScrape(scrape(0.75, 0.13, 160).replace(/^sigil_bench_event.*$/gm, "")),
    );
    expect(w).toMatchObject({ delayP99Ms: null, gcCount: 60 });
  });

  it("refuses metrics without the monitor's GC counters", () => {
    expect(() => parseLoopScrape('sigil_sidecar_active_connections{direction="egress"} 0\n')).toThrow(
      /sigil_bench_gc_total/,
    );
  });
});

describe("bench/compare rendered results", () => {
  const load = (protocol: "h1" | "grpc", mode: "rate" | "max", p50Ms: number): LoadMeasurement["load"] => ({
    protocol,
    mode,
    completed: 3000,
    errors: 0,
    errorSamples: [],
    elapsedSeconds: 3,
    rps: 1000,
    p50Us: p50Ms * 1000,
    p90Us: p50Ms * 2000,
    p99Us: p50Ms * 4000,
    p999Us: p50Ms * 5000,
    maxUs: p50Ms * 6000,
    meanUs: p50Ms * 1000,
    spectrum: [],
  });
  const window = (side: "client" | "server") => ({
    side,
    delayP50Ms: 1.05,
    delayP99Ms: 3.5,
    delayMaxMs: 12.25,
    gcPauseMs: 42,
    gcMajorPauseMs: 7,
    gcCount: 61,
  });
  const measured = (protocol: "h1" | "grpc", mode: "rate" | "max", sigil: boolean): LoadMeasurement => ({
    load: load(protocol, mode, sigil ? 2 : 1),
    proxies: sigil
      ? [
          { side: "client", cpuSeconds: 1 },
          { side: "server", cpuSeconds: 1 },
        ]
      : [],
    loop: sigil ? [window("client"), window("server")] : [],
  });
  const results = (sigil: boolean) => ({
    rate: measured("h1", "rate", sigil),
    max: measured("h1", "max", sigil),
  });
  const run: RunResults = {
    startedAt: "2026-11-22T23:00:00.000Z",
    command: "npx tsx bench/compare/main.ts",
    quick: false,
    rateRps: 1000,
    durationSeconds: 10,
    warmRateSeconds: 5,
    sidecarNodeFlags: ["--max-semi-space-size=1"],
    machine: {
      nproc: 2,
      cpuModel: "cpu",
      kernel: "k",
      node: "v20",
      nginx: "nginx",
      haproxy: "haproxy",
      iperf3: "iperf3",
      openssl: "openssl",
      loadBefore: [1, 1, 1],
      loadAfter: [1, 1, 1],
    },
    paths: [
      {
        path: "direct",
        failure: null,
        h1: results(false),
        grpc: results(false),
        peakRssBytes: [],
        peakRssHttpBytes: [],
        memory: [],
      },
      {
        path: "sigil",
        failure: null,
        h1: results(true),
        grpc: results(true),
        peakRssHttpBytes: [
          { side: "client", bytes: 70 * 2 ** 20 },
          { side: "server", bytes: 65 * 2 ** 20 },
        ],
        peakRssBytes: [
          { side: "client", bytes: 90 * 2 ** 20 },
          { side: "server", bytes: 80 * 2 ** 20 },
        ],
        memory: [
          {
            side: "client",
            idle: { rssBytes: 60 * 2 ** 20, pssBytes: 40 * 2 ** 20, ussBytes: 30 * 2 ** 20 },
            underLoad: { rssBytes: 70 * 2 ** 20, pssBytes: 50 * 2 ** 20, ussBytes: 45 * 2 ** 20 },
          },
          {
            side: "server",
            idle: { rssBytes: 61 * 2 ** 20, pssBytes: 41 * 2 ** 20, ussBytes: 31 * 2 ** 20 },
            underLoad: null,
          },
        ],
      },
    ],
    tcp: [
      {
        name: "direct",
        result: { gbitPerSecond: 10, proxyCpuSeconds: 0, seconds: 5 },
        baselineGbitPerSecond: null,
        note: null,
      },
    ],
    xds: null,
    xdsNote: null,
    elapsedSeconds: 300,
  };

  it("states the warm-up and the sidecar flags, and judges RSS on the HTTP runs", () => {
    const text = renderResults(run, "plot.svg");
    expect(text).toContain("after a discarded 5 s run at that rate");
    expect(text).toContain("`node --max-semi-space-size=1 sigil-sidecar.mjs`");
    expect(text).toMatch(/peak RSS per sidecar < 60 MB \(HTTP\/1\.1 and gRPC runs\) \| 70\.00 MB/);
    expect(text).toContain("iperf3 included: Sigil sidecar pair client 90.0, server 80.0.");
  });

  it("tabulates each proxy's RSS, PSS and USS idle and under the fixed rate", () => {
    const text = renderResults(run, "plot.svg");
    expect(text).toContain("| path | side | idle RSS MB | idle PSS MB | idle USS MB | RSS at 1000 rps MB |");
    expect(text).toContain("| Sigil sidecar pair | client | 60.0 | 40.0 | 30.0 | 70.0 | 50.0 | 45.0 |");
    expect(text).toContain("| Sigil sidecar pair | server | 61.0 | 41.0 | 31.0 | – | – | – |");
  });

  it("gives no verdict or ratio against a peer whose p99 fell below the direct path's", () => {
    const quick = (protocol: "h1" | "grpc", mode: "rate" | "max"): LoadMeasurement => ({
      ...measured(protocol, mode, true),
      load: load(protocol, mode, 0.5),
    });
    const nginx = {
      ...(run.paths[1] as RunResults["paths"][number]),
      path: "nginx" as const,
      h1: { rate: quick("h1", "rate"), max: quick("h1", "max") },
      grpc: { rate: quick("grpc", "rate"), max: quick("grpc", "max") },
    };
    const text = renderResults({ ...run, paths: [...run.paths, nginx] }, "plot.svg");
    expect(text).toMatch(
      /HTTP\/1\.1: p99 added latency at 1000 rps ≤ nginx pair's \| 4\.00 ms \(target -2\.00\) \| no verdict/,
    );
    expect(text).toContain("| HTTP/1.1: added p99 latency at fixed rate (lower is better) | – |");
    expect(text).toContain("| HTTP/1.1: CPU per request at max (lower is better) | 1.00× |");
  });

  it("tabulates each sidecar's loop delay and GC pauses per measured window", () => {
    const text = renderResults(run, "plot.svg");
    expect(text).toContain("| fixed 1000 rps | client | 1.05 | 3.50 | 12.3 | 42 | 7 | 61 |");
    expect(text).toContain("| max throughput | server | 1.05 | 3.50 | 12.3 | 42 | 7 | 61 |");
  });

  it("leaves the loop delay blank for sidecars that did not measure it, and keeps their GC pauses", () => {
    const noDelay = (w: SidecarLoopWindow): SidecarLoopWindow => ({
      ...w,
      delayP50Ms: null,
      delayP99Ms: null,
      delayMaxMs: null,
    });
    const paths = run.paths.map((p) => ({
      ...p,
      h1: {
        rate: p.h1.rate && { ...p.h1.rate, loop: p.h1.rate.loop.map(noDelay) },
        max: p.h1.max && { ...p.h1.max, loop: p.h1.max.loop.map(noDelay) },
      },
    }));
    const text = renderResults({ ...run, paths }, "plot.svg");
    expect(text).toContain("| fixed 1000 rps | client | – | – | – | 42 | 7 | 61 |");
  });
});

describe("bench/compare report section", () => {
  it("replaces only what lies between the markers", () => {
    const doc = `# Title\n\nprose\n\n${BEGIN}\nold\n${END}\n\ntrailer\n`;
    const out = replaceResultsSection(doc, `${BEGIN}\nnew\n${END}\n`);
    expect(out).toContain("prose");
    expect(out).toContain("trailer");
    expect(out).toContain("new");
    expect(out).not.toContain("old");
  });

  it("appends the section when the markers are missing", () => {
    expect(replaceResultsSection("# Title\n", "S\n")).toBe("# Title\n\nS\n");
  });

  it("formats the rewritten document with the repository's prettier configuration", async () => {
    const file = join(import.meta.dirname, "..", "..", "BENCHMARKS.md");
    const section = `${BEGIN}\n\n| a | bb |\n| --- | --- |\n| 1 | 2 |\n\n${END}\n`;
    const doc = replaceResultsSection(`# Title\n\n${BEGIN}\nold\n${END}\n`, section);
    expect(await check(doc, { filepath: file })).toBe(false);
    const formatted = await formatForRepo(file, doc);
    expect(formatted).toContain("| a   | bb  |");
    expect(await check(formatted, { ...(await resolveConfig(file)), filepath: file })).toBe(true);
  });

  it("spaces p50, p90, p99 one unit apart on the plot's x axis", () => {
    expect(nines(0)).toBe(0);
    expect(nines(90)).toBeCloseTo(1);
    expect(nines(99)).toBeCloseTo(2);
  });
});

describe("bench/compare peer configurations", () => {
  it("makes the nginx server side require a client certificate and check identity, method and path", () => {
    const conf = nginxServerConfig("/d", pki, ports, backend);
    expect(conf).toContain("ssl_verify_client on;");
    expect(conf).toContain('if ($ssl_client_s_dn != "CN=client.bench") { return 403; }');
    expect(conf).toContain("location = /echo");
    expect(conf).toContain("location / { return 403; }");
  });

  it("makes the HAProxy server side require a verified client certificate on every frontend", () => {
    const conf = haproxyServerConfig(pki, ports, backend);
    expect(conf.match(/verify required/g)).toHaveLength(3);
    expect(conf).toContain("tcp-request content reject unless { ssl_c_s_dn(CN) -m str client.bench }");
    expect(conf).toContain("{ path /bench.Echo/Unary }");
  });
});
