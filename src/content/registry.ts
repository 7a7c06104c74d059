// The registry's content model: repositories as OCI layouts, indexed in the metadata store.
// HTTP handlers and CLI commands call this; it never speaks HTTP itself.
import { mkdir } from 'node:fs/promises';
import type { Readable, Writable } from 'node:stream';
import type { Logger } from 'pino';
import { openStorage, type Locks, type ObjectInfo, type ObjectWriter, type StorageDriver } from '../storage/index.ts';
import { lockDataDirectory, MetadataInUse, type DirectoryLock } from '../metadata/directory-lock.ts';
import { MetadataDamaged, dropMetadata, eachRepository, holdExclusively, manifestRecord, metadataExists, openMetadata, type BlobLookup, type ManifestRecord, type MetadataStore, type PageRequest, type QueryIndex, type RepositoryRecord } from '../metadata/index.ts';
import { LayoutWriter, type FlushTiming, type LayoutReferrerOptions } from '../layout/writer.ts';
import { IndexOfAnotherStorage, StorageClaim, type ClaimTiming } from './storage-claim.ts';
import { findLayouts, forEachConcurrently } from '../layout/discover.ts';
import { LayoutCorrupt, readLayout, stampOf } from '../layout/reader.ts';
import { INDEX_FILE, LAYOUT_FILE, LAYOUT_HEADER, TRELLIS_FOLDER, blobKey, layoutKey } from '../layout/paths.ts';
import { OCI_INDEX } from '../oci/mediatypes.ts';
import { digestOf, parseDigest, type DigestAlgorithm, type ParsedDigest } from '../oci/digest.ts';
import type { ErrorEntry } from '../oci/errors.ts';
import { ContentError } from './errors.ts';
import { ManifestInvalid, parseManifest, type ManifestLink } from '../oci/manifest.ts';
import { isValidTag, repositoryNameProblem } from '../oci/names.ts';
import { FileCache } from './file-cache.ts';
import { resolveNestedLinks } from '../graph/nested.ts';

export interface RegistryOptions {
  dataDir: string;
  /** Where blobs and layouts live: '' for the data directory, a path, or s3://… (src/storage). */
  storage?: string;
  /** Where the metadata index lives: '' for SQLite in the data directory, or a postgres:// URL. */
  metadata: string;
  maxManifestBytes: number;
  /** fsync files, folders and the metadata database: survives power loss, costs write latency. */
  durable: boolean;
  flush: FlushTiming;
  /** Referrer encodings written into layouts besides the untagged entries. */
  layoutReferrers: LayoutReferrerOptions;
  /** How often a repository's `index.json` is checked for edits by other tools. */
  layoutCheckIntervalMs: number;
  /** Refuse to delete a manifest that an index in an ancestor repository still lists. */
  protectNestedChildren: boolean;
  /** List BuildKit attestation manifests as referrers of the manifest they describe (read-only). */
  buildkitAttestations: boolean;
  logger: Logger;
  /** Wraps the metadata store once opened (e.g. to time its operations for metrics). */
  instrumentMetadata?: ((store: MetadataStore) => MetadataStore) | undefined;
  /** Record events about changes in the metadata outbox (someone consumes them: webhooks). */
  recordEvents?: boolean | undefined;
  /**
   * Open without waiting for the walk of storage that adopts layouts other tools wrote (and the
   * repairs after it): requests are served at once, each repository adopted before its first
   * request and registry-wide answers held until the walk is done (`adopted`).
   */
  adoptInBackground?: boolean | undefined;
  /**
   * With `adoptInBackground`: the walk starts once this settles (`serve`: when the server listens),
   * so that the first requests are not queued behind it on the event loop.
   */
  catchUpAfter?: Promise<unknown> | undefined;
  /** How the storage claim is refreshed and when it goes stale (tests shorten it). */
  claimTiming?: ClaimTiming | undefined;
}

/** A change to a repository's manifests or tags, as observers (e.g. the component index) see it. */
export interface ContentChange {
  repository: string;
  /** The manifest a push just stored (or stored again). */
  stored?: ManifestRecord;
  /** Manifests just removed. */
  removed?: string[];
  /** A tag just removed. */
  untagged?: string;
}

/** Awaited after each committed change, before the API answers; a failure is logged, never the push's. */
export type ContentObserver = (change: ContentChange) => Promise<void>;

/** An answer derived from a repository's index: a body and the headers that go with it. */
export interface DerivedAnswer {
  readonly body: Buffer;
  readonly headers: Readonly<Record<string, string>>;
  readonly byteLength: number;
}

export interface StoredManifest {
  record: ManifestRecord;
  key: string;
  /** The object as the storage driver saw it when the manifest was resolved. */
  info: ObjectInfo;
}

/** Repositories adopted at once at start-up. */
const ADOPT_CONCURRENCY = 32;
/** Repository ids remembered (repositoryId) before the map starts over: a few MiB at most. */
const MAX_REMEMBERED_IDS = 50_000;
/** Longest run of start-up adoption between two turns of the event loop. */
const ADOPT_SLICE_MS = 5;

/** Missing descriptors a refused manifest push names at most. */
const MAX_REPORTED_MISSING = 10;
/** Existence checks run in parallel per batch. */
const EXISTENCE_BATCH = 32;

/**
 * Where a push's link may be held, in the order asked: the repository it names (unless a nested
 * entry the pusher may not pull: pushes cannot probe those), then, for a nested entry, the
 * pushed repository itself (`flattened`: copying tools flatten nested indexes into one).
 */
function blobLookups(l: ManifestLink, repository: string, canPull: (name: string) => boolean): (BlobLookup & { flattened: boolean })[] {
  const lookups: (BlobLookup & { flattened: boolean })[] = [];
  if (!l.repository || canPull(l.repository)) lookups.push({ repository: l.repository ?? repository, digest: l.digest, flattened: false });
  if (l.repository) lookups.push({ repository, digest: l.digest, flattened: true });
  return lookups;
}

/** Parses a digest from a URL or query, with the spec's error for each way it can be wrong. */
export function requireDigest(value: string | null | undefined, what = 'digest'): ParsedDigest {
  if (!value) throw new ContentError('invalid', 'DIGEST_INVALID', `${what} is missing`);
  const parsed = parseDigest(value);
  if (parsed === 'malformed') throw new ContentError('invalid', 'DIGEST_INVALID', `${what} ${JSON.stringify(value.slice(0, 200))} is not a valid digest`);
  if (parsed === 'unsupported') throw new ContentError('invalid', 'DIGEST_INVALID', `${what} uses an unsupported algorithm; use sha256 or sha512`);
  return parsed;
}

export function requireRepositoryName(name: string): void {
  const problem = repositoryNameProblem(name);
  if (problem) throw new ContentError('invalid', 'NAME_INVALID', problem, { name: name.slice(0, 300) });
}

export { DataDirectoryBusy, MetadataInUse } from '../metadata/directory-lock.ts';
export { StorageClaimed } from './storage-claim.ts';

