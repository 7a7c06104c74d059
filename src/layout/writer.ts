// Brings `index.json` up to date from the metadata journal. Writes are coalesced per repository:
// a change schedules one rewrite after a delay that grows with what the last rewrite cost, so a
// busy repository with 100,000 entries spends a bounded share of its time rewriting.
import type { StorageDriver } from '../storage/driver.ts';
import type { ManifestRecord, MetadataStore, RepositoryRecord } from '../metadata/store.ts';
import { OCI_INDEX } from '../oci/mediatypes.ts';
import { digestOf } from '../oci/digest.ts';
import { INDEX_FILE, LAYOUT_FILE, LAYOUT_HEADER, REF_NAME, blobKey, layoutKey } from './paths.ts';
import { ownEntry, stampOf, tagFromRefName } from './reader.ts';
import { OLAREG_REFERRERS_SUBJECT, TRELLIS_REFERRERS_SUBJECT, fallbackTag, indexJsonFromParts, referrerEntryJson } from './referrers.ts';

/** Which referrer encodings to write into layouts besides the untagged entries. */
export interface LayoutReferrerOptions {
  /** A fallback-tag index per subject (regctl's default reader needs it). */
  fallbackTags: boolean;
  /** olareg's `org.olareg.referrer.subject` on those entries. */
  olaregAnnotations: boolean;
}

export interface FlushTiming {
  /** Shortest wait between a change and the rewrite that shows it. */
  minDelayMs: number;
  /** Longest wait, whatever the rewrite costs. */
  maxDelayMs: number;
  /** The wait is this many times the last rewrite's duration (bounds the time spent rewriting). */
  costFactor: number;
  /**
   * Fault injection for crash tests: a pause between writing index.json and renaming it into
   * place, so that requests land while a built index waits for its rename. Never set otherwise.
   */
  pauseBeforeRenameMs?: number;
}

/**
 * A manifest's entry: Trellis's own, or the one another tool wrote for it (`kept`), whole, with
 * what Trellis would write and it lacks added (e.g. the subject annotation containerd reads).
 */
function entryFor(record: ManifestRecord, tag: string | undefined, kept: string | null): string {
  const own = ownEntry(record, tag);
  if (kept === null) return JSON.stringify(own);
  const entry = JSON.parse(kept) as Record<string, unknown>;
  for (const [key, value] of Object.entries(own)) if (!(key in entry)) entry[key] = value;
  const annotations = entry.annotations as Record<string, string> | undefined;
  if (own.annotations && annotations && typeof annotations === 'object') {
    for (const [key, value] of Object.entries(own.annotations)) if (!(key in annotations)) annotations[key] = value;
  }
  return JSON.stringify(entry);
}

/** Rows read per query while rebuilding; the event loop runs between pages. */
const PAGE = 2000;
const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/** The whole `index.json` for a repository, from the metadata index, built a page at a time. */
export async function buildIndexJson(metadata: MetadataStore, repo: RepositoryRecord, referrerOptions: LayoutReferrerOptions): Promise<string> {
  const parts: string[] = [];
  // A fallback tag a client pushed itself (notation, `oras attach --distribution-spec
  // v1.1-referrers-tag`, regctl) is the client's tag: it is listed as pushed, and Trellis's
  // generated index for that subject stays out of index.json until the client's tag is gone.
  // Readers still find every referrer through the untagged entries annotated with their subject.
  const generated = [];
  if (referrerOptions.fallbackTags) {
    for (const r of await metadata.referrerIndexes(repo.id)) if ((await metadata.resolveTag(repo.id, fallbackTag(r.subject))) === undefined) generated.push(r);
  }
  for (let after = ''; ;) {
    const page = await metadata.taggedEntries(repo.id, { after, limit: PAGE });
    for (const m of page) parts.push(entryFor(m, m.tag, m.layoutEntry));
    if (page.length < PAGE) break;
    after = page[page.length - 1]!.tag;
    await yieldToEventLoop();
  }
  // Entries another tool wrote under ref names that are no registry tags (skopeo's `oci:DIR:team/x`),
  // for the manifests still held here: a manifest deleted here takes them along.
  const named = new Set<string>();
  for (const entry of repo.layoutExtras.refNameEntries ?? []) {
    if (named.has(entry.digest) || (await metadata.manifest(repo.id, entry.digest)) !== undefined) named.add(entry.digest);
  }
  for (let afterId = 0; ;) {
    const page = await metadata.untaggedEntries(repo.id, afterId, PAGE);
    // Such an entry lists the manifest already; an untagged one is added only to name its subject.
    for (const m of page) if (!named.has(m.digest) || m.subject || m.layoutEntry !== null) parts.push(entryFor(m, undefined, m.layoutEntry));
    if (page.length < PAGE) break;
    afterId = page[page.length - 1]!.id;
    await yieldToEventLoop();
  }
  for (const entry of repo.layoutExtras.refNameEntries ?? []) if (named.has(entry.digest)) parts.push(JSON.stringify(entry));
  for (const r of generated) {
    const annotations: Record<string, string> = { [REF_NAME]: fallbackTag(r.subject), [TRELLIS_REFERRERS_SUBJECT]: r.subject };
    if (referrerOptions.olaregAnnotations) annotations[OLAREG_REFERRERS_SUBJECT] = r.subject;
    parts.push(JSON.stringify({ mediaType: OCI_INDEX, digest: r.digest, size: r.size, annotations }));
  }
  for (const entry of repo.layoutExtras.foreignEntries ?? []) {
    // A tag pushed here since names its manifest already; two entries under one ref name would
    // send oras (the last wins) and skopeo or regctl (the first wins) to different manifests.
    const refName: unknown = entry.annotations?.[REF_NAME];
    const tag = typeof refName === 'string' ? tagFromRefName(refName) : undefined;
    if (tag !== undefined && (await metadata.resolveTag(repo.id, tag)) !== undefined) continue;
    parts.push(JSON.stringify(entry));
  }
  return indexJsonFromParts(parts, repo.layoutExtras.annotations);
}

