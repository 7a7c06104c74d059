// Counters, histograms and gauges of plain arithmetic. prom-client's own label children hash and
// validate their labels on every call; these keep one plain object per label set, so counting is a
// few additions, and hand prom-client their samples only when scraped (a prom-client registry
// takes any object with `name` and `get()`). Nothing here loads prom-client itself.

interface Sample {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

interface Snapshot {
  name: string;
  help: string;
  type: 'counter' | 'histogram' | 'gauge';
  values: Sample[];
  aggregator: 'sum';
}

export interface CounterChild {
  inc(by?: number): void;
}

export interface HistogramChild {
  observe(value: number): void;
}

/** What a registry of series holds: a name and the samples of the moment. */
export interface Collectable {
  readonly name: string;
  get(): Snapshot;
}

abstract class Series<Child> implements Collectable {
  readonly name: string;
  readonly help: string;
  protected readonly labelNames: readonly string[];
  protected readonly children = new Map<string, { labels: Record<string, string>; child: Child }>();

  constructor(options: { name: string; help: string; labelNames?: readonly string[] }) {
    this.name = options.name;
    this.help = options.help;
    this.labelNames = options.labelNames ?? [];
  }

  /** The child for these label values (in `labelNames` order); keep it to skip the lookup. */
  labels(...values: string[]): Child {
    const key = values.join('\u0000');
    let entry = this.children.get(key);
    if (!entry) {
      entry = { labels: Object.fromEntries(this.labelNames.map((name, i) => [name, values[i] ?? ''])), child: this.create() };
      this.children.set(key, entry);
    }
    return entry.child;
  }

  /** Every label set's child; a series without labels has its one sample from the start (0 until counted). */
  protected entries(): IterableIterator<{ labels: Record<string, string>; child: Child }> {
    if (this.labelNames.length === 0 && this.children.size === 0) this.labels();
    return this.children.values();
  }

  protected abstract create(): Child;
  abstract get(): Snapshot;
}

export class FastCounter extends Series<CounterChild & { value: number }> {
  protected create(): CounterChild & { value: number } {
    return { value: 0, inc(by = 1) { this.value += by; } };
  }

  get(): Snapshot {
    const values = [...this.entries()].map(({ labels, child }) => ({ value: child.value, labels }));
    return { name: this.name, help: this.help, type: 'counter', values, aggregator: 'sum' };
  }
}

interface HistogramState extends HistogramChild {
  counts: Float64Array;
  sum: number;
  count: number;
}

export class FastHistogram extends Series<HistogramState> {
  private readonly bounds: readonly number[];

  constructor(options: { name: string; help: string; labelNames?: readonly string[]; buckets: readonly number[] }) {
    super(options);
    this.bounds = [...options.buckets].sort((a, b) => a - b);
  }

  protected create(): HistogramState {
    const bounds = this.bounds;
    return {
      counts: new Float64Array(bounds.length), sum: 0, count: 0,
      observe(value: number) {
        this.sum += value;
        this.count++;
        for (let i = 0; i < bounds.length; i++) {
          if (value <= bounds[i]!) {
            this.counts[i]!++;
            return;
          }
        }
      },
    };
  }

  get(): Snapshot {
    const values: Sample[] = [];
    for (const { labels, child } of this.entries()) {
      let cumulative = 0;
      this.bounds.forEach((bound, i) => {
        cumulative += child.counts[i]!;
        values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: bound }, value: cumulative });
      });
      values.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: '+Inf' }, value: child.count });
      values.push({ metricName: `${this.name}_sum`, labels, value: child.sum });
      values.push({ metricName: `${this.name}_count`, labels, value: child.count });
    }
    return { name: this.name, help: this.help, type: 'histogram', values, aggregator: 'sum' };
  }
}

/** A gauge read when scraped (e.g. upload sessions open now). */
export class ReadGauge implements Collectable {
  readonly name: string;
  private readonly help: string;
  private readonly read: () => number;

  constructor(options: { name: string; help: string; read: () => number }) {
    this.name = options.name;
    this.help = options.help;
    this.read = options.read;
  }

  get(): Snapshot {
    return { name: this.name, help: this.help, type: 'gauge', values: [{ value: this.read(), labels: {} }], aggregator: 'sum' };
  }
}
