import type { Registry } from "prom-client";

/**
 * Metric families whose values live in plain numbers, shown to prom-client's registry in its own
 * exposition shape (`get()`), so one request costs a map lookup and a few additions: prom-client's
 * own metrics validate and hash every label on every observation.
 *
 * Cardinality is bounded per table: the first `max` distinct label sets get series of their own;
 * every later one is counted in an overflow series whose high-cardinality labels read `overflow`
 * and whose other labels come from small fixed sets, so a table never holds more than `max` plus
 * those few overflow series however many workloads, principals and policies it sees.
 */

export type LabelValues = Readonly<Record<string, string>>;

export const OVERFLOW = "overflow";

/** One histogram's buckets, kept per bucket (not cumulative) until exposed. */
export class BucketCounts {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > (this.bounds[i] as number)) i++;
    (this.counts[i] as number)++;
    this.sum += value;
    this.count++;
  }
}

interface Series<V> {
  readonly labels: LabelValues;
  readonly values: V;
}

/** The label sets of one group of families that share their labels (one table, one bound). */
export class LabelSetTable<V> {
  private readonly series = new Map<string, Series<V>>();
  private readonly overflowSeries = new Map<string, Series<V>>();

  /**
   * `highCardinality`: the labels replaced by `overflow` once the table is full; every other label
   * must take its values from a small fixed set.
   */
  constructor(
    readonly max: number,
    private readonly highCardinality: readonly string[],
    private readonly fresh: () => V,
  ) {}

  /** The values of `labels`' series (its own, or its overflow series once the table is full). */
  values(labels: LabelValues): V {
    const key = keyOf(labels);
    const own = this.series.get(key);
    if (own !== undefined) return own.values;
    if (this.series.size < this.max) {
      const s = { labels, values: this.fresh() };
      this.series.set(key, s);
      return s.values;
    }
    const folded: Record<string, string> = { ...labels };
    for (const name of this.highCardinality) if (name in folded) folded[name] = OVERFLOW;
    const foldedKey = keyOf(folded);
    let o = this.overflowSeries.get(foldedKey);
    if (o === undefined) {
      o = { labels: folded, values: this.fresh() };
      this.overflowSeries.set(foldedKey, o);
    }
    return o.values;
  }

  get size(): number {
    return this.series.size + this.overflowSeries.size;
  }

  *all(): Iterable<Series<V>> {
    yield* this.series.values();
    yield* this.overflowSeries.values();
  }
}

function keyOf(labels: LabelValues): string {
  let key = "";
  for (const name in labels) key += `${labels[name]}\u0000`;
  return key;
}

interface ExposedValue {
  readonly labels: LabelValues;
  readonly value: number;
  readonly metricName?: string;
}

interface Exposed {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "histogram";
  readonly aggregator: "sum";
  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: ExposedValue[] }>;
}

/** Registers a counter read from `table` (`read` picks the number out of a series' values). */
export function exposeCounter<V>(
  registry: Registry,
  name: string,
  help: string,
  table: LabelSetTable<V>,
  read: (v: V) => number,
): void {
  const family: Exposed = {
    name,
    help,
    type: "counter",
    aggregator: "sum",
    get: async () => {
      const values: ExposedValue[] = [];
      for (const s of table.all()) values.push({ labels: s.labels, value: read(s.values) });
      return { name, help, type: "counter", aggregator: "sum", values };
    },
  };
  register(registry, family);
}

/** Registers a histogram read from `table`: cumulative `_bucket`s with `le`, `_sum`, `_count`. */
export function exposeHistogram<V>(
  registry: Registry,
  name: string,
  help: string,
  bounds: readonly number[],
  table: LabelSetTable<V>,
  read: (v: V) => BucketCounts,
): void {
  const family: Exposed = {
    name,
    help,
    type: "histogram",
    aggregator: "sum",
    get: async () => {
      const values: ExposedValue[] = [];
      for (const s of table.all()) {
        const h = read(s.values);
        let cumulative = 0;
        for (let i = 0; i <= bounds.length; i++) {
          cumulative += h.counts[i] as number;
          const le = i < bounds.length ? String(bounds[i]) : "+Inf";
          values.push({ labels: { ...s.labels, le }, value: cumulative, metricName: `${name}_bucket` });
        }
        values.push({ labels: s.labels, value: h.sum, metricName: `${name}_sum` });
        values.push({ labels: s.labels, value: h.count, metricName: `${name}_count` });
      }
      return { name, help, type: "histogram", aggregator: "sum", values };
    },
  };
  register(registry, family);
}

/** prom-client's registry takes any object of its metrics' shape; its type names only its classes. */
function register(registry: Registry, family: Exposed): void {
  registry.registerMetric(family as unknown as Parameters<Registry["registerMetric"]>[0]);
}
