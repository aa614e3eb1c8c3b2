import { getHeapSpaceStatistics } from "node:v8";
import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import { BucketCounts, LabelSetTable, exposeHistogram } from "./label-sets.ts";
import { DEFAULT_MAX_LABEL_SETS, DURATION_BUCKETS, MeshMetrics } from "./mesh-metrics.ts";

type Direction = "ingress" | "egress";
type Protocol = "tcp" | "http" | "grpc";
type Verdict = "allow" | "deny";

/** Decisions counted since the last scrape, per label combination. */
interface PendingDecisions {
  readonly direction: Direction;
  readonly protocol: Protocol;
  allowed: number;
  denied: number;
  readonly latency: BucketCounts;
}

const PROTOCOL_SLOTS: Readonly<Record<Protocol, number>> = { tcp: 0, http: 1, grpc: 2 };

/** A (direction, protocol) combination's place in the pending list: no key is built per decision. */
function decisionSlot(direction: Direction, protocol: Protocol): number {
  return (direction === "ingress" ? 0 : 3) + PROTOCOL_SLOTS[protocol];
}

interface PendingDenials {
  readonly direction: Direction;
  readonly reason: string;
  count: number;
}

const MISNAMED_DEFAULTS = [
  "nodejs_active_handles_total",
  "nodejs_active_requests_total",
  "nodejs_active_resources_total",
];

export interface SidecarMetricsOptions {
  /** Label sets per group of mesh metric families before new ones fold into overflow series. */
  readonly maxLabelSets?: number;
}

/**
 * The sidecar's Prometheus metrics, on a registry of its own (several sidecars can share a process):
 * the mesh's standard request and connection families (`mesh`), the sidecar's own, and the
 * process's and Node's defaults (`process_*`, `nodejs_*`).
 */
export class SidecarMetrics {
  readonly registry = new Registry();
  readonly mesh: MeshMetrics;

  constructor(options: SidecarMetricsOptions = {}) {
    this.mesh = new MeshMetrics(this.registry, options.maxLabelSets ?? DEFAULT_MAX_LABEL_SETS);
    exposeHistogram(
      this.registry,
      "sigil_sidecar_request_duration_seconds",
      "Time from request (or connection) start to the end of the response (or connection)",
      DURATION_BUCKETS,
      this.latency,
      (v) => v,
    );
    collectDefaultMetrics({ register: this.registry });
    // Gauges that prom-client names like counters (promtool refuses them); the per-type gauges of
    // the same name without `_total` stay, and their sum is the same number.
    for (const name of MISNAMED_DEFAULTS) this.registry.removeSingleMetric(name);
  }

