// Observability: Prometheus metrics, health and readiness. The HTTP side (endpoints, request ids,
// the per-request log line) is in src/registry/ops.ts and src/registry/request-log.ts; this folder
// holds what they report and hooks it into the registry's parts. See docs/operations.md.
import type { Registry } from '../content/registry.ts';
import type { Uploads } from '../content/uploads.ts';
import type { GcReport } from '../gc/collector.ts';
import { TRELLIS_FOLDER } from '../layout/paths.ts';
import type { MetadataStore } from '../metadata/store.ts';
import { Health, type ReadinessChecks } from './health.ts';
import { timeMethods } from './instrument.ts';
import { Metrics } from './metrics.ts';

export { Health, type HealthReport } from './health.ts';
export { Metrics } from './metrics.ts';

const READY_PROBE_KEY = `${TRELLIS_FOLDER}/readyz-probe`;

export class Observability {
  readonly metrics = new Metrics();
  readonly health = new Health();

  /** Times every metadata store operation (RegistryOptions.instrumentMetadata). */
  readonly instrumentMetadata = (store: MetadataStore): MetadataStore => timeMethods(store, (operation) => this.metrics.metadataTimer(operation));

  /** Hooks metrics into an open registry: index.json flushes, upload sessions. */
  watch(registry: Registry, uploads: Uploads): void {
    registry.layout.onFlush((outcome) => {
      if (!outcome.ok) this.metrics.indexFlushFailed();
      else if (outcome.lagMs !== undefined) this.metrics.indexFlushed(outcome.lagMs / 1000);
    });
    this.metrics.gauge('trellis_index_flush_pending_seconds', 'Age of the oldest change some index.json does not show yet (0: all flushed)',
      () => registry.layout.oldestPendingMs() / 1000);
    this.metrics.gauge('trellis_uploads_in_flight', 'Blob upload sessions open now', () => uploads.openSessions);
  }

  /** Readiness from now on (once the start-up catch-up is done): checks the index and the data directory. */
  serving(registry: Registry): void {
    const checks: ReadinessChecks = {
      metadata: () => registry.metadata.repositories({ limit: 1 }),
      storage: async () => {
        await registry.driver.writeFile(READY_PROBE_KEY, String(Date.now()));
        await registry.driver.remove(READY_PROBE_KEY);
      },
      caughtUp: () => registry.caughtUp,
    };
    this.health.serving(checks);
  }

  gcDone(report: GcReport): void {
    const manifests = report.removed.filter((item) => item.kind === 'manifest').length;
    this.metrics.gcDone({ dryRun: report.dryRun, seconds: report.durationMs / 1000, manifests, blobs: report.removed.length - manifests, bytes: report.bytes });
  }

  gcFailed(): void {
    this.metrics.gcFailed();
  }
}
