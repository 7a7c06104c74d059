// Prometheus metrics on a prom-client registry of their own, so nothing else in the process adds
// series. Labels come from bounded sets only: route names (never paths or repository names),
// methods, status codes, metadata operation names. Every series is a plain-arithmetic one of
// series.ts; prom-client (and the OpenTelemetry API it requires) loads only to render them, at the
// first scrape or shortly after start (loadSoon), which keeps ~40 ms of module loading out of the
// start.
import type { Metric, Registry as PromRegistry } from 'prom-client';
import { FastCounter, FastHistogram, ReadGauge, type Collectable, type CounterChild, type HistogramChild } from './series.ts';

/** Seconds; from a manifest HEAD served from cache (~100 µs) to a slow multi-GB upload. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const METADATA_BUCKETS = [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1];
const FLUSH_LAG_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'PUT', 'POST', 'PATCH', 'DELETE', 'OPTIONS']);

export interface RequestSample {
  route: string;
  method: string;
  status: number;
  seconds: number;
  bytesIn: number;
  bytesOut: number;
}

/** What a garbage collection run reports, as metrics see it. */
export interface GcSample {
  dryRun: boolean;
  seconds: number;
  manifests: number;
  blobs: number;
  bytes: number;
}

export class Metrics {
  private readonly series: Collectable[] = [];
  /** prom-client's registry, once loaded: it holds `series` and the default process metrics. */
  private registry: PromRegistry | undefined;
  private loading: Promise<PromRegistry> | undefined;
  private readonly requests: FastCounter;
  private readonly latency: FastHistogram;
  private readonly bytesIn: FastCounter;
  private readonly bytesOut: FastCounter;
  private inFlight = 0;
  private readonly rateLimited: FastCounter;
  private readonly metadataTime: FastHistogram;
  private readonly flushLag: FastHistogram;
  private readonly flushFailures: FastCounter;
  private readonly gcRuns: FastCounter;
  private readonly gcRemoved: FastCounter;
  private readonly gcBytes: FastCounter;
  private readonly gcDuration: FastHistogram;
  private readonly eventsDelivered: FastCounter;
  private readonly eventFailures: FastCounter;
  // A request finds its four children with one lookup.
  private readonly requestChildren = new Map<string, { count: CounterChild; latency: HistogramChild; bytesIn: CounterChild; bytesOut: CounterChild }>();

  constructor() {
    this.requests = this.add(new FastCounter({ name: 'trellis_http_requests_total', help: 'HTTP requests answered, by route name, method and status', labelNames: ['route', 'method', 'status'] }));
    this.latency = this.add(new FastHistogram({ name: 'trellis_http_request_duration_seconds', help: 'Time from request to the end of the answer', labelNames: ['route', 'method'], buckets: LATENCY_BUCKETS }));
    this.bytesIn = this.add(new FastCounter({ name: 'trellis_http_request_bytes_total', help: 'Request body bytes received', labelNames: ['route'] }));
    this.bytesOut = this.add(new FastCounter({ name: 'trellis_http_response_bytes_total', help: 'Response bytes sent (headers and bodies)', labelNames: ['route'] }));
    this.gauge('trellis_http_requests_in_flight', 'Requests being answered now', () => this.inFlight);
    this.rateLimited = this.add(new FastCounter({ name: 'trellis_rate_limit_rejections_total', help: 'Requests refused with 429 TOOMANYREQUESTS (request, sign-in, query and upload-session limits)', labelNames: ['route'] }));
    this.metadataTime = this.add(new FastHistogram({ name: 'trellis_metadata_operation_duration_seconds', help: 'Time spent in metadata store operations', labelNames: ['operation'], buckets: METADATA_BUCKETS }));
    this.flushLag = this.add(new FastHistogram({ name: 'trellis_index_flush_lag_seconds', help: 'Time from the first change a repository\'s index.json does not show until the rewrite that shows it', buckets: FLUSH_LAG_BUCKETS }));
    this.flushFailures = this.add(new FastCounter({ name: 'trellis_index_flush_failures_total', help: 'index.json rewrites that failed (retried on the next change)' }));
    this.gcRuns = this.add(new FastCounter({ name: 'trellis_gc_runs_total', help: 'Garbage collection runs, by outcome (done, dry_run, failed)', labelNames: ['outcome'] }));
    this.gcRemoved = this.add(new FastCounter({ name: 'trellis_gc_removed_total', help: 'Manifests and blobs garbage collection removed', labelNames: ['kind'] }));
    this.gcBytes = this.add(new FastCounter({ name: 'trellis_gc_removed_bytes_total', help: 'Bytes garbage collection removed' }));
    this.gcDuration = this.add(new FastHistogram({ name: 'trellis_gc_duration_seconds', help: 'Duration of garbage collection runs', buckets: [0.01, 0.1, 1, 10, 60, 300, 1800] }));
    this.eventsDelivered = this.add(new FastCounter({ name: 'trellis_events_delivered_total', help: 'Events a webhook acknowledged', labelNames: ['webhook'] }));
    this.eventFailures = this.add(new FastCounter({ name: 'trellis_event_delivery_failures_total', help: 'Event deliveries that failed and will be retried', labelNames: ['webhook'] }));
  }

