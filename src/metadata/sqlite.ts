// SQLite metadata store on node:sqlite. Synchronous calls on one connection: each method runs to
// completion as one transaction (the async contract wraps it, src/metadata/store.ts), so no other
// call interleaves with it. Queries and components share the connection.
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { BOUND_LIMIT, StatementCache } from './statements.ts';
import { SqliteEventOutbox, deleteEvents, pushEvents, tagRemoved, type EventOutbox, type NewEvent } from './outbox.ts';
import { Worker } from 'node:worker_threads';
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { PATHS_STORED_ELSEWHERE, SqliteQueryIndex } from './sqlite-query.ts';
import { SqliteComponentIndex } from './sqlite-components.ts';
import { KeyedLock } from '../storage/mutex.ts';
import type { QueryIndex } from './query.ts';
import type { ComponentIndex } from './components.ts';
import type { ManifestLink } from '../oci/manifest.ts';
import {
  asynchronous, staleManifests, type UntaggedManifest, type BlobLookup, type EdgeRecord, type LayoutExtras, type LayoutSnapshot, type ManifestRecord, type MetadataStore, type MetadataTables, type PageRequest,
  type PushReads, type ReferrerFilter, type ReferrerIndexRecord, type RepositoryRecord, type RetentionPolicy, type Synchronous, type TaggedManifest, type UnreachableManifest,
  REPUSH_REFRESH_MS,
} from './store.ts';
import { PUSHED_AT_PATH } from '../query/attributes.ts';

const SCHEMA_VERSION = 2;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repos (
  id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL,
  gen INTEGER NOT NULL DEFAULT 0, flushed_gen INTEGER NOT NULL DEFAULT 0,
  index_stamp TEXT, layout_extras TEXT NOT NULL DEFAULT '{}',
  -- an index.json being written: if a crash comes after its rename, finding this identity on
  -- disk tells Trellis the file is its own (showing changes up to pending_gen), not an outside edit
  pending_stamp TEXT, pending_gen INTEGER);
