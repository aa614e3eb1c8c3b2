/**
 * Gives the memory a burst of connections used back to the system once the burst is over.
 *
 * Each mTLS connection allocates its TLS state and socket buffers from the C heap. When they close,
 * glibc keeps the freed memory inside its arenas and only ever returns a free stretch at the very
 * top, so after 2,000 concurrent connections a sidecar stayed ~100 MB above its idle resident set
 * for good, although its JavaScript heap was back where it started (bench/sidecar/RESULTS.md,
 * "Connection churn soak"). Returning it (`releaseFreeMemory`, glibc's `malloc_trim`) costs CPU in
 * proportion to what is returned and holds the event loop while it runs, so it is done rarely: only
 * after many connections closed, once the open ones have fallen well below the peak they reached
 * (the burst is over, the memory is not about to be used again), and at most once per interval.
 */

export interface MemoryReturnSettings {
  /** Connections that must have closed since the last return. */
  readonly afterClosed: number;
  /** Open connections must be at most this share of the peak since the last return. */
  readonly belowPeakShare: number;
  /** The least time between two returns, and the delay before checking again. */
  readonly intervalMs: number;
}

export const MEMORY_RETURN_DEFAULTS: MemoryReturnSettings = {
  afterClosed: 1000,
  belowPeakShare: 0.25,
  intervalMs: 10_000,
};

/** The clock and timer the decision runs on (a test drives them). */
export interface MemoryReturnClock {
  now(): number;
  /** Runs `fn` after `ms`; the timer must not keep the process alive. Returns how to cancel it. */
  after(ms: number, fn: () => void): () => void;
}

const systemClock: MemoryReturnClock = {
  now: () => Date.now(),
  after: (ms, fn) => {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
};

export class MemoryReturn {
  private closedSince = 0;
  private peak = 0;
  private lastReturnAt: number;
  private cancelCheck: (() => void) | null = null;
  /** Returns made, and the milliseconds they held the event loop in total. */
  readonly stats = { returns: 0, milliseconds: 0 };

  constructor(
    /** How many connections are open now. */
    private readonly openConnections: () => number,
    /** Returns the free memory to the system; false where it cannot. */
    private readonly release: () => boolean,
    private readonly settings: MemoryReturnSettings = MEMORY_RETURN_DEFAULTS,
    private readonly clock: MemoryReturnClock = systemClock,
  ) {
    this.lastReturnAt = clock.now();
  }

  /** A connection opened (the peak is what the burst reached). */
  opened(): void {
    this.peak = Math.max(this.peak, this.openConnections());
  }

  /** A connection closed. */
  closed(): void {
    this.closedSince++;
    if (this.closedSince >= this.settings.afterClosed) this.check();
  }

  /** Returns the memory now if the burst is over and the interval has passed; else checks later. */
  private check(): void {
    const open = this.openConnections();
    const sinceLast = this.clock.now() - this.lastReturnAt;
    if (open <= this.peak * this.settings.belowPeakShare && sinceLast >= this.settings.intervalMs) {
      this.stop();
      const started = this.clock.now();
      const done = this.release();
      this.lastReturnAt = this.clock.now();
      if (done) {
        this.stats.returns++;
        this.stats.milliseconds += this.lastReturnAt - started;
      }
      this.closedSince = 0;
      this.peak = open;
      return;
    }
    // A burst that stops closing connections is checked again later, so its memory is returned
    // even when no connection closes any more.
    if (this.cancelCheck !== null) return;
    const wait =
      sinceLast < this.settings.intervalMs ? this.settings.intervalMs - sinceLast : this.settings.intervalMs;
    this.cancelCheck = this.clock.after(wait, () => {
      this.cancelCheck = null;
      this.check();
    });
  }

  stop(): void {
    this.cancelCheck?.();
    this.cancelCheck = null;
  }
}
