// The metadata index: repositories, tags, manifests, blobs, annotations and every edge, derived
// from the layouts. It is also the journal of index changes not yet written to `index.json`:
// each repository counts its changes (`gen`) and remembers the last one flushed (`flushedGen`).
import type { Descriptor, LinkKind, ManifestLink, ParsedManifest } from '../oci/manifest.ts';
import { manifestAttributes, type Attribute } from '../query/attributes.ts';
import type { QueryIndex } from './query.ts';
import type { ComponentIndex } from './components.ts';
import type { EventOutbox } from './outbox.ts';
import type { Locks } from '../storage/mutex.ts';

export interface RepositoryRecord {
  id: number;
  name: string;
  gen: number;
  flushedGen: number;
  /** Identity of the `index.json` last written or read (mtime:size:inode); detects outside edits. */
  indexStamp: string | null;
  /** Parts of `index.json` Trellis keeps verbatim: foreign entries and top-level annotations. */
  layoutExtras: LayoutExtras;
  /** The `index.json` Trellis is writing (identity and the change it shows), until it is recorded. */
  pendingIndex: { stamp: string; gen: number } | null;
}

export interface LayoutExtras {
  foreignEntries?: Descriptor[];
  /**
   * Entries naming indexed manifests under a `ref.name` that is no registry tag (`team/x`,
   * `1.0+build`: the image spec allows them, skopeo and umoci write them), kept whole and written
   * back for as long as their manifest is held.
   */
  refNameEntries?: Descriptor[];
  annotations?: Record<string, string>;
}

export interface ManifestRecord {
  digest: string;
  mediaType: string;
  size: number;
  artifactType: string | null;
  configMediaType: string | null;
  subject: string | null;
  annotations: Record<string, string>;
  pushedAt: number;
  /** What queries see of it (only when it is being stored; not read back). */
  attributes?: Attribute[];
}

/**
 * A referrer's descriptor as the referrers API serves it, serialised straight from the stored
 * columns: the same bytes as `JSON.stringify(referrerDescriptor(record))` (annotations are stored
 * as `JSON.stringify` wrote them, so they are spliced in rather than parsed and written again).
 */
export function referrerDescriptorJson(row: { mediaType: string; digest: string; size: number; artifactType: string | null; annotations: string }): string {
  const artifactType = row.artifactType ? `,"artifactType":${JSON.stringify(row.artifactType)}` : '';
  const annotations = row.annotations === '{}' ? '' : `,"annotations":${row.annotations}`;
  return `{"mediaType":${JSON.stringify(row.mediaType)},"digest":${JSON.stringify(row.digest)},"size":${row.size}${artifactType}${annotations}}`;
}

/** The index row for a parsed manifest of `size` bytes stored under `digest`. */
export function manifestRecord(digest: string, parsed: ParsedManifest, size: number, pushedAt = Date.now()): ManifestRecord {
  return {
    digest, mediaType: parsed.mediaType, size, artifactType: parsed.artifactType ?? null, configMediaType: parsed.configMediaType ?? null,
    subject: parsed.subject ?? null, annotations: parsed.annotations, pushedAt,
    attributes: manifestAttributes(parsed.body, { digest, size, pushedAt, artifactType: parsed.artifactType ?? null }),
  };
}

export interface TaggedManifest extends ManifestRecord {
  tag: string;
  /** The entry another tool wrote for this tag and manifest, as it wrote it (LayoutEntry), if any. */
  layoutEntry: string | null;
}

/** An untagged `index.json` entry: the manifest, its row id (the page cursor) and any entry another tool wrote for it. */
export type UntaggedManifest = ManifestRecord & { id: number; layoutEntry: string | null };

/**
 * A top-level `index.json` entry another tool wrote for a manifest Trellis indexes, kept whole
 * because it says more than Trellis would write (its own annotations, platform, urls, data…), so
 * that rewriting the file keeps it. `tag` is '' for an untagged entry.
 */
export interface LayoutEntry {
  tag: string;
  digest: string;
  /** The entry's JSON exactly as read. */
  json: string;
}

/** One link of the graph; the child may live in a descendant repository (nested namespaces). */
export interface EdgeRecord {
  parentRepository: string;
  parent: string;
  kind: LinkKind;
  childRepository: string;
  child: string;
  mediaType: string;
}

