import type { MemoryReading } from "./procstat.ts";
import { memoryOf } from "./procstat.ts";

/** One proxy process tree's memory: right after it started, and the most while under load. */
export interface ProxyMemory {
  readonly side: "client" | "server";
  readonly idle: MemoryReading;
  /** The highest RSS, PSS and USS read during the fixed-rate runs (each its own highest). */
  readonly underLoad: MemoryReading | null;
}

type Side = ProxyMemory["side"];

const larger = (a: MemoryReading | null, b: MemoryReading): MemoryReading =>
  a === null
    ? b
    : {
        rssBytes: Math.max(a.rssBytes, b.rssBytes),
        pssBytes: Math.max(a.pssBytes, b.pssBytes),
        ussBytes: Math.max(a.ussBytes, b.ussBytes),
      };

/**
 * Reads each proxy's memory idle (at construction) and, while `during` runs, every `everyMs`:
 * RSS, PSS and USS are read from /proc as the load runs, where VmHWM only keeps the RSS peak.
 */
export class MemorySampler {
  private readonly idle: Map<Side, MemoryReading>;
  private readonly loaded = new Map<Side, MemoryReading | null>();

  constructor(private readonly proxies: readonly { readonly side: Side; readonly pid: number }[]) {
    this.idle = new Map(proxies.map((p) => [p.side, memoryOf(p.pid)]));
    for (const p of proxies) this.loaded.set(p.side, null);
  }

  async during<T>(everyMs: number, run: () => Promise<T>): Promise<T> {
    const sample = (): void => {
      for (const p of this.proxies)
        this.loaded.set(p.side, larger(this.loaded.get(p.side) ?? null, memoryOf(p.pid)));
    };
    const timer = setInterval(sample, everyMs);
    try {
      return await run();
    } finally {
      clearInterval(timer);
      sample();
    }
  }

  readings(): ProxyMemory[] {
    return this.proxies.map((p) => ({
      side: p.side,
      idle: this.idle.get(p.side) as MemoryReading,
      underLoad: this.loaded.get(p.side) ?? null,
    }));
  }
}
