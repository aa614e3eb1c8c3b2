/**
 * Nonces of accepted tokens, remembered for as long as their timestamp is inside the acceptance
 * window: a token seen twice inside the window is a replay; one older than the window is refused
 * by its timestamp. Bounded: when full of still-live nonces, new tokens are refused (fail closed)
 * rather than forgetting nonces that could then be replayed.
 */
export class ReplayCache {
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly retainMs: number,
    private readonly maxEntries: number,
  ) {}

  get size(): number {
    return this.seen.size;
  }

  /**
   * Records `nonce` (hex) seen at `nowMs`. Returns "ok", "replayed" when it is already recorded, or
   * "full" when the cache holds `maxEntries` live nonces.
   */
  remember(nonce: string, nowMs: number): "ok" | "replayed" | "full" {
    const until = this.seen.get(nonce);
    if (until !== undefined && until > nowMs) return "replayed";
    if (this.seen.size >= this.maxEntries) this.sweep(nowMs);
    if (this.seen.size >= this.maxEntries) return "full";
    // Re-inserting keeps the Map in expiry order, which lets sweep stop at the first live entry.
    this.seen.delete(nonce);
    this.seen.set(nonce, nowMs + this.retainMs);
    return "ok";
  }

  /** Drops expired nonces (oldest first). */
  sweep(nowMs: number): void {
    for (const [nonce, until] of this.seen) {
      if (until > nowMs) break;
      this.seen.delete(nonce);
    }
  }
}