/** The referrers index of one subject as written into the layout under its fallback tag. */
export interface ReferrerIndexRecord {
  subject: string;
  digest: string;
  size: number;
}

/** A blob asked about by repository name (a push's links may name a descendant repository). */
export interface BlobLookup {
  repository: string;
  digest: string;
}

/** What a manifest push reads before it writes (ManifestIndex.pushReads). */
export interface PushReads {
  /** The repository's record, if the index knows it. */
  repository: RepositoryRecord | undefined;
  /** Whether the repository already holds the manifest. */
  manifestKnown: boolean;
  /** Per lookup, in order: whether the index records that repository holding the blob. */
  blobsHeld: boolean[];
}

/** What garbage collection keeps beyond what tags reach. */
export interface RetentionPolicy {
  keepUntagged: boolean;
  keepDanglingReferrers: boolean;
  /** Manifests pushed at or after this time (ms) are kept whatever else holds (grace period). */
  pushedBefore: number;
  /** Manifests kept as if tagged: other tools' index.json entries name them under ref names that are no registry tags. */
  liveRoots?: string[];
}

export interface UnreachableManifest {
  digest: string;
  reason: string;
}

export interface PageRequest {
  after?: string | undefined;
  limit: number;
}

/** What a repository's layout says, as read from disk, to be merged into the index. */
export interface LayoutSnapshot {
  manifests: { record: ManifestRecord; links: ManifestLink[] }[];
  tags: Map<string, string>;
  /** Entries naming indexed manifests that carry fields Trellis would not write itself. */
  entries: LayoutEntry[];
  extras: LayoutExtras;
  indexStamp: string | null;
}

/**
 * Which manifests of a layout read from disk stay deleted when it is merged. `tombstones` holds,
 * per manifest this index deleted (API or GC) and does not hold again, the tags it had then. An
 * outside edit listing such a manifest is taken for a copy read before the delete, unless it
 * points a tag at it that it did not carry when deleted and that the merge takes (`takesTag`):
 * that is the other tool's own, later decision. Index children of a manifest so revived come back
 * with it. Both engines merge with this, so they decide alike.
 */
export function staleManifests(snapshot: LayoutSnapshot, tombstones: ReadonlyMap<string, ReadonlySet<string>>, takesTag: (name: string, digest: string) => boolean): Set<string> {
  const stale = new Set(snapshot.manifests.map((m) => m.record.digest).filter((digest) => tombstones.has(digest)));
  if (!stale.size) return stale;
  const revived: string[] = [];
  for (const [name, digest] of snapshot.tags) {
    if (stale.has(digest) && !tombstones.get(digest)!.has(name) && takesTag(name, digest)) {
      stale.delete(digest);
      revived.push(digest);
    }
  }
  const links = new Map(snapshot.manifests.map((m) => [m.record.digest, m.links]));
  while (revived.length) {
    for (const link of links.get(revived.pop()!) ?? []) {
      if (link.kind === 'manifest' && !link.repository && stale.delete(link.digest)) revived.push(link.digest);
    }
  }
  return stale;
}

// ---- the contracts -------------------------------------------------------------------------
// Every method is async and is one transaction of the store: it sees and leaves a consistent
// index, and nothing another caller does lands halfway through it. A read-modify-write spanning
// several calls is not atomic; callers serialize those per repository with the store's `locks`
// (`content:<repo>`: the content lock for pushes, deletes and GC sweeps; `index:<repo>`: the index lock for `index.json` rewrites
// and layout merges). Writes that must be atomic together are one method (putManifest,
// deleteManifests, mergeLayout, setReferrerIndex).

const REPOSITORY_PAGE = 500;

/**
 * Every repository record in name order, a page at a time, with a turn of the event loop between
 * pages. Read at once, 5,000 records held a server's event loop for 20–30 ms (SQLite reads are
 * synchronous) just as it started to listen; 100,000 would hold it for half a second.
 */
