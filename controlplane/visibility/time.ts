/** Parses a `--since` value: a duration back from now (`90s`, `15m`, `1h`, `7d`), an ISO time, or epoch ms. */
export function parseSince(text: string, now: number): number {
  const t = text.trim();
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)$/.exec(t);
  if (m) {
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[
      m[2] as "ms" | "s" | "m" | "h" | "d"
    ];
    return now - Math.round(Number(m[1]) * unit);
  }
  if (/^\d{12,}$/.test(t)) return Number(t);
  if (/^\d{4}-\d{2}-\d{2}/.test(t)) {
    const ms = Date.parse(t);
    if (!Number.isNaN(ms)) return ms;
  }
  throw new RangeError(
    `since "${text}" must be a duration (30s, 15m, 1h, 7d), an ISO time or epoch milliseconds`,
  );
}