/** Takes the data directory for this process, or throws DataDirectoryBusy naming the holder. */
async function lockData(dataDir: string): Promise<DirectoryLock> {
  await mkdir(`${dataDir}/${TRELLIS_FOLDER}`, { recursive: true });
  return lockDataDirectory(dataDir, `${dataDir}/${TRELLIS_FOLDER}`, ['trellis', ...process.argv.slice(2)].join(' '));
}

export class Registry {
  readonly driver: StorageDriver;
  readonly metadata: MetadataStore;
  /** Queries over every manifest's attributes, on the same index. */
  readonly queries: QueryIndex;
  readonly layout: LayoutWriter;
  readonly options: RegistryOptions;
  /** The metadata store's named locks: per process on SQLite, across replicas on PostgreSQL. */
  readonly locks: Locks;
  private readonly lastLayoutCheck = new Map<string, number>();
  /**
   * Repository ids by name. A repository's row is never removed or renumbered while the index
   * exists (`reindex` rebuilds it with the servers stopped), so an id once read stays true in every
   * process sharing the index, and a blob's PUT need not read the row again.
   */
  private readonly repositoryIds = new Map<string, number>();
  private readonly log: Logger;
  private readonly observers: ContentObserver[] = [];
  /** Bodies of recently pulled manifests (8 MiB in all, none over 256 KiB), checked against the object's etag. */
  private readonly manifestCache = new FileCache({ maxBytes: 8 << 20, maxEntryBytes: 256 << 10 });
  /** Answers derived from one repository's index (derivedAnswer), valid while the repository is unchanged. */
  private readonly answerCache = new FileCache<DerivedAnswer>({ maxBytes: 32 << 20, maxEntryBytes: 8 << 20 });

  /** Released on close when this registry took it (not when a caller lent it, as rebuildIndex does). */
  private readonly directoryLock: DirectoryLock | undefined;
  /** Start-up's catching up with storage (adoption, repairs, removals); settles, never rejects. */
  private catchingUp: Promise<void> = Promise.resolve();
  /** Every layout in storage is in the index: requests no longer check their repository first. */
  private allAdopted = true;
  /** The catching up has ended, done or failed (readiness waits for it). */
  private catchUpSettled = true;
  /** Repositories adopted (or being adopted) while catching up, by the walk or ahead of it. */
  private readonly adopting = new Map<string, Promise<void>>();
  /** Stops the catching up when the registry closes (the next start does it again). */
  private readonly stopCatchingUp = new AbortController();

  private constructor(options: RegistryOptions, metadata: MetadataStore, driver: StorageDriver, directoryLock: DirectoryLock | undefined) {
    this.options = options;
    this.directoryLock = directoryLock;
    this.log = options.logger;
    this.locks = metadata.locks;
    this.driver = driver;
    this.metadata = metadata;
    this.queries = metadata.queries;
    this.layout = new LayoutWriter({
      driver: this.driver,
      metadata,
      timing: options.flush,
      referrers: options.layoutReferrers,
      runExclusive: (repository, work) => this.withIndex(repository, work),
      beforeWrite: (repository) => this.syncWithDisk(repository),
      afterWrite: (repository) => this.removeUnusedFiles(repository),
      onError: (repository, err, retryInMs) => this.log.error({ err, repository, retryInMs }, 'writing index.json failed; retrying'),
      otherWriters: this.locks.shared,
    });
  }

