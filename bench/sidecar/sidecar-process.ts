/**
 * One sidecar in its own process, so its CPU time and RSS can be measured alone. The parent sends
 * `{ start: StartMessage }` over IPC and gets `{ started: { inbound, targets } }`; `{ usage: true }`
 * answers `{ usage: { cpuSeconds, rssBytes } }`; `{ memory: true }` collects garbage (the process must run
 * with --expose-gc) and answers `{ memory: MemoryReading }`; `{ snapshot: file }` writes a heap snapshot there and
 * answers `{ snapshot: file }`. With `workers > 1` the data path runs in that many
 * cluster workers (sidecar/worker-processes; this same file re-run as each worker), and usage sums the
 * primary and its workers.
 */
import "../../sidecar/proxy/heap-growth-first.ts";
import cluster from "node:cluster";
import { readFileSync, readdirSync } from "node:fs";
import { writeHeapSnapshot } from "node:v8";
import { proportionalMemory, statusField } from "../compare/procstat.ts";
import { parseBundle } from "../../core/svid/bundle.ts";
import { policySet } from "../../test/support/sidecar-mesh.ts";
import type { Sidecar } from "../../sidecar/sidecar.ts";
import { startSidecar } from "../../sidecar/sidecar.ts";
import { startSidecarWorkers } from "../../sidecar/worker-processes/primary.ts";
import type { SidecarWorkers } from "../../sidecar/worker-processes/primary.ts";
import { runSidecarWorker } from "../../sidecar/worker-processes/worker.ts";
import { CredentialHolder, PeerDirectoryHolder, PolicyHolder } from "../../sidecar/inputs/state.ts";
import pino from "pino";
import type { FlowRecord } from "../../core/flow.ts";

export interface StartMessage {
  readonly trustDomain: string;
  readonly privateKeyPem: string;
  readonly certChainPem: string;
  readonly bundleJson: string;
  readonly policyYaml: string;
  readonly targets: readonly { host: string; port: number; protocol: "http1" | "h2" }[];
  readonly peers: readonly {
    address: string;
    port: number;
    spiffeId: string;
    labels: Record<string, string>;
    sidecarPort: number;
  }[];
  /** Data-path worker processes (default 1: the data path runs in this process). */
  readonly workers?: number;
}

type Message = { start: StartMessage } | { usage: true } | { memory: true } | { snapshot: string };

const send = (m: unknown): void => {
  process.send?.(m);
};

let sidecar: Sidecar | undefined;
let workers: SidecarWorkers | undefined;

/** mTLS handshakes completed so far (both sides): a proxy that reuses its hop makes few. */
async function handshakes(): Promise<number> {
  if (workers) {
    // The workers' counts: the primary's admin sums them.
    const text = await (await fetch(`http://127.0.0.1:${workers.admin.port}/stats/prometheus`)).text();
    const ok = /^sigil_sidecar_tls_handshakes_total\{[^}]*result="ok"[^}]*\} (\d+)$/gm;
    return [...text.matchAll(ok)].reduce((sum, m) => sum + Number(m[1]), 0);
  }
  if (!sidecar) return 0;
  const metric = await sidecar.metrics.tlsHandshakes.get();
  return metric.values.filter((v) => v.labels.result === "ok").reduce((sum, v) => sum + v.value, 0);
}

/** CPU seconds and RSS (now, peak) of one process from /proc (kernel clock ticks are 1/100 s). */
function procUsage(pid: number): { cpuSeconds: number; rssBytes: number; peakRssBytes: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return {
    cpuSeconds: (Number(fields[11]) + Number(fields[12])) / 100,
    rssBytes: statusField(status, "VmRSS"),
    peakRssBytes: statusField(status, "VmHWM"),
  };
}

async function usage(): Promise<unknown> {
  const pids = [process.pid, ...(workers?.workers().flatMap((w) => (w.pid ? [w.pid] : [])) ?? [])];
  const total = { cpuSeconds: 0, rssBytes: 0, peakRssBytes: 0 };
  for (const pid of pids) {
    const u = procUsage(pid);
    total.cpuSeconds += u.cpuSeconds;
    total.rssBytes += u.rssBytes;
    total.peakRssBytes += u.peakRssBytes;
  }
  return { ...total, handshakes: await handshakes() };
}

