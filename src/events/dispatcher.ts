// Delivers outbox events to webhooks, at least once and in order per webhook. Each webhook has a
// durable position in the outbox: it moves past an event only once the webhook acknowledged it
// (any 2xx) or the webhook's filters skip it, so a restart resumes where delivery stood and a
// webhook that is down gets everything when it comes back. Failures are retried with exponential
// backoff (with jitter), without limit: an event is never dropped. Events every webhook has passed
// are pruned.
import type { Logger } from 'pino';
import type { EventOutbox, OutboxEvent } from '../metadata/outbox.ts';
import type { Metrics } from '../observe/metrics.ts';
import { CLOUDEVENTS_CONTENT_TYPE, SIGNATURE_HEADER, signature, toCloudEvent } from './cloudevents.ts';
import type { Webhook } from './webhooks.ts';
import type { Locks } from '../storage/mutex.ts';

export interface DispatcherOptions {
  outbox: EventOutbox;
  webhooks: Webhook[];
  log: Logger;
  metrics?: Metrics | undefined;
  timeoutMs: number;
  retryMinMs: number;
  retryMaxMs: number;
  /** How often to look for events when no append was signalled (events written by another process). */
  pollMs?: number;
  /**
   * Replicas sharing the outbox: each webhook is delivered by the one replica holding its lock
   * (another takes over when it stops or dies), so events are not sent once per replica.
   */
  locks?: Locks | undefined;
}

const BATCH = 100;
const PRUNE_EVERY_MS = 1000;
/**
 * A webhook's position is stored at most this often while events stream (and always before a
 * retry, when idle and on stop): one write per delivered event would cost more than the delivery.
 * A crash can make a receiver see again what it acknowledged in this window.
 */
const SAVE_EVERY_MS = 250;
/**
 * On stop, a delivery already sent gets this long to be acknowledged: cutting it off would make
 * the receiver, which may have it already, see it again after the restart.
 */
const STOP_GRACE_MS = 5000;

class DeliveryFailed extends Error {
  /** Seconds the receiver asked us to wait (Retry-After), if it did. */
  readonly retryAfter: number | undefined;

  constructor(message: string, retryAfter?: number) {
    super(message);
    this.retryAfter = retryAfter;
  }
}

/** Answer bytes, and time, spent reading a body to keep its connection; past either the connection is let go. */
const DRAIN_BYTES = 64 * 1024;
const DRAIN_MS = 250;

/**
 * The status is the answer; the body is not needed. A short body is read, which frees the
 * connection for the next event; a long, slow or endless one is cancelled instead of being waited
 * for (up to the timeout, holding the webhook's next events) and held in memory.
 */
async function discardBody(response: Response): Promise<void> {
  const reader = response.body?.getReader();
  if (!reader) return;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'late'>((resolve) => { timer = setTimeout(() => resolve('late'), DRAIN_MS); });
  try {
    for (let read = 0; read <= DRAIN_BYTES;) {
      const chunk = await Promise.race([reader.read(), deadline]);
      if (chunk === 'late') break;
      if (chunk.done) return;
      read += chunk.value.byteLength;
    }
  } catch {
    return; // the body failed after the answer was given: nothing to let go
  } finally {
    clearTimeout(timer);
  }
  await reader.cancel().catch(() => undefined);
}

export class Dispatcher {
  private readonly options: DispatcherOptions;
  private readonly stopController = new AbortController();
  /** Aborts deliveries in flight: STOP_GRACE_MS after stop. */
  private readonly abortDeliveries = new AbortController();
  private readonly loops: Promise<void>[] = [];
  private readonly wake = new Set<() => void>();
  private lastPrune = 0;
  private source = '';

  constructor(options: DispatcherOptions) {
    this.options = options;
    options.outbox.onAppend(() => this.wakeAll());
  }

  /**
   * Gives every webhook its durable position. Call before anything can record events, so that a
   * webhook configured for the first time gets every event from then on.
   */
  async register(): Promise<void> {
    for (const hook of this.options.webhooks) await this.options.outbox.position(hook.name);
    await this.options.outbox.prune(this.options.webhooks.map((h) => h.name));
  }

  /** Starts delivering; `source` is the CloudEvents source attribute of every event. */
  start(source: string): void {
    this.source = source;
    for (const hook of this.options.webhooks) {
      this.loops.push(this.run(hook).catch((err: unknown) => {
        if (!this.stopped) this.options.log.error({ err, webhook: hook.name }, 'event delivery stopped');
      }));
    }
  }

  /** Stops delivering; events not yet acknowledged stay in the outbox for the next start. */
  async stop(): Promise<void> {
    this.stopController.abort();
    this.wakeAll();
    const grace = setTimeout(() => this.abortDeliveries.abort(), STOP_GRACE_MS);
    try {
      await Promise.all(this.loops);
    } finally {
      clearTimeout(grace);
    }
  }

  private get stopped(): boolean {
    return this.stopController.signal.aborted;
  }

  private wakeAll(): void {
    for (const resolve of [...this.wake]) resolve();
  }