  /**
   * Opens the data directory: takes its lock (one process at a time; DataDirectoryBusy
   * otherwise), repairs `index.json` files from the journal and adopts new layouts.
   */
  static async open(options: RegistryOptions): Promise<Registry> {
    const lock = await lockData(options.dataDir);
    try {
      return await Registry.openLocked(options, lock, true);
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  private static async openLocked(options: RegistryOptions, lock: DirectoryLock, ownsLock: boolean): Promise<Registry> {
    const metadata = await openMetadata({ location: options.metadata, dataDir: options.dataDir, durable: options.durable, recordEvents: options.recordEvents ?? false });
    const driver = await openStorage(options.storage ?? '', options.dataDir, { durable: options.durable, locks: metadata.locks })
      .catch(async (err: unknown) => {
        await metadata.close();
        throw err;
      });
    const registry = new Registry(options, options.instrumentMetadata?.(metadata) ?? metadata, driver, ownsLock ? lock : undefined);
    if (metadata.needsRebuild) {
      // Write what the old index journalled into the layouts, then rebuild from them.
      options.logger.warn('the metadata index predates this version; rebuilding it from the layouts');
      await registry.closeKeepingLock();
      await dropMetadata({ location: options.metadata, dataDir: options.dataDir });
      return Registry.openLocked(options, lock, ownsLock);
    }
    try {
      await registry.driver.prepare();
      registry.claim = await StorageClaim.take(driver, {
        index: await metadata.indexId(), dataDir: options.dataDir, timing: options.claimTiming,
        onLost: (reason) => registry.claimLost(reason),
      });
      await registry.checkStorageBinding(registry.claim);
      if (options.adoptInBackground) registry.catchUpInBackground(options.catchUpAfter ?? Promise.resolve());
      else await registry.catchUpWithStorage();
      return registry;
    } catch (err) {
      await metadata.close();
      throw err;
    }
  }

  /** Adopts new layouts, repairs `index.json` files from the journal, finishes interrupted removals. */
  private async catchUpWithStorage(): Promise<void> {
    const { signal } = this.stopCatchingUp;
    await this.adoptLayouts(signal);
    if (signal.aborted) return;
    await this.layout.flushAll();
    // Removals a crash interrupted after the index.json rewrite that allowed them.
    for (const name of await this.metadata.repositoriesWithDueUnlinks()) {
      if (signal.aborted) return;
      await this.removeUnusedFiles(name);
    }
  }

  private catchUpInBackground(startAfter: Promise<unknown>): void {
    this.allAdopted = false;
    this.catchUpSettled = false;
    // A close before the start signal must not wait for it.
    const { signal } = this.stopCatchingUp;
    const started = new Promise<void>((resolve) => {
      signal.addEventListener('abort', () => resolve(), { once: true });
      startAfter.then(() => resolve(), () => resolve());
    });
    this.catchingUp = started.then(() => this.catchUpWithStorage()).then(() => {
      this.allAdopted = true;
      this.adopting.clear();
    }, (err: unknown) => {
      // Requests keep adopting their own repository first; registry-wide answers go on without.
      this.log.error({ err }, 'catching up with the layouts in storage failed; each repository is adopted at its first request');
    }).finally(() => {
      this.catchUpSettled = true;
    });
  }

  /** Start-up's catching up with storage has ended (at once when the registry opened in the foreground). */
  get caughtUp(): boolean {
    return this.catchUpSettled;
  }

  /**
   * Resolves once the index holds what storage holds: for one repository (adopted ahead of the
   * start-up walk if it has not reached it), or, without a name, for every repository. At once
   * when the registry opened in the foreground, or the walk is done.
   */
  adopted(name?: string): Promise<void> {
    if (this.allAdopted) return Promise.resolve();
    if (name === undefined) return this.catchingUp;
    return this.adoptOnce(name, undefined, false);
  }

  /**
   * Removes the files journaled for removal that `index.json` no longer names, each only if
   * nothing needs it in any role any more. Runs exclusively of pushes and deletes (a re-push of
   * the same bytes either comes first and keeps the file, or comes after and writes it again)
   * and of `index.json` rewrites (which write referrers index blobs).
   */
  async removeUnusedFiles(repository: string): Promise<void> {
    await this.withContent(repository, () => this.withIndex(repository, async () => {
      let repo = await this.metadata.repository(repository);
      if (!repo || !(await this.metadata.dueUnlinks(repo.id, repo.flushedGen)).length) return;
      // An index.json another tool changed since it was last read may list what is journaled here.
      const stamp = repo.indexStamp;
      await this.syncWithDisk(repository);
      repo = await this.metadata.repository(repository);
      if (!repo) return;
      // The merged file still lists manifests deleted here (a stale copy): their files go after
      // the rewrite that drops them, which runs this again.
      if (repo.indexStamp !== stamp && repo.gen > repo.flushedGen) return void this.layout.changed(repository);
      for (const digest of await this.metadata.dueUnlinks(repo.id, repo.flushedGen)) {
        const unused = !await this.metadata.contentInUse(repo.id, digest);
        if (unused) await this.driver.remove(blobKey(repository, digest));
        await this.metadata.dropPendingUnlink(repo.id, digest, unused);
      }
    }));
  }

  private closing: Promise<void> | undefined;
  /** This index's hold on the storage (src/content/storage-claim.ts). */
  private claim: StorageClaim | undefined;
  private readonly lostListeners: ((reason: string) => void)[] = [];

  /**
   * Calls `listener` if this process can no longer keep other processes out of what it writes:
   * its shared locks went with their PostgreSQL connection, or another index took the storage.
   * Work under way goes on, unfenced: the process must stop at once.
   */
  whenLost(listener: (reason: string) => void): void {
    this.metadata.locks.whenLost(listener);
    this.lostListeners.push(listener);
  }

  /**
   * Refuses an index opened over a storage other than the one it was built over (say, a command
   * run without the replicas' TRELLIS_STORAGE): it would mark journalled rewrites done that it
   * wrote elsewhere. An index that records none yet (new, or from before storage ids) takes this one.
   */
  private async checkStorageBinding(claim: StorageClaim): Promise<void> {
    const bound = await this.metadata.storageBinding();
    if (bound === undefined) return this.metadata.bindStorage(claim.storageId);
    if (bound === claim.storageId) return;
    await claim.release();
    throw new IndexOfAnotherStorage(`the metadata index (${this.metadata.engine}) was built over another storage than ${this.driver.description} (storage id ${bound}, this one is ${claim.storageId}); `
      + 'give the storage it indexes (TRELLIS_STORAGE), or run `trellis reindex` to index this one instead');
  }

  private claimLost(reason: string): void {
    if (this.isClosing) return;
    for (const listener of this.lostListeners) listener(`the storage was taken over: ${reason}`);
  }

  /** close() has been called: background work that fails from here on is expected to. */
  get isClosing(): boolean {
    return this.closing !== undefined;
  }

  /** Flushes every layout, closes the index and lets the data directory go; later calls wait for the first. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      try {
        await this.closeKeepingLock();
      } finally {
        this.directoryLock?.release();
      }
    })();
    return this.closing;
  }

  private async closeKeepingLock(): Promise<void> {
    // A shutdown does not wait for a long walk of storage: what is left is done at the next start.
    this.stopCatchingUp.abort();
    await this.catchingUp;
    try {
      await this.layout.close();
      await this.claim?.release();
    } finally {
      await this.metadata.close();
      await this.driver.close();
    }
  }

  /** Reads the repository's `index.json` now if another tool changed it (GC: before deciding what nothing uses). */
  async syncLayout(repository: string): Promise<void> {
    await this.withIndex(repository, () => this.syncWithDisk(repository));
  }

  /** Runs work on a repository's content exclusively of pushes and deletes there (used by GC). */
  exclusive<T>(repository: string, work: () => Promise<T>): Promise<T> {
    return this.withContent(repository, work);
  }

  /** The content lock: pushes, deletes and GC sweeps of one repository, one at a time. */
  private withContent<T>(repository: string, work: () => Promise<T>): Promise<T> {
    return this.locks.run(`content:${repository}`, work);
  }

  /** The index lock: `index.json` rewrites and merges of one repository, one at a time (taken after the content lock, never before). */
  private withIndex<T>(repository: string, work: () => Promise<T>): Promise<T> {
    return this.locks.run(`index:${repository}`, work);
  }

  observe(observer: ContentObserver): void {
    this.observers.push(observer);
  }

  /** Tells observers about a committed change (pushes and deletes call it; so does GC). */
  async changed(change: ContentChange): Promise<void> {
    for (const observer of this.observers) {
      try {
        await observer(change);
      } catch (err) {
        this.log.error({ err, repository: change.repository }, 'a content observer failed');
      }
    }
  }

  // ---- repositories -------------------------------------------------------------------------

  /** Finds every layout under the data root (nested folders are nested names) and indexes it. */
  async adoptLayouts(signal?: AbortSignal): Promise<void> {
    // Every record read up front, a page at a time, while storage is walked: at start-up nearly
    // every repository is known and unchanged.
    const known = new Map<string, RepositoryRecord>();
    const readKnown = async () => {
      for await (const repo of eachRepository(this.metadata)) known.set(repo.name, repo);
    };
    const [layouts] = await Promise.all([findLayouts(this.driver, signal), readKnown()]);
    // Side by side: each repository is one stat unless its index.json changed while we were down.
    // That stat is synchronous: without time slices the walk would hold the event loop to its
    // end, and requests arriving meanwhile would wait.
    await forEachConcurrently(layouts, ADOPT_CONCURRENCY, async (name) => {
      if (!signal?.aborted) await this.adoptOnce(name, known.get(name), true);
    }, { ms: ADOPT_SLICE_MS });
  }

  /** Adopts a repository once while catching up, whoever asks first (the walk or a request). */
  private adoptOnce(name: string, known: RepositoryRecord | undefined, found: boolean): Promise<void> {
    if (this.allAdopted) return this.adopt(name, known, found).then(() => undefined);
    let adoption = this.adopting.get(name);
    if (!adoption) {
      // A name with no layout is not remembered (requests for made-up names cannot grow the map,
      // and a layout written meanwhile is still found by the walk); a failure is the asker's.
      adoption = this.adopt(name, known, found).then((exists) => {
        if (!exists) this.adopting.delete(name);
      }, (err: unknown) => {
        this.adopting.delete(name);
        throw err;
      });
      this.adopting.set(name, adoption);
    }
    return adoption;
  }

  /**
   * `found`: the walk saw the layout; otherwise (a request's name) it may not exist at all.
   * Answers whether it does.
   */
  private async adopt(name: string, known: RepositoryRecord | undefined, found: boolean): Promise<boolean> {
    if (!found) {
      known = await this.metadata.repository(name);
      if (!known && !(await this.driver.stat(layoutKey(name, LAYOUT_FILE)))) return false;
    }
    if (known) {
      // Unchanged since its record was read: nothing to do, and no lock needed to know it (a
      // writer changing it meanwhile changes the stamp, and the locked path below sorts that out).
      const info = await this.driver.stat(layoutKey(name, INDEX_FILE));
      if (!info || stampOf(info) === known.indexStamp) return true;
    } else {
      await this.metadata.ensureRepository(name);
    }
    await this.withIndex(name, () => this.syncWithDisk(name));
    return true;
  }

  /**
   * Brings the index in line with `index.json` on disk. Caller holds the index lock. The file is
   * Trellis's own when its identity is the one recorded, or the one noted for a write a crash
   * interrupted after its rename; anything else is another tool's edit and is merged.
   */
  private async syncWithDisk(name: string): Promise<RepositoryRecord | undefined | 'lost'> {
    const repo = await this.metadata.repository(name);
    const info = await this.driver.stat(layoutKey(name, INDEX_FILE));
    if (!info) {
      // A row whose index.json was never seen (a layout another tool is still creating) is left alone.
      if (!repo || repo.indexStamp === null) return undefined;
      // Restored under the content lock too, which is taken before this one: after the caller's.
      if (!this.layout.isRestoring(name)) {
        this.layout.track(this.restoreIfLost(name).catch((err: unknown) => this.log.error({ repository: name, err }, 'restoring a removed layout failed')));
      }
      return 'lost';
    }
    const stamp = stampOf(info);
    // Nothing changed: the record read is current (the caller holds the index lock).
    if (repo && stamp === repo.indexStamp) return repo;
    if (repo?.pendingIndex && stamp === repo.pendingIndex.stamp) {
      await this.metadata.markFlushed(repo.id, repo.pendingIndex.gen, stamp);
      return undefined;
    }
    if (repo) this.log.info({ repository: name }, 'index.json was changed by another tool; re-reading it');
    await this.importLayout(name);
    return undefined;
  }

  /**
   * A known repository's `index.json` is gone: removed by hand, alone or with the whole folder
   * (a layout registry's way to delete a repository). What went with it (manifests, uploaded blobs,
   * other tools' entries whose files are missing) is forgotten; the rest is written back as a
   * complete layout by the next rewrite. Under the content lock: a push of a manifest found
   * missing here cannot land between that finding and its removal.
   */
  private async restoreIfLost(name: string): Promise<void> {
    const removedWhole = await this.withContent(name, () => this.withIndex(name, async () => {
      const repo = await this.metadata.repository(name);
      const lost = repo && repo.indexStamp !== null && !(await this.driver.stat(layoutKey(name, INDEX_FILE)));
      return lost ? this.restoreLostLayout(repo) : false;
    }));
    // The journal of what went is settled now (nothing on disk to wait for).
    if (removedWhole) await this.removeUnusedFiles(name);
  }

  /** Returns whether the whole folder went with everything in it (it is then not written again). */
  private async restoreLostLayout(repo: RepositoryRecord): Promise<boolean> {
    const { name } = repo;
    const missing = async (digests: string[]) => {
      const gone: string[] = [];
      for (const digest of digests) if (!(await this.driver.stat(blobKey(name, digest)))) gone.push(digest);
      return gone;
    };
    const manifests = await this.metadata.manifestDigests(repo.id);
    const lost = await missing(manifests);
    const removed = lost.length ? await this.metadata.deleteManifests(repo.id, lost) : [];
    const foreignEntries = [];
    for (const entry of repo.layoutExtras.foreignEntries ?? []) if (await this.driver.stat(blobKey(name, entry.digest))) foreignEntries.push(entry);
    const lostBlobs = await missing(await this.metadata.blobDigests(repo.id));
    // Not awaited: the caller holds the index lock, and observers may write elsewhere.
    if (this.observers.length && removed.length) void this.changed({ repository: name, removed });
    // Removed whole, with everything in it: it stays away (an empty repository) until a push writes into it.
    if (removed.length === manifests.length && !foreignEntries.length && !(await this.driver.stat(layoutKey(name, LAYOUT_FILE)))) {
      // Nothing to forget and nothing pending: already settled. A change still pending (a delete
      // whose rewrite was due) is settled below, or every rewrite (and replica) retries it forever.
      if (!removed.length && !lostBlobs.length && !repo.layoutExtras.foreignEntries?.length && repo.gen <= repo.flushedGen) return false;
      await this.metadata.forgetLostFiles(repo.id, { blobs: lostBlobs, extras: { ...repo.layoutExtras, foreignEntries: undefined } });
      // No index.json lists anything now: every change counts as shown, and what went is not waited for.
      const after = (await this.metadata.repository(name))!;
      await this.metadata.markFlushed(repo.id, after.gen, '');
      this.log.warn({ repository: name, removedManifests: removed.length }, 'the layout folder was removed; the repository is empty');
      return true;
    }
    const extras = { ...repo.layoutExtras, foreignEntries: foreignEntries.length ? foreignEntries : undefined };
    await this.metadata.forgetLostFiles(repo.id, { blobs: lostBlobs, extras });
    this.log.warn({ repository: name, removedManifests: removed.length }, 'index.json is missing; writing the layout again from what remains');
    this.layout.restore(name);
    return false;
  }

  /** Merges what the layout on disk says into the index. Caller holds the index lock. */
  private async importLayout(name: string): Promise<void> {
    const repo = await this.metadata.ensureRepository(name);
    try {
      const { snapshot, problems } = await readLayout(this.driver, name, Math.max(this.options.maxManifestBytes, 8 << 20));
      for (const problem of problems) this.log.warn({ repository: name }, problem);
      const listed = new Set(snapshot.manifests.map((m) => m.record.digest));
      const vanished: string[] = [];
      for (const digest of await this.metadata.manifestDigests(repo.id)) {
        if (!listed.has(digest) && !(await this.driver.stat(blobKey(name, digest)))) vanished.push(digest);
      }
      await this.metadata.mergeLayout(repo.id, snapshot, vanished);
      // A merge that kept manifests deleted here moved the change counter: the file is rewritten without them.
      const merged = await this.metadata.repository(name);
      if (merged && merged.gen > merged.flushedGen) this.layout.changed(name);
      // Not awaited: the caller holds the index lock, and observers may write elsewhere.
      if (this.observers.length) void this.changed({ repository: name, removed: vanished });
      this.log.info({ repository: name, manifests: snapshot.manifests.length, tags: snapshot.tags.size }, 'indexed layout');
    } catch (err) {
      if (!(err instanceof LayoutCorrupt)) throw err;
      this.log.error({ repository: name }, `${err.message}; serving what the index already holds`);
    }
  }

  /** The repository's record, after noticing (at most once per interval) outside edits. */
  async repository(name: string): Promise<RepositoryRecord | undefined> {
    const now = Date.now();
    if (now - (this.lastLayoutCheck.get(name) ?? 0) >= this.options.layoutCheckIntervalMs) {
      const repo = await this.metadata.repository(name);
      const info = await this.driver.stat(layoutKey(name, INDEX_FILE));
      // Only names that are repositories are remembered, so unknown names cannot grow the map;
      // a folder becomes one when it is a complete layout (oci-layout is written last).
      if (!repo && !(info && (await this.driver.stat(layoutKey(name, LAYOUT_FILE))))) return undefined;
      this.lastLayoutCheck.set(name, now);
      if (!info) {
        // A known repository without index.json: it was removed by hand.
        await this.restoreIfLost(name);
      } else if (!repo || stampOf(info) !== repo.indexStamp) {
        await this.withIndex(name, () => this.syncWithDisk(name));
        const after = await this.metadata.repository(name);
        if (after && after.gen > after.flushedGen) this.layout.changed(name);
      }
    }
    return await this.metadata.repository(name);
  }

  private async requireRepository(name: string): Promise<RepositoryRecord> {
    const repo = await this.repository(name);
    if (!repo) throw new ContentError('not-found', 'NAME_UNKNOWN', `repository ${name} is not known`, { name });
    return repo;
  }

  /** The id of `<name>`, created if need be (createRepository). */
  private async repositoryId(name: string): Promise<number> {
    const known = this.repositoryIds.get(name);
    if (known !== undefined) return known;
    const { id } = await this.createRepository(name);
    if (this.repositoryIds.size >= MAX_REMEMBERED_IDS) this.repositoryIds.clear();
    this.repositoryIds.set(name, id);
    return id;
  }

  /** Makes sure `<name>/` is a valid OCI layout and the index knows it. */
  async createRepository(name: string): Promise<RepositoryRecord> {
    const existing = await this.metadata.repository(name);
    if (existing) return existing;
    let created: RepositoryRecord | undefined;
    await this.withIndex(name, async () => {
      if (await this.metadata.repository(name)) return;
      // `oci-layout` goes last: it is what marks the folder as a layout, so a crash before it
      // leaves a plain folder, never a layout without `index.json`.
      await this.driver.createFolder(`${name}/blobs`);
      const indexKey = layoutKey(name, INDEX_FILE);
      const written = await this.driver.writeFile(indexKey, JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }), { ifAbsent: true });
      await this.driver.writeFile(layoutKey(name, LAYOUT_FILE), LAYOUT_HEADER, { ifAbsent: true });
      if (written) {
        // The empty index.json is ours: there is nothing to read back, only its identity to
        // record, with the new row. A row another path made meanwhile gets it in a write of its own.
        const indexStamp = stampOf(written);
        const repo = await this.metadata.ensureRepository(name, indexStamp);
        if (repo.indexStamp !== indexStamp) await this.metadata.markFlushed(repo.id, repo.flushedGen, indexStamp);
        created = { ...repo, indexStamp, pendingIndex: null };
      } else {
        // A layout another tool left here is adopted, not overwritten.
        await this.importLayout(name);
      }
    });
    return created ?? (await this.metadata.repository(name))!;
  }

