// PostgreSQL schema as versioned migrations, applied in order at start under an advisory lock (so
// several replicas starting at once migrate once). The tables mirror the SQLite ones
// (src/metadata/sqlite.ts); text is compared byte-wise (COLLATE "C") so that names, tags and
// cursors order exactly as on SQLite whatever the database's locale.
import type { PoolClient } from 'pg';

const T = 'TEXT COLLATE "C"';

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
];

/** Every table the migrations create, for dropping the store (`trellis reindex`). */
export const TABLES = [
  'repos', 'blobs', 'manifests', 'tags', 'edges', 'attributes', 'attribute_paths', 'layout_referrer_indexes', 'deleted_tags',
  'pending_unlinks', 'dirty_subjects', 'component_versions', 'component_artifacts', 'component_references', 'component_descriptor_cache',
  'component_ownership', 'component_portable', 'event_outbox', 'event_consumers', 'trellis_migrations',
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
