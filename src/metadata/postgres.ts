// PostgreSQL metadata store on `pg` (a connection pool). The same contracts and the same
// semantics as the SQLite store (src/metadata/sqlite.ts): each method is one transaction. Writers
// of one repository take its `repos` row lock first (SELECT … FOR UPDATE), so concurrent pushes,
// deletes and merges to one repository serialize in the database, not only in this process.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { AdvisoryLocks } from './postgres-locks.ts';
import { Presence } from './postgres-presence.ts';
import type { ManifestLink } from '../oci/manifest.ts';
import { orderKey } from '../query/order.ts';
import { PostgresComponentIndex } from './postgres-components.ts';
import { PostgresQueryIndex } from './postgres-query.ts';
import { PostgresEventOutbox } from './postgres-outbox.ts';
import { deleteEvents, pushEvents, tagRemoved, type NewEvent } from './outbox.ts';
import { FUNCTIONS, migrate, TABLES } from './postgres-schema.ts';
import { PATHS_STORED_ELSEWHERE } from './sqlite-query.ts';
import type {
  BlobLookup, EdgeRecord, LayoutExtras, LayoutSnapshot, ManifestRecord, MetadataStore, MetadataTables, PageRequest, PushReads, ReferrerFilter, ReferrerIndexRecord,
  RepositoryRecord, RetentionPolicy, TaggedManifest, UnreachableManifest, UntaggedManifest,
} from './store.ts';
import { referrerDescriptorJson, staleManifests } from './store.ts';

type Value = string | number | boolean | null | readonly string[];

/** A connection to run statements on: the pool (autocommit) or one transaction's client. */
export interface Sql {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: Value[]): Promise<pg.QueryResult<R>>;
}

/** Connections per process: requests beyond it queue in the pool. */
const POOL_SIZE = 10;
const INT8 = 20;
/** Attribute paths remembered as stored; beyond it a push with unseen paths costs one insert. */
const KNOWN_PATHS_LIMIT = 10_000;
/** Manifests adopted from layouts since open beyond which closing refreshes the planner's statistics. */
const BULK_LOAD = 1000;
// Counts, sizes, ids and times all fit in a double; BIGINT columns come back as numbers.
const types = {
  getTypeParser: ((oid: number, format?: string) => (oid === INT8 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text'))) as typeof pg.types.getTypeParser,
};

/**
 * Bounds on every wait, so that a lost lock holder or an exhausted pool ends in an error a request
 * can report instead of a request (and a shutdown waiting for it) that never ends: a row or
 * advisory lock waited for over a minute, a pooled connection waited for over a minute, and a
 * transaction left idle by its holder for two minutes (the server ends it, freeing its locks).
 */
const WAIT_LIMITS = { lock_timeout: 60_000, connectionTimeoutMillis: 60_000, idle_in_transaction_session_timeout: 120_000 };

export function createPool(url: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: POOL_SIZE, types, idleTimeoutMillis: 30_000, ...WAIT_LIMITS });
  // An idle client losing its connection must not crash the process; the pool replaces it.
  pool.on('error', () => undefined);
  return pool;
}

