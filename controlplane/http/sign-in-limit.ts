/**
 * Bounds sign-in attempts per source address: at most `attempts` in each `windowMs`, counted per
 * address (IPv6 per /64, which one host typically holds whole). Memory is bounded: past
 * `maxSources` tracked addresses, the one tracked longest is forgotten, so a flood of spoofed-looking
 * sources costs a fixed amount. Time is an input (`now`).
 */

export interface SignInLimitOptions {
  readonly attempts?: number;
  readonly windowMs?: number;
  readonly maxSources?: number;
  readonly now?: () => number;
}

interface Window {
  readonly startMs: number;
  count: number;
}

export class SignInLimit {
  private readonly windows = new Map<string, Window>();
  private readonly attempts: number;
  private readonly windowMs: number;
  private readonly maxSources: number;
  private readonly now: () => number;

  constructor(options: SignInLimitOptions = {}) {
    this.attempts = options.attempts ?? 10;
    this.windowMs = options.windowMs ?? 60_000;
    this.maxSources = options.maxSources ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /** Counts one attempt from `address`; returns the seconds to wait when it is over the limit, else 0. */
  take(address: string): number {
    const key = sourceKey(address);
    const now = this.now();
    let window = this.windows.get(key);
    if (!window || now - window.startMs >= this.windowMs) {
      this.windows.delete(key);
      window = { startMs: now, count: 0 };
      while (this.windows.size >= this.maxSources) {
        const oldest = this.windows.keys().next();
        if (oldest.done) break;
        this.windows.delete(oldest.value);
      }
      this.windows.set(key, window);
    }
    window.count += 1;
    if (window.count <= this.attempts) return 0;
    return Math.max(1, Math.ceil((window.startMs + this.windowMs - now) / 1000));
  }

  /** Addresses currently tracked (for tests and metrics). */
  get size(): number {
    return this.windows.size;
  }
}

function sourceKey(address: string): string {
  const bare = address.replace(/^::ffff:(?=\d+\.)/, "").toLowerCase();
  if (!bare.includes(":")) return bare;
  const groups = bare.split("::")[0]?.split(":") ?? [];
  return `${groups.slice(0, 4).join(":")}::/64`;
}
