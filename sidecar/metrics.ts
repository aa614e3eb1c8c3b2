import { Counter, Gauge, Histogram, Registry } from "prom-client";

/** The sidecar's Prometheus metrics, on a registry of its own (several sidecars can share a process). */
export class SidecarMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: "sigil_sidecar_requests_total",
    help: "Authorization decisions (HTTP requests and non-HTTP connections)",
    labelNames: ["direction", "protocol", "verdict"] as const,
    registers: [this.registry],
  });
  readonly denials = new Counter({
    name: "sigil_sidecar_denials_total",
    help: "Traffic refused, by reason",
    labelNames: ["direction", "reason"] as const,
    registers: [this.registry],
  });
  readonly tlsHandshakes = new Counter({
    name: "sigil_sidecar_tls_handshakes_total",
    help: "Mesh mTLS handshakes by side and result (ok, error, rejected)",
    labelNames: ["side", "result"] as const,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: "sigil_sidecar_request_duration_seconds",
    help: "Time from request (or connection) start to the end of the response (or connection)",
    labelNames: ["direction", "protocol"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60],
    registers: [this.registry],
  });
  readonly activeConnections = new Gauge({
    name: "sigil_sidecar_active_connections",
    help: "Open downstream connections",
    labelNames: ["direction"] as const,
    registers: [this.registry],
  });
}
