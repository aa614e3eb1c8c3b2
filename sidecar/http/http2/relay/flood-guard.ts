/**
 * A token bucket for frames a peer can send for free but that cost this side work: stream resets
 * (the rapid-reset attack), frames that carry nothing. `burst` may be spent at once, then `perSecond`
 * more each second; the clock is an input so a test decides what time it is.
 */
export class FloodGuard {
  private tokens: number;
  private last: number;

  constructor(
    private readonly burst: number,
    private readonly perSecond: number,
    private readonly now: () => number,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** Spends one token; false once the peer has sent more than the budget allows. */
  spend(): boolean {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) * this.perSecond) / 1000);
    this.last = t;
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }
}