  repositories(page: PageRequest & { namespace?: string | undefined; childrenOnly?: boolean }): Promise<string[]> {
    return this.metadata.repositories(page);
  }

  /** Every repository name `canPull` allows: the caller's grants, as data for queries. */
  async pullableRepositories(canPull: (name: string) => boolean): Promise<string[]> {
    const pullable: string[] = [];
    for (let after = ''; ;) {
      const page = await this.metadata.repositories({ after, limit: 1000 });
      pullable.push(...page.filter(canPull));
      if (page.length < 1000) return pullable;
      after = page[page.length - 1]!;
    }
  }

  // ---- blobs --------------------------------------------------------------------------------

  /** A blob of the repository; a file awaiting removal that nothing needs counts as gone. */
  async blobInfo(repository: string, digest: string): Promise<ObjectInfo | undefined> {
    const repo = await this.metadata.repository(repository);
    if (repo && await this.metadata.awaitsUnlink(repo.id, digest)) return undefined;
    return this.driver.stat(blobKey(repository, digest));
  }

  blobStream(repository: string, digest: string, range?: { start: number; end: number }): Readable {
    return this.driver.readStream(blobKey(repository, digest), range);
  }

  /** Writes a blob, or an inclusive byte range of it, into `destination` (not ended). */
  sendBlob(repository: string, digest: string, destination: Writable, range: { start: number; end: number }): Promise<void> {
    return this.driver.sendTo(blobKey(repository, digest), destination, range);
  }