/** Runs work in one transaction on one pooled connection. */
export async function transaction<T>(pool: pg.Pool, work: (sql: Sql) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await work(client as unknown as Sql);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

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
const ENTRY_COLUMNS = MANIFEST_COLUMNS.replace('m.annotations', "'{}' AS annotations");

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

/** BuildKit attestation manifests an index names, with the manifest each describes. */
function attestationsOf(links: ManifestLink[]): { digest: string; described: string }[] {
  return links.flatMap((link) => {
    const annotations = link.annotations;
    if (link.kind !== 'manifest' || annotations?.['vnd.docker.reference.type'] !== 'attestation-manifest') return [];
    const described = annotations['vnd.docker.reference.digest'];
    return described ? [{ digest: link.digest, described }] : [];
  });
}

const lowerKey = (value: string | null) => (value === null ? null : orderKey(value.toLowerCase()));

class PostgresTables implements MetadataTables {
  private readonly pool: pg.Pool;
  private lastMark = Date.now() * 1000;
  /** Attribute paths known to be in attribute_paths (bounded: annotation keys are the pusher's choice). */
  private readonly knownPaths = new Set<string>();
  /** Events about changes, written in the changes' own transactions. */
  readonly outbox: PostgresEventOutbox;
  /** Manifests mergeLayout wrote since open (reindex and first starts write them all). */
  private adopted = 0;

  constructor(pool: pg.Pool, outbox: PostgresEventOutbox) {
    this.pool = pool;
    this.outbox = outbox;
  }

  private async repositoryName(sql: Sql, repoId: number): Promise<string> {
    return (await this.one<{ name: string }>(sql, 'SELECT name FROM repos WHERE id = $1', [repoId]))!.name;
  }

  async init(): Promise<void> {
    const { rows } = await this.pool.query<{ m: number | null }>('SELECT MAX(marked) AS m FROM dirty_subjects');
    this.lastMark = Math.max(rows[0]?.m ?? 0, this.lastMark);
  }

  private tx<T>(work: (sql: Sql) => Promise<T>): Promise<T> {
    return transaction(this.pool, work);
  }

  private async one<R extends pg.QueryResultRow>(sql: Sql, text: string, values: Value[]): Promise<R | undefined> {
    return (await sql.query<R>(text, values)).rows[0];
  }

  async repository(name: string): Promise<RepositoryRecord | undefined> {
    const row = await this.one<RepoRow>(this.pool, 'SELECT * FROM repos WHERE name = $1', [name]);
    return row && toRepository(row);
  }

  async ensureRepository(name: string, indexStamp?: string): Promise<RepositoryRecord> {
    await this.pool.query('INSERT INTO repos (name, created_at, name_ord, index_stamp) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING', [name, Date.now(), lowerKey(name), indexStamp ?? null]);
    return (await this.repository(name))!;
  }

  async repositories(page: PageRequest & { namespace?: string | undefined; childrenOnly?: boolean }): Promise<string[]> {
    const namespace = page.namespace ?? '';
    const { rows } = await this.pool.query<{ name: string }>(`SELECT name FROM repos WHERE name > $1 AND name >= $2 AND name < $3
      ${page.childrenOnly ? "AND strpos(substr(name, $4), '/') = 0" : 'AND $4::int > 0'} ORDER BY name LIMIT $5`,
    [page.after ?? '', namespace, `${namespace}\uffff`, namespace.length + 1, page.limit]);
    return rows.map((r) => r.name);
  }

  async storageBinding(): Promise<string | undefined> {
    return (await this.pool.query<{ value: string }>("SELECT value FROM trellis_meta WHERE key = 'storage'")).rows[0]?.value;
  }

  async bindStorage(storageId: string): Promise<void> {
    await this.pool.query("INSERT INTO trellis_meta (key, value) VALUES ('storage', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value", [storageId]);
  }

  async indexId(): Promise<string> {
    const read = async () => (await this.pool.query<{ value: string }>("SELECT value FROM trellis_meta WHERE key = 'index'")).rows[0]?.value;
    const known = await read();
    if (known) return known;
    // Replicas starting together each insert, and all read back the one that won.
    await this.pool.query("INSERT INTO trellis_meta (key, value) VALUES ('index', $1) ON CONFLICT (key) DO NOTHING", [`postgres:${randomUUID()}`]);
    return (await read())!;
  }

  async repositoryPage(page: PageRequest): Promise<RepositoryRecord[]> {
    return (await this.pool.query<RepoRow>('SELECT * FROM repos WHERE name > $1 ORDER BY name LIMIT $2', [page.after ?? '', page.limit])).rows.map(toRepository);
  }

  async pendingRepositories(): Promise<RepositoryRecord[]> {
    return (await this.pool.query<RepoRow>('SELECT * FROM repos WHERE gen > flushed_gen ORDER BY name')).rows.map(toRepository);
  }

  async recordBlob(repoId: number, digest: string, size: number, sql: Sql = this.pool): Promise<void> {
    await sql.query('INSERT INTO blobs (repo_id, digest, size) VALUES ($1, $2, $3) ON CONFLICT (repo_id, digest) DO UPDATE SET size = EXCLUDED.size', [repoId, digest, size]);
  }

  async forgetBlob(repoId: number, digest: string, sql: Sql = this.pool): Promise<void> {
    await sql.query('DELETE FROM blobs WHERE repo_id = $1 AND digest = $2', [repoId, digest]);
  }

  async blobDigests(repoId: number): Promise<string[]> {
    return (await this.pool.query<{ digest: string }>('SELECT digest FROM blobs WHERE repo_id = $1 ORDER BY digest', [repoId])).rows.map((r) => r.digest);
  }

  async hasBlob(repoId: number, digest: string): Promise<boolean> {
    return (await this.one(this.pool, 'SELECT 1 FROM blobs WHERE repo_id = $1 AND digest = $2', [repoId, digest])) !== undefined;
  }

  async findBlob(digest: string, excludeRepoId = -1): Promise<string | undefined> {
    const row = await this.one<{ name: string }>(this.pool, `SELECT r.name FROM blobs b JOIN repos r ON r.id = b.repo_id
      WHERE b.digest = $1 AND b.repo_id <> $2 ORDER BY r.name LIMIT 1`, [digest, excludeRepoId]);
    return row?.name;
  }

  async manifest(repoId: number, digest: string): Promise<ManifestRecord | undefined> {
    const row = await this.one<ManifestRow>(this.pool, `SELECT ${MANIFEST_COLUMNS} FROM manifests m WHERE m.repo_id = $1 AND m.digest = $2`, [repoId, digest]);
    return row && toManifest(row);
  }

  /** Takes the repository's row lock: writers of one repository serialize here. */
  private async lockRepository(sql: Sql, repoId: number): Promise<{ flushed_gen: number; name: string } | undefined> {
    return this.one(sql, 'SELECT flushed_gen, name FROM repos WHERE id = $1 FOR UPDATE', [repoId]);
  }

  private async bumpGen(sql: Sql, repoId: number): Promise<number> {
    return (await this.one<{ gen: number }>(sql, 'UPDATE repos SET gen = gen + 1 WHERE id = $1 RETURNING gen', [repoId]))!.gen;
  }

  /**
   * Marks a subject's referrers index for a rewrite. Marks come from this process's counter, and
   * replicas' counters are apart: a subject marked again always gets a higher mark than it had,
   * or a rewrite that read the older mark would clear this newer one (setReferrerIndex) and the
   * layout would keep a referrers index naming a deleted referrer.
   */
  private async markDirty(sql: Sql, repoId: number, subject: string): Promise<void> {
    await sql.query(`INSERT INTO dirty_subjects (repo_id, subject, marked) VALUES ($1, $2, $3)
      ON CONFLICT (repo_id, subject) DO UPDATE SET marked = GREATEST(dirty_subjects.marked + 1, EXCLUDED.marked)`, [repoId, subject, ++this.lastMark]);
  }

  private async insertManifest(sql: Sql, repoId: number, record: ManifestRecord, links: ManifestLink[]): Promise<void> {
    const inserted = await this.one<{ id: number }>(sql, `INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, config_media_type, subject,
        annotations, pushed_at, media_type_ord, artifact_type_ord)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (repo_id, digest) DO NOTHING RETURNING id`,
    [repoId, record.digest, record.mediaType, record.size, record.artifactType, record.configMediaType, record.subject,
      JSON.stringify(record.annotations), record.pushedAt, lowerKey(record.mediaType), lowerKey(record.artifactType)]);
    if (!inserted) return; // content-addressed: an existing row already says the same
    await sql.query('DELETE FROM pending_unlinks WHERE repo_id = $1 AND digest = $2', [repoId, record.digest]);
    if (record.subject) await this.markDirty(sql, repoId, record.subject);
    if (links.length) {
      await sql.query(`INSERT INTO edges (repo_id, parent, kind, child_repo, child, media_type, position)
        SELECT $1, $2, kind, child_repo, child, media_type, position - 1 FROM unnest($3::text[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY
          AS l(kind, child_repo, child, media_type, position)
        ON CONFLICT DO NOTHING`,
      [repoId, record.digest, links.map((l) => l.kind), links.map((l) => l.repository ?? ''), links.map((l) => l.digest), links.map((l) => l.mediaType)]);
    }
    const attributes = (record.attributes ?? []).filter((a) => !PATHS_STORED_ELSEWHERE.has(a.path));
    if (attributes.length) {
      await sql.query(`INSERT INTO attributes (manifest_id, path, value, ord)
        SELECT $1, path, value, ord FROM unnest($2::text[], $3::text[], $4::text[]) AS a(path, value, ord) ON CONFLICT DO NOTHING`,
      [inserted.id, attributes.map((a) => a.path), attributes.map((a) => a.value), attributes.map((a) => a.order) as string[]]);
    }
    await this.recordBlob(repoId, record.digest, record.size, sql);
  }

  private async recordAttestations(sql: Sql, repoId: number, links: ManifestLink[]): Promise<void> {
    for (const { digest, described } of attestationsOf(links)) {
      await sql.query('UPDATE manifests SET attests = $1 WHERE repo_id = $2 AND digest = $3', [described, repoId, digest]);
    }
  }

  private async setTag(sql: Sql, repoId: number, name: string, digest: string, gen: number): Promise<void> {
    await sql.query(`INSERT INTO tags (repo_id, name, digest, gen, name_ord) VALUES ($1, $2, $3, $4, $5)
      ON CONFLICT (repo_id, name) DO UPDATE SET digest = EXCLUDED.digest, gen = EXCLUDED.gen`, [repoId, name, digest, gen, lowerKey(name)]);
  }

  /**
   * attribute_paths is the one table every repository writes. Inserting into it inside a
   * manifest's transaction held its rows until commit, and two repositories adopted at once
   * deadlocked on each other's paths; so the paths go in first, sorted, in their own statement.
   * A crash before the manifest commits leaves a known path with no match, which answers empty.
   */
  private async noteAttributePaths(records: ManifestRecord[]): Promise<void> {
    const paths = new Set<string>();
    for (const record of records) {
      for (const a of record.attributes ?? []) if (!PATHS_STORED_ELSEWHERE.has(a.path) && !this.knownPaths.has(a.path)) paths.add(a.path);
    }
    if (!paths.size) return;
    // Committed paths are never removed (only `trellis reindex` drops the tables, with this
    // store closed), so what this process saw committed needs no second look. ON CONFLICT DO
    // NOTHING writes nothing for a known path: the insert is also the check.
    await this.pool.query('INSERT INTO attribute_paths (path) SELECT path FROM unnest($1::text[]) AS p(path) ORDER BY path ON CONFLICT DO NOTHING', [[...paths].sort()]);
    for (const path of paths) if (this.knownPaths.size < KNOWN_PATHS_LIMIT) this.knownPaths.add(path);
  }

  async putManifest(repoId: number, record: ManifestRecord, links: ManifestLink[], tags: string[]): Promise<void> {
    await this.noteAttributePaths([record]);
    const mark = record.subject ? ++this.lastMark : 0;
    const attributes = (record.attributes ?? []).filter((a) => !PATHS_STORED_ELSEWHERE.has(a.path));
    const attestations = attestationsOf(links);
    const values: Value[] = [repoId, record.digest, record.mediaType, record.size, record.artifactType, record.configMediaType, record.subject,
      JSON.stringify(record.annotations), record.pushedAt, lowerKey(record.mediaType), lowerKey(record.artifactType), mark,
      links.map((l) => l.kind), links.map((l) => l.repository ?? ''), links.map((l) => l.digest), links.map((l) => l.mediaType),
      attestations.map((a) => a.digest), attestations.map((a) => a.described),
      attributes.map((a) => a.path), attributes.map((a) => a.value), attributes.map((a) => a.order) as string[],
      tags, tags.map((t) => lowerKey(t)!)];
    // The whole transaction is one server-side function (postgres-schema.ts): one round trip, and
    // without webhooks no BEGIN/COMMIT of its own. With them, the events go in the same
    // transaction, after the function says what changed.
    const text = `SELECT was_known, previous_digests, repository_name FROM trellis_put_manifest(
      $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::text[], $14::text[], $15::text[], $16::text[], $17::text[], $18::text[],
      $19::text[], $20::text[], $21::text[], $22::text[], $23::text[])`;
    if (!this.outbox.recording) {
      await this.pool.query(text, values);
      return;
    }
    await this.tx(async (sql) => {
      const row = (await this.one<{ was_known: boolean; previous_digests: (string | null)[]; repository_name: string }>(sql, text, values))!;
      const previous = row.previous_digests.map((d) => d ?? undefined);
      await this.outbox.record(sql, pushEvents(row.repository_name, record, row.was_known, tags, previous));
    });
  }

  async pushReads(repository: string, digest: string, blobs: readonly BlobLookup[]): Promise<PushReads> {
    const row = (await this.one<{ repo: RepoRow | null; manifest_known: boolean; held: boolean[] }>(this.pool, `SELECT
        (SELECT to_jsonb(r) FROM repos r WHERE r.name = $1) AS repo,
        EXISTS (SELECT 1 FROM manifests m JOIN repos r ON r.id = m.repo_id WHERE r.name = $1 AND m.digest = $2) AS manifest_known,
        ARRAY(SELECT EXISTS (SELECT 1 FROM blobs b JOIN repos r ON r.id = b.repo_id WHERE r.name = w.repository AND b.digest = w.digest)
          FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS w(repository, digest, n) ORDER BY w.n) AS held`,
    [repository, digest, blobs.map((b) => b.repository), blobs.map((b) => b.digest)]))!;
    return { repository: row.repo ? toRepository(row.repo) : undefined, manifestKnown: row.manifest_known, blobsHeld: row.held };
  }

  private async tombstone(sql: Sql, repoId: number, names: string[], gen: number): Promise<void> {
    for (const name of names) {
      await sql.query(`INSERT INTO deleted_tags (repo_id, name, gen) VALUES ($1, $2, $3)
        ON CONFLICT (repo_id, name) DO UPDATE SET gen = EXCLUDED.gen`, [repoId, name, gen]);
    }
  }

  private async removeManifestRows(sql: Sql, repoId: number, digest: string, gen?: number): Promise<boolean> {
    const row = await this.one<{ id: number; subject: string | null }>(sql, 'DELETE FROM manifests WHERE repo_id = $1 AND digest = $2 RETURNING id, subject', [repoId, digest]);
    if (!row) return false;
    if (row.subject) await this.markDirty(sql, repoId, row.subject);
    await sql.query('DELETE FROM attributes WHERE manifest_id = $1', [row.id]);
    await sql.query('DELETE FROM edges WHERE repo_id = $1 AND parent = $2', [repoId, digest]);
    const tags = (await sql.query<{ name: string }>('DELETE FROM tags WHERE repo_id = $1 AND digest = $2 RETURNING name', [repoId, digest])).rows;
    await sql.query('DELETE FROM layout_entries WHERE repo_id = $1 AND digest = $2', [repoId, digest]);
    if (gen !== undefined) {
      await this.tombstone(sql, repoId, tags.map((t) => t.name), gen);
      await sql.query(`INSERT INTO deleted_manifests (repo_id, digest, gen, tags) VALUES ($1, $2, $3, $4)
        ON CONFLICT (repo_id, digest) DO UPDATE SET gen = EXCLUDED.gen, tags = EXCLUDED.tags`, [repoId, digest, gen, JSON.stringify(tags.map((t) => t.name))]);
    }
    await this.forgetBlob(repoId, digest, sql);
    return true;
  }

  async deleteManifests(repoId: number, digests: string[]): Promise<string[]> {
    return this.tx(async (sql) => {
      await this.lockRepository(sql, repoId);
      const present = await this.one(sql, 'SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = ANY($2::text[]) LIMIT 1', [repoId, digests]);
      if (!present) return [];
      const gen = await this.bumpGen(sql, repoId);
      const removed: string[] = [];
      const recording = this.outbox.recording;
      const repository = recording ? await this.repositoryName(sql, repoId) : '';
      const events: NewEvent[] = [];
      for (const digest of digests) {
        const tags = recording ? (await sql.query<{ name: string }>('SELECT name FROM tags WHERE repo_id = $1 AND digest = $2 ORDER BY name', [repoId, digest])).rows.map((t) => t.name) : [];
        if (!(await this.removeManifestRows(sql, repoId, digest, gen))) continue;
        removed.push(digest);
        if (recording) events.push(...deleteEvents(repository, digest, tags));
      }
      await this.outbox.record(sql, events);
      for (const digest of removed) {
        await sql.query(`INSERT INTO pending_unlinks (repo_id, digest, gen) VALUES ($1, $2, $3)
          ON CONFLICT (repo_id, digest) DO UPDATE SET gen = EXCLUDED.gen`, [repoId, digest, gen]);
      }
      return removed;
    });
  }

  async dueUnlinks(repoId: number, flushedGen: number): Promise<string[]> {
    const { rows } = await this.pool.query<{ digest: string }>('SELECT digest FROM pending_unlinks WHERE repo_id = $1 AND gen <= $2 ORDER BY digest', [repoId, flushedGen]);
    return rows.map((r) => r.digest);
  }

  async repositoriesWithDueUnlinks(): Promise<string[]> {
    const { rows } = await this.pool.query<{ name: string }>('SELECT DISTINCT r.name FROM pending_unlinks p JOIN repos r ON r.id = p.repo_id WHERE p.gen <= r.flushed_gen ORDER BY r.name');
    return rows.map((r) => r.name);
  }

  async dropPendingUnlink(repoId: number, digest: string, removed = false): Promise<void> {
    if (!removed) return void await this.pool.query('DELETE FROM pending_unlinks WHERE repo_id = $1 AND digest = $2', [repoId, digest]);
    await this.tx(async (sql) => {
      await sql.query('DELETE FROM pending_unlinks WHERE repo_id = $1 AND digest = $2', [repoId, digest]);
      await sql.query('DELETE FROM deleted_manifests WHERE repo_id = $1 AND digest = $2', [repoId, digest]);
    });
  }

  async journalManifestWrite(repoId: number, digest: string): Promise<void> {
    // An entry a delete journaled already (at its own change) stays as it is.
    await this.pool.query('INSERT INTO pending_unlinks (repo_id, digest, gen) SELECT id, $1, gen FROM repos WHERE id = $2 ON CONFLICT DO NOTHING', [digest, repoId]);
  }

  async scheduleUnlink(repoId: number, digest: string): Promise<void> {
    await this.tx(async (sql) => {
      await sql.query('INSERT INTO pending_unlinks (repo_id, digest, gen) SELECT id, $1, gen FROM repos WHERE id = $2 ON CONFLICT DO NOTHING', [digest, repoId]);
      await this.forgetBlob(repoId, digest, sql);
    });
  }

  async contentInUse(repoId: number, digest: string): Promise<boolean> {
    // A subject link does not need its subject's file; every other role does.
    return (await this.one(this.pool, `SELECT 1 WHERE EXISTS (SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2)
        OR EXISTS (SELECT 1 FROM blobs WHERE repo_id = $1 AND digest = $2)
        OR EXISTS (SELECT 1 FROM layout_referrer_indexes WHERE repo_id = $1 AND digest = $2)
        OR EXISTS (SELECT 1 FROM edges e JOIN manifests p ON p.repo_id = e.repo_id AND p.digest = e.parent
          WHERE e.repo_id = $1 AND e.child = $2 AND e.child_repo = '' AND e.kind <> 'subject')
        OR EXISTS (SELECT 1 FROM edges e JOIN manifests p ON p.repo_id = e.repo_id AND p.digest = e.parent
          WHERE e.child_repo = (SELECT name FROM repos WHERE id = $1) AND e.child = $2 AND e.kind <> 'subject')`, [repoId, digest])) !== undefined;
  }

  async awaitsUnlink(repoId: number, digest: string): Promise<boolean> {
    const pending = await this.one(this.pool, 'SELECT 1 FROM pending_unlinks WHERE repo_id = $1 AND digest = $2', [repoId, digest]);
    return pending !== undefined && !(await this.contentInUse(repoId, digest));
  }

  async edgesFrom(repoId: number, digest: string): Promise<EdgeRecord[]> {
    const { rows } = await this.pool.query(`SELECT r.name AS "parentRepository", e.parent, e.kind,
        CASE e.child_repo WHEN '' THEN r.name ELSE e.child_repo END AS "childRepository", e.child, e.media_type AS "mediaType"
      FROM edges e JOIN repos r ON r.id = e.repo_id WHERE e.repo_id = $1 AND e.parent = $2 ORDER BY e.position`, [repoId, digest]);
    return rows as EdgeRecord[];
  }

  async edgesTo(repository: string, digest: string): Promise<EdgeRecord[]> {
    const { rows } = await this.pool.query(`SELECT r.name AS "parentRepository", e.parent, e.kind, $1::text AS "childRepository", e.child, e.media_type AS "mediaType"
        FROM edges e JOIN repos r ON r.id = e.repo_id
        WHERE (e.repo_id = (SELECT id FROM repos WHERE name = $1) AND e.child = $2 AND e.child_repo = '') OR (e.child_repo = $1 AND e.child = $2)
        ORDER BY r.name, e.parent`, [repository, digest]);
    return rows as EdgeRecord[];
  }

  async linkedRepositories(repoId: number): Promise<string[]> {
    const { rows } = await this.pool.query<{ child_repo: string }>("SELECT DISTINCT child_repo FROM edges WHERE repo_id = $1 AND child_repo <> '' ORDER BY child_repo", [repoId]);
    return rows.map((r) => r.child_repo);
  }

  async resolveTag(repoId: number, tag: string): Promise<string | undefined> {
    return (await this.one<{ digest: string }>(this.pool, 'SELECT digest FROM tags WHERE repo_id = $1 AND name = $2', [repoId, tag]))?.digest;
  }

  async tags(repoId: number, page: PageRequest): Promise<string[]> {
    const { rows } = await this.pool.query<{ name: string }>('SELECT name FROM tags WHERE repo_id = $1 AND name > $2 ORDER BY name LIMIT $3',
      [repoId, page.after ?? '', Math.min(page.limit, Number.MAX_SAFE_INTEGER)]);
    return rows.map((r) => r.name);
  }

  async deleteTag(repoId: number, tag: string): Promise<boolean> {
    return this.tx(async (sql) => {
      await this.lockRepository(sql, repoId);
      const row = await this.one<{ digest: string }>(sql, 'DELETE FROM tags WHERE repo_id = $1 AND name = $2 RETURNING digest', [repoId, tag]);
      if (!row) return false;
      await this.tombstone(sql, repoId, [tag], await this.bumpGen(sql, repoId));
      await sql.query('DELETE FROM layout_entries WHERE repo_id = $1 AND digest = $2 AND tag = $3', [repoId, row.digest, tag]);
      if (this.outbox.recording) await this.outbox.record(sql, [tagRemoved(await this.repositoryName(sql, repoId), tag, row.digest)]);
      return true;
    });
  }

  async referrers(repoId: number, subject: string, filter: ReferrerFilter): Promise<ManifestRecord[]> {
    return (await this.referrerRows(repoId, subject, filter)).map(toManifest);
  }

  async referrerDescriptors(repoId: number, subject: string, filter: ReferrerFilter): Promise<{ digest: string; json: string }[]> {
    return (await this.referrerRows(repoId, subject, filter)).map((row) => ({
      digest: row.digest,
      json: referrerDescriptorJson({ mediaType: row.media_type, digest: row.digest, size: row.size, artifactType: row.artifact_type, annotations: row.annotations }),
    }));
  }

  private async referrerRows(repoId: number, subject: string, filter: ReferrerFilter): Promise<ManifestRow[]> {
    const types = filter.artifactTypes ?? [];
    const typeClause = types.length ? 'AND m.artifact_type = ANY($4::text[])' : 'AND $4::text[] IS NOT NULL';
    const query = (column: string) => `SELECT ${MANIFEST_COLUMNS} FROM manifests m WHERE m.repo_id = $1 AND m.${column} = $2 AND m.digest > $3 ${typeClause}`;
    const text = filter.includeAttestations
      ? `SELECT * FROM (${query('subject')} UNION ${query('attests')}) m ORDER BY m.digest LIMIT $5`
      : `${query('subject')} ORDER BY m.digest LIMIT $5`;
    return (await this.pool.query<ManifestRow>(text, [repoId, subject, filter.after ?? '', types, filter.limit])).rows;
  }

  async taggedEntries(repoId: number, page: PageRequest): Promise<TaggedManifest[]> {
    const { rows } = await this.pool.query<ManifestRow>(`SELECT ${ENTRY_COLUMNS}, t.name AS tag, x.entry AS layout_entry FROM tags t JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
      LEFT JOIN layout_entries x ON x.repo_id = t.repo_id AND x.digest = t.digest AND x.tag = t.name
      WHERE t.repo_id = $1 AND t.name > $2 ORDER BY t.name LIMIT $3`, [repoId, page.after ?? '', page.limit]);
    return rows.map((row) => ({ ...toManifest(row), tag: row.tag!, layoutEntry: row.layout_entry ?? null }));
  }

  async untaggedEntries(repoId: number, afterId: number, limit: number): Promise<UntaggedManifest[]> {
    const { rows } = await this.pool.query<ManifestRow>(`SELECT ${ENTRY_COLUMNS}, x.entry AS layout_entry FROM manifests m
      LEFT JOIN layout_entries x ON x.repo_id = m.repo_id AND x.digest = m.digest AND x.tag = ''
      WHERE m.repo_id = $1 AND m.id > $2 AND (m.subject IS NOT NULL OR (
        NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = m.repo_id AND t.digest = m.digest) AND
        NOT EXISTS (SELECT 1 FROM edges e WHERE e.repo_id = m.repo_id AND e.child = m.digest AND e.kind = 'manifest' AND e.child_repo = '')))
      ORDER BY m.id LIMIT $3`, [repoId, afterId, limit]);
    return rows.map((row) => ({ ...toManifest(row), id: row.id, layoutEntry: row.layout_entry ?? null }));
  }

  async dirtySubjects(repoId: number): Promise<{ subject: string; marked: number }[]> {
    return (await this.pool.query<{ subject: string; marked: number }>('SELECT subject, marked FROM dirty_subjects WHERE repo_id = $1 ORDER BY subject', [repoId])).rows;
  }

  async referrerIndexes(repoId: number): Promise<ReferrerIndexRecord[]> {
    return (await this.pool.query<ReferrerIndexRecord>('SELECT subject, digest, size FROM layout_referrer_indexes WHERE repo_id = $1 ORDER BY subject', [repoId])).rows;
  }

  async setReferrerIndex(repoId: number, subject: string, index: { digest: string; size: number } | null, marked: number): Promise<void> {
    await this.tx(async (sql) => {
      // The index it replaces goes once index.json stops naming it, like a deleted manifest's file.
      const old = await this.one<{ digest: string }>(sql, 'SELECT digest FROM layout_referrer_indexes WHERE repo_id = $1 AND subject = $2', [repoId, subject]);
      if (old && old.digest !== index?.digest) {
        await sql.query('INSERT INTO pending_unlinks (repo_id, digest, gen) SELECT id, $1, gen FROM repos WHERE id = $2 ON CONFLICT DO NOTHING', [old.digest, repoId]);
      }
      if (index) {
        await sql.query('DELETE FROM pending_unlinks WHERE repo_id = $1 AND digest = $2', [repoId, index.digest]);
        await sql.query(`INSERT INTO layout_referrer_indexes (repo_id, subject, digest, size) VALUES ($1, $2, $3, $4)
          ON CONFLICT (repo_id, subject) DO UPDATE SET digest = EXCLUDED.digest, size = EXCLUDED.size`, [repoId, subject, index.digest, index.size]);
      } else {
        await sql.query('DELETE FROM layout_referrer_indexes WHERE repo_id = $1 AND subject = $2', [repoId, subject]);
      }
      await sql.query('DELETE FROM dirty_subjects WHERE repo_id = $1 AND subject = $2 AND marked <= $3', [repoId, subject, marked]);
    });
  }

  async notePendingIndex(repoId: number, gen: number, stamp: string): Promise<void> {
    await this.pool.query('UPDATE repos SET pending_stamp = $1, pending_gen = $2 WHERE id = $3', [stamp, gen, repoId]);
  }

  async markFlushed(repoId: number, gen: number, indexStamp: string): Promise<void> {
    await this.tx(async (sql) => {
      await sql.query('UPDATE repos SET flushed_gen = GREATEST(flushed_gen, $1), index_stamp = $2, pending_stamp = NULL, pending_gen = NULL WHERE id = $3', [gen, indexStamp, repoId]);
      await sql.query('DELETE FROM deleted_tags WHERE repo_id = $1 AND gen <= $2', [repoId, gen]);
    });
  }

  async mergeLayout(repoId: number, snapshot: LayoutSnapshot, vanished: string[]): Promise<void> {
    await this.noteAttributePaths(snapshot.manifests.map((m) => m.record));
    await this.tx(async (sql) => {
      const repo = (await this.lockRepository(sql, repoId))!;
      // A tombstone matters only while the manifest is absent (one stored again keeps its row).
      await sql.query('DELETE FROM deleted_manifests d WHERE d.repo_id = $1 AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = d.repo_id AND m.digest = d.digest)', [repoId]);
      for (const digest of vanished) await this.removeManifestRows(sql, repoId, digest);
      const tombstones = new Map((await sql.query<{ digest: string; tags: string }>('SELECT digest, tags FROM deleted_manifests WHERE repo_id = $1', [repoId])).rows
        .map((t) => [t.digest, new Set(JSON.parse(t.tags) as string[])]));
      const local = (await sql.query<{ name: string; digest: string; gen: number }>('SELECT name, digest, gen FROM tags WHERE repo_id = $1', [repoId])).rows;
      const localByName = new Map(local.map((t) => [t.name, t]));
      const deletedSince = new Set((await sql.query<{ name: string }>('SELECT name FROM deleted_tags WHERE repo_id = $1 AND gen > $2', [repoId, repo.flushed_gen])).rows.map((t) => t.name));
      // Deleted here after the file was written, or moved here since the last rewrite: ours wins.
      const takesTag = (name: string, digest: string) => {
        const mine = localByName.get(name);
        return !deletedSince.has(name) && (!mine || (mine.gen <= repo.flushed_gen && mine.digest !== digest));
      };
      const stale = staleManifests(snapshot, tombstones, takesTag);
      const manifests = snapshot.manifests.filter((m) => !stale.has(m.record.digest));
      for (const { record, links } of manifests) await this.insertManifest(sql, repoId, record, links);
      for (const { links } of manifests) await this.recordAttestations(sql, repoId, links);
      const revived = manifests.map((m) => m.record.digest).filter((digest) => tombstones.has(digest));
      if (revived.length) await sql.query('DELETE FROM deleted_manifests WHERE repo_id = $1 AND digest = ANY($2::text[])', [repoId, revived]);
      for (const t of local) {
        if (!snapshot.tags.has(t.name) && t.gen <= repo.flushed_gen) await sql.query('DELETE FROM tags WHERE repo_id = $1 AND name = $2', [repoId, t.name]);
      }
      for (const [name, digest] of snapshot.tags) {
        if (stale.has(digest) || tombstones.get(digest)?.has(name)) continue; // deleted here with its manifest
        if (takesTag(name, digest)) await this.setTag(sql, repoId, name, digest, repo.flushed_gen);
      }
      await sql.query('DELETE FROM layout_entries WHERE repo_id = $1', [repoId]);
      const entries = snapshot.entries.filter((e) => !stale.has(e.digest));
      if (entries.length) {
        await sql.query(`INSERT INTO layout_entries (repo_id, digest, tag, entry) SELECT $1, e.digest, e.tag, e.entry
          FROM unnest($2::text[], $3::text[], $4::text[]) AS e(digest, tag, entry) ON CONFLICT (repo_id, digest, tag) DO UPDATE SET entry = EXCLUDED.entry`,
        [repoId, entries.map((e) => e.digest), entries.map((e) => e.tag), entries.map((e) => e.json)]);
      }
      await sql.query('UPDATE repos SET layout_extras = $1, index_stamp = $2 WHERE id = $3', [JSON.stringify(snapshot.extras), snapshot.indexStamp, repoId]);
      // The file lists manifests deleted here: it is rewritten without them.
      if (stale.size) await this.bumpGen(sql, repoId);
    });
    this.adopted += snapshot.manifests.length;
  }

  async forgetLostFiles(repoId: number, lost: { blobs: string[]; extras: LayoutExtras }): Promise<void> {
    await this.tx(async (sql) => {
      if (lost.blobs.length) await sql.query('DELETE FROM blobs WHERE repo_id = $1 AND digest = ANY($2::text[])', [repoId, lost.blobs]);
      await sql.query('UPDATE repos SET layout_extras = $1 WHERE id = $2', [JSON.stringify(lost.extras), repoId]);
      await this.bumpGen(sql, repoId);
    });
  }

  /**
   * After a bulk load (`trellis reindex`, a first start on many layouts) the statistics autovacuum
   * took part-way through can be far from the tables, and query plans are chosen by them; one
   * ANALYZE (a sample, seconds at 100,000 manifests) sets them before the next server plans.
   */
  async refreshStatisticsAfterBulkLoad(): Promise<void> {
    if (this.adopted < BULK_LOAD) return;
    this.adopted = 0;
    // A failure leaves it to autovacuum; closing must not fail for it.
    await this.pool.query('ANALYZE repos, manifests, tags, edges, attributes, blobs').catch(() => undefined);
  }

  async unreachableManifests(repoId: number, policy: RetentionPolicy): Promise<UnreachableManifest[]> {
    const repo = await this.one<{ name: string }>(this.pool, 'SELECT name FROM repos WHERE id = $1', [repoId]);
    if (!repo) return [];
    // PostgreSQL allows one recursive term referring to the CTE once: the seeds are a subquery,
    // and both steps (index children, referrers) hang off one reference to `live`.
    const { rows } = await this.pool.query<{ digest: string; subject: string | null; dangling: boolean }>(`WITH RECURSIVE live(digest) AS (
        SELECT digest FROM (
          SELECT digest FROM tags WHERE repo_id = $1
          UNION SELECT unnest($6::text[])
          UNION SELECT digest FROM manifests WHERE repo_id = $1 AND (pushed_at >= $3
            OR ($4::boolean AND subject IS NULL)
            OR ($5::boolean AND subject IS NOT NULL AND subject NOT IN (SELECT digest FROM manifests WHERE repo_id = $1)))
          UNION SELECT e.child FROM edges e WHERE e.child_repo = $2 AND e.kind = 'manifest'
            AND EXISTS (SELECT 1 FROM manifests p WHERE p.repo_id = e.repo_id AND p.digest = e.parent)) seeds
        UNION SELECT step.digest FROM live l CROSS JOIN LATERAL (
          -- a manifest a live manifest uses in any role (an index child, or a layer or blob whose
          -- bytes are a manifest) is live, and so is what it uses
          SELECT e.child AS digest FROM edges e WHERE e.repo_id = $1 AND e.parent = l.digest AND e.kind <> 'subject' AND e.child_repo = ''
            AND (e.kind = 'manifest' OR EXISTS (SELECT 1 FROM manifests c WHERE c.repo_id = $1 AND c.digest = e.child))
          UNION ALL SELECT m.digest FROM manifests m WHERE m.repo_id = $1 AND m.subject = l.digest) step)
      SELECT m.digest, m.subject, (m.subject IS NOT NULL AND m.subject NOT IN (SELECT digest FROM manifests WHERE repo_id = $1)) AS dangling
      FROM manifests m WHERE m.repo_id = $1 AND m.digest NOT IN (SELECT digest FROM live) ORDER BY m.id`,
    [repoId, repo.name, policy.pushedBefore, policy.keepUntagged, policy.keepDanglingReferrers, policy.liveRoots ?? []]);
    return rows.map((r) => ({
      digest: r.digest,
      reason: r.dangling ? 'referrer whose subject is gone' : r.subject ? 'referrer of an unreachable manifest' : 'untagged and not referenced',
    }));
  }

  async stillUnreachable(repoId: number, digest: string, pushedBefore: number): Promise<boolean> {
    const repo = (await this.one<{ name: string }>(this.pool, 'SELECT name FROM repos WHERE id = $1', [repoId]))!;
    const row = await this.one(this.pool, `SELECT 1 FROM manifests m WHERE m.repo_id = $1 AND m.digest = $2 AND m.pushed_at < $3
        AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = $1 AND t.digest = $2)
        AND NOT EXISTS (SELECT 1 FROM edges e JOIN manifests p ON p.repo_id = e.repo_id AND p.digest = e.parent
          WHERE e.repo_id = $1 AND e.child = $2 AND e.kind <> 'subject' AND e.child_repo = '')
        AND NOT EXISTS (SELECT 1 FROM edges e JOIN manifests p ON p.repo_id = e.repo_id AND p.digest = e.parent
          WHERE e.child_repo = $4 AND e.child_repo <> '' AND e.child = $2 AND e.kind = 'manifest')
        AND NOT (m.subject IS NOT NULL AND EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = $1 AND t.digest = m.subject))`,
    [repoId, digest, pushedBefore, repo.name]);
    return row !== undefined;
  }

  async referencedDigests(repoId: number, excluding: ReadonlySet<string> = new Set()): Promise<Set<string>> {
    const referenced = new Set<string>();
    const { rows } = await this.pool.query<{ digest: string }>(`SELECT digest FROM manifests WHERE repo_id = $1
      UNION SELECT digest FROM layout_referrer_indexes WHERE repo_id = $1 UNION SELECT digest FROM pending_unlinks WHERE repo_id = $1`, [repoId]);
    for (const { digest } of rows) if (!excluding.has(digest)) referenced.add(digest);
    const edges = await this.pool.query<{ parent: string; child: string }>("SELECT parent, child FROM edges WHERE repo_id = $1 AND child_repo = '' AND kind <> 'subject'", [repoId]);
    for (const { parent, child } of edges.rows) if (referenced.has(parent)) referenced.add(child);
    return referenced;
  }

  async isReferenced(repoId: number, digest: string): Promise<boolean> {
    return (await this.one(this.pool, `SELECT 1 WHERE EXISTS (SELECT 1 FROM manifests WHERE repo_id = $1 AND digest = $2)
        OR EXISTS (SELECT 1 FROM layout_referrer_indexes WHERE repo_id = $1 AND digest = $2)
        OR EXISTS (SELECT 1 FROM pending_unlinks WHERE repo_id = $1 AND digest = $2)
        OR EXISTS (SELECT 1 FROM edges e JOIN manifests p ON p.repo_id = e.repo_id AND p.digest = e.parent
          WHERE e.repo_id = $1 AND e.child = $2 AND e.child_repo = '')`, [repoId, digest])) !== undefined;
  }

  async unindexedChildren(repoId: number): Promise<string[]> {
    const { rows } = await this.pool.query<{ digest: string }>(`SELECT e.child AS digest FROM edges e JOIN manifests p ON p.repo_id = e.repo_id AND p.digest = e.parent
        WHERE e.repo_id = $1 AND e.child_repo = '' AND e.kind = 'manifest'
          AND NOT EXISTS (SELECT 1 FROM manifests c WHERE c.repo_id = $1 AND c.digest = e.child)
      UNION SELECT e.child FROM edges e JOIN manifests p ON p.repo_id = e.repo_id AND p.digest = e.parent
        WHERE e.child_repo = (SELECT name FROM repos WHERE id = $1) AND e.kind = 'manifest'
          AND NOT EXISTS (SELECT 1 FROM manifests c WHERE c.repo_id = $1 AND c.digest = e.child)`, [repoId]);
    return rows.map((r) => r.digest);
  }

  async manifestDigests(repoId: number): Promise<string[]> {
    return (await this.pool.query<{ digest: string }>('SELECT digest FROM manifests WHERE repo_id = $1 ORDER BY id', [repoId])).rows.map((r) => r.digest);
  }
}

/** Opens the store at a postgres:// URL, applying pending migrations first (unless read-only). */
export async function openPostgresMetadata(url: string, options: { readOnly: boolean; recordEvents?: boolean }): Promise<MetadataStore> {
  const locks = new AdvisoryLocks(url);
  // Before anything else: a reindex may be dropping the tables this would migrate or read.
  const presence = await Presence.share(url, (reason) => locks.abandon(reason));
  const pool = createPool(url);
  try {
    if (!options.readOnly) {
      const client = await pool.connect();
      try {
        await migrate(client);
      } finally {
        client.release();
      }
    }
    const outbox = new PostgresEventOutbox(pool, { recording: options.recordEvents ?? false });
    const tables = new PostgresTables(pool, outbox);
    await tables.init();
    const store: MetadataStore = Object.assign(Object.create(tables) as PostgresTables, {
      engine: 'postgres', needsRebuild: false, queries: new PostgresQueryIndex(pool), components: new PostgresComponentIndex(pool, outbox),
      locks, close: async () => {
        await locks.close();
        await tables.refreshStatisticsAfterBulkLoad();
        await pool.end();
        await presence?.release();
      },
    });
    return store;
  } catch (err) {
    await pool.end();
    await presence?.release();
    throw err;
  }
}

export async function postgresHasSchema(url: string): Promise<boolean> {
  const pool = createPool(url);
  try {
    const { rows } = await pool.query<{ present: string | null }>("SELECT to_regclass('trellis_migrations')::text AS present");
    return rows[0]?.present != null;
  } finally {
    await pool.end();
  }
}

/** Drops every Trellis table; the next open migrates an empty schema. */
export async function dropPostgresMetadata(url: string): Promise<void> {
  const pool = createPool(url);
  try {
    // The index keeps its id (its replicas' storage claim names it); what it was bound to goes.
    await pool.query(`DROP TABLE IF EXISTS ${TABLES.filter((table) => table !== 'trellis_meta').join(', ')} CASCADE`);
    if ((await pool.query("SELECT to_regclass('trellis_meta') AS meta")).rows[0].meta) await pool.query("DELETE FROM trellis_meta WHERE key <> 'index'");
    await pool.query(`DROP FUNCTION IF EXISTS ${FUNCTIONS.join(', ')}`);
  } finally {
    await pool.end();
  }
}