  /**
   * Decisions and denials are counted in plain numbers and added to the counters when they are
   * read (a scrape): prom-client validates and hashes the labels on every increment, which was
   * most of what recording one decision cost.
   */
  private readonly pendingDecisions: (PendingDecisions | undefined)[] = [];
  private readonly pendingDenials = new Map<string, PendingDenials>();
  readonly requests = new Counter({
    name: "sigil_sidecar_requests_total",
    help: "Authorization decisions (HTTP requests and non-HTTP connections)",
    labelNames: ["direction", "protocol", "verdict"] as const,
    registers: [this.registry],
    collect: () => {
      for (const p of this.pendingDecisions) {
        if (p === undefined) continue;
        const { direction, protocol } = p;
        if (p.allowed > 0) this.requests.inc({ direction, protocol, verdict: "allow" }, p.allowed);
        if (p.denied > 0) this.requests.inc({ direction, protocol, verdict: "deny" }, p.denied);
        p.allowed = 0;
        p.denied = 0;
      }
    },
  });
  readonly denials = new Counter({
    name: "sigil_sidecar_denials_total",
    help: "Traffic refused, by reason",
    labelNames: ["direction", "reason"] as const,
    registers: [this.registry],
    collect: () => {
      for (const p of this.pendingDenials.values()) {
        if (p.count > 0) this.denials.inc({ direction: p.direction, reason: p.reason }, p.count);
        p.count = 0;
      }
    },
  });
  readonly tlsHandshakes = new Counter({
    name: "sigil_sidecar_tls_handshakes_total",
    help: "Mesh mTLS handshakes by side and result (ok, error, rejected)",
    labelNames: ["side", "result"] as const,
    registers: [this.registry],
  });
  /** Request (or connection) durations, kept in plain numbers like the counts and read by a scrape. */
  private readonly latency = new LabelSetTable<BucketCounts>(6, [], () => new BucketCounts(DURATION_BUCKETS));
  readonly activeConnections = new Gauge({
    name: "sigil_sidecar_active_connections",
    help: "Open downstream connections",
    labelNames: ["direction"] as const,
    registers: [this.registry],
  });
  /**
   * Where the process's memory is, read only when scraped: resident set, V8 heap (used and
   * reserved), memory outside the heap that JavaScript objects hold (external, of which
   * array_buffers is Buffers and TLS/socket data). RSS far above heap_total + external is
   * native (OpenSSL, libuv) or the binary itself.
   */
  readonly memory = new Gauge({
    name: "sigil_sidecar_memory_bytes",
    help: "Process memory by kind (rss, heap_total, heap_used, external, array_buffers)",
    labelNames: ["kind"] as const,
    registers: [this.registry],
    collect() {
      const m = process.memoryUsage();
      this.set({ kind: "rss" }, m.rss);
      this.set({ kind: "heap_total" }, m.heapTotal);
      this.set({ kind: "heap_used" }, m.heapUsed);
      this.set({ kind: "external" }, m.external);
      this.set({ kind: "array_buffers" }, m.arrayBuffers);
    },
  });
  /** The V8 heap per space (new_space grows under allocation pressure; old_space holds what lives). */
  readonly heapSpaces = new Gauge({
    name: "sigil_sidecar_heap_space_bytes",
    help: "V8 heap space size and use, by space",
    labelNames: ["space", "kind"] as const,
    registers: [this.registry],
    collect() {
      for (const s of getHeapSpaceStatistics()) {
        this.set({ space: s.space_name, kind: "size" }, s.space_size);
        this.set({ space: s.space_name, kind: "used" }, s.space_used_size);
      }
    },
  });

  /** Exports how many upstream routes hold pooled connections, read at each scrape. */
  watchUpstreamRoutes(read: () => number): void {
    new Gauge({
      name: "sigil_sidecar_upstream_routes",
      help: "Upstream routes with pooled connections (HTTP/1.1 pools and HTTP/2 sessions)",
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }

  /** Exports the free memory returned to the system after connection bursts (proxy/memory-return.ts). */
  watchMemoryReturns(stats: { readonly returns: number; readonly milliseconds: number }): void {
    new Counter({
      name: "sigil_sidecar_memory_returns_total",
      help: "Times the C heap's free memory was returned to the system after a burst of connections",
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(stats.returns);
      },
    });
    new Counter({
      name: "sigil_sidecar_memory_return_seconds_total",
      help: "Time the event loop spent returning free memory to the system",
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(stats.milliseconds / 1000);
      },
    });
  }

  /** Counts one decision and observes its duration; `denialReason` set when it was denied. */
  recordDecision(
    direction: Direction,
    protocol: Protocol,
    verdict: Verdict,
    seconds: number,
    denialReason: string | null,
  ): void {
    const slot = decisionSlot(direction, protocol);
    let p = this.pendingDecisions[slot];
    if (p === undefined) {
      // The histogram's labelled series, resolved once per combination.
      const latency = this.latency.values({ direction, protocol });
      p = { direction, protocol, allowed: 0, denied: 0, latency };
      this.pendingDecisions[slot] = p;
    }
    if (verdict === "deny") p.denied++;
    else p.allowed++;
    p.latency.observe(seconds);
    if (denialReason !== null) this.denied(direction, denialReason);
  }

  private denied(direction: Direction, reason: string): void {
    const key = `${direction} ${reason}`;
    const p = this.pendingDenials.get(key);
    if (p !== undefined) p.count++;
    else this.pendingDenials.set(key, { direction, reason, count: 1 });
  }
}