  private add<T extends Collectable>(series: T): T {
    this.series.push(series);
    this.registry?.registerMetric(series as unknown as Metric);
    return series;
  }

  /**
   * Loads prom-client and starts its default process metrics (CPU, memory, event-loop lag, GC),
   * once; they count from then on.
   */
  load(): Promise<PromRegistry> {
    this.loading ??= import('prom-client').then(({ Registry, collectDefaultMetrics }) => {
      const registry = new Registry();
      collectDefaultMetrics({ register: registry });
      for (const series of this.series) registry.registerMetric(series as unknown as Metric);
      this.registry = registry;
      return registry;
    });
    return this.loading;
  }

  /** Loads prom-client after `delayMs` unless a scrape did first: out of the way of the start. */
  loadSoon(delayMs = 1000): void {
    setTimeout(() => void this.load(), delayMs).unref();
  }

  /** Text exposition format. */
  async render(): Promise<{ contentType: string; body: string }> {
    const registry = await this.load();
    return { contentType: registry.contentType, body: await registry.metrics() };
  }

  requestStarted(): void {
    this.inFlight++;
  }

  requestDone(sample: RequestSample): void {
    this.inFlight--;
    const method = KNOWN_METHODS.has(sample.method) ? sample.method : 'OTHER';
    const key = `${sample.route} ${method} ${sample.status}`;
    let children = this.requestChildren.get(key);
    if (!children) {
      children = {
        count: this.requests.labels(sample.route, method, String(sample.status)),
        latency: this.latency.labels(sample.route, method),
        bytesIn: this.bytesIn.labels(sample.route),
        bytesOut: this.bytesOut.labels(sample.route),
      };
      this.requestChildren.set(key, children);
    }
    children.count.inc();
    children.latency.observe(sample.seconds);
    if (sample.bytesIn > 0) children.bytesIn.inc(sample.bytesIn);
    if (sample.bytesOut > 0) children.bytesOut.inc(sample.bytesOut);
  }

  rateLimitRejected(route: string): void {
    this.rateLimited.labels(route).inc();
  }

  /** A gauge read when scraped (e.g. upload sessions open now). */
  gauge(name: string, help: string, read: () => number): void {
    this.add(new ReadGauge({ name, help, read }));
  }

  /** Timing of one metadata operation; `operation` is a method name of the store. */
  metadataTimer(operation: string): HistogramChild {
    return this.metadataTime.labels(operation);
  }

  indexFlushed(lagSeconds: number): void {
    this.flushLag.labels().observe(lagSeconds);
  }

  indexFlushFailed(): void {
    this.flushFailures.labels().inc();
  }

  gcDone(sample: GcSample): void {
    this.gcRuns.labels(sample.dryRun ? 'dry_run' : 'done').inc();
    this.gcDuration.labels().observe(sample.seconds);
    if (sample.dryRun) return;
    this.gcRemoved.labels('manifest').inc(sample.manifests);
    this.gcRemoved.labels('blob').inc(sample.blobs);
    this.gcBytes.labels().inc(sample.bytes);
  }

  gcFailed(): void {
    this.gcRuns.labels('failed').inc();
  }

  eventDelivered(webhook: string): void {
    this.eventsDelivered.labels(webhook).inc();
  }

  eventDeliveryFailed(webhook: string): void {
    this.eventFailures.labels(webhook).inc();
  }
}
