import type { Metric, Registry } from "prom-client";

/**
 * Counters and histograms for the metrics counted on every action (actions, state
 * operations, MQTT messages), exposed through a prom-client registry like any other.
 * prom-client's own `inc(labels)` / `observe(labels, v)` validate, sort and hash the
 * label object and allocate a closure on every call: about 10 µs of each action at one
 * client, more than the rest of the bridge's bookkeeping. Here a call joins the label
 * values into a key and bumps numbers; the Prometheus text is built only when scraped.
 */

type Labels<L extends string> = Readonly<Record<L, string>>;

interface Exposed {
  metricName?: string;
  labels: Record<string, string | number>;
  value: number;
}

/** What a prom-client registry reads from a metric when it is scraped. */
abstract class Exposition<L extends string> {
  readonly aggregator = "sum";
  abstract readonly type: "counter" | "histogram";

  constructor(
    readonly name: string,
    readonly help: string,
    protected readonly labelNames: readonly L[],
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Metric);
  }

  protected key(labels: Labels<L>): string {
    let key = "";
    for (const name of this.labelNames) key += `${labels[name]}\u0000`;
    return key;
  }

  protected abstract values(): Exposed[];

  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Exposed[] }> {
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.values() });
  }

  abstract reset(): void;
}

export class SeriesCounter<L extends string> extends Exposition<L> {
  readonly type = "counter";
  private readonly series = new Map<string, { labels: Labels<L>; value: number }>();

  inc(labels: Labels<L>, by = 1): void {
    const key = this.key(labels);
    const found = this.series.get(key);
    if (found) found.value += by;
    else this.series.set(key, { labels: { ...labels }, value: by });
  }

  protected values(): Exposed[] {
    return [...this.series.values()].map((s) => ({ labels: { ...s.labels }, value: s.value }));
  }

  reset(): void {
    this.series.clear();
  }
}

interface HistogramSeries<L extends string> {
  labels: Labels<L>;
  /** Observations per bucket (not cumulative); the last slot is above every bound. */
  counts: Float64Array;
  sum: number;
  count: number;
}

export class SeriesHistogram<L extends string> extends Exposition<L> {
  readonly type = "histogram";
  private readonly series = new Map<string, HistogramSeries<L>>();
  private readonly buckets: readonly number[];

  constructor(name: string, help: string, labelNames: readonly L[], buckets: readonly number[], registry: Registry) {
    super(name, help, labelNames, registry);
    this.buckets = [...buckets].sort((a, b) => a - b);
  }

  observe(labels: Labels<L>, value: number): void {
    if (!Number.isFinite(value)) return;
    const key = this.key(labels);
    let s = this.series.get(key);
    if (!s) {
      s = { labels: { ...labels }, counts: new Float64Array(this.buckets.length + 1), sum: 0, count: 0 };
      this.series.set(key, s);
    }
    let i = 0;
    while (i < this.buckets.length && value > (this.buckets[i] as number)) i++;
    s.counts[i] = (s.counts[i] ?? 0) + 1;
    s.sum += value;
    s.count += 1;
  }

  protected values(): Exposed[] {
    const out: Exposed[] = [];
    const bucketName = `${this.name}_bucket`;
    for (const s of this.series.values()) {
      let cumulative = 0;
      this.buckets.forEach((bound, i) => {
        cumulative += s.counts[i] ?? 0;
        out.push({ metricName: bucketName, labels: { le: bound, ...s.labels }, value: cumulative });
      });
      out.push({ metricName: bucketName, labels: { le: "+Inf", ...s.labels }, value: s.count });
      out.push({ metricName: `${this.name}_sum`, labels: { ...s.labels }, value: s.sum });
      out.push({ metricName: `${this.name}_count`, labels: { ...s.labels }, value: s.count });
    }
    return out;
  }

  reset(): void {
    this.series.clear();
  }
}