CREATE TABLE IF NOT EXISTS blobs (
  repo_id INTEGER NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
  PRIMARY KEY (repo_id, digest)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS blobs_by_digest ON blobs (digest);
CREATE TABLE IF NOT EXISTS manifests (
  id INTEGER PRIMARY KEY, repo_id INTEGER NOT NULL, digest TEXT NOT NULL, media_type TEXT NOT NULL,
  size INTEGER NOT NULL, artifact_type TEXT, config_media_type TEXT, subject TEXT,
  annotations TEXT NOT NULL, pushed_at INTEGER NOT NULL,
  -- the manifest a BuildKit attestation describes (vnd.docker.reference.digest on its index entry);
  -- kept apart from subject because it is not one and is never written back as one
  attests TEXT, UNIQUE (repo_id, digest));
CREATE INDEX IF NOT EXISTS manifests_by_subject ON manifests (repo_id, subject, digest) WHERE subject IS NOT NULL;
-- A repository's manifests in push order: index.json is written from pages of them, and without
-- this each page read and sorted the whole repository (100,000 manifests: 2 s per rewrite, not 0.3).
CREATE INDEX IF NOT EXISTS manifests_by_repo ON manifests (repo_id, id);
-- Registry-wide artifactType queries (the most common one) scan this in manifest order.
CREATE INDEX IF NOT EXISTS manifests_by_artifact_type ON manifests (artifact_type COLLATE NOCASE, id) WHERE artifact_type IS NOT NULL;
CREATE INDEX IF NOT EXISTS manifests_by_attests ON manifests (repo_id, attests, digest) WHERE attests IS NOT NULL;
CREATE TABLE IF NOT EXISTS tags (
  repo_id INTEGER NOT NULL, name TEXT NOT NULL, digest TEXT NOT NULL, gen INTEGER NOT NULL,
  PRIMARY KEY (repo_id, name)) WITHOUT ROWID;
-- Without statistics SQLite would answer "tags of this digest" by scanning the repository's tags
-- through the primary key; queries by digest name this index (INDEXED BY).
CREATE INDEX IF NOT EXISTS tags_by_digest ON tags (repo_id, digest);
-- child_repo is '' when the child is in the same repository, else the descendant repository
-- an index entry names (nested namespaces).
CREATE TABLE IF NOT EXISTS edges (
  repo_id INTEGER NOT NULL, parent TEXT NOT NULL, kind TEXT NOT NULL, child_repo TEXT NOT NULL, child TEXT NOT NULL,
  media_type TEXT NOT NULL, position INTEGER NOT NULL, PRIMARY KEY (repo_id, parent, kind, child_repo, child)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edges_by_child ON edges (repo_id, child, kind, parent);
CREATE INDEX IF NOT EXISTS edges_by_child_repo ON edges (child_repo, child) WHERE child_repo <> '';
-- What queries see of each manifest (src/query/attributes.ts): lower-cased values and their order
-- keys. attribute_paths lists every path any manifest ever had (a query naming another is refused).
CREATE TABLE IF NOT EXISTS attributes (
  manifest_id INTEGER NOT NULL, path TEXT NOT NULL, value TEXT NOT NULL, ord TEXT,
  PRIMARY KEY (manifest_id, path, value)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attributes_by_value ON attributes (path, value);
CREATE INDEX IF NOT EXISTS attributes_by_order ON attributes (path, ord) WHERE ord IS NOT NULL;
CREATE TABLE IF NOT EXISTS attribute_paths (path TEXT PRIMARY KEY) WITHOUT ROWID;
-- Per subject, the referrers index Trellis writes into the layout (fallback tag), and the
-- subjects whose referrers changed since it was last written.
CREATE TABLE IF NOT EXISTS layout_referrer_indexes (
  repo_id INTEGER NOT NULL, subject TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
  PRIMARY KEY (repo_id, subject)) WITHOUT ROWID;
-- Tags deleted at change gen, kept until index.json shows it, so that merging an outside edit
-- made on an older index.json cannot bring them back.
CREATE TABLE IF NOT EXISTS deleted_tags (
  repo_id INTEGER NOT NULL, name TEXT NOT NULL, gen INTEGER NOT NULL, PRIMARY KEY (repo_id, name)) WITHOUT ROWID;
-- Manifest files to remove once index.json no longer lists them (the rewrite after change gen).
CREATE TABLE IF NOT EXISTS pending_unlinks (
  repo_id INTEGER NOT NULL, digest TEXT NOT NULL, gen INTEGER NOT NULL, PRIMARY KEY (repo_id, digest)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirty_subjects (
  repo_id INTEGER NOT NULL, subject TEXT NOT NULL, marked INTEGER NOT NULL, PRIMARY KEY (repo_id, subject)) WITHOUT ROWID;
-- Manifests deleted here (API or GC) and the tags they had (JSON), until their file is removed or
-- they are stored again: merging an outside edit made on an older index.json does not revive them.
CREATE TABLE IF NOT EXISTS deleted_manifests (
  repo_id INTEGER NOT NULL, digest TEXT NOT NULL, gen INTEGER NOT NULL, tags TEXT NOT NULL, PRIMARY KEY (repo_id, digest)) WITHOUT ROWID;
-- index.json entries another tool wrote for indexed manifests that say more than Trellis writes
-- (tag '' when untagged), kept whole so that rewriting index.json keeps them.
CREATE TABLE IF NOT EXISTS layout_entries (
  repo_id INTEGER NOT NULL, digest TEXT NOT NULL, tag TEXT NOT NULL, entry TEXT NOT NULL, PRIMARY KEY (repo_id, digest, tag)) WITHOUT ROWID;
`;

interface ManifestRow {
  id: number;
  digest: string;
  media_type: string;
  size: number;
  artifact_type: string | null;
  config_media_type: string | null;
  subject: string | null;
  annotations: string;
  pushed_at: number;
  tag?: string;
  layout_entry?: string | null;
}

interface RepoRow {
  id: number;
  name: string;
  gen: number;
  flushed_gen: number;
  index_stamp: string | null;
  layout_extras: string;
  pending_stamp: string | null;
  pending_gen: number | null;
}

const MANIFEST_COLUMNS = 'm.id, m.digest, m.media_type, m.size, m.artifact_type, m.config_media_type, m.subject, m.annotations, m.pushed_at';
/**
 * One page of a repository's manifests that index.json lists without a tag: referrers always, and
 * any manifest that neither a tag nor a parent index in this repository leads to (so other tools
 * reach every manifest). Annotations are not needed there, so they are not read. Exported for the
 * test that keeps its plan a range of `manifests_by_repo`: no sort, whatever the repository size.
 */
export const UNTAGGED_ENTRIES = `SELECT ${MANIFEST_COLUMNS.replace('m.annotations', "'{}' AS annotations")}, x.entry AS layout_entry FROM manifests m
  LEFT JOIN layout_entries x ON x.repo_id = m.repo_id AND x.digest = m.digest AND x.tag = ''
  WHERE m.repo_id = ? AND m.id > ? AND (m.subject IS NOT NULL OR (
    NOT EXISTS (SELECT 1 FROM tags t INDEXED BY tags_by_digest WHERE t.repo_id = m.repo_id AND t.digest = m.digest) AND
    NOT EXISTS (SELECT 1 FROM edges e WHERE e.repo_id = m.repo_id AND e.child = m.digest AND e.kind = 'manifest' AND e.child_repo = '')))
  ORDER BY m.id ${BOUND_LIMIT}`;
/**
 * A referrer's descriptor serialised by SQLite: the bytes `referrerDescriptorJson` (store.ts)
 * writes, in half the time of building it from the row in JavaScript (5,000 referrers: ~11 ms
 * against ~22). `json_quote` escapes as `JSON.stringify` does; annotations are spliced as stored.
 */
const DESCRIPTOR_JSON = `m.digest, '{"mediaType":' || json_quote(m.media_type) || ',"digest":' || json_quote(m.digest) || ',"size":' || m.size
  || CASE WHEN m.artifact_type IS NULL OR m.artifact_type = '' THEN '' ELSE ',"artifactType":' || json_quote(m.artifact_type) END
  || CASE WHEN m.annotations = '{}' THEN '' ELSE ',"annotations":' || m.annotations END || '}' AS json`;

function toManifest(row: ManifestRow): ManifestRecord {
  return {
    digest: row.digest, mediaType: row.media_type, size: row.size, artifactType: row.artifact_type,
    configMediaType: row.config_media_type, subject: row.subject, annotations: JSON.parse(row.annotations) as Record<string, string>,
    pushedAt: row.pushed_at,
  };
}

function toRepository(row: RepoRow): RepositoryRecord {
  return {
    id: row.id, name: row.name, gen: row.gen, flushedGen: row.flushed_gen, indexStamp: row.index_stamp,
    layoutExtras: JSON.parse(row.layout_extras) as LayoutExtras,
    pendingIndex: row.pending_stamp === null ? null : { stamp: row.pending_stamp, gen: row.pending_gen ?? 0 },
  };
}

/** The checkpoint worker's module as a data: URL: plain JavaScript, so the worker loads no TypeScript stripper. */
function checkpointerSource(): URL {
  checkpointerUrl ??= new URL(`data:text/javascript,${encodeURIComponent(readFileSync(new URL('./checkpointer.ts', import.meta.url), 'utf8'))}`);
  return checkpointerUrl;
}
let checkpointerUrl: URL | undefined;

/** SQL that changes rows (and so grows the write-ahead log). */
const WRITE_STATEMENT = /^\s*(INSERT|UPDATE|DELETE|REPLACE)\b/i;

class SqliteTables implements Synchronous<MetadataTables> {
  private readonly db: DatabaseSync;
  private readonly statements: StatementCache;
  private lastMark: number;
  needsRebuild = false;
  /** Where the checkpoint worker will open the database: set until it starts; never when read-only. */
  private checkpointPath: string | undefined;
  private checkpointer: Worker | undefined;
  /** Events about changes, written in the changes' own transactions (src/metadata/outbox.ts). */
  readonly outbox: SqliteEventOutbox;

  constructor(path: string, options: { durable?: boolean; readOnly?: boolean; recordEvents?: boolean } = {}) {
    this.db = new DatabaseSync(path, { readOnly: options.readOnly ?? false });
    this.statements = new StatementCache(this.db);
    this.db.exec('PRAGMA busy_timeout = 5000');
    try {
      // Reads the header and the schema: a file that is not a database, or a damaged one, fails
      // here (MetadataDamaged, metadata/index.ts) rather than at the first lookup.
      this.db.prepare('SELECT count(*) FROM sqlite_schema').get();
    } catch (err) {
      this.db.close();
      throw err;
    }
    if (!options.readOnly) {
      this.db.exec('PRAGMA journal_mode = WAL');
      // NORMAL survives a process crash (the WAL is in the OS cache); FULL also survives power loss.
      this.db.exec(`PRAGMA synchronous = ${options.durable ? 'FULL' : 'NORMAL'}`);
      // A bigger page cache keeps index pages in memory.
      this.db.exec('PRAGMA cache_size = -65536');
      // Checkpoints run on a worker thread's connection (checkpointer.ts), started at the first
      // write; the main connection only checkpoints if the log grows past ~40 MB because the
      // worker falls behind.
      this.db.exec('PRAGMA wal_autocheckpoint = 10000');
      this.checkpointPath = path;
      this.db.exec('PRAGMA temp_store = MEMORY');
      this.db.exec(SCHEMA);
      this.upgrade();
    }
    this.outbox = new SqliteEventOutbox(this.db, { recording: options.recordEvents ?? false, readOnly: options.readOnly ?? false });
    const newest = options.readOnly ? undefined : (this.db.prepare('SELECT MAX(marked) AS m FROM dirty_subjects').get() as { m: number | null }).m;
    this.lastMark = Math.max(newest ?? 0, Date.now() * 1000);
  }

  /** The connection, for indexes kept beside this one in the same database (queries, components). */
  get database(): DatabaseSync {
    return this.db;
  }

  // An index written before query attributes existed lacks them; they come only from the
  // manifests, so the index is rebuilt from the layouts (Registry.open does it).
  private upgrade(): void {
    const version = (this.db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version;
    if (version >= SCHEMA_VERSION) return;
    const hasManifests = this.db.prepare('SELECT 1 FROM manifests LIMIT 1').get() !== undefined;
    if (hasManifests) this.needsRebuild = true;
    else this.db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
  }

  private sql(text: string): StatementSync {
    if (this.checkpointPath !== undefined && WRITE_STATEMENT.test(text)) this.startCheckpointer();
    return this.statements.get(text);
  }

  /**
   * Starts the checkpoint worker, once. Not at open: a worker thread costs ~17 MiB and ~40 ms of
   * CPU, and a registry that only serves reads after a restart never needs it.
   */
  private startCheckpointer(): void {
    const path = this.checkpointPath;
    if (path === undefined || !this.db.isOpen) return;
    this.checkpointPath = undefined;
    this.checkpointer = new Worker(checkpointerSource(), { workerData: { path, intervalMs: 200 } });
    this.checkpointer.unref();
    // Checkpointing is an optimisation: if the worker fails, the main connection's bound applies.
    this.checkpointer.on('error', () => undefined);
  }

  private transaction<T>(work: () => T): T {
    this.startCheckpointer();
    this.db.exec('BEGIN IMMEDIATE');
    try {
      const result = work();
      this.db.exec('COMMIT');
      return result;
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
  }

  repository(name: string): RepositoryRecord | undefined {
    const row = this.sql('SELECT * FROM repos WHERE name = ?').get(name) as RepoRow | undefined;
    return row && toRepository(row);
  }

  ensureRepository(name: string, indexStamp?: string): RepositoryRecord {
    this.sql('INSERT OR IGNORE INTO repos (name, created_at, index_stamp) VALUES (?, ?, ?)').run(name, Date.now(), indexStamp ?? null);
    return this.repository(name)!;
  }

  repositories(page: PageRequest & { namespace?: string | undefined; childrenOnly?: boolean }): string[] {
    const namespace = page.namespace ?? '';
    // Names are ASCII, so every name under the namespace sorts below namespace + U+FFFF.
    const rows = this.sql(`SELECT name FROM repos WHERE name > ? AND name >= ? AND name < ?
      ${page.childrenOnly ? 'AND instr(substr(name, ?), \'/\') = 0' : 'AND ? > 0'} ORDER BY name ${BOUND_LIMIT}`)
      .all(page.after ?? '', namespace, `${namespace}\uffff`, namespace.length + 1, page.limit) as { name: string }[];
    return rows.map((r) => r.name);
  }

  storageBinding(): string | undefined {
    return (this.sql("SELECT value FROM meta WHERE key = 'storage'").get() as { value: string } | undefined)?.value;
  }

  bindStorage(storageId: string): void {
    this.sql("INSERT INTO meta (key, value) VALUES ('storage', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value").run(storageId);
  }

  indexId(): string {
    // Read first: a write would start the checkpoint worker, which a registry that only serves reads never needs.
    const read = () => (this.sql("SELECT value FROM meta WHERE key = 'index'").get() as { value: string } | undefined)?.value;
    const known = read();
    if (known) return known;
    this.sql("INSERT INTO meta (key, value) VALUES ('index', ?) ON CONFLICT (key) DO NOTHING").run(`sqlite:${randomUUID()}`);
    return read()!;
  }

  repositoryPage(page: PageRequest): RepositoryRecord[] {
    return (this.sql(`SELECT * FROM repos WHERE name > ? ORDER BY name ${BOUND_LIMIT}`).all(page.after ?? '', page.limit) as unknown as RepoRow[]).map(toRepository);
  }

  pendingRepositories(): RepositoryRecord[] {
    return (this.sql('SELECT * FROM repos WHERE gen > flushed_gen').all() as unknown as RepoRow[]).map(toRepository);
  }

  recordBlob(repoId: number, digest: string, size: number): void {
    this.sql('INSERT OR REPLACE INTO blobs (repo_id, digest, size) VALUES (?, ?, ?)').run(repoId, digest, size);
  }

  forgetBlob(repoId: number, digest: string): void {
    this.sql('DELETE FROM blobs WHERE repo_id = ? AND digest = ?').run(repoId, digest);
  }

  blobDigests(repoId: number): string[] {
    return (this.sql('SELECT digest FROM blobs WHERE repo_id = ? ORDER BY digest').all(repoId) as { digest: string }[]).map((r) => r.digest);
  }

  hasBlob(repoId: number, digest: string): boolean {
    return this.sql('SELECT 1 FROM blobs WHERE repo_id = ? AND digest = ?').get(repoId, digest) !== undefined;
  }

  findBlob(digest: string, excludeRepoId = -1): string | undefined {
    const row = this.sql('SELECT r.name FROM blobs b JOIN repos r ON r.id = b.repo_id WHERE b.digest = ? AND b.repo_id <> ? LIMIT 1')
      .get(digest, excludeRepoId) as { name: string } | undefined;
    return row?.name;
  }

  pushReads(repository: string, digest: string, blobs: readonly BlobLookup[]): PushReads {
    const repo = this.repository(repository);
    const ids = new Map<string, number | undefined>();
    const idOf = (name: string) => {
      if (!ids.has(name)) ids.set(name, name === repository ? repo?.id : this.repository(name)?.id);
      return ids.get(name);
    };
    return {
      repository: repo,
      manifestKnown: repo !== undefined && this.sql('SELECT 1 FROM manifests WHERE repo_id = ? AND digest = ?').get(repo.id, digest) !== undefined,
      blobsHeld: blobs.map((b) => {
        const id = idOf(b.repository);
        return id !== undefined && this.hasBlob(id, b.digest);
      }),
    };
  }

  manifest(repoId: number, digest: string): ManifestRecord | undefined {
    const row = this.sql(`SELECT ${MANIFEST_COLUMNS} FROM manifests m WHERE m.repo_id = ? AND m.digest = ?`).get(repoId, digest) as ManifestRow | undefined;
    return row && toManifest(row);
  }

  private bumpGen(repoId: number): number {
    const row = this.sql('UPDATE repos SET gen = gen + 1 WHERE id = ? RETURNING gen').get(repoId) as { gen: number };
    return row.gen;
  }

  private insertManifest(repoId: number, record: ManifestRecord, links: ManifestLink[]): void {
    const inserted = this.sql(`INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, config_media_type, subject, annotations, pushed_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (repo_id, digest) DO NOTHING RETURNING id`)
      .get(repoId, record.digest, record.mediaType, record.size, record.artifactType, record.configMediaType, record.subject,
        JSON.stringify(record.annotations), record.pushedAt) as { id: number } | undefined;
    if (!inserted) return; // content-addressed: an existing row already says the same
    this.sql('DELETE FROM pending_unlinks WHERE repo_id = ? AND digest = ?').run(repoId, record.digest);
    if (record.subject) this.markDirty(repoId, record.subject);
    const edge = this.sql('INSERT OR IGNORE INTO edges (repo_id, parent, kind, child_repo, child, media_type, position) VALUES (?, ?, ?, ?, ?, ?, ?)');
    links.forEach((link, position) => edge.run(repoId, record.digest, link.kind, link.repository ?? '', link.digest, link.mediaType, position));
    const attribute = this.sql('INSERT OR IGNORE INTO attributes (manifest_id, path, value, ord) VALUES (?, ?, ?, ?)');
    const path = this.sql('INSERT OR IGNORE INTO attribute_paths (path) VALUES (?)');
    for (const a of record.attributes ?? []) {
      if (PATHS_STORED_ELSEWHERE.has(a.path)) continue;
      attribute.run(inserted.id, a.path, a.value, a.order);
      path.run(a.path);
    }
    this.recordBlob(repoId, record.digest, record.size);
  }

  putManifest(repoId: number, record: ManifestRecord, links: ManifestLink[], tags: string[]): void {
    this.transaction(() => {
      const known = this.sql('SELECT id, pushed_at FROM manifests WHERE repo_id = ? AND digest = ?').get(repoId, record.digest) as { id: number; pushed_at: number } | undefined;
      if (known && known.pushed_at < record.pushedAt - REPUSH_REFRESH_MS) this.refreshPushedAt(known.id, record);
      const previousTags = tags.map((t) => this.resolveTag(repoId, t));
      if (known && previousTags.every((digest) => digest === record.digest)) return;
      if (this.outbox.recording) this.outbox.record(pushEvents(this.repositoryName(repoId), record, Boolean(known), tags, previousTags));
      const gen = this.bumpGen(repoId);
      this.insertManifest(repoId, record, links);
      this.recordAttestations(repoId, links);
      const tag = this.sql('INSERT OR REPLACE INTO tags (repo_id, name, digest, gen) VALUES (?, ?, ?, ?)');
      const revived = this.sql('DELETE FROM deleted_tags WHERE repo_id = ? AND name = ?');
      for (const name of tags) {
        tag.run(repoId, name, record.digest, gen);
        revived.run(repoId, name);
      }
    });
  }

  /** A re-push is a push: GC's grace period counts from the last acknowledged one. */
  private refreshPushedAt(manifestId: number, record: ManifestRecord): void {
    this.sql('UPDATE manifests SET pushed_at = ? WHERE id = ?').run(record.pushedAt, manifestId);
    const fact = record.attributes?.find((a) => a.path === PUSHED_AT_PATH);
    if (fact) this.sql('UPDATE attributes SET value = ?, ord = ? WHERE manifest_id = ? AND path = ?').run(fact.value, fact.order, manifestId, PUSHED_AT_PATH);
  }

  private tombstone(repoId: number, names: string[], gen: number): void {
    const insert = this.sql('INSERT OR REPLACE INTO deleted_tags (repo_id, name, gen) VALUES (?, ?, ?)');
    for (const name of names) insert.run(repoId, name, gen);
  }

  /** Removes a manifest's rows; its tags get tombstones at `gen` when one is given. */
  private removeManifestRows(repoId: number, digest: string, gen?: number): boolean {
    const row = this.sql('DELETE FROM manifests WHERE repo_id = ? AND digest = ? RETURNING id, subject').get(repoId, digest) as { id: number; subject: string | null } | undefined;
    if (!row) return false;
    if (row.subject) this.markDirty(repoId, row.subject);
    this.sql('DELETE FROM attributes WHERE manifest_id = ?').run(row.id);
    this.sql('DELETE FROM edges WHERE repo_id = ? AND parent = ?').run(repoId, digest);
    const tags = this.sql('DELETE FROM tags INDEXED BY tags_by_digest WHERE repo_id = ? AND digest = ? RETURNING name').all(repoId, digest) as { name: string }[];
    this.sql('DELETE FROM layout_entries WHERE repo_id = ? AND digest = ?').run(repoId, digest);
    if (gen !== undefined) {
      this.tombstone(repoId, tags.map((t) => t.name), gen);
      this.sql('INSERT OR REPLACE INTO deleted_manifests (repo_id, digest, gen, tags) VALUES (?, ?, ?, ?)').run(repoId, digest, gen, JSON.stringify(tags.map((t) => t.name)));
    }
    this.forgetBlob(repoId, digest);
    return true;
  }

  deleteManifests(repoId: number, digests: string[]): string[] {
    return this.transaction(() => {
      const present = this.sql('SELECT 1 FROM manifests WHERE repo_id = ? AND digest = ?');
      if (!digests.some((digest) => present.get(repoId, digest))) return [];
      const gen = this.bumpGen(repoId);
      const recording = this.outbox.recording;
      const repository = recording ? this.repositoryName(repoId) : '';
      const events: NewEvent[] = [];
      const removed = digests.filter((digest) => {
        const tags = recording ? this.tagsOf(repoId, digest) : [];
        if (!this.removeManifestRows(repoId, digest, gen)) return false;
        if (recording) events.push(...deleteEvents(repository, digest, tags));
        return true;
      });
      this.outbox.record(events);
      const pending = this.sql('INSERT OR REPLACE INTO pending_unlinks (repo_id, digest, gen) VALUES (?, ?, ?)');
      for (const digest of removed) pending.run(repoId, digest, gen);
      return removed;
    });
  }

  dueUnlinks(repoId: number, flushedGen: number): string[] {
    return (this.sql('SELECT digest FROM pending_unlinks WHERE repo_id = ? AND gen <= ? ORDER BY digest').all(repoId, flushedGen) as { digest: string }[])
      .map((r) => r.digest);
  }

  repositoriesWithDueUnlinks(): string[] {
    return (this.sql('SELECT DISTINCT r.name FROM pending_unlinks p JOIN repos r ON r.id = p.repo_id WHERE p.gen <= r.flushed_gen ORDER BY r.name')
      .all() as { name: string }[]).map((r) => r.name);
  }

  dropPendingUnlink(repoId: number, digest: string, removed = false): void {
    this.transaction(() => {
      this.sql('DELETE FROM pending_unlinks WHERE repo_id = ? AND digest = ?').run(repoId, digest);
      if (removed) this.sql('DELETE FROM deleted_manifests WHERE repo_id = ? AND digest = ?').run(repoId, digest);
    });
  }

  scheduleUnlink(repoId: number, digest: string): void {
    this.transaction(() => {
      this.sql('INSERT OR IGNORE INTO pending_unlinks (repo_id, digest, gen) SELECT id, ?, gen FROM repos WHERE id = ?').run(digest, repoId);
      this.forgetBlob(repoId, digest);
    });
  }

  journalManifestWrite(repoId: number, digest: string): void {
    // An entry a delete journaled already (at its own change) stays as it is.
    this.sql('INSERT OR IGNORE INTO pending_unlinks (repo_id, digest, gen) SELECT id, ?, gen FROM repos WHERE id = ?').run(digest, repoId);
  }

  contentInUse(repoId: number, digest: string): boolean {
    // A subject link does not need its subject's file; every other role does.
    return this.sql(`SELECT 1 WHERE EXISTS (SELECT 1 FROM manifests WHERE repo_id = $repo AND digest = $digest)
        OR EXISTS (SELECT 1 FROM blobs WHERE repo_id = $repo AND digest = $digest)
        OR EXISTS (SELECT 1 FROM layout_referrer_indexes WHERE repo_id = $repo AND digest = $digest)
        OR EXISTS (SELECT 1 FROM edges e JOIN manifests p ON p.repo_id = e.repo_id AND p.digest = e.parent
          WHERE e.repo_id = $repo AND e.child = $digest AND e.child_repo = '' AND e.kind <> 'subject')
        OR EXISTS (SELECT 1 FROM edges e JOIN manifests p ON p.repo_id = e.repo_id AND p.digest = e.parent
          WHERE e.child_repo = (SELECT name FROM repos WHERE id = $repo) AND e.child = $digest AND e.kind <> 'subject')`)
      .get({ $repo: repoId, $digest: digest }) !== undefined;
  }

  awaitsUnlink(repoId: number, digest: string): boolean {
    return this.sql('SELECT 1 FROM pending_unlinks WHERE repo_id = ? AND digest = ?').get(repoId, digest) !== undefined && !this.contentInUse(repoId, digest);
  }

  edgesFrom(repoId: number, digest: string): EdgeRecord[] {
    return this.sql(`SELECT r.name AS parentRepository, e.parent, e.kind, CASE e.child_repo WHEN '' THEN r.name ELSE e.child_repo END AS childRepository,
        e.child, e.media_type AS mediaType FROM edges e JOIN repos r ON r.id = e.repo_id WHERE e.repo_id = ? AND e.parent = ? ORDER BY e.position`)
      .all(repoId, digest) as unknown as EdgeRecord[];
  }

  edgesTo(repository: string, digest: string): EdgeRecord[] {
    return this.sql(`SELECT r.name AS parentRepository, e.parent, e.kind, ? AS childRepository, e.child, e.media_type AS mediaType
        FROM edges e JOIN repos r ON r.id = e.repo_id
        WHERE (e.repo_id = (SELECT id FROM repos WHERE name = ?) AND e.child = ? AND e.child_repo = '') OR (e.child_repo = ? AND e.child = ?)
        ORDER BY r.name, e.parent`).all(repository, repository, digest, repository, digest) as unknown as EdgeRecord[];
  }

  linkedRepositories(repoId: number): string[] {
    return (this.sql("SELECT DISTINCT child_repo FROM edges WHERE repo_id = ? AND child_repo <> '' ORDER BY child_repo").all(repoId) as { child_repo: string }[])
      .map((r) => r.child_repo);
  }

  resolveTag(repoId: number, tag: string): string | undefined {
    const row = this.sql('SELECT digest FROM tags WHERE repo_id = ? AND name = ?').get(repoId, tag) as { digest: string } | undefined;
    return row?.digest;
  }

  tags(repoId: number, page: PageRequest): string[] {
    const rows = this.sql(`SELECT name FROM tags WHERE repo_id = ? AND name > ? ORDER BY name ${BOUND_LIMIT}`).all(repoId, page.after ?? '', page.limit) as { name: string }[];
    return rows.map((r) => r.name);
  }

  deleteTag(repoId: number, tag: string): boolean {
    return this.transaction(() => {
      const row = this.sql('DELETE FROM tags WHERE repo_id = ? AND name = ? RETURNING digest').get(repoId, tag) as { digest: string } | undefined;
      if (!row) return false;
      this.tombstone(repoId, [tag], this.bumpGen(repoId));
      this.sql('DELETE FROM layout_entries WHERE repo_id = ? AND digest = ? AND tag = ?').run(repoId, row.digest, tag);
      if (this.outbox.recording) this.outbox.record([tagRemoved(this.repositoryName(repoId), tag, row.digest)]);
      return true;
    });
  }

  private repositoryName(repoId: number): string {
    return (this.sql('SELECT name FROM repos WHERE id = ?').get(repoId) as { name: string }).name;
  }

  private tagsOf(repoId: number, digest: string): string[] {
    return (this.sql('SELECT name FROM tags INDEXED BY tags_by_digest WHERE repo_id = ? AND digest = ? ORDER BY name').all(repoId, digest) as { name: string }[])
      .map((t) => t.name);
  }

  /** Index entries BuildKit marks as attestations of another manifest. */
  private recordAttestations(repoId: number, links: ManifestLink[]): void {
    for (const link of links) {
      const annotations = link.annotations;
      if (link.kind !== 'manifest' || annotations?.['vnd.docker.reference.type'] !== 'attestation-manifest') continue;
      const described = annotations['vnd.docker.reference.digest'];
      if (described) this.sql('UPDATE manifests SET attests = ? WHERE repo_id = ? AND digest = ?').run(described, repoId, link.digest);
    }
  }

  referrers(repoId: number, subject: string, filter: ReferrerFilter): ManifestRecord[] {
    return this.referrerRows(repoId, subject, filter).map(toManifest);
  }

  referrerDescriptors(repoId: number, subject: string, filter: ReferrerFilter): { digest: string; json: string }[] {
    const rows = this.referrerRows(repoId, subject, filter, DESCRIPTOR_JSON) as unknown as { digest: string; json: string }[];
    return rows.map(({ digest, json }) => ({ digest, json }));
  }

  private referrerRows(repoId: number, subject: string, filter: ReferrerFilter, columns = MANIFEST_COLUMNS): ManifestRow[] {
    const types = filter.artifactTypes ?? [];
    const typeClause = types.length ? `AND m.artifact_type IN (${types.map(() => '?').join(',')})` : '';
    const query = (column: string) => `SELECT ${columns} FROM manifests m WHERE m.repo_id = ? AND m.${column} = ? AND m.digest > ? ${typeClause}`;
    const params = [repoId, subject, filter.after ?? '', ...types];
    const sql = filter.includeAttestations
      ? `SELECT * FROM (${query('subject')} UNION ${query('attests')}) m ORDER BY m.digest ${BOUND_LIMIT}`
      : `${query('subject')} ORDER BY m.digest ${BOUND_LIMIT}`;
    return this.sql(sql).all(...params, ...(filter.includeAttestations ? params : []), filter.limit) as unknown as ManifestRow[];
  }

  taggedEntries(repoId: number, page: PageRequest): TaggedManifest[] {
    // index.json needs no annotations of the manifests, so they are not read (or parsed) here.
    const columns = MANIFEST_COLUMNS.replace('m.annotations', "'{}' AS annotations");
    return (this.sql(`SELECT ${columns}, t.name AS tag, x.entry AS layout_entry FROM tags t JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
      LEFT JOIN layout_entries x ON x.repo_id = t.repo_id AND x.digest = t.digest AND x.tag = t.name
      WHERE t.repo_id = ? AND t.name > ? ORDER BY t.name ${BOUND_LIMIT}`).all(repoId, page.after ?? '', page.limit) as unknown as ManifestRow[])
      .map((row) => ({ ...toManifest(row), tag: row.tag!, layoutEntry: row.layout_entry ?? null }));
  }

  untaggedEntries(repoId: number, afterId: number, limit: number): UntaggedManifest[] {
    return (this.sql(UNTAGGED_ENTRIES).all(repoId, afterId, limit) as unknown as ManifestRow[])
      .map((row) => ({ ...toManifest(row), id: row.id, layoutEntry: row.layout_entry ?? null }));
  }


  /** Each mark is newer than the last, so a writer clears only the marks it has seen. */
  private markDirty(repoId: number, subject: string): void {
    this.sql('INSERT OR REPLACE INTO dirty_subjects (repo_id, subject, marked) VALUES (?, ?, ?)').run(repoId, subject, ++this.lastMark);
  }

  dirtySubjects(repoId: number): { subject: string; marked: number }[] {
    return this.sql('SELECT subject, marked FROM dirty_subjects WHERE repo_id = ? ORDER BY subject').all(repoId) as { subject: string; marked: number }[];
  }

  referrerIndexes(repoId: number): ReferrerIndexRecord[] {
    return this.sql('SELECT subject, digest, size FROM layout_referrer_indexes WHERE repo_id = ? ORDER BY subject').all(repoId) as unknown as ReferrerIndexRecord[];
  }

  setReferrerIndex(repoId: number, subject: string, index: { digest: string; size: number } | null, marked: number): void {
    this.transaction(() => {
      // The index it replaces goes once index.json stops naming it, like a deleted manifest's file.
      const old = this.sql('SELECT digest FROM layout_referrer_indexes WHERE repo_id = ? AND subject = ?').get(repoId, subject) as { digest: string } | undefined;
      if (old && old.digest !== index?.digest) {
        this.sql('INSERT OR IGNORE INTO pending_unlinks (repo_id, digest, gen) SELECT id, ?, gen FROM repos WHERE id = ?').run(old.digest, repoId);
      }
      if (index) {
        this.sql('DELETE FROM pending_unlinks WHERE repo_id = ? AND digest = ?').run(repoId, index.digest);
        this.sql('INSERT OR REPLACE INTO layout_referrer_indexes (repo_id, subject, digest, size) VALUES (?, ?, ?, ?)').run(repoId, subject, index.digest, index.size);
      } else {
        this.sql('DELETE FROM layout_referrer_indexes WHERE repo_id = ? AND subject = ?').run(repoId, subject);
      }
      // A change that came while the index was being written leaves the subject dirty.
      this.sql('DELETE FROM dirty_subjects WHERE repo_id = ? AND subject = ? AND marked <= ?').run(repoId, subject, marked);
    });
  }

  notePendingIndex(repoId: number, gen: number, stamp: string): void {
    this.sql('UPDATE repos SET pending_stamp = ?, pending_gen = ? WHERE id = ?').run(stamp, gen, repoId);
  }

  markFlushed(repoId: number, gen: number, indexStamp: string): void {
    this.transaction(() => {
      this.sql('UPDATE repos SET flushed_gen = MAX(flushed_gen, ?), index_stamp = ?, pending_stamp = NULL, pending_gen = NULL WHERE id = ?').run(gen, indexStamp, repoId);
      this.sql('DELETE FROM deleted_tags WHERE repo_id = ? AND gen <= ?').run(repoId, gen);
    });
  }

  mergeLayout(repoId: number, snapshot: LayoutSnapshot, vanished: string[]): void {
    this.transaction(() => {
      const repo = this.sql('SELECT flushed_gen FROM repos WHERE id = ?').get(repoId) as { flushed_gen: number };
      // A tombstone matters only while the manifest is absent (one stored again keeps its row).
      this.sql('DELETE FROM deleted_manifests WHERE repo_id = ? AND digest IN (SELECT digest FROM manifests WHERE repo_id = ?)').run(repoId, repoId);
      for (const digest of vanished) this.removeManifestRows(repoId, digest);
      const tombstones = new Map((this.sql('SELECT digest, tags FROM deleted_manifests WHERE repo_id = ?').all(repoId) as { digest: string; tags: string }[])
        .map((t) => [t.digest, new Set(JSON.parse(t.tags) as string[])]));
      const local = this.sql('SELECT name, digest, gen FROM tags WHERE repo_id = ?').all(repoId) as { name: string; digest: string; gen: number }[];
      const localByName = new Map(local.map((t) => [t.name, t]));
      const deletedSince = new Set((this.sql('SELECT name FROM deleted_tags WHERE repo_id = ? AND gen > ?').all(repoId, repo.flushed_gen) as { name: string }[]).map((t) => t.name));
      // Deleted here after the file was written, or moved here since the last rewrite: ours wins.
      const takesTag = (name: string, digest: string) => {
        const mine = localByName.get(name);
        return !deletedSince.has(name) && (!mine || (mine.gen <= repo.flushed_gen && mine.digest !== digest));
      };
      const stale = staleManifests(snapshot, tombstones, takesTag);
      const manifests = snapshot.manifests.filter((m) => !stale.has(m.record.digest));
      for (const { record, links } of manifests) this.insertManifest(repoId, record, links);
      for (const { links } of manifests) this.recordAttestations(repoId, links);
      const revived = this.sql('DELETE FROM deleted_manifests WHERE repo_id = ? AND digest = ?');
      for (const { record } of manifests) if (tombstones.has(record.digest)) revived.run(repoId, record.digest);
      for (const t of local) {
        if (!snapshot.tags.has(t.name) && t.gen <= repo.flushed_gen) this.sql('DELETE FROM tags WHERE repo_id = ? AND name = ?').run(repoId, t.name);
      }
      const upsert = this.sql('INSERT OR REPLACE INTO tags (repo_id, name, digest, gen) VALUES (?, ?, ?, ?)');
      for (const [name, digest] of snapshot.tags) {
        if (stale.has(digest) || tombstones.get(digest)?.has(name)) continue; // deleted here with its manifest
        if (takesTag(name, digest)) upsert.run(repoId, name, digest, repo.flushed_gen);
      }
      this.sql('DELETE FROM layout_entries WHERE repo_id = ?').run(repoId);
      const entry = this.sql('INSERT OR REPLACE INTO layout_entries (repo_id, digest, tag, entry) VALUES (?, ?, ?, ?)');
      for (const e of snapshot.entries) if (!stale.has(e.digest)) entry.run(repoId, e.digest, e.tag, e.json);
      this.sql('UPDATE repos SET layout_extras = ?, index_stamp = ? WHERE id = ?').run(JSON.stringify(snapshot.extras), snapshot.indexStamp, repoId);
      // The file lists manifests deleted here: it is rewritten without them.
      if (stale.size) this.bumpGen(repoId);
    });
  }

  forgetLostFiles(repoId: number, lost: { blobs: string[]; extras: LayoutExtras }): void {
    this.transaction(() => {
      for (const digest of lost.blobs) this.forgetBlob(repoId, digest);
      this.sql('UPDATE repos SET layout_extras = ? WHERE id = ?').run(JSON.stringify(lost.extras), repoId);
      this.bumpGen(repoId);
    });
  }

  unreachableManifests(repoId: number, policy: RetentionPolicy): UnreachableManifest[] {
    const repo = this.sql('SELECT name FROM repos WHERE id = ?').get(repoId) as { name: string } | undefined;
    if (!repo) return [];
    // Live: tags, recent pushes, kept untagged or dangling referrers, entries ancestors' indexes
    // name here, and, transitively, index children and referrers of anything live.
    const rows = this.sql(`WITH RECURSIVE live(digest) AS (
        SELECT digest FROM tags WHERE repo_id = $repo
        UNION SELECT value FROM json_each($roots)
        UNION SELECT digest FROM manifests WHERE repo_id = $repo AND (pushed_at >= $cutoff
          OR ($keepUntagged AND subject IS NULL)
          OR ($keepDangling AND subject IS NOT NULL AND subject NOT IN (SELECT digest FROM manifests WHERE repo_id = $repo)))
        UNION SELECT e.child FROM edges e WHERE e.child_repo = $name AND e.kind = 'manifest'
          AND EXISTS (SELECT 1 FROM manifests p WHERE p.repo_id = e.repo_id AND p.digest = e.parent)
        -- CROSS JOIN keeps the new live row as the outer loop, so each step is an index lookup.
        -- A manifest a live manifest uses in any role (an index child, or a layer or blob whose
        -- bytes are a manifest, as in artifacts of manifests) is live, and so is what it uses.
        UNION SELECT e.child FROM live l CROSS JOIN edges e ON e.repo_id = $repo AND e.parent = l.digest AND e.kind <> 'subject' AND e.child_repo = ''
          AND (e.kind = 'manifest' OR EXISTS (SELECT 1 FROM manifests c WHERE c.repo_id = $repo AND c.digest = e.child))
        UNION SELECT m.digest FROM live l CROSS JOIN manifests m ON m.repo_id = $repo AND m.subject = l.digest)
      SELECT m.digest, m.subject, (m.subject IS NOT NULL AND m.subject NOT IN (SELECT digest FROM manifests WHERE repo_id = $repo)) AS dangling
      FROM manifests m WHERE m.repo_id = $repo AND m.digest NOT IN (SELECT digest FROM live) ORDER BY m.id`)
      .all({
        $repo: repoId, $name: repo.name, $cutoff: policy.pushedBefore, $keepUntagged: policy.keepUntagged ? 1 : 0, $keepDangling: policy.keepDanglingReferrers ? 1 : 0,
        $roots: JSON.stringify(policy.liveRoots ?? []),
      }) as {
        digest: string; subject: string | null; dangling: number;
      }[];
    return rows.map((r) => ({
      digest: r.digest,
      reason: r.dangling ? 'referrer whose subject is gone' : r.subject ? 'referrer of an unreachable manifest' : 'untagged and not referenced',
    }));
  }

  stillUnreachable(repoId: number, digest: string, pushedBefore: number): boolean {
    const repo = this.sql('SELECT name FROM repos WHERE id = ?').get(repoId) as { name: string };
    const row = this.sql(`SELECT 1 FROM manifests m WHERE m.repo_id = $repo AND m.digest = $digest AND m.pushed_at < $cutoff
        AND NOT EXISTS (SELECT 1 FROM tags t INDEXED BY tags_by_digest WHERE t.repo_id = $repo AND t.digest = $digest)
        AND NOT EXISTS (SELECT 1 FROM edges e JOIN manifests p ON p.repo_id = e.repo_id AND p.digest = e.parent
          WHERE e.repo_id = $repo AND e.child = $digest AND e.kind <> 'subject' AND e.child_repo = '')
        AND NOT EXISTS (SELECT 1 FROM edges e JOIN manifests p ON p.repo_id = e.repo_id AND p.digest = e.parent
          WHERE e.child_repo = $name AND e.child_repo <> '' AND e.child = $digest AND e.kind = 'manifest')
        AND NOT (m.subject IS NOT NULL AND EXISTS (SELECT 1 FROM tags t INDEXED BY tags_by_digest WHERE t.repo_id = $repo AND t.digest = m.subject))`)
      .get({ $repo: repoId, $digest: digest, $cutoff: pushedBefore, $name: repo.name });
    return row !== undefined;
  }

  referencedDigests(repoId: number, excluding: ReadonlySet<string> = new Set()): Set<string> {
    const referenced = new Set<string>();
    for (const { digest } of this.sql(`SELECT digest FROM manifests WHERE repo_id = $repo UNION SELECT digest FROM layout_referrer_indexes WHERE repo_id = $repo
        UNION SELECT digest FROM pending_unlinks WHERE repo_id = $repo`).all({ $repo: repoId }) as { digest: string }[]) {
      if (!excluding.has(digest)) referenced.add(digest);
    }
    for (const { parent, child } of this.sql("SELECT parent, child FROM edges WHERE repo_id = ? AND child_repo = '' AND kind <> 'subject'").iterate(repoId) as Iterable<{ parent: string; child: string }>) {
      if (referenced.has(parent)) referenced.add(child);
    }
    return referenced;
  }

  isReferenced(repoId: number, digest: string): boolean {
    return this.sql(`SELECT 1 WHERE EXISTS (SELECT 1 FROM manifests WHERE repo_id = $repo AND digest = $digest)
        OR EXISTS (SELECT 1 FROM layout_referrer_indexes WHERE repo_id = $repo AND digest = $digest)
        OR EXISTS (SELECT 1 FROM pending_unlinks WHERE repo_id = $repo AND digest = $digest)
        OR EXISTS (SELECT 1 FROM edges e JOIN manifests p ON p.repo_id = e.repo_id AND p.digest = e.parent
          WHERE e.repo_id = $repo AND e.child = $digest AND e.child_repo = '')`).get({ $repo: repoId, $digest: digest }) !== undefined;
  }

  unindexedChildren(repoId: number): string[] {
    const repo = this.sql('SELECT name FROM repos WHERE id = ?').get(repoId) as { name: string } | undefined;
    if (!repo) return [];
    return (this.sql(`SELECT e.child AS digest FROM edges e JOIN manifests p ON p.repo_id = e.repo_id AND p.digest = e.parent
        WHERE e.repo_id = $repo AND e.child_repo = '' AND e.kind = 'manifest'
          AND NOT EXISTS (SELECT 1 FROM manifests c WHERE c.repo_id = $repo AND c.digest = e.child)
      UNION SELECT e.child FROM edges e JOIN manifests p ON p.repo_id = e.repo_id AND p.digest = e.parent
        WHERE e.child_repo = $name AND e.kind = 'manifest'
          AND NOT EXISTS (SELECT 1 FROM manifests c WHERE c.repo_id = $repo AND c.digest = e.child)`)
      .all({ $repo: repoId, $name: repo.name }) as { digest: string }[]).map((r) => r.digest);
  }

  manifestDigests(repoId: number): string[] {
    return (this.sql('SELECT digest FROM manifests WHERE repo_id = ?').all(repoId) as { digest: string }[]).map((r) => r.digest);
  }

  async close(): Promise<void> {
    if (!this.db.isOpen) return;
    this.db.close();
    const worker = this.checkpointer;
    if (!worker) return;
    // The worker's connection runs a last checkpoint and closes; until it exits it may still
    // write the -wal and -shm files.
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.ref(); // keeps the process alive until the worker is done
    worker.postMessage('stop');
    await Promise.race([exited, new Promise<void>((resolve) => setTimeout(resolve, 5000).unref())]);
  }
}

/** Opens (creating or upgrading) the SQLite metadata store at `path`. */
export function openSqliteMetadata(path: string, options: { durable?: boolean; readOnly?: boolean; recordEvents?: boolean } = {}): MetadataStore {
  const tables = new SqliteTables(path, options);
  const queries = asynchronous<QueryIndex>(new SqliteQueryIndex(tables.database));
  const components = asynchronous<ComponentIndex>(new SqliteComponentIndex(tables.database, { readOnly: options.readOnly ?? false, outbox: tables.outbox }));
  return Object.assign(asynchronous<MetadataTables>(tables), {
    engine: 'sqlite', needsRebuild: tables.needsRebuild, queries, components, outbox: tables.outbox as EventOutbox, locks: new KeyedLock(), close: () => tables.close(),
  });
}