export async function* eachRepository(catalog: Pick<RepositoryCatalog, 'repositoryPage'>, size = REPOSITORY_PAGE): AsyncGenerator<RepositoryRecord> {
  for (let after = ''; ;) {
    const page = await catalog.repositoryPage({ after, limit: size });
    yield* page;
    if (page.length < size) return;
    after = page[page.length - 1]!.name;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/** Repositories and the blobs each holds. */
export interface RepositoryCatalog {
  repository(name: string): Promise<RepositoryRecord | undefined>;
  /**
   * Creates the repository row if absent (idempotent under concurrency) and returns it.
   * `indexStamp`: the identity of the `index.json` its creator just wrote, recorded with a new row
   * in the same write (a row that existed keeps its own).
   */
  ensureRepository(name: string, indexStamp?: string): Promise<RepositoryRecord>;
  /** Repository names in order; under a namespace (`team/`) only, and only its direct children if asked. */
  repositories(page: PageRequest & { namespace?: string | undefined; childrenOnly?: boolean }): Promise<string[]>;
  /** Repository records in name order after `page.after` (eachRepository walks them all). */
  repositoryPage(page: PageRequest): Promise<RepositoryRecord[]>;

  recordBlob(repoId: number, digest: string, size: number): Promise<void>;
  hasBlob(repoId: number, digest: string): Promise<boolean>;
  forgetBlob(repoId: number, digest: string): Promise<void>;
  /** Every blob row of the repository (what uploads and mounts recorded). */
  blobDigests(repoId: number): Promise<string[]>;
  /** A repository other than `excludeRepoId` that holds the blob (for automatic mounts). */
  findBlob(digest: string, excludeRepoId?: number): Promise<string | undefined>;
}

/** Manifests, tags and the edges between them. */
/**
 * A re-push of a manifest the repository holds moves its push time (GC's grace period counts from
 * the last acknowledged push) unless the time is this recent: re-pushes in a tight loop write nothing.
 */
export const REPUSH_REFRESH_MS = 1000;

export interface ManifestIndex {
  manifest(repoId: number, digest: string): Promise<ManifestRecord | undefined>;
  /**
   * Stores a manifest, its edges and attributes, and points tags at it, in one transaction that
   * also bumps the repository's change counter. A manifest already held gets the record's push
   * time (see REPUSH_REFRESH_MS). Two writers of one tag: the later commit wins and
   * both see a consistent index.
   */
  putManifest(repoId: number, record: ManifestRecord, links: ManifestLink[], tags: string[]): Promise<void>;
  /**
   * The reads a manifest push makes before writing, in one call (on a networked database one
   * round trip instead of one per link): the repository, whether it holds `digest` as a manifest,
   * and which of `blobs` the index records. One consistent snapshot; callers hold the content lock.
   */
  pushReads(repository: string, digest: string, blobs: readonly BlobLookup[]): Promise<PushReads>;
  /**
   * Removes manifests and every tag on them, in one transaction; returns those that were there.
   * Each gets a tombstone (with its tags) kept until its file is removed or it is stored again, so
   * that merging an outside edit made on an older `index.json` does not bring it back
   * (staleManifests).
   */
  deleteManifests(repoId: number, digests: string[]): Promise<string[]>;
  /**
   * Journals the file a manifest push is about to write, before it is written: the push's commit
   * (`putManifest`) drops the entry, so only a push cut off between the file's rename and its
   * commit leaves it, and the file then goes like any journaled removal (if nothing needs it).
   */
  journalManifestWrite(repoId: number, digest: string): Promise<void>;
  /**
   * Whether anything still needs the file `blobs/<digest>` in any role: a manifest, a blob row
   * (uploaded or mounted), a layout referrers index, or a config/layer/blob/child link of a
   * manifest here or of an ancestor's nested index.
   */
  contentInUse(repoId: number, digest: string): Promise<boolean>;
  /** Journaled for removal and needed by nothing: served as absent. */
  awaitsUnlink(repoId: number, digest: string): Promise<boolean>;
  edgesFrom(repoId: number, digest: string): Promise<EdgeRecord[]>;
  /** Links into a manifest or blob: from its own repository and from ancestors' nested links. */
  edgesTo(repository: string, digest: string): Promise<EdgeRecord[]>;
  /** Descendant repositories this repository's indexes name (where pulls through it may resolve). */
  linkedRepositories(repoId: number): Promise<string[]>;
  resolveTag(repoId: number, tag: string): Promise<string | undefined>;
  tags(repoId: number, page: PageRequest): Promise<string[]>;
  /** Removes a tag (one transaction, tombstoned until `index.json` shows it); false if absent. */
  deleteTag(repoId: number, tag: string): Promise<boolean>;
  /** Manifests whose subject is `subject`; with includeAttestations also BuildKit attestations of it. */
  referrers(repoId: number, subject: string, filter: ReferrerFilter): Promise<ManifestRecord[]>;
  /** The same page as `referrers`, each descriptor already serialised (`referrerDescriptorJson`). */
  referrerDescriptors(repoId: number, subject: string, filter: ReferrerFilter): Promise<{ digest: string; json: string }[]>;
  /** Digests of every manifest the index holds for a repository. */
  manifestDigests(repoId: number): Promise<string[]>;
}

export type ReferrerFilter = { artifactTypes?: string[]; includeAttestations?: boolean } & PageRequest;

/** The journal of changes `index.json` does not show yet, and what rewriting it needs. */
export interface LayoutJournal {
  /** Repositories whose journal holds changes `index.json` does not show yet. */
  pendingRepositories(): Promise<RepositoryRecord[]>;
  /** `index.json`'s tagged entries, a page at a time in tag order. */
  taggedEntries(repoId: number, page: PageRequest): Promise<TaggedManifest[]>;
  /** `index.json`'s untagged entries (referrers, and manifests nothing here reaches), in push order. */
  untaggedEntries(repoId: number, afterId: number, limit: number): Promise<UntaggedManifest[]>;
  /** Notes the identity of an `index.json` about to replace the current one. */
  notePendingIndex(repoId: number, gen: number, stamp: string): Promise<void>;
  markFlushed(repoId: number, gen: number, indexStamp: string): Promise<void>;
  /**
   * Files journaled for removal that `index.json` no longer names now that it shows changes up to
   * `flushedGen` (removing them earlier would leave `index.json` naming a missing blob). Each is
   * removed only if `contentInUse` is false, then dropped from the journal.
   */
  dueUnlinks(repoId: number, flushedGen: number): Promise<string[]>;
  /** Names of the repositories that have removals due now (what start-up must finish), in one read. */
  repositoriesWithDueUnlinks(): Promise<string[]>;
  /**
   * Drops a file from the removal journal; `removed`: the file is gone, and with it the manifest
   * tombstone (an outside entry naming it now names a missing blob, and a tool adding it again
   * must write the file again, which is a genuine re-add).
   */
  dropPendingUnlink(repoId: number, digest: string, removed?: boolean): Promise<void>;
  /** Journals a blob's file for removal at the current change (GC) and forgets its blob row; one transaction. */
  scheduleUnlink(repoId: number, digest: string): Promise<void>;
  /** Subjects whose referrers changed since their layout referrers index was last written. */
  dirtySubjects(repoId: number): Promise<{ subject: string; marked: number }[]>;
  referrerIndexes(repoId: number): Promise<ReferrerIndexRecord[]>;
  /**
   * Records (or, with null, removes) a subject's layout referrers index, and clears its dirty mark
   * unless the subject changed again after `marked`. One transaction.
   */
  setReferrerIndex(repoId: number, subject: string, index: { digest: string; size: number } | null, marked: number): Promise<void>;
  /**
   * Merges a layout read from disk, in one transaction; local changes not yet flushed win over
   * it, and manifests deleted here stay deleted (staleManifests: the change counter moves, so the
   * file is rewritten without them). `vanished` lists manifests whose blobs another tool removed.
   * The snapshot's `entries` replace the repository's kept entries.
   */
  mergeLayout(repoId: number, snapshot: LayoutSnapshot, vanished: string[]): Promise<void>;
  /**
   * `index.json` went missing (removed by hand, alone or with its folder): forgets the blob rows
   * whose files went with it, keeps `extras` (the foreign entries whose files remain), and moves the
   * change counter so that the next rewrite writes `index.json` again. One transaction.
   */
  forgetLostFiles(repoId: number, lost: { blobs: string[]; extras: LayoutExtras }): Promise<void>;
}

/** What garbage collection asks. Marks run without locks; sweeps re-check under the content lock. */
export interface RetentionIndex {
  /** Manifests nothing live reaches under the policy (the mark phase of garbage collection). */
  unreachableManifests(repoId: number, policy: RetentionPolicy): Promise<UnreachableManifest[]>;
  /** Re-checks one candidate just before it is swept: no tag, no parent, old enough. */
  stillUnreachable(repoId: number, digest: string, pushedBefore: number): Promise<boolean>;
  /** The manifests (less `excluding`), everything they use, and the layout's referrers indexes. */
  referencedDigests(repoId: number, excluding?: ReadonlySet<string>): Promise<Set<string>>;
  isReferenced(repoId: number, digest: string): Promise<boolean>;
  /**
   * Manifests an index here (or an ancestor's, through a nested namespace) lists that no manifest
   * record describes: Trellis could not read them, so what they use is known only from their bytes.
   */
  unindexedChildren(repoId: number): Promise<string[]>;
}

/**
 * Which storage the index was built over: the id its claim carries (src/content/storage-claim.ts),
 * so that an index opened over another storage (a forgotten TRELLIS_STORAGE) is refused.
 */
export interface StorageBinding {
  storageBinding(): Promise<string | undefined>;
  bindStorage(storageId: string): Promise<void>;
  /**
   * This index's own id, which its storage claim names (`sqlite:…`, or `postgres:…` shared by
   * every replica of one database): made with the index, and kept by `trellis reindex` on
   * PostgreSQL, whose replicas leave their claim standing.
   */
  indexId(): Promise<string>;
}

/** The contracts on the metadata tables proper. */
export type MetadataTables = RepositoryCatalog & ManifestIndex & LayoutJournal & RetentionIndex & StorageBinding;

/** One metadata store: every contract on one database (SQLite or PostgreSQL). */
export interface MetadataStore extends RepositoryCatalog, ManifestIndex, LayoutJournal, RetentionIndex, StorageBinding {
  /** Which engine, for messages: `sqlite` or `postgres`. */
  readonly engine: string;
  /** The index was written by an older schema and must be rebuilt from the layouts. */
  readonly needsRebuild: boolean;
  /** Queries over every manifest's attributes (src/metadata/query.ts). */
  readonly queries: QueryIndex;
  /** The component index (src/metadata/components.ts). */
  readonly components: ComponentIndex;
  /** Events about changes, written by the changes' transactions; consumed by src/events/. */
  readonly outbox: EventOutbox;
  /**
   * Named locks for read-modify-writes that span several calls (per repository, per blob, per
   * upload session). They exclude every process that shares this store: only this process for
   * SQLite (one process per data directory), every replica for PostgreSQL.
   */
  readonly locks: Locks;

  /** Closes the index; resolves when nothing has it open any more (safe to remove its files). */
  close(): Promise<void>;
}

/** A contract as an engine with synchronous calls (node:sqlite) implements it. */
export type Synchronous<T> = {
  [K in keyof T]: T[K] extends (...args: infer A) => Promise<infer R> ? (...args: A) => R : T[K];
};

/**
 * The async contract over a synchronous implementation: each call runs to completion before it
 * returns (so a SQLite transaction never spans an await), and a throw becomes a rejection.
 */
export function asynchronous<T extends object>(implementation: Synchronous<T>): T {
  // The methods live on the facade's prototype, as a class's would (metrics wrappers walk prototypes).
  const methods: Record<string, unknown> = {};
  const facade = Object.create(methods) as Record<string, unknown>;
  const seen = new Set<string>();
  for (let proto = Object.getPrototypeOf(implementation) as object | null; proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto) as object | null) {
    for (const name of Object.getOwnPropertyNames(proto)) {
      if (name === 'constructor' || seen.has(name)) continue;
      seen.add(name);
      const descriptor = Object.getOwnPropertyDescriptor(proto, name)!;
      if (typeof descriptor.value !== 'function') continue;
      const method = descriptor.value as (...args: unknown[]) => unknown;
      methods[name] = (...args: unknown[]) => {
        try {
          return Promise.resolve(method.apply(implementation, args));
        } catch (err) {
          return Promise.reject(err);
        }
      };
    }
  }
  return facade as T;
}
