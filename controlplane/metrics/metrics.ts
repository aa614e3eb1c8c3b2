import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Router } from "../http/router.ts";

/**
 * Prometheus metrics of the control plane itself, on a registry of its own (never prom-client's
 * global one) so that several control planes can live in one process. Features increment the
 * instruments they own: the xDS server the sidecar gauge, pushes and push latency; the CA the
 * signings; the flow service the ingest counters.
 */
export interface ControlPlaneMetrics {
  readonly registry: Registry;
  /** Sidecars with an open xDS stream. */
  readonly connectedSidecars: Gauge;
  /** Configuration pushes sent, by resource type. */
  readonly pushes: Counter<"type">;
  /** Seconds from a configuration change to the sidecar's ACK, by resource type. */
  readonly pushLatency: Histogram<"type">;
  /** Certificates signed, by kind (x509, jwt) and result (issued, refused). */
  readonly signings: Counter<"kind" | "result">;
  /** Open flow-report streams. */
  readonly flowStreams: Gauge;
  /** Flow batches received. */
  readonly flowBatches: Counter;
  /** Flow records received, by result (accepted, duplicate, rejected). The rate of `accepted` is the ingest rate. */
  readonly flowsIngested: Counter<"result">;
  /** Records reporters say they dropped because their buffer overflowed. */
  readonly flowsDroppedByReporters: Gauge<"reporter">;
}

export function createControlPlaneMetrics(): ControlPlaneMetrics {
  const registry = new Registry();
  return {
    registry,
    connectedSidecars: new Gauge({
      name: "sigil_controlplane_connected_sidecars",
      help: "Sidecars with an open xDS stream",
      registers: [registry],
    }),
    pushes: new Counter({
      name: "sigil_controlplane_pushes_total",
      help: "Configuration pushes sent to sidecars",
      labelNames: ["type"],
      registers: [registry],
    }),
    pushLatency: new Histogram({
      name: "sigil_controlplane_push_latency_seconds",
      help: "Time from a configuration change to the sidecar's acknowledgement",
      labelNames: ["type"],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
      registers: [registry],
    }),
    signings: new Counter({
      name: "sigil_controlplane_signings_total",
      help: "Identity documents signed or refused",
      labelNames: ["kind", "result"],
      registers: [registry],
    }),
    flowStreams: new Gauge({
      name: "sigil_controlplane_flow_streams",
      help: "Open flow-report streams",
      registers: [registry],
    }),
    flowBatches: new Counter({
      name: "sigil_controlplane_flow_batches_total",
      help: "Flow batches received",
      registers: [registry],
    }),
    flowsIngested: new Counter({
      name: "sigil_controlplane_flows_ingested_total",
      help: "Flow records received, by result",
      labelNames: ["result"],
      registers: [registry],
    }),
    flowsDroppedByReporters: new Gauge({
      name: "sigil_controlplane_reporter_dropped_flows",
      help: "Flow records a reporter dropped because its buffer was full (as last reported)",
      labelNames: ["reporter"],
      registers: [registry],
    }),
  };
}

/** Serves the registry in Prometheus text format at GET /metrics. */
export function registerMetricsRoute(router: Router, metrics: ControlPlaneMetrics): void {
  router.add("GET", "/metrics", async (_req, res) => {
    const body = await metrics.registry.metrics();
    res.writeHead(200, { "content-type": metrics.registry.contentType });
    res.end(body);
  });
}
