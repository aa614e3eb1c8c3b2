/**
 * Reads what loop-monitor.ts exports from a bench sidecar's Prometheus text, and turns the scrapes
 * at a measured window's edges into that window's event-loop delay and GC pauses.
 */

export interface LoopScrape {
  /** Event-loop delay since the previous scrape, ms; null when the sidecar does not measure it. */
  readonly delayP50Ms: number | null;
  readonly delayP99Ms: number | null;
  readonly delayMaxMs: number | null;
  /** Cumulative GC pause time, ms, and collections, by kind (minor, major, incremental, weakcb). */
  readonly gcPauseMs: Readonly<Record<string, number>>;
  readonly gcCount: Readonly<Record<string, number>>;
}

export interface SidecarLoopWindow {
  readonly side: "client" | "server";
  /** Null when the sidecars ran without the delay histogram (`main.ts --loop-delay`). */
  readonly delayP50Ms: number | null;
  readonly delayP99Ms: number | null;
  readonly delayMaxMs: number | null;
  /** GC pause time inside the window, ms: all kinds, and mark-compact (major) alone. */
  readonly gcPauseMs: number;
  readonly gcMajorPauseMs: number;
  readonly gcCount: number;
}

const SAMPLE = /^(sigil_bench_[a-z_]+)\{(\w+)="(\w+)"\} (\S+)$/;

/**
 * Throws when the text lacks the GC counters (the sidecar was not started with the monitor); the
 * delay is null when its gauges are absent (the histogram is opt-in) or incomplete.
 */
export function parseLoopScrape(text: string): LoopScrape {
  const delay: Record<string, number> = {};
  const gcPauseMs: Record<string, number> = {};
  const gcCount: Record<string, number> = {};
  for (const line of text.split("\n")) {
    const m = SAMPLE.exec(line.trim());
    if (!m) continue;
    const [, name, , label, raw] = m as unknown as [string, string, string, string, string];
    const value = Number(raw);
    if (!Number.isFinite(value)) continue;
    if (name === "sigil_bench_event_loop_delay_seconds") delay[label] = value * 1000;
    else if (name === "sigil_bench_gc_pause_seconds_total") gcPauseMs[label] = value * 1000;
    else if (name === "sigil_bench_gc_total") gcCount[label] = value;
  }
  if (Object.keys(gcCount).length === 0) throw new Error("no sigil_bench_gc_total in the sidecar's metrics");
  const { p50, p99, max } = delay;
  if (p50 === undefined || p99 === undefined || max === undefined)
    return { delayP50Ms: null, delayP99Ms: null, delayMaxMs: null, gcPauseMs, gcCount };
  return { delayP50Ms: p50, delayP99Ms: p99, delayMaxMs: max, gcPauseMs, gcCount };
}

const sum = (r: Readonly<Record<string, number>>): number => Object.values(r).reduce((a, b) => a + b, 0);

/** The window between two scrapes: delay from the second (it covers the time since the first). */
export function loopWindow(side: "client" | "server", start: LoopScrape, end: LoopScrape): SidecarLoopWindow {
  return {
    side,
    delayP50Ms: end.delayP50Ms,
    delayP99Ms: end.delayP99Ms,
    delayMaxMs: end.delayMaxMs,
    gcPauseMs: sum(end.gcPauseMs) - sum(start.gcPauseMs),
    gcMajorPauseMs: (end.gcPauseMs.major ?? 0) - (start.gcPauseMs.major ?? 0),
    gcCount: sum(end.gcCount) - sum(start.gcCount),
  };
}