/** A failed rewrite is tried again after this, doubling per failure up to RETRY_MAX_MS. */
const RETRY_FIRST_MS = 100;
const RETRY_MAX_MS = 30_000;

/** How one rewrite of `index.json` went (for metrics). */
export interface FlushOutcome {
  repository: string;
  ok: boolean;
  /** Time since the first change it shows was noted; absent for start-up replays of the journal. */
  lagMs?: number;
}

export class LayoutWriter {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Rewrites a timer started, until they settle (close waits for them). */
  private readonly inFlight = new Set<Promise<void>>();
  /** Set by close: no rewrite or retry is scheduled any more (the metadata store is going away). */
  private closed = false;
  /** When each repository's oldest change not yet in `index.json` was noted (performance.now()). */
  private readonly pendingSince = new Map<string, number>();
  private readonly flushListeners: ((outcome: FlushOutcome) => void)[] = [];
  private readonly lastCostMs = new Map<string, number>();
  /** Consecutive failed rewrites per repository (sets the retry delay). */
  private readonly failures = new Map<string, number>();
  private readonly driver: StorageDriver;
  private readonly metadata: MetadataStore;
  private readonly timing: FlushTiming;
  private readonly referrerOptions: LayoutReferrerOptions;
  private readonly runExclusive: (repository: string, work: () => Promise<void>) => Promise<void>;
  private readonly beforeWrite: (repository: string) => Promise<RepositoryRecord | undefined | 'lost'>;
  private readonly afterWrite: (repository: string) => Promise<void>;
  private readonly onError: (repository: string, err: unknown, retryInMs: number) => void;
  /** Looks for rewrites another process journaled and never did (it died); see takeOverAbandoned. */
  private readonly abandonedWatch: NodeJS.Timeout | undefined;
  /** Repositories pending at the last look, with the change they were at. */
  private pendingAtLastLook = new Map<string, number>();
  /** Layouts whose index.json went missing: the next rewrite also writes what makes the folder a layout. */
  private readonly restoring = new Set<string>();

  constructor(options: {
    driver: StorageDriver;
    metadata: MetadataStore;
    timing: FlushTiming;
    referrers: LayoutReferrerOptions;
    runExclusive: (repository: string, work: () => Promise<void>) => Promise<void>;
    /**
     * Runs before each rewrite: folds in edits another tool made to the layout meanwhile. Returns
     * the repository's record when nothing changed (undefined: read it again), or 'lost' when
     * `index.json` is gone: only a rewrite asked for by `restore` writes it then.
     */
    beforeWrite: (repository: string) => Promise<RepositoryRecord | undefined | 'lost'>;
    /**
     * Runs after each rewrite, outside runExclusive: removes the files the journal holds for
     * removal now that index.json no longer names them (the caller serializes it with pushes).
     */
    afterWrite: (repository: string) => Promise<void>;
    /** A rewrite failed; it is tried again in `retryInMs`, with or without another change. */
    onError: (repository: string, err: unknown, retryInMs: number) => void;
    /** Other processes write the same layouts (replicas): take over the rewrites one of them left. */
    otherWriters?: boolean;
  }) {
    this.driver = options.driver;
    this.metadata = options.metadata;
    this.timing = options.timing;
    this.referrerOptions = options.referrers;
    this.runExclusive = options.runExclusive;
    this.beforeWrite = options.beforeWrite;
    this.afterWrite = options.afterWrite;
    this.onError = options.onError;
    if (options.otherWriters) {
      this.abandonedWatch = setInterval(() => {
        this.takeOverAbandoned().catch((err: unknown) => this.onError('*', err, this.timing.maxDelayMs));
      }, Math.max(1000, this.timing.maxDelayMs));
      this.abandonedWatch.unref();
    }
  }