  /** A URL the client may fetch the blob from directly (storage that offers one), or undefined. */
  async blobRedirect(repository: string, digest: string, expiresSeconds: number): Promise<string | undefined> {
    return this.driver.redirectUrl?.(blobKey(repository, digest), expiresSeconds);
  }

  /** A small blob's bytes (a manifest, a config, a descriptor); undefined if absent. */
  readBlob(repository: string, digest: string, maxBytes: number): Promise<Buffer | undefined> {
    return this.driver.readFile(blobKey(repository, digest), maxBytes);
  }

  /**
   * A resolved manifest's bytes. Small ones come from a bounded cache, checked against the object's
   * identity (the driver's etag) from the resolve, so a rewrite by another tool is never masked.
   */
  async manifestBytes(stored: StoredManifest): Promise<Buffer | undefined> {
    const cached = this.manifestCache.get(stored.key, stored.info);
    if (cached) return cached;
    const bytes = await this.driver.readFile(stored.key, Number.MAX_SAFE_INTEGER);
    if (bytes && bytes.length === stored.info.size) this.manifestCache.set(stored.key, stored.info, bytes);
    return bytes;
  }

  /** A new writer for blob content (an upload), committed by storeBlob. */
  newBlobWriter(id?: string): Promise<ObjectWriter> {
    return this.driver.createWriter(id);
  }

  /**
   * Moves a verified upload into the repository's layout; the writer ends either way. The file and
   * its blob row arrive together under the content lock, so a journaled removal of the same
   * digest sees the row.
   */
  async storeBlob(repository: string, writer: ObjectWriter, digest: string, size: number): Promise<void> {
    const repoId = await this.repositoryId(repository);
    await this.withContent(repository, async () => {
      // Content another repository already holds is shared (hard link, reference), not stored again.
      const holder = await this.metadata.findBlob(digest, repoId);
      if (holder && (await this.shareBlob(holder, repository, digest, size))) await writer.cancel();
      else await writer.commit(blobKey(repository, digest));
      await this.metadata.recordBlob(repoId, digest, size);
    });
  }

  /**
   * Shares the holder's copy of a verified blob with `repository`; false when the holder's file is
   * gone or is not that content (another size: a copy another tool cut off), which would serve
   * bytes that do not match the digest where the upload had the right ones.
   */
  private async shareBlob(holder: string, repository: string, digest: string, size: number): Promise<boolean> {
    const held = await this.driver.stat(blobKey(holder, digest));
    return held?.size === size && this.driver.copy(blobKey(holder, digest), blobKey(repository, digest));
  }

