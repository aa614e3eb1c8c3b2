import { PerformanceObserver, constants, monitorEventLoopDelay } from "node:perf_hooks";
import type { PerformanceEntry } from "node:perf_hooks";
import type { Registry } from "prom-client";
import { Counter, Gauge } from "prom-client";

/**
 * What stalls a bench sidecar's event loop, exported on its metrics registry so the harness can
 * read it over the measured window: garbage-collection pauses by kind and, when `delay` is set,
 * event-loop delay (1 ms resolution) since the previous scrape.
 *
 * The delay histogram is off unless asked for: its 1 ms timer wakes an otherwise idle sidecar up to
 * 1,000 times a second, which at a fixed 1,000 requests per second added about a fifth to the
 * pair's context switches and a tenth to its system calls, a cost no other path measured pays.
 */
export function monitorLoop(registry: Registry, options: { readonly delay: boolean }): () => void {
  const stopDelay = options.delay ? monitorDelay(registry) : () => undefined;
  const pauses = new Counter({
    name: "sigil_bench_gc_pause_seconds_total",
    help: "Time the main thread spent in garbage collection, by kind (minor, major, incremental, weakcb)",
    labelNames: ["kind"] as const,
    registers: [registry],
  });
  const count = new Counter({
    name: "sigil_bench_gc_total",
    help: "Garbage collections by kind",
    labelNames: ["kind"] as const,
    registers: [registry],
  });
  const kinds: Record<number, string> = {
    [constants.NODE_PERFORMANCE_GC_MINOR]: "minor",
    [constants.NODE_PERFORMANCE_GC_MAJOR]: "major",
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: "incremental",
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: "weakcb",
  };
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const detail = (entry as PerformanceEntry & { detail?: { kind?: number } }).detail;
      const kind = kinds[detail?.kind ?? 0] ?? "other";
      pauses.inc({ kind }, entry.duration / 1000);
      count.inc({ kind });
    }
  });
  observer.observe({ entryTypes: ["gc"] });
  return () => {
    observer.disconnect();
    stopDelay();
  };
}

/**
 * Event-loop delay since the previous scrape: a scrape reads the histogram and starts a new one, so
 * the harness scrapes at the window's start (discarded) and at its end.
 */
function monitorDelay(registry: Registry): () => void {
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  new Gauge({
    name: "sigil_bench_event_loop_delay_seconds",
    help: "Event-loop delay since the previous scrape, by statistic (p50, p99, max)",
    labelNames: ["stat"] as const,
    registers: [registry],
    collect() {
      // An empty histogram (no sample since the last reset) reports NaN-free zeros.
      const seconds = (ns: number): number => (delay.count > 0 ? ns / 1e9 : 0);
      this.set({ stat: "p50" }, seconds(delay.percentile(50)));
      this.set({ stat: "p99" }, seconds(delay.percentile(99)));
      this.set({ stat: "max" }, seconds(delay.max));
      delay.reset();
    },
  });
  return () => delay.disable();
}