  /**
   * A replica that noted a change rewrites index.json within maxDelayMs; one that died never
   * does. A repository pending at the same change at two looks maxDelayMs apart is rewritten here.
   */
  private async takeOverAbandoned(): Promise<void> {
    const pending = new Map<string, number>();
    for (const repo of await this.metadata.pendingRepositories()) {
      pending.set(repo.name, repo.gen);
      if (this.pendingAtLastLook.get(repo.name) === repo.gen && !this.timers.has(repo.name)) this.changed(repo.name);
    }
    this.pendingAtLastLook = pending;
  }

  /**
   * The repository's `index.json` went missing (the caller moved its change counter): the next
   * rewrite writes it, then `blobs/` and `oci-layout` if they went too, so other tools read the folder again.
   */
  restore(repository: string): void {
    this.restoring.add(repository);
    this.changed(repository);
  }

  isRestoring(repository: string): boolean {
    return this.restoring.has(repository);
  }

  /** Notes that a repository's journal moved ahead of its `index.json`. */
  changed(repository: string): void {
    if (!this.pendingSince.has(repository)) this.pendingSince.set(repository, performance.now());
    if (this.timers.has(repository)) return;
    const { minDelayMs, maxDelayMs, costFactor } = this.timing;
    this.schedule(repository, Math.min(maxDelayMs, Math.max(minDelayMs, (this.lastCostMs.get(repository) ?? 0) * costFactor)));
  }