  /** Stores a small blob whose bytes are in memory (already verified against the digest). */
  async storeBlobBytes(repository: string, digest: string, bytes: Uint8Array): Promise<void> {
    const repoId = await this.repositoryId(repository);
    await this.withContent(repository, async () => {
      const holder = await this.metadata.findBlob(digest, repoId);
      if (!(holder && (await this.shareBlob(holder, repository, digest, bytes.length)))) await this.driver.writeFile(blobKey(repository, digest), bytes);
      await this.metadata.recordBlob(repoId, digest, bytes.length);
    });
  }

  /**
   * Sets the time of a blob the repository holds to now if it is older than `olderThanMs`, so
   * that GC's grace period (counted from that time) covers a manifest still to come. False when
   * the blob is gone (or going: journaled for removal with nothing needing it).
   */
  async renewBlob(repository: string, digest: string, olderThanMs: number): Promise<boolean> {
    const repo = await this.metadata.repository(repository);
    if (!repo) return false;
    const key = blobKey(repository, digest);
    return this.withContent(repository, async () => {
      const info = await this.blobInfo(repository, digest);
      if (!info) return false;
      if (info.modifiedMs > Date.now() - olderThanMs) return true;
      // Copying the key onto itself renews its time (a hard link's too: the inode is shared).
      if (!(await this.driver.copy(key, key))) return false;
      await this.metadata.recordBlob(repo.id, digest, info.size);
      return true;
    });
  }

  /**
   * Cross-repository mount. Without `from`, any repository holding the blob serves as the source.
   * Returns false when the blob cannot be mounted (the caller then opens an upload).
   */
  async mountBlob(repository: string, digest: string, from: string | undefined, canPull: (name: string) => boolean = () => true): Promise<boolean> {
    const target = await this.metadata.repository(repository);
    // Acknowledged like any mount, so stored again now: the file may be old, unused garbage, and
    // GC's grace period (from its time) must cover the manifest still to come. Gone meanwhile, it
    // is mounted below as if never there.
    if (target && (await this.blobInfo(repository, digest)) && (await this.renewBlob(repository, digest, 0))) return true;
    const source = from ?? await this.metadata.findBlob(digest, target?.id);
    // A source the caller may not pull is never used (and never named): they upload instead.
    if (!source || repositoryNameProblem(source) || source === repository || !canPull(source)) return false;
    await this.adopted(source);
    const info = await this.blobInfo(source, digest);
    if (!info) return false;
    const repo = await this.createRepository(repository);
    return this.withContent(repository, async () => {
      if (!(await this.driver.copy(blobKey(source, digest), blobKey(repository, digest)))) return false;
      await this.metadata.recordBlob(repo.id, digest, info.size);
      return true;
    });
  }

  /**
   * Deletes a blob: it answers 404 at once, and its file goes like any other removal, after the
   * `index.json` rewrite that stops listing manifests deleted before it (a client deleting a
   * manifest and then its layers never leaves a listed manifest without them). A blob a manifest
   * here still uses is removed at once, as asked.
   */
  async deleteBlob(repository: string, digest: string): Promise<void> {
    const repo = await this.requireRepository(repository);
    await this.withContent(repository, async () => {
      if (await this.metadata.manifest(repo.id, digest)) {
        throw new ContentError('unsupported', 'UNSUPPORTED', `${digest} is a manifest; delete it through /v2/${repository}/manifests/${digest}`);
      }
      if (!(await this.blobInfo(repository, digest))) throw new ContentError('not-found', 'BLOB_UNKNOWN', `blob ${digest} is not in ${repository}`);
      await this.metadata.scheduleUnlink(repo.id, digest);
      if (await this.metadata.contentInUse(repo.id, digest)) {
        await this.driver.remove(blobKey(repository, digest));
        await this.metadata.dropPendingUnlink(repo.id, digest, true);
      }
    });
    // Due at once unless a rewrite of index.json is pending.
    await this.removeUnusedFiles(repository);
  }

  // ---- manifests ----------------------------------------------------------------------------

  /** Resolves a tag or digest to a stored manifest, or throws the spec's 404. */
  async resolveManifest(repository: string, reference: string, canPull: (name: string) => boolean = () => true): Promise<StoredManifest> {
    const repo = await this.requireRepository(repository);
    const unknown = () => new ContentError('not-found', 'MANIFEST_UNKNOWN', `manifest ${reference} is not in ${repository}`);
    let digest: string;
    if (isValidTag(reference)) {
      digest = await this.metadata.resolveTag(repo.id, reference) ?? '';
      if (!digest) throw unknown();
    } else {
      const parsed = parseDigest(reference);
      if (typeof parsed !== 'object') throw new ContentError('invalid', 'DIGEST_INVALID', `reference ${JSON.stringify(reference.slice(0, 200))} is neither a tag nor a valid digest`);
      digest = parsed.digest;
    }
    const key = blobKey(repository, digest);
    const record = await this.metadata.manifest(repo.id, digest)
      ?? (await this.metadata.awaitsUnlink(repo.id, digest) ? undefined : await this.readUnindexedManifest(key, digest));
    const info = record && (await this.driver.stat(key));
    if (record && info) return { record, key, info };
    // A manifest an index here lists from a descendant repository is pulled through this one.
    // Only descendants the caller may pull; the others look exactly like a manifest that is not there.
    for (const descendant of await this.linkedDescendants(repo)) {
      if (!canPull(descendant)) continue;
      const child = await this.metadata.repository(descendant);
      const nested = child && await this.metadata.manifest(child.id, digest);
      const nestedKey = blobKey(descendant, digest);
      const nestedInfo = nested && (await this.driver.stat(nestedKey));
      if (nested && nestedInfo) return { record: nested, key: nestedKey, info: nestedInfo };
    }
    throw unknown();
  }

  /** Descendant repositories reachable through nested index entries, nearest first (bounded). */
  async linkedDescendants(repo: RepositoryRecord, limit = 64): Promise<string[]> {
    const found: string[] = [];
    const queue = [repo.id];
    while (queue.length && found.length < limit) {
      for (const name of await this.metadata.linkedRepositories(queue.shift()!)) {
        if (found.includes(name)) continue;
        found.push(name);
        const child = await this.metadata.repository(name);
        if (child) queue.push(child.id);
      }
    }
    return found;
  }

  /** Where a blob pulled through `repository` lives: there, or in a linked descendant. */
  async locateBlob(repository: string, digest: string, canPull: (name: string) => boolean = () => true): Promise<{ repository: string; info: ObjectInfo } | undefined> {
    const info = await this.blobInfo(repository, digest);
    if (info) return { repository, info };
    const repo = await this.metadata.repository(repository);
    for (const descendant of repo ? await this.linkedDescendants(repo) : []) {
      if (!canPull(descendant)) continue;
      const nested = await this.blobInfo(descendant, digest);
      if (nested) return { repository: descendant, info: nested };
    }
    return undefined;
  }

