// Events: CloudEvents 1.0 about manifests, tags, referrers, component versions and GC runs, sent to
// the configured webhooks from the durable outbox in the metadata index (src/metadata/outbox.ts).
// See docs/operations.md#events.
import type { Logger } from 'pino';
import type { Settings } from '../config/settings.ts';
import type { GcReport } from '../gc/collector.ts';
import type { Locks } from '../storage/mutex.ts';
import type { EventOutbox } from '../metadata/outbox.ts';
import type { Metrics } from '../observe/metrics.ts';
import { Dispatcher } from './dispatcher.ts';
import { parseWebhooks, type Webhook } from './webhooks.ts';

export { parseWebhooks, type Webhook } from './webhooks.ts';
export { CLOUDEVENTS_CONTENT_TYPE, SIGNATURE_HEADER, TYPE_PREFIX, signature, toCloudEvent, type CloudEvent } from './cloudevents.ts';

export class Events {
  private readonly outbox: EventOutbox;
  private readonly dispatcher: Dispatcher;

  private constructor(outbox: EventOutbox, dispatcher: Dispatcher) {
    this.outbox = outbox;
    this.dispatcher = dispatcher;
  }

  /**
   * Starts tracking the webhooks' positions in the outbox (before anything records events);
   * deliveries begin with `start`.
   */
  static async open(webhooks: Webhook[], settings: Settings, outbox: EventOutbox, log: Logger, metrics?: Metrics, locks?: Locks): Promise<Events> {
    const dispatcher = new Dispatcher({
      outbox, webhooks, log, metrics, locks, timeoutMs: settings.webhookTimeoutMs, retryMinMs: settings.webhookRetryMinMs, retryMaxMs: settings.webhookRetryMaxMs,
    });
    await dispatcher.register();
    log.info({ webhooks: webhooks.map((w) => w.name) }, 'events on');
    return new Events(outbox, dispatcher);
  }

  /** Delivers from now on; `source` is every event's CloudEvents source. */
  start(source: string): void {
    this.dispatcher.start(source);
  }

  /** Records a finished garbage collection (dry runs change nothing and are not reported). */
  async gcCompleted(report: GcReport): Promise<void> {
    if (report.dryRun) return;
    const manifests = report.removed.filter((item) => item.kind === 'manifest').length;
    await this.outbox.append([{
      type: 'gc.completed', repository: '', subject: '',
      data: { repositories: report.repositories, manifests, blobs: report.removed.length - manifests, bytes: report.bytes, durationMs: Math.round(report.durationMs) },
    }]);
  }

  stop(): Promise<void> {
    return this.dispatcher.stop();
  }
}

/** The webhooks of the settings, checked (a SettingsError names the first problem). */
export function configuredWebhooks(settings: Settings): Webhook[] {
  return parseWebhooks(settings.webhooks);
}
