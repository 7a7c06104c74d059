// PostgreSQL schema as versioned migrations, applied in order at start under an advisory lock (so
// several replicas starting at once migrate once). The tables mirror the SQLite ones
// (src/metadata/sqlite.ts); text is compared byte-wise (COLLATE "C") so that names, tags and
// cursors order exactly as on SQLite whatever the database's locale.
import type { PoolClient } from 'pg';

const T = 'TEXT COLLATE "C"';

/**
 * putManifest's transaction (src/metadata/postgres.ts) as one statement: a push was ~13 round
 * trips, each a wait on the network and on the database. The steps and their order are those of
 * the multi-statement version it replaces: lock the repository row, read what the push changes,
 * move a known manifest's push time, stop if nothing else changes (a re-push of the same manifest
 * under the same tags), else bump the change
 * counter, insert the manifest with its edges, attributes and blob row (only if new), mark
 * attestations, point the tags and drop their tombstones. It returns what the caller needs for
 * events: whether the manifest was known, each tag's previous digest, the repository's name.
 * Duplicates in the arrays are allowed as before (the last attestation of a digest wins).
 */
const PUT_MANIFEST_FUNCTION = `
CREATE OR REPLACE FUNCTION trellis_put_manifest(
  p_repo BIGINT, p_digest TEXT, p_media_type TEXT, p_size BIGINT, p_artifact_type TEXT, p_config_media_type TEXT,
  p_subject TEXT, p_annotations TEXT, p_pushed_at BIGINT, p_media_type_ord TEXT, p_artifact_type_ord TEXT, p_mark BIGINT,
  p_link_kinds TEXT[], p_link_repos TEXT[], p_link_digests TEXT[], p_link_media_types TEXT[],
  p_attested TEXT[], p_attests TEXT[], p_paths TEXT[], p_values TEXT[], p_ords TEXT[], p_tags TEXT[], p_tag_ords TEXT[],
  OUT was_known BOOLEAN, OUT previous_digests TEXT[], OUT repository_name TEXT)
LANGUAGE plpgsql AS $fn$
DECLARE
  v_gen BIGINT;
  v_id BIGINT;
BEGIN
  -- writers of one repository serialize on its row, as every other write does
  SELECT r.name INTO repository_name FROM repos r WHERE r.id = p_repo FOR UPDATE;
  was_known := EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = p_repo AND m.digest = p_digest);
  IF was_known THEN
    -- a re-push is a push: GC's grace period counts from the last one (REPUSH_REFRESH_MS = 1000)
    UPDATE manifests m SET pushed_at = p_pushed_at WHERE m.repo_id = p_repo AND m.digest = p_digest AND m.pushed_at < p_pushed_at - 1000
      RETURNING m.id INTO v_id;
    IF v_id IS NOT NULL THEN
      UPDATE attributes x SET value = a.value, ord = a.ord FROM unnest(p_paths, p_values, p_ords) AS a(path, value, ord)
        WHERE x.manifest_id = v_id AND x.path = 'pushedat' AND a.path = 'pushedat';
      v_id := NULL;
    END IF;
  END IF;
  SELECT coalesce(array_agg(t.digest ORDER BY w.n), '{}') INTO previous_digests
    FROM unnest(p_tags) WITH ORDINALITY AS w(name, n) LEFT JOIN tags t ON t.repo_id = p_repo AND t.name = w.name;
  IF was_known AND NOT EXISTS (SELECT 1 FROM unnest(previous_digests) AS d(digest) WHERE d.digest IS DISTINCT FROM p_digest) THEN
    RETURN;
  END IF;
  UPDATE repos SET gen = gen + 1 WHERE id = p_repo RETURNING gen INTO v_gen;
  INSERT INTO manifests (repo_id, digest, media_type, size, artifact_type, config_media_type, subject, annotations, pushed_at,
      media_type_ord, artifact_type_ord)
    VALUES (p_repo, p_digest, p_media_type, p_size, p_artifact_type, p_config_media_type, p_subject, p_annotations, p_pushed_at,
      p_media_type_ord, p_artifact_type_ord)
    ON CONFLICT (repo_id, digest) DO NOTHING RETURNING id INTO v_id;
  IF v_id IS NOT NULL THEN -- content-addressed: an existing row already says the same
    DELETE FROM pending_unlinks WHERE repo_id = p_repo AND digest = p_digest;
    IF p_subject IS NOT NULL THEN
      -- never lower than before: marks come from each replica's own counter (see markDirty)
      INSERT INTO dirty_subjects (repo_id, subject, marked) VALUES (p_repo, p_subject, p_mark)
        ON CONFLICT (repo_id, subject) DO UPDATE SET marked = GREATEST(dirty_subjects.marked + 1, EXCLUDED.marked);
    END IF;
    INSERT INTO edges (repo_id, parent, kind, child_repo, child, media_type, position)
      SELECT p_repo, p_digest, l.kind, l.child_repo, l.child, l.media_type, l.position - 1
      FROM unnest(p_link_kinds, p_link_repos, p_link_digests, p_link_media_types) WITH ORDINALITY AS l(kind, child_repo, child, media_type, position)
      ON CONFLICT DO NOTHING;
    INSERT INTO attributes (manifest_id, path, value, ord)
      SELECT v_id, a.path, a.value, a.ord FROM unnest(p_paths, p_values, p_ords) AS a(path, value, ord) ON CONFLICT DO NOTHING;
    INSERT INTO blobs (repo_id, digest, size) VALUES (p_repo, p_digest, p_size)
      ON CONFLICT (repo_id, digest) DO UPDATE SET size = EXCLUDED.size;
  END IF;
  UPDATE manifests m SET attests = a.described
    FROM (SELECT DISTINCT ON (x.digest) x.digest, x.described FROM unnest(p_attested, p_attests) WITH ORDINALITY AS x(digest, described, n)
      ORDER BY x.digest, x.n DESC) a
    WHERE m.repo_id = p_repo AND m.digest = a.digest;
  INSERT INTO tags (repo_id, name, digest, gen, name_ord)
    SELECT DISTINCT ON (t.name) p_repo, t.name, p_digest, v_gen, t.ord FROM unnest(p_tags, p_tag_ords) AS t(name, ord) ORDER BY t.name
    ON CONFLICT (repo_id, name) DO UPDATE SET digest = EXCLUDED.digest, gen = EXCLUDED.gen;
  DELETE FROM deleted_tags WHERE repo_id = p_repo AND name = ANY(p_tags);
END
$fn$;
`;

