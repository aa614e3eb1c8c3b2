/**
 * L4 fast-path benchmark: the same TCP flows between two network namespaces (client app=web,
 * server app=db, veth through a bridge) measured three ways:
 *
 *   none      no enforcement at all (the kernel alone);
 *   fastpath  both Sigil fast-path enforcers: identity token in SYN/SYN-ACK, then kernel only;
 *   proxy     a userspace TCP proxy in the server namespace (HAProxy, mode tcp) — the cost any
 *             byte-by-byte proxy path adds, for contrast.
 *
 * none and proxy run in one pair of namespaces, fastpath in another (rules and enforcers stay put),
 * and the iperf3 runs alternate between the three, so drift in the machine's load or clock speed
 * falls on every path alike instead of on whichever ran last.
 *
 * Figures: iperf3 throughput (median of runs), connect latency p50/p90/p99 (warm: after one
 * connection has filled the caches), and new connections per second. Writes bench/fastpath/RESULTS.md
 * and results.json.
 *
 *   npx tsx bench/fastpath/run.ts [--iperf-seconds 5] [--runs 3] [--connects 2000] [--rate-seconds 5]
 */
import { readFile, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { cpus, loadavg, release } from "node:os";
import { Command } from "commander";
import { NetnsLab, waitFor } from "../../test/support/netns.ts";
import type { LabHost } from "../../test/support/netns.ts";
import type { EnforcerProcess } from "../../test/e2e/fastpath-support/enforcer-process.ts";
import {
  allowManyConnections,
  startAppServers,
  startEnforcerPair,
  webToDbPolicy,
} from "../../test/e2e/fastpath-support/lab.ts";
import { REPO_ROOT } from "../../test/e2e/fastpath-support/process-output.ts";
import { formatForRepo } from "../compare/format.ts";
import { TestPki } from "../../test/e2e/fastpath-support/pki.ts";
import type { PacketKind } from "../../sidecar/fastpath/enforcer.ts";

const opts = new Command()
  .option("--iperf-seconds <n>", "length of each iperf3 run", "5")
  .option("--runs <n>", "iperf3 runs per scenario (median reported)", "3")
  .option("--connects <n>", "sequential connects for the latency figure", "2000")
  .option("--rate-seconds <n>", "length of the connections-per-second run", "5")
  .option("--parallel <n>", "concurrent connectors in the connections-per-second run", "16")
  .option("--no-write", "print results without writing RESULTS.md / results.json")
  .parse()
  .opts<{
    iperfSeconds: string;
    runs: string;
    connects: string;
    rateSeconds: string;
    parallel: string;
    write: boolean;
  }>();

const KEPT_MARKER = "<!-- written by hand below this line; run.ts keeps it -->";
const IPERF = 5201;
const ECHO = 7000;
const HTTP = 8080;
const PROXY_IPERF = 15201;
const PROXY_ECHO = 17000;

const HAPROXY = `
global
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen iperf
  bind :${PROXY_IPERF}
  server app 127.0.0.1:${IPERF}
listen echo
  bind :${PROXY_ECHO}
  server app 127.0.0.1:${ECHO}
`;

interface Scenario {
  name: "none" | "fastpath" | "proxy";
  iperfGbps: number[];
  latency: { coldUs: number; p50Us: number; p90Us: number; p99Us: number; meanUs: number };
  rate: { perSecond: number; failed: number };
  queuePackets?: { client: number; server: number };
  /**
   * Per handshake packet kind: packets the native warm table decided (count, mean wall µs deciding
   * and inside the verdict call) and packets handed to JS (count, mean wall µs deciding, thread CPU
   * µs deciding, wall µs inside the verdict call).
   */
  handlingUs?: Record<
    string,
    {
      native: { count: number; decide: number; verdict: number };
      js: { count: number; decide: number; decideCpu: number; verdict: number };
    }
  >;
}

const log = (msg: string): void => console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** One iperf3 run; Gbit/s received. */
async function iperf(client: LabHost, host: string, port: number): Promise<number> {
  const r = await client.ns.exec(["iperf3", "-c", host, "-p", String(port), "-t", opts.iperfSeconds, "-J"], {
    timeoutMs: (Number(opts.iperfSeconds) + 20) * 1000,
  });
  const report = JSON.parse(r.stdout || "{}") as {
    error?: string;
    end?: { sum_received: { bits_per_second: number } };
  };
  if (r.code !== 0 || !report.end) {
    throw new Error(`iperf3 to ${host}:${port} failed (${r.code}): ${report.error ?? r.stderr.trim()}`);
  }
  return report.end.sum_received.bits_per_second / 1e9;
}

async function probe(client: LabHost, args: string[]): Promise<Record<string, number>> {
  const text = await client.ns.execOk(
    [process.execPath, "--import", "tsx", `${REPO_ROOT}bench/fastpath/connect-probe.ts`, ...args],
    { timeoutMs: 300_000 },
  );
  return JSON.parse(text.trim().split("\n").at(-1) as string) as Record<string, number>;
}

interface Path {
  readonly name: Scenario["name"];
  readonly client: LabHost;
  readonly host: string;
  readonly iperfPort: number;
  readonly echoPort: number;
}

/** Connect latency and connections per second on one path (its iperf3 figures are measured apart). */
async function measure(path: Path, iperfGbps: number[]): Promise<Scenario> {
  const { name, client, host, echoPort } = path;
  log(`${name}: ${opts.connects} sequential connects`);
  const latency = (await probe(client, [
    "latency",
    host,
    String(echoPort),
    opts.connects,
  ])) as unknown as Scenario["latency"];
  log(`${name}: connections per second, ${opts.parallel} in parallel for ${opts.rateSeconds}s`);
  const rate = (await probe(client, [
    "rate",
    host,
    String(echoPort),
    opts.rateSeconds,
    opts.parallel,
  ])) as unknown as Scenario["rate"];
  return { name, iperfGbps, latency, rate };
}

/** Client and server namespaces with the echo, HTTP and iperf3 servers running. */
async function prepare(lab: NetnsLab): Promise<{ client: LabHost; server: LabHost }> {
  const client = lab.host("client");
  const server = lab.host("server");
  await allowManyConnections([client, server]);
  await startAppServers(server, HTTP, ECHO);
  server.ns.spawn(["iperf3", "-s", "-p", String(IPERF)]);
  await waitFor("iperf3 server", async () => (await server.ns.execOk(["ss", "-Htln"])).includes(`:${IPERF}`));
  return { client, server };
}

const loadBefore = loadavg();
const plainLab = await NetnsLab.create(["client", "server"], { subnet: 1 });
const lab = await NetnsLab.create(["client", "server"]);
const pki = await TestPki.create();
const results: Scenario[] = [];
try {
  const plain = await prepare(plainLab);
  const { client, server } = await prepare(lab);
  const cfg = await pki.file("haproxy.cfg", HAPROXY);
  plain.server.ns.spawn(["haproxy", "-db", "-f", cfg]);
  await waitFor("haproxy", async () =>
    (await plain.server.ns.execOk(["ss", "-Htln"])).includes(`:${PROXY_ECHO}`),
  );
  const enforcers = await startEnforcerPair(pki, server, client, {
    policyFile: await pki.file("policy.yaml", webToDbPolicy([IPERF, ECHO])),
    ports: [IPERF, ECHO],
  });
  const paths: Path[] = [
    { name: "none", client: plain.client, host: plain.server.ipv4, iperfPort: IPERF, echoPort: ECHO },
    { name: "fastpath", client, host: server.ipv4, iperfPort: IPERF, echoPort: ECHO },
    {
      name: "proxy",
      client: plain.client,
      host: plain.server.ipv4,
      iperfPort: PROXY_IPERF,
      echoPort: PROXY_ECHO,
    },
  ];
  const gbps = new Map<Scenario["name"], number[]>(paths.map((p) => [p.name, []]));
  for (let run = 1; run <= Number(opts.runs); run++) {
    log(
      `iperf3 run ${run} of ${opts.runs}, ${opts.iperfSeconds}s each: ${paths.map((p) => p.name).join(", ")}`,
    );
    for (const p of paths) gbps.get(p.name)?.push(await iperf(p.client, p.host, p.iperfPort));
  }
  for (const p of paths.filter((x) => x.name !== "fastpath")) {
    results.push(await measure(p, gbps.get(p.name) ?? []));
  }
  const fast = await measure(paths[1] as Path, gbps.get("fastpath") ?? []);
  const queued = async (e: EnforcerProcess): Promise<number> =>
    (await e.stats()).queues.reduce((n, q) => n + q.received, 0);
  fast.queuePackets = { client: await queued(enforcers.client), server: await queued(enforcers.server) };
  fast.handlingUs = {};
  const mean = (x: number, n: number): number => Math.round((10 * x) / Math.max(n, 1)) / 10;
  for (const e of [enforcers.client, enforcers.server]) {
    const { counters } = await e.stats();
    for (const kind of Object.keys(counters.timing) as PacketKind[]) {
      const t = counters.timing[kind];
      const w = counters.warm[kind];
      if (t.count === 0 && w.handled === 0) continue;
      fast.handlingUs[kind] = {
        native: {
          count: w.handled,
          decide: mean(w.decideUs, w.handled),
          verdict: mean(w.verdictUs, w.handled),
        },
        js: {
          count: t.count,
          decide: mean(t.decideUs, t.count),
          decideCpu: mean(t.decideCpuUs, t.cpuSamples),
          verdict: mean(t.verdictUs, t.count),
        },
      };
    }
  }
  results.push(fast);
} finally {
  await lab.destroy();
  await plainLab.destroy();
  await pki.destroy();
}

const loadAfter = loadavg();
log("enforcer CPU per handshake (in-process)");
const cpuRun = await promisify(execFile)(
  process.execPath,
  ["--import", "tsx", `${REPO_ROOT}bench/fastpath/handshake-cpu.ts`, "--count", opts.connects],
  { cwd: REPO_ROOT, timeout: 300_000 },
);
const handshakeCpu = JSON.parse(cpuRun.stdout.trim().split("\n").at(-1) as string) as {
  cold: { cpuUs: number };
  warm: { cpuUs: number };
};
const by = (n: Scenario["name"]): Scenario => results.find((r) => r.name === n) as Scenario;
const none = by("none");
const fast = by("fastpath");
const proxy = by("proxy");
const gbps = (s: Scenario): string => median(s.iperfGbps).toFixed(2);
const ms = (us: number): string => (us / 1000).toFixed(3);
const command = `npx tsx bench/fastpath/run.ts --iperf-seconds ${opts.iperfSeconds} --runs ${opts.runs} --connects ${opts.connects} --rate-seconds ${opts.rateSeconds} --parallel ${opts.parallel}`;
const row = (s: Scenario, label: string): string =>
  `| ${label} | ${gbps(s)} | ${(median(s.iperfGbps) / median(none.iperfGbps)).toFixed(3)} | ${ms(s.latency.p50Us)} | ${ms(s.latency.p99Us)} | ${ms(s.latency.p50Us - none.latency.p50Us)} | ${ms(s.latency.p99Us - none.latency.p99Us)} | ${ms(s.latency.coldUs)} | ${Math.round(s.rate.perSecond)} |`;
const md = `# L4 fast path — results

Produced by:

\`\`\`
${command}
\`\`\`

Machine: ${cpus().length} × ${cpus()[0]?.model ?? "CPU"}, Linux ${release()}, Node ${process.version}; ${new Date().toISOString().slice(0, 10)}.
Two network namespaces on a veth bridge (198.18.0.0/24), client \`app=web\`, server \`app=db\`, policy
allowing web → db on the measured ports; none and the proxy in a second pair of namespaces without
rules. iperf3: ${opts.runs} runs of ${opts.iperfSeconds} s per path, the paths taking turns run by run; median.
Connect latency: ${opts.connects} sequential connects after one cold connect, each closed with a RST.
Connections/s: ${opts.parallel} concurrent connectors for ${opts.rateSeconds} s.

| path | iperf3 Gbit/s | × none | connect p50 ms | connect p99 ms | added p50 ms | added p99 ms | cold connect ms | connections/s |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
${row(none, "none (kernel only)")}
${row(fast, "Sigil fast path")}
${row(proxy, "userspace TCP proxy (HAProxy)")}

Fast-path packets that reached userspace during the whole fast-path scenario (all iperf3 runs, all
connects): client enforcer ${fast.queuePackets?.client}, server enforcer ${fast.queuePackets?.server} —
two per connection per side (SYN and SYN-ACK), none of the data.

Per handshake packet, in the enforcers' worker threads (NFQUEUE path). Decided by the native warm
table without entering JS — packets, mean µs deciding / inside the verdict call (wall clock; the
kernel carries the re-injected packet on before the call returns): ${Object.entries(fast.handlingUs ?? {})
  .map(([k, v]) => `${k} ${v.native.count}, ${v.native.decide} / ${v.native.verdict}`)
  .join("; ")}.
Handed to JS (first contact on each worker: signatures, chain verification, policy evaluation) —
packets, mean µs deciding / deciding, thread CPU (sampled) / inside the verdict call: ${Object.entries(
  fast.handlingUs ?? {},
)
  .map(([k, v]) => `${k} ${v.js.count}, ${v.js.decide} / ${v.js.decideCpu} / ${v.js.verdict}`)
  .join("; ")}.

Enforcer CPU per handshake, both sides together, measured in-process (\`bench/fastpath/handshake-cpu.ts
--count ${opts.connects}\`, independent of machine load): warm ${Math.round(handshakeCpu.warm.cpuUs)} µs (MAC proofs,
cached identities; the warm table is called from JS there, so this includes building the packets and
crossing into the addon and back, which the queue path does not pay), cold ${(handshakeCpu.cold.cpuUs / 1000).toFixed(1)} ms
(first contact, one sample: signatures, chain verification, first-use JIT).

Load average (1/5/15 min) when the run started: ${loadBefore.map((x) => x.toFixed(2)).join(" / ")}; when it
ended: ${loadAfter.map((x) => x.toFixed(2)).join(" / ")}. Wall-clock figures above include waiting for a CPU:
on a loaded 2-core machine the enforcers, the application and the load generator share the cores.

Targets (issue 6): throughput ≥ 0.98 × none → ${(median(fast.iperfGbps) / median(none.iperfGbps)).toFixed(3)}; added p50
connect latency < 0.3 ms warm → ${ms(fast.latency.p50Us - none.latency.p50Us)} ms.

The proxy row is a generic userspace TCP proxy in the server namespace, to show what a
byte-by-byte path costs on this machine; the Sigil L7 sidecar's own figures are in the comparison
benchmark (\`bench/compare\`).
`;
console.log(md);
if (opts.write) {
  const resultsFile = new URL("./RESULTS.md", import.meta.url);
  // Everything from the marker on is written by hand (the hot-path log) and survives a rerun.
  const previous = await readFile(resultsFile, "utf8").catch(() => "");
  const kept = previous.indexOf(KEPT_MARKER);
  // Formatted as `npm test` checks the tree, so a run leaves it clean.
  const write = async (file: URL, text: string): Promise<void> =>
    writeFile(file, await formatForRepo(fileURLToPath(file), text));
  await write(resultsFile, kept >= 0 ? `${md}\n${previous.slice(kept)}` : md);
  await write(
    new URL("./results.json", import.meta.url),
    JSON.stringify({ command, loadBefore, loadAfter, handshakeCpu, results }),
  );
}