  /** A manifest another tool put into `blobs/` without listing it: served if it parses. */
  private async readUnindexedManifest(key: string, digest: string): Promise<ManifestRecord | undefined> {
    try {
      const bytes = await this.driver.readFile(key, this.options.maxManifestBytes);
      return bytes && manifestRecord(digest, parseManifest(bytes), bytes.length);
    } catch {
      return undefined; // absent, too large for a manifest, or not one
    }
  }

  async putManifest(repository: string, reference: string, bytes: Buffer, contentType: string | undefined, extraTags: string[], canPull: (name: string) => boolean = () => true): Promise<{ digest: string; subject?: string; tags: string[] }> {
    let algorithm: DigestAlgorithm = 'sha256';
    let tags: string[];
    if (isValidTag(reference)) {
      if (extraTags.length) throw new ContentError('invalid', 'TAG_INVALID', 'the tag query parameter is only allowed when pushing by digest');
      tags = [reference];
    } else {
      algorithm = requireDigest(reference, 'reference').algorithm;
      tags = [...new Set(extraTags)]; // a tag named twice is set (and answered in OCI-Tag) once
    }
    for (const tag of tags) if (!isValidTag(tag)) throw new ContentError('invalid', 'TAG_INVALID', `tag ${JSON.stringify(tag.slice(0, 200))} is not valid`);
    const digest = digestOf(bytes, algorithm);
    if (!isValidTag(reference) && digest !== reference) {
      throw new ContentError('invalid', 'DIGEST_INVALID', `manifest digest is ${digest}, not ${reference}`, { expected: reference, actual: digest });
    }
    let parsed;
    try {
      parsed = parseManifest(bytes, contentType);
    } catch (err) {
      if (err instanceof ManifestInvalid) throw new ContentError('invalid', 'MANIFEST_INVALID', err.message);
      throw err;
    }
    const nestedProblems = resolveNestedLinks(parsed.links, repository);
    if (nestedProblems.length) throw ContentError.many('invalid', nestedProblems.map((message) => ({ code: 'MANIFEST_INVALID', message })));
    const record = manifestRecord(digest, parsed, bytes.length);
    // Links into nested namespaces are looked up there: those layouts must be adopted first.
    if (!this.allAdopted) await Promise.all([...new Set(parsed.links.flatMap((l) => (l.repository ? [l.repository] : [])))].map((name) => this.adopted(name)));
    await this.withContent(repository, async () => {
      // Everything is checked before anything is written, so a refused push leaves no trace.
      // The repository, the manifest and the first batch of links are one read of the index.
      const required = parsed.links.filter((l) => l.required);
      const firstBatch = required.slice(0, EXISTENCE_BATCH);
      const reads = await this.metadata.pushReads(repository, digest, firstBatch.flatMap((l) => blobLookups(l, repository, canPull)));
      const missing = await this.missingLinks(required, repository, canPull, reads.blobsHeld);
      if (missing.length) throw ContentError.many('invalid', missing);
      const repo = reads.repository ?? await this.createRepository(repository);
      // Same digest, same bytes: a manifest the index already holds need not be written again.
      // (A repository created just now may have adopted a layout holding it: asked again then.)
      const known = reads.repository ? reads.manifestKnown : Boolean(await this.metadata.manifest(repo.id, digest));
      if (!known) {
        // Journaled first: a crash after the rename but before the commit below would otherwise
        // leave a file that looks like a manifest another tool put into blobs/, served by digest
        // although no push of it was acknowledged (or after its deletion was). The commit drops it.
        await this.metadata.journalManifestWrite(repo.id, digest);
        await this.driver.writeFile(blobKey(repository, digest), bytes);
      } else if (!(await this.driver.stat(blobKey(repository, digest)))) {
        // Its file was removed by hand (with index.json or the whole folder) and nothing has noticed
        // yet: written again, or the restore that notices would forget this acknowledged push.
        await this.driver.writeFile(blobKey(repository, digest), bytes);
      }
      await this.metadata.putManifest(repo.id, record, parsed.links, tags);
    });
    this.layout.changed(repository);
    await this.changed({ repository, stored: record });
    return parsed.subject ? { digest, subject: parsed.subject, tags } : { digest, tags };
  }

  /**
   * What a manifest links to that the registry does not hold, as error entries. The checks run a
   * few at a time, yielding between batches, and stop after MAX_REPORTED_MISSING misses: a manifest
   * with 30,000 missing layers costs a handful of lookups and a small answer, not a stall.
   */
  private async missingLinks(required: ManifestLink[], repository: string, canPull: (name: string) => boolean, firstBatchHeld: boolean[]): Promise<ErrorEntry[]> {
    // Each place a link may be held (blobLookups) counts if the index says so or, for files other
    // tools placed, if the file is there; in order, as the first that holds it decides.
    const present = async (l: ManifestLink, lookups: ReturnType<typeof blobLookups>, held: boolean[]): Promise<boolean> => {
      for (const [i, lookup] of lookups.entries()) {
        if (!held[i] && (await this.blobInfo(lookup.repository, lookup.digest)) === undefined) continue;
        if (lookup.flattened) delete l.repository;
        return true;
      }
      return false;
    };
    const missing: ManifestLink[] = [];
    let checked = 0;
    while (checked < required.length && missing.length < MAX_REPORTED_MISSING) {
      const batch = required.slice(checked, checked + EXISTENCE_BATCH);
      const lookups = batch.map((l) => blobLookups(l, repository, canPull));
      // The caller read the first batch with the repository; later ones are one read each.
      const held = checked === 0 ? firstBatchHeld : (await this.metadata.pushReads(repository, '', lookups.flat())).blobsHeld;
      // `held` answers the flattened lookups; each link takes its own run of them, in order.
      let offset = 0;
      const runs = lookups.map((ls) => held.slice(offset, (offset += ls.length)));
      const found = await Promise.all(batch.map((l, i) => present(l, lookups[i]!, runs[i]!)));
      missing.push(...batch.filter((_, i) => !found[i]));
      checked += batch.length;
      if (checked < required.length) await new Promise<void>((resolve) => setImmediate(resolve));
    }
    const entries: ErrorEntry[] = missing.slice(0, MAX_REPORTED_MISSING).map((l) => ({
      code: 'MANIFEST_BLOB_UNKNOWN', message: `${l.kind} ${l.digest} is not in ${l.repository ?? repository}`,
      detail: { digest: l.digest, mediaType: l.mediaType, kind: l.kind, repository: l.repository ?? repository },
    }));
    if (entries.length && checked < required.length) {
      entries.push({
        code: 'MANIFEST_BLOB_UNKNOWN', message: `stopped after ${entries.length} missing descriptors; ${required.length - checked} more were not checked`,
        detail: { unchecked: required.length - checked },
      });
    }
    return entries;
  }