/**
 * Indexes a query page can be read from in its own order, stopping at LIMIT. A B-tree on
 * (path, value) holds equal keys in heap order, so a page of `eq` matches (ORDER BY manifest_id)
 * read and sorted every match; with manifest_id as the last column the matches come in page
 * order, as they do from SQLite's index (which ends in the row's key). The same for the sort index
 * (ORDER BY ord, manifest_id). The artifact type index is no longer partial: PostgreSQL keeps
 * statistics of an index expression only for a full index, and without them it guessed 0.5% of
 * the manifests for every type (500 for 32,000 images at 100,000), which led it to bitmap scans
 * and sorts of every match when the caller's grants were few. ANALYZE: the new expression needs
 * its statistics now, not at the next autovacuum.
 */
const QUERY_PLAN_INDEXES = `
DROP INDEX attributes_by_value;
CREATE INDEX attributes_by_value ON attributes (path, value, manifest_id);
DROP INDEX attributes_by_order;
CREATE INDEX attributes_by_order ON attributes (path, ord, manifest_id) WHERE ord IS NOT NULL;
DROP INDEX manifests_by_artifact_type;
CREATE INDEX manifests_by_artifact_type ON manifests (lower(artifact_type), id);
ANALYZE manifests;
ANALYZE attributes;
`;