  private schedule(repository: string, delayMs: number): void {
    if (this.closed) return;
    const timer = setTimeout(() => {
      this.timers.delete(repository);
      const run = this.flush(repository).then(() => void this.failures.delete(repository), (err: unknown) => {
        if (this.closed) return; // close flushes what is pending itself, or reports why not
        // Nothing else may change in this repository for a long time: try again by itself.
        const failures = (this.failures.get(repository) ?? 0) + 1;
        this.failures.set(repository, failures);
        const retryInMs = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** (failures - 1));
        this.onError(repository, err, retryInMs);
        if (!this.timers.has(repository)) this.schedule(repository, retryInMs);
      });
      this.inFlight.add(run);
      void run.finally(() => this.inFlight.delete(run));
    }, delayMs);
    this.timers.set(repository, timer);
  }

  /** Writes `index.json` now if the journal is ahead of it, then removes the files it stopped naming. */
  async flush(repository: string): Promise<void> {
    await this.runExclusive(repository, async () => {
      // Changes noted from here on are not certain to be in this rewrite: they count from now.
      const since = this.pendingSince.get(repository);
      this.pendingSince.delete(repository);
      try {
        const wrote = await this.rewrite(repository);
        if (wrote) this.notify({ repository, ok: true, ...(since === undefined ? {} : { lagMs: performance.now() - since }) });
      } catch (err) {
        if (since !== undefined) this.pendingSince.set(repository, Math.min(since, this.pendingSince.get(repository) ?? since));
        this.notify({ repository, ok: false });
        throw err;
      }
    });
    await this.afterWrite(repository);
  }

  /** Calls `listener` after every rewrite attempt. */
  onFlush(listener: (outcome: FlushOutcome) => void): void {
    this.flushListeners.push(listener);
  }

  /** Milliseconds since the oldest change `index.json` does not show yet, in any repository (0: none). */
  oldestPendingMs(now = performance.now()): number {
    let oldest = now;
    for (const since of this.pendingSince.values()) oldest = Math.min(oldest, since);
    return now - oldest;
  }

  private notify(outcome: FlushOutcome): void {
    for (const listener of this.flushListeners) listener(outcome);
  }

  /** Rewrites `index.json` from the journal; false when it already showed everything. */
  private async rewrite(repository: string): Promise<boolean> {
    const current = await this.beforeWrite(repository);
    // index.json is there again (another replica's restore, or another tool, wrote it first): the
    // restore asked of this process is over. Left pending, it would let a rewrite after the next
    // removal write index.json without anything noticing the files that went (beforeWrite skips
    // the restore while one is pending here).
    const restoredElsewhere = current !== 'lost' && this.restoring.delete(repository);
    if (current === 'lost' && !this.restoring.has(repository)) return false;
    const repo = (current === 'lost' ? undefined : current) ?? await this.metadata.repository(repository);
    if (!repo || repo.gen <= repo.flushedGen) {
      this.restoring.delete(repository);
      if (restoredElsewhere) await this.writeLayoutMarker(repository);
      return false;
    }
    const started = performance.now();
    if (this.referrerOptions.fallbackTags) await this.writeReferrerIndexes(repo);
    const body = await buildIndexJson(this.metadata, repo, this.referrerOptions);
    const key = layoutKey(repository, INDEX_FILE);
    let stamp = '';
    // Noted before the rename: a crash right after it must not make the file look like another tool's.
    const written = await this.driver.writeFile(key, body, {
      beforeCommit: async (info) => {
        stamp = stampOf(info);
        await this.metadata.notePendingIndex(repo.id, repo.gen, stamp);
        if (this.timing.pauseBeforeRenameMs) await new Promise((resolve) => setTimeout(resolve, this.timing.pauseBeforeRenameMs));
      },
    });
    // The stored identity is the authority (an object store may assign another than expected).
    if (written) stamp = stampOf(written);
    if (!this.restoring.has(repository) && !restoredElsewhere && !(await this.driver.stat(layoutKey(repository, LAYOUT_FILE)))) {
      // The folder was removed by hand while this file was built: the rename made it again with
      // nothing in it but an index.json listing files that went. Taken back, not marked flushed:
      // the next rewrite finds the layout lost, and what went is forgotten (or restored) as usual.
      await this.driver.remove(key);
      this.changed(repository);
      return false;
    }
    await this.metadata.markFlushed(repo.id, repo.gen, stamp);
    if (this.restoring.delete(repository) || restoredElsewhere) await this.writeLayoutMarker(repository);
    this.lastCostMs.set(repository, performance.now() - started);
    return true;
  }

  /** After a restore's index.json: `blobs/`, then `oci-layout` last, as when a repository is created (it marks the folder as a layout). */
  private async writeLayoutMarker(repository: string): Promise<void> {
    await this.driver.createFolder(`${repository}/blobs`);
    await this.driver.writeFile(layoutKey(repository, LAYOUT_FILE), LAYOUT_HEADER, { ifAbsent: true });
  }

  /**
   * Rewrites the referrers index of every subject whose referrers changed since the last flush.
   * The metadata store journals each index blob it replaces for removal after this rewrite.
   */
  private async writeReferrerIndexes(repo: RepositoryRecord): Promise<void> {
    for (const { subject, marked } of await this.metadata.dirtySubjects(repo.id)) {
      const parts: string[] = [];
      for (let after = ''; ;) {
        const page = await this.metadata.referrers(repo.id, subject, { after, limit: PAGE });
        for (const record of page) parts.push(referrerEntryJson(record));
        if (page.length < PAGE) break;
        after = page[page.length - 1]!.digest;
        await yieldToEventLoop();
      }
      let written: { digest: string; size: number } | null = null;
      if (parts.length) {
        // Digest order (the query's) makes the bytes, and so the fallback tag's digest, reproducible.
        const body = Buffer.from(indexJsonFromParts(parts));
        written = { digest: digestOf(body), size: body.length };
        const key = blobKey(repo.name, written.digest);
        await this.driver.writeFile(key, body, { ifAbsent: true });
      }
      await this.metadata.setReferrerIndex(repo.id, subject, written, marked);
    }
  }

  /** Work a rewrite set off that flushAll (and so close) must wait for: a removed layout's restore. */
  track(work: Promise<void>): void {
    this.inFlight.add(work);
    void work.finally(() => this.inFlight.delete(work));
  }

  /** Writes every pending `index.json` now, after the rewrites already under way have ended. */
  async flushAll(): Promise<void> {
    // A rewrite may set off more work (track) that makes another rewrite due (restore): a few passes settle it.
    for (let pass = 0; pass < 3; pass++) {
      for (const timer of this.timers.values()) clearTimeout(timer);
      this.timers.clear();
      await Promise.allSettled([...this.inFlight]);
      // A restore asked of this process is settled too when another replica's rewrite showed everything first.
      const due = new Set([...(await this.metadata.pendingRepositories()).map((repo) => repo.name), ...this.restoring]);
      for (const name of due) await this.flush(name);
      if (!this.inFlight.size && !this.restoring.size) return;
    }
  }

  /**
   * The last flush before the metadata store closes: nothing is scheduled from now on, and no
   * rewrite started by a timer is left running (one was once left retrying against a closed store
   * every 30 s, and kept its process alive).
   */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.abandonedWatch);
    await this.flushAll();
  }
}
