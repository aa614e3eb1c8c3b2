/** Exponential backoff with jitter for reconnecting streams. */
export interface BackoffOptions {
  /** First delay, ms. */
  readonly initialMs: number;
  /** Upper bound of the un-jittered delay, ms. */
  readonly maxMs: number;
  readonly multiplier: number;
  /** Fraction of the delay randomized in both directions (0.2 = ±20%). */
  readonly jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000, multiplier: 2, jitter: 0.2 };

export class Backoff {
  private attempt = 0;

  constructor(
    private readonly options: BackoffOptions = DEFAULT_BACKOFF,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next attempt; each call grows the next one. */
  next(): number {
    const o = this.options;
    const base = Math.min(o.maxMs, o.initialMs * o.multiplier ** this.attempt);
    this.attempt++;
    const spread = base * o.jitter;
    return Math.max(0, Math.round(base - spread + this.random() * 2 * spread));
  }

  reset(): void {
    this.attempt = 0;
  }
}