export const MIGRATIONS: { version: number; description: string; sql: string }[] = [
  {
    version: 1,
    description: 'metadata, query and component tables',
    sql: `
CREATE TABLE repos (
  id BIGSERIAL PRIMARY KEY, name ${T} NOT NULL UNIQUE, created_at BIGINT NOT NULL,
  gen BIGINT NOT NULL DEFAULT 0, flushed_gen BIGINT NOT NULL DEFAULT 0,
  index_stamp ${T}, layout_extras ${T} NOT NULL DEFAULT '{}',
  pending_stamp ${T}, pending_gen BIGINT,
  -- order key of the lower-cased name (queries compare repositories by it)
  name_ord ${T});
CREATE TABLE blobs (
  repo_id BIGINT NOT NULL, digest ${T} NOT NULL, size BIGINT NOT NULL, PRIMARY KEY (repo_id, digest));
CREATE INDEX blobs_by_digest ON blobs (digest);
CREATE TABLE manifests (
  id BIGSERIAL PRIMARY KEY, repo_id BIGINT NOT NULL, digest ${T} NOT NULL, media_type ${T} NOT NULL,
  size BIGINT NOT NULL, artifact_type ${T}, config_media_type ${T}, subject ${T},
  annotations ${T} NOT NULL, pushed_at BIGINT NOT NULL, attests ${T},
  media_type_ord ${T}, artifact_type_ord ${T},
  UNIQUE (repo_id, digest));
CREATE INDEX manifests_by_subject ON manifests (repo_id, subject, digest) WHERE subject IS NOT NULL;
CREATE INDEX manifests_by_artifact_type ON manifests (lower(artifact_type), id) WHERE artifact_type IS NOT NULL;
CREATE INDEX manifests_by_attests ON manifests (repo_id, attests, digest) WHERE attests IS NOT NULL;
CREATE INDEX manifests_by_digest ON manifests (digest);
CREATE TABLE tags (
  repo_id BIGINT NOT NULL, name ${T} NOT NULL, digest ${T} NOT NULL, gen BIGINT NOT NULL, name_ord ${T},
  PRIMARY KEY (repo_id, name));
CREATE INDEX tags_by_digest ON tags (repo_id, digest);
CREATE TABLE edges (
  repo_id BIGINT NOT NULL, parent ${T} NOT NULL, kind ${T} NOT NULL, child_repo ${T} NOT NULL, child ${T} NOT NULL,
  media_type ${T} NOT NULL, position INTEGER NOT NULL, PRIMARY KEY (repo_id, parent, kind, child_repo, child));
CREATE INDEX edges_by_child ON edges (repo_id, child, kind, parent);
CREATE INDEX edges_by_child_repo ON edges (child_repo, child) WHERE child_repo <> '';
CREATE TABLE attributes (
  manifest_id BIGINT NOT NULL, path ${T} NOT NULL, value ${T} NOT NULL, ord ${T},
  PRIMARY KEY (manifest_id, path, value));
CREATE INDEX attributes_by_value ON attributes (path, value);
CREATE INDEX attributes_by_order ON attributes (path, ord) WHERE ord IS NOT NULL;
CREATE TABLE attribute_paths (path ${T} PRIMARY KEY);
CREATE TABLE layout_referrer_indexes (
  repo_id BIGINT NOT NULL, subject ${T} NOT NULL, digest ${T} NOT NULL, size BIGINT NOT NULL, PRIMARY KEY (repo_id, subject));
CREATE TABLE deleted_tags (repo_id BIGINT NOT NULL, name ${T} NOT NULL, gen BIGINT NOT NULL, PRIMARY KEY (repo_id, name));
CREATE TABLE pending_unlinks (repo_id BIGINT NOT NULL, digest ${T} NOT NULL, gen BIGINT NOT NULL, PRIMARY KEY (repo_id, digest));
CREATE TABLE dirty_subjects (repo_id BIGINT NOT NULL, subject ${T} NOT NULL, marked BIGINT NOT NULL, PRIMARY KEY (repo_id, subject));

CREATE TABLE component_versions (
  repository ${T} NOT NULL, name ${T} NOT NULL, version ${T} NOT NULL, kind ${T} NOT NULL, tag ${T}, digest ${T} NOT NULL,
  provider ${T}, labels ${T} NOT NULL, pushed_at BIGINT NOT NULL, detail ${T} NOT NULL, artifacts ${T} NOT NULL,
  PRIMARY KEY (repository, name, version));
CREATE INDEX component_versions_by_name ON component_versions (name, repository, version);
CREATE TABLE component_artifacts (
  digest ${T} NOT NULL, repository ${T} NOT NULL, name ${T} NOT NULL, version ${T} NOT NULL, PRIMARY KEY (digest, repository, name, version));
CREATE INDEX component_artifacts_by_version ON component_artifacts (repository, name, version);
CREATE TABLE component_references (
  ref_name ${T} NOT NULL, ref_version ${T} NOT NULL, repository ${T} NOT NULL, name ${T} NOT NULL, version ${T} NOT NULL,
  PRIMARY KEY (ref_name, ref_version, repository, name, version));
CREATE INDEX component_references_by_version ON component_references (repository, name, version);
CREATE TABLE component_descriptor_cache (digest ${T} NOT NULL PRIMARY KEY, repository ${T} NOT NULL, value ${T} NOT NULL);
CREATE INDEX component_descriptor_cache_by_repository ON component_descriptor_cache (repository);
CREATE TABLE component_ownership (
  subject ${T} NOT NULL, repository ${T} NOT NULL, digest ${T} NOT NULL, name ${T} NOT NULL, version ${T} NOT NULL,
  PRIMARY KEY (subject, repository, digest));
CREATE INDEX component_ownership_by_manifest ON component_ownership (repository, digest);
CREATE TABLE component_portable (repository ${T} NOT NULL, digest ${T} NOT NULL, PRIMARY KEY (repository, digest));
`,
  },
  {
    version: 2,
    description: 'event outbox and consumer positions',
    // BIGSERIAL never reuses a position, even once every row is pruned.
    sql: `
CREATE TABLE event_outbox (
  seq BIGSERIAL PRIMARY KEY, id ${T} NOT NULL, type ${T} NOT NULL, repository ${T} NOT NULL,
  subject ${T} NOT NULL, time BIGINT NOT NULL, data ${T} NOT NULL);
CREATE TABLE event_consumers (consumer ${T} PRIMARY KEY, seq BIGINT NOT NULL);
`,
  },
  {
    version: 3,
    description: 'a manifest push as one server-side function',
    sql: PUT_MANIFEST_FUNCTION,
  },
  {
    version: 4,
    description: 'query indexes that hand out matches in page order',
    sql: QUERY_PLAN_INDEXES,
  },
  {
    version: 5,
    description: 'a subject marked dirty again never gets a lower mark (replicas count marks apart)',
    // Before this, a rewrite could clear a newer mark, leaving a referrers index in the layout that
    // names a deleted referrer: every referrers index is written again at the next flush.
    sql: `${PUT_MANIFEST_FUNCTION}
INSERT INTO dirty_subjects (repo_id, subject, marked) SELECT repo_id, subject, 0 FROM layout_referrer_indexes ON CONFLICT DO NOTHING;
UPDATE repos SET gen = gen + 1 WHERE id IN (SELECT DISTINCT repo_id FROM layout_referrer_indexes);`,
  },
  {
    version: 6,
    description: 'a re-push of a known manifest moves its push time (GC grace counts from it)',
    sql: PUT_MANIFEST_FUNCTION,
  },
  {
    version: 7,
    description: 'manifest tombstones and the index.json entries other tools wrote, kept whole',
    // Both tables start empty: entries other tools wrote are kept from the next outside edit read
    // (a layout already indexed is not read again for this).
    sql: `
CREATE TABLE IF NOT EXISTS deleted_manifests (
  repo_id BIGINT NOT NULL, digest ${T} NOT NULL, gen BIGINT NOT NULL, tags ${T} NOT NULL, PRIMARY KEY (repo_id, digest));
CREATE TABLE IF NOT EXISTS layout_entries (
  repo_id BIGINT NOT NULL, digest ${T} NOT NULL, tag ${T} NOT NULL, entry ${T} NOT NULL, PRIMARY KEY (repo_id, digest, tag));`,
  },
  {
    version: 8,
    description: 'a repository\'s manifests in push order (index.json pages, GC candidates)',
    // Without it a page of index.json entries either walks every manifest of the registry from the
    // last id (the primary key) or reads and sorts the whole repository.
    sql: 'CREATE INDEX IF NOT EXISTS manifests_by_repo ON manifests (repo_id, id);',
  },
  {
    version: 9,
    description: 'which storage the index was built over (its claim id)',
    sql: `CREATE TABLE IF NOT EXISTS trellis_meta (key ${T} PRIMARY KEY, value ${T} NOT NULL);`,
  },
];