  /** Deletes a tag, or a manifest by digest; `canPull` limits which ancestors a refusal may name. */
  async deleteManifest(repository: string, reference: string, canPull: (repository: string) => boolean = () => true): Promise<void> {
    const repo = await this.requireRepository(repository);
    const change: ContentChange = { repository };
    await this.withContent(repository, async () => {
      if (isValidTag(reference)) {
        if (!await this.metadata.deleteTag(repo.id, reference)) throw new ContentError('not-found', 'MANIFEST_UNKNOWN', `tag ${reference} is not in ${repository}`);
        change.untagged = reference;
        return;
      }
      const { digest } = requireDigest(reference, 'reference');
      const holders = (await this.metadata.edgesTo(repository, digest)).filter((e) => e.parentRepository !== repository && e.kind === 'manifest');
      if (holders.length && this.options.protectNestedChildren) {
        // Name only the ancestors the caller may pull; the others stay anonymous.
        const visible = holders.filter((h) => canPull(h.parentRepository));
        const where = visible.length ? `an index in ${visible[0]!.parentRepository}` : 'an index in an ancestor repository';
        throw new ContentError('conflict', 'DENIED', `manifest ${digest} is listed by ${where}; delete or change that index first`,
          { referencedBy: visible.map((h) => ({ repository: h.parentRepository, digest: h.parent })) });
      }
      // The file goes when index.json stops listing it, if nothing else needs it (removeUnusedFiles).
      if (!(await this.metadata.deleteManifests(repo.id, [digest])).length) throw new ContentError('not-found', 'MANIFEST_UNKNOWN', `manifest ${digest} is not in ${repository}`);
      change.removed = [digest];
    });
    this.layout.changed(repository);
    await this.changed(change);
  }

  // ---- listings -----------------------------------------------------------------------------

  async tags(repository: string, page: PageRequest): Promise<string[]> {
    const repo = await this.requireRepository(repository);
    return await this.metadata.tags(repo.id, page);
  }

  async referrers(repository: string, subject: string, filter: { artifactTypes?: string[] } & PageRequest): Promise<ManifestRecord[]> {
    const repo = await this.repository(repository);
    return repo ? await this.metadata.referrers(repo.id, subject, { ...filter, includeAttestations: this.options.buildkitAttestations }) : [];
  }

  /** The same page as `referrers`, each descriptor serialised as the referrers API serves it. */
  async referrerDescriptors(repository: string, subject: string, filter: { artifactTypes?: string[] } & PageRequest): Promise<{ digest: string; json: string }[]> {
    const repo = await this.repository(repository);
    return repo ? await this.metadata.referrerDescriptors(repo.id, subject, { ...filter, includeAttestations: this.options.buildkitAttestations }) : [];
  }

  /**
   * An answer built from one repository's index alone (`key` says which), reused while the
   * repository is unchanged: every push, delete or collection moves its `gen`, and an import of
   * another tool's edit its index stamp, whichever process (replica) made the change.
   */
  async derivedAnswer(repository: string, key: string, build: () => Promise<DerivedAnswer>): Promise<DerivedAnswer> {
    // Notices other tools' edits of the layout first.
    const repo = await this.repository(repository);
    // Read before building: a change committed meanwhile makes the entry a miss, never stale.
    const identity = { etag: repo ? `${repo.id}:${repo.gen}:${repo.indexStamp}` : 'none', size: 0 };
    const cacheKey = `${repository}\n${key}`;
    const cached = this.answerCache.get(cacheKey, identity);
    if (cached) return cached;
    const answer = await build();
    this.answerCache.set(cacheKey, identity, answer);
    return answer;
  }

  /** Re-reads every layout from scratch into an empty index (used by `trellis reindex`). */
  static async rebuildIndex(options: RegistryOptions, deep = false): Promise<{ orphans: number }> {
    // Opening and closing first writes every journalled change into the layouts, so nothing
    // acknowledged is lost when the index is dropped. Without an index there is no journal, and
    // opening would only build the index that is about to be dropped (reading every layout).
    // The lock is held throughout, so no server starts on the index while it is dropped.
    // The metadata hold keeps replicas off a shared PostgreSQL database, whose data directories
    // are their own: the directory lock alone does not reach them.
    const lock = await lockData(options.dataDir);
    let lost: string | undefined;
    const held = await holdExclusively({ location: options.metadata }, (reason) => { lost = reason; }).catch((err: unknown) => {
      lock.release();
      throw err;
    });
    try {
      if (await metadataExists({ location: options.metadata, dataDir: options.dataDir })) {
        // An index of another storage has nothing to write into this one: it is dropped as it is.
        await Registry.openLocked(options, lock, false).then((registry) => registry.close(), (err: unknown) => {
          if (err instanceof MetadataDamaged) {
            // What rebuilding is for: changes its journal held and no index.json shows yet are lost with it.
            options.logger.warn(`${err.message.replace(/; run .*$/, '')}; rebuilding it from the layouts`);
            return;
          }
          if (!(err instanceof IndexOfAnotherStorage)) throw err;
          options.logger.warn(`${err.message}; indexing this storage instead`);
        });
      }
      await dropMetadata({ location: options.metadata, dataDir: options.dataDir });
      const registry = await Registry.openLocked(options, lock, false);
      let orphans = 0;
      try {
        if (deep) for await (const repo of eachRepository(registry.metadata)) orphans += await registry.adoptOrphanReferrers(repo);
      } finally {
        await registry.close();
      }
      if (lost) throw new MetadataInUse(`the index was rebuilt, but ${lost}; stop every other Trellis process using it and run \`trellis reindex\` again`);
      return { orphans };
    } finally {
      await held.release();
      lock.release();
    }
  }

  /**
   * Deep scan: reads every blob of a layout that nothing in `index.json` reaches and adopts the
   * referrers among them (a manifest with a `subject`), e.g. ones whose fallback tag was lost.
   */
  async adoptOrphanReferrers(repo: RepositoryRecord): Promise<number> {
    const known = new Set(await this.metadata.manifestDigests(repo.id));
    let adopted = 0;
    for (const alg of await this.driver.list(`${repo.name}/blobs`)) {
      for (const file of alg.dir ? await this.driver.list(`${repo.name}/blobs/${alg.name}`) : []) {
        const parsed = parseDigest(`${alg.name}:${file.name}`);
        if (typeof parsed !== 'object' || known.has(parsed.digest)) continue;
        const bytes = await this.driver.readFile(blobKey(repo.name, parsed.digest), Number.MAX_SAFE_INTEGER).catch(() => undefined);
        if (!bytes || bytes.length > this.options.maxManifestBytes || digestOf(bytes, parsed.algorithm) !== parsed.digest) continue;
        let manifest;
        try {
          manifest = parseManifest(bytes);
        } catch {
          continue; // an ordinary blob
        }
        if (!manifest.subject) continue;
        resolveNestedLinks(manifest.links, repo.name);
        await this.metadata.putManifest(repo.id, manifestRecord(parsed.digest, manifest, bytes.length), manifest.links, []);
        adopted++;
      }
    }
    if (adopted) this.layout.changed(repo.name);
    return adopted;
  }
}
