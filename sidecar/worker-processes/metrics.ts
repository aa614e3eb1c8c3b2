import { AggregatorRegistry } from "prom-client";
import type { Registry } from "prom-client";

/**
 * `/stats/prometheus` of a sidecar with workers: the primary's own metrics and every worker's,
 * summed series by series (prom-client's cluster aggregation: counters and histograms add up,
 * gauges such as active connections too), plus one series per worker of the decisions it made, so
 * an operator sees how the listening sockets' connections spread over the workers.
 */

export type MetricsJson = Awaited<ReturnType<Registry["getMetricsAsJSON"]>>;

export interface WorkerMetrics {
  /** The cluster worker id (stable for the life of one worker process; a restart gets a new id). */
  readonly worker: number;
  readonly metrics: MetricsJson;
}

const REQUESTS = "sigil_sidecar_requests_total";

function decisions(metrics: MetricsJson): number {
  const requests = metrics.find((m) => m.name === REQUESTS);
  return requests ? requests.values.reduce((sum, v) => sum + v.value, 0) : 0;
}

export function aggregateMetrics(primary: MetricsJson, workers: readonly WorkerMetrics[]): Registry {
  const perWorker = {
    name: "sigil_sidecar_worker_requests_total",
    help: "Authorization decisions made by each data-path worker process",
    type: "counter",
    aggregator: "sum",
    values: workers.map((w) => ({ labels: { worker: String(w.worker) }, value: decisions(w.metrics) })),
  };
  return AggregatorRegistry.aggregate([primary, ...workers.map((w) => w.metrics), [perWorker]]);
}