export interface MemoryReading {
  readonly heapUsedBytes: number;
  readonly heapTotalBytes: number;
  readonly externalBytes: number;
  readonly rssBytes: number;
  /** Peak resident set so far (VmHWM). */
  readonly peakRssBytes: number;
  /** Proportional set size: shared pages (the node binary) divided among the processes mapping them. */
  readonly pssBytes: number;
  /** Unique set size: pages no other process maps (what stopping this process would free). */
  readonly ussBytes: number;
  readonly openFds: number;
  /** Refused flows so far, by reason. */
  readonly refusals: Readonly<Record<string, number>>;
}

const refusals: Record<string, number> = {};

/** Heap and RSS after two full collections, so what remains is what something still holds. */
function memory(): MemoryReading {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error("the sidecar process needs --expose-gc for a memory reading");
  gc();
  gc();
  const m = process.memoryUsage();
  return {
    heapUsedBytes: m.heapUsed,
    heapTotalBytes: m.heapTotal,
    externalBytes: m.external,
    rssBytes: m.rss,
    peakRssBytes: procUsage(process.pid).peakRssBytes,
    ...proportionalMemory("self"),
    openFds: readdirSync("/proc/self/fd").length,
    refusals,
  };
}

function serveParent(): void {
  // Exit normally on SIGTERM so that a --cpu-prof profile is written.
  process.once("SIGTERM", () => process.exit(0));
  process.on("message", (raw: Message) => {
    if ("memory" in raw) {
      send({ memory: memory() });
      return;
    }
    if ("snapshot" in raw) {
      // writeHeapSnapshot collects garbage first, so the snapshot holds only what is still reachable.
      send({ snapshot: writeHeapSnapshot(raw.snapshot) });
      return;
    }
    if ("usage" in raw) {
      void usage().then((u) => send({ usage: u }));
      return;
    }
    const m = raw.start;
    const peerEntries = m.peers.map(
      (p) =>
        [
          { address: p.address, port: p.port },
          {
            identity: { spiffeId: p.spiffeId, trustDomain: m.trustDomain, labels: p.labels },
            sidecar: { host: "127.0.0.1", port: p.sidecarPort },
            mtls: true,
          },
        ] as const,
    );
    const common = {
      config: {
        mode: "explicit",
        inbound: { host: "127.0.0.1", port: 0 },
        admin: { port: 0 },
        outbound: {
          targets: m.targets.map((t) => ({
            port: 0,
            destination: { host: t.host, port: t.port },
            protocol: t.protocol,
          })),
        },
      },
      credentials: new CredentialHolder({
        privateKeyPem: m.privateKeyPem,
        certChainPem: m.certChainPem,
        bundle: parseBundle(m.trustDomain, m.bundleJson),
      }),
      policy: new PolicyHolder({ trustDomain: m.trustDomain, policies: policySet(m.policyYaml) }),
      flows: {
        report: (r: FlowRecord) => {
          if (r.verdict !== "allow") refusals[r.reason] = (refusals[r.reason] ?? 0) + 1;
        },
      },
      logger: pino({ level: "warn" }, pino.destination(2)),
    } as const;
    const started: Promise<Sidecar> =
      (m.workers ?? 1) > 1
        ? startSidecarWorkers({ ...common, workers: m.workers ?? 1, peers: peerEntries }).then((w) => {
            workers = w;
            return w;
          })
        : (() => {
            const peers = new PeerDirectoryHolder();
            peers.replace(peerEntries);
            return startSidecar({ ...common, peers });
          })();
    started.then(
      (s) => {
        sidecar = s;
        send({ started: { inbound: s.inbound.port, targets: s.outboundTargets.map((t) => t.port) } });
      },
      (err: Error) => {
        process.stderr.write(`${err.stack}\n`);
        process.exit(1);
      },
    );
  });
}

if (cluster.isWorker) runSidecarWorker();
else serveParent();
