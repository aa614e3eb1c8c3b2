/**
 * Latency samples of one load run and the percentiles read from them. Runs are bounded (tens of
 * thousands to a few hundred thousand requests), so every sample is kept and percentiles are exact.
 */

export class LatencyRecorder {
  private samples = new Float64Array(1 << 16);
  private n = 0;
  private sorted: Float64Array | null = null;

  /** One request's latency in microseconds. */
  record(us: number): void {
    if (this.n === this.samples.length) {
      const grown = new Float64Array(this.samples.length * 2);
      grown.set(this.samples);
      this.samples = grown;
    }
    this.samples[this.n++] = us;
    this.sorted = null;
  }

  get count(): number {
    return this.n;
  }

  /** Nearest-rank percentile, p in [0, 100]; NaN when nothing was recorded. */
  percentile(p: number): number {
    if (this.n === 0) return NaN;
    const sorted = this.sort();
    const rank = Math.ceil((Math.min(Math.max(p, 0), 100) / 100) * this.n);
    return sorted[Math.min(Math.max(rank - 1, 0), this.n - 1)] as number;
  }

  mean(): number {
    if (this.n === 0) return NaN;
    let sum = 0;
    for (let i = 0; i < this.n; i++) sum += this.samples[i] as number;
    return sum / this.n;
  }

  /** The percentile spectrum the plot draws: points evenly spaced in log10(1 / (1 - p)). */
  spectrum(): SpectrumPoint[] {
    return SPECTRUM_PERCENTILES.filter((p) => this.n * (1 - p / 100) >= 1 || p === 0).map((p) => ({
      p,
      us: this.percentile(p),
    }));
  }

  private sort(): Float64Array {
    this.sorted ??= this.samples.slice(0, this.n).sort();
    return this.sorted;
  }
}

export interface SpectrumPoint {
  /** Percentile, 0..100. */
  readonly p: number;
  readonly us: number;
}

/** 0 %, then 1 - 10^(-k/10) for k = 1..40: ten points per decade up to 99.99 %. */
export const SPECTRUM_PERCENTILES: readonly number[] = [
  0,
  ...Array.from({ length: 40 }, (_, i) => Number(((1 - 10 ** (-(i + 1) / 10)) * 100).toFixed(4))),
];

/** Summary of a load run, as the load generator reports it. */
export interface LoadResult {
  readonly protocol: "h1" | "grpc";
  readonly mode: "rate" | "max";
  /** Requests completed (successfully) inside the measured window. */
  readonly completed: number;
  readonly errors: number;
  /** The first few distinct error messages, for the report. */
  readonly errorSamples: readonly string[];
  readonly elapsedSeconds: number;
  readonly rps: number;
  readonly p50Us: number;
  readonly p90Us: number;
  readonly p99Us: number;
  readonly p999Us: number;
  readonly maxUs: number;
  readonly meanUs: number;
  readonly spectrum: readonly SpectrumPoint[];
}

export function summarize(
  rec: LatencyRecorder,
  base: Pick<LoadResult, "protocol" | "mode" | "errors" | "errorSamples" | "elapsedSeconds">,
): LoadResult {
  return {
    ...base,
    completed: rec.count,
    rps: rec.count / base.elapsedSeconds,
    p50Us: rec.percentile(50),
    p90Us: rec.percentile(90),
    p99Us: rec.percentile(99),
    p999Us: rec.percentile(99.9),
    maxUs: rec.percentile(100),
    meanUs: rec.mean(),
    spectrum: rec.spectrum(),
  };
}