/** Functions the migrations create, dropped with the tables. */
export const FUNCTIONS = ['trellis_put_manifest'];

/** Every table the migrations create, for dropping the store (`trellis reindex`). */
export const TABLES = [
  'repos', 'blobs', 'manifests', 'tags', 'edges', 'attributes', 'attribute_paths', 'layout_referrer_indexes', 'deleted_tags',
  'pending_unlinks', 'dirty_subjects', 'deleted_manifests', 'layout_entries', 'component_versions', 'component_artifacts', 'component_references', 'component_descriptor_cache',
  'component_ownership', 'component_portable', 'event_outbox', 'event_consumers', 'trellis_meta', 'trellis_migrations',
];

/** Arbitrary, fixed: the advisory lock key migrations run under. */
const MIGRATION_LOCK = 7_346_127_001;

/** Applies the migrations this database lacks, in one transaction each, one migrator at a time. */
export async function migrate(client: PoolClient): Promise<number[]> {
  const applied: number[] = [];
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await client.query('CREATE TABLE IF NOT EXISTS trellis_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())');
    const done = new Set((await client.query<{ version: number }>('SELECT version FROM trellis_migrations')).rows.map((r) => r.version));
    for (const migration of MIGRATIONS) {
      if (done.has(migration.version)) continue;
      await client.query(migration.sql);
      await client.query('INSERT INTO trellis_migrations (version, description) VALUES ($1, $2)', [migration.version, migration.description]);
      applied.push(migration.version);
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  }
  return applied;
}