  /** Resolves after `ms`, on a wake-up (with `wakeable`), or on stop, whichever comes first. */
  private pause(ms: number, wakeable: boolean): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.stopController.signal.removeEventListener('abort', done);
        this.wake.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.stopController.signal.addEventListener('abort', done, { once: true });
      if (wakeable) this.wake.add(done);
    });
  }

  /**
   * Delivers until stop. A failure to read or advance the outbox (a dropped database connection,
   * a restarted server) is retried after a pause rather than ending delivery for this process:
   * events stay in the outbox, and with replicas the lock is let go meanwhile so another may take it.
   */
  private async run(hook: Webhook): Promise<void> {
    const { locks } = this.options;
    let failures = 0;
    while (!this.stopped) {
      const started = performance.now();
      try {
        if (!locks?.shared) {
          await this.deliverAll(hook);
          continue;
        }
        const delivered = await locks.tryRun(`webhook:${hook.name}`, () => this.deliverAll(hook));
        failures = 0;
        if (!delivered) await this.pause(this.options.pollMs ?? 1000, false);
      } catch (err) {
        if (this.stopped) return;
        // A failure after a long run of deliveries starts the backoff afresh.
        failures = performance.now() - started > this.options.retryMaxMs ? 1 : failures + 1;
        const delay = this.backoff(failures, undefined);
        this.options.log.warn({ err, webhook: hook.name, retryInMs: Math.round(delay) }, 'reading the event outbox failed; will retry');
        await this.pause(delay, false);
      }
    }
  }

  /** Delivers a webhook's events in order until stop. */
  private async deliverAll(hook: Webhook): Promise<void> {
    const { outbox } = this.options;
    // `position`: every event up to it is handled (delivered or skipped); `saved`: what the outbox knows.
    let position = await outbox.position(hook.name);
    let saved = position;
    let savedAt = performance.now();
    const save = async (now: boolean) => {
      if (position === saved || (!now && performance.now() - savedAt < SAVE_EVERY_MS)) return;
      await outbox.advance(hook.name, position);
      saved = position;
      savedAt = performance.now();
    };
    let failures = 0;
    try {
      while (!this.stopped) {
        const batch = await outbox.after(position, BATCH);
        if (!batch.length) {
          await save(true);
          await this.prune();
          await this.pause(this.options.pollMs ?? 1000, true);
          continue;
        }
        for (const event of batch) {
          if (this.stopped) break; // the one in flight was finished; the rest waits for the next start
          while (hook.matches(event)) {
            try {
              await this.deliver(hook, event);
              this.options.metrics?.eventDelivered(hook.name);
              failures = 0;
              break;
            } catch (err) {
              if (this.stopped) return;
              failures++;
              this.options.metrics?.eventDeliveryFailed(hook.name);
              const delay = this.backoff(failures, err instanceof DeliveryFailed ? err.retryAfter : undefined);
              this.options.log.warn({ webhook: hook.name, event: event.id, type: event.type, attempt: failures, retryInMs: Math.round(delay), error: (err as Error).message }, 'event delivery failed; will retry');
              await save(true);
              await this.pause(delay, false);
              if (this.stopped) return;
            }
          }
          position = event.seq;
          await save(false);
        }
      }
    } finally {
      // What was delivered stays delivered across a restart (unless the index is already closed).
      await save(true).catch(() => undefined);
    }
  }

  private backoff(failures: number, retryAfterSeconds: number | undefined): number {
    const { retryMinMs, retryMaxMs } = this.options;
    const exponential = Math.min(retryMaxMs, retryMinMs * 2 ** Math.min(failures - 1, 30));
    // Half fixed, half random: many registries retrying one receiver do not arrive together.
    const delay = exponential / 2 + Math.random() * (exponential / 2);
    return Math.min(retryMaxMs, Math.max(delay, (retryAfterSeconds ?? 0) * 1000));
  }

  private async deliver(hook: Webhook, event: OutboxEvent): Promise<void> {
    const body = JSON.stringify(toCloudEvent(event, this.source));
    const headers: Record<string, string> = { ...hook.headers, 'Content-Type': CLOUDEVENTS_CONTENT_TYPE };
    if (hook.secret) headers[SIGNATURE_HEADER] = signature(hook.secret, body);
    let response: Response;
    try {
      response = await fetch(hook.url, {
        method: 'POST', headers, body, redirect: 'error',
        signal: AbortSignal.any([AbortSignal.timeout(this.options.timeoutMs), this.abortDeliveries.signal]),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new DeliveryFailed(cause?.code ?? cause?.message ?? (err as Error).message);
    }
    await discardBody(response);
    if (!response.ok) {
      const retryAfter = Number(response.headers.get('retry-after'));
      throw new DeliveryFailed(`the webhook answered ${response.status}`, Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined);
    }
  }

  private async prune(): Promise<void> {
    const now = Date.now();
    if (now - this.lastPrune < PRUNE_EVERY_MS) return;
    this.lastPrune = now;
    await this.options.outbox.prune(this.options.webhooks.map((h) => h.name));
  }
}
