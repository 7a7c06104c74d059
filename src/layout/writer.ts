// Brings `index.json` up to date from the metadata journal. Writes are coalesced per repository:
// a change schedules one rewrite after a delay that grows with what the last rewrite cost, so a
// busy repository with 100,000 entries spends a bounded share of its time rewriting.
import type { StorageDriver } from '../storage/driver.ts';
import type { ManifestRecord, MetadataStore, RepositoryRecord } from '../metadata/store.ts';
import type { Descriptor } from '../oci/manifest.ts';
import { OCI_INDEX } from '../oci/mediatypes.ts';
import { CONTAINERD_SUBJECT, INDEX_FILE, REF_NAME, layoutKey } from './paths.ts';
import { stampOf } from './reader.ts';

export interface FlushTiming {
  /** Shortest wait between a change and the rewrite that shows it. */
  minDelayMs: number;
  /** Longest wait, whatever the rewrite costs. */
  maxDelayMs: number;
  /** The wait is this many times the last rewrite's duration (bounds the time spent rewriting). */
  costFactor: number;
}

function entryFor(record: ManifestRecord, annotations: Record<string, string>): Descriptor {
  const d: Descriptor = { mediaType: record.mediaType, digest: record.digest, size: record.size };
  // The config type stands in as artifactType only in referrers answers; in the layout, list the
  // manifest's own artifactType.
  if (record.artifactType && record.artifactType !== record.configMediaType) d.artifactType = record.artifactType;
  if (Object.keys(annotations).length) d.annotations = annotations;
  return d;
}

/** The whole `index.json` for a repository, from the metadata index. */
export function buildIndexJson(metadata: MetadataStore, repo: RepositoryRecord): string {
  const { tagged, untagged } = metadata.layoutEntries(repo.id);
  const manifests: Descriptor[] = [];
  for (const m of tagged) manifests.push(entryFor(m, { [REF_NAME]: m.tag }));
  for (const m of untagged) manifests.push(entryFor(m, m.subject ? { [CONTAINERD_SUBJECT]: m.subject } : {}));
  manifests.push(...(repo.layoutExtras.foreignEntries ?? []));
  const index: Record<string, unknown> = { schemaVersion: 2, mediaType: OCI_INDEX, manifests };
  if (repo.layoutExtras.annotations) index.annotations = repo.layoutExtras.annotations;
  return JSON.stringify(index);
}

export class LayoutWriter {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly lastCostMs = new Map<string, number>();
  private readonly driver: StorageDriver;
  private readonly metadata: MetadataStore;
  private readonly timing: FlushTiming;
  private readonly runExclusive: (repository: string, work: () => Promise<void>) => Promise<void>;
  private readonly beforeWrite: (repository: string) => Promise<void>;
  private readonly onError: (repository: string, err: unknown) => void;

  constructor(options: {
    driver: StorageDriver;
    metadata: MetadataStore;
    timing: FlushTiming;
    runExclusive: (repository: string, work: () => Promise<void>) => Promise<void>;
    /** Runs before each rewrite: folds in edits another tool made to the layout meanwhile. */
    beforeWrite: (repository: string) => Promise<void>;
    onError: (repository: string, err: unknown) => void;
  }) {
    this.driver = options.driver;
    this.metadata = options.metadata;
    this.timing = options.timing;
    this.runExclusive = options.runExclusive;
    this.beforeWrite = options.beforeWrite;
    this.onError = options.onError;
  }

  /** Notes that a repository's journal moved ahead of its `index.json`. */
  changed(repository: string): void {
    if (this.timers.has(repository)) return;
    const { minDelayMs, maxDelayMs, costFactor } = this.timing;
    const delay = Math.min(maxDelayMs, Math.max(minDelayMs, (this.lastCostMs.get(repository) ?? 0) * costFactor));
    const timer = setTimeout(() => {
      this.timers.delete(repository);
      this.flush(repository).catch((err) => this.onError(repository, err));
    }, delay);
    this.timers.set(repository, timer);
  }

  /** Writes `index.json` now if the journal is ahead of it. */
  flush(repository: string): Promise<void> {
    return this.runExclusive(repository, async () => {
      await this.beforeWrite(repository);
      const repo = this.metadata.repository(repository);
      if (!repo || repo.gen <= repo.flushedGen) return;
      const started = performance.now();
      const body = buildIndexJson(this.metadata, repo);
      const key = layoutKey(repository, INDEX_FILE);
      await this.driver.writeAtomic(key, body);
      const info = await this.driver.stat(key);
      this.metadata.markFlushed(repo.id, repo.gen, info ? stampOf(info) : '');
      this.lastCostMs.set(repository, performance.now() - started);
    });
  }

  /** Flushes everything pending, e.g. on shutdown. */
  async flushAll(): Promise<void> {
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    for (const repo of this.metadata.pendingRepositories()) await this.flush(repo.name);
  }

  pending(): number {
    return this.timers.size;
  }
}
