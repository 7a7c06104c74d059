// The component index on SQLite (src/metadata/components.ts is the contract). It shares the
// metadata store's connection: one file, one writer, no cross-connection locking.
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { StatementCache } from './statements.ts';
import type { Synchronous } from './store.ts';
import type { ComponentIndex, ComponentKind, ComponentVersionRow, OwnershipReferrer, VersionDetail, VersionKey } from './components.ts';
import type { NewEvent, SqliteEventOutbox } from './outbox.ts';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS component_versions (
  repository TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, kind TEXT NOT NULL, tag TEXT, digest TEXT NOT NULL,
  provider TEXT, labels TEXT NOT NULL, pushed_at INTEGER NOT NULL, detail TEXT NOT NULL, artifacts TEXT NOT NULL,
  PRIMARY KEY (repository, name, version)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS component_versions_by_name ON component_versions (name, repository, version);
CREATE TABLE IF NOT EXISTS component_artifacts (
  digest TEXT NOT NULL, repository TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
  PRIMARY KEY (digest, repository, name, version)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS component_artifacts_by_version ON component_artifacts (repository, name, version);
CREATE TABLE IF NOT EXISTS component_references (
  ref_name TEXT NOT NULL, ref_version TEXT NOT NULL, repository TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
  PRIMARY KEY (ref_name, ref_version, repository, name, version)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS component_references_by_version ON component_references (repository, name, version);
-- Content-addressed: what a manifest's descriptor says never changes, so readings are cached.
CREATE TABLE IF NOT EXISTS component_descriptor_cache (
  digest TEXT NOT NULL PRIMARY KEY, repository TEXT NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS component_descriptor_cache_by_repository ON component_descriptor_cache (repository);
-- OCM ownership referrers (any repository) by the artifact they claim.
CREATE TABLE IF NOT EXISTS component_ownership (
  subject TEXT NOT NULL, repository TEXT NOT NULL, digest TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
  PRIMARY KEY (subject, repository, digest)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS component_ownership_by_manifest ON component_ownership (repository, digest);
-- The entries Trellis wrote into the portable component index, per component repository.
CREATE TABLE IF NOT EXISTS component_portable (
  repository TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (repository, digest)) WITHOUT ROWID;
`;

interface Row {
  repository: string;
  name: string;
  version: string;
  kind: string;
  tag: string | null;
  digest: string;
  provider: string | null;
  labels: string;
  pushed_at: number;
  detail: string;
  artifacts: string;
}

function toRow(row: Row): ComponentVersionRow {
  return {
    repository: row.repository, name: row.name, version: row.version, kind: row.kind as ComponentKind, tag: row.tag, digest: row.digest,
    provider: row.provider, labels: JSON.parse(row.labels) as Record<string, string>, pushedAt: row.pushed_at,
    detail: JSON.parse(row.detail) as VersionDetail, artifacts: JSON.parse(row.artifacts) as string[],
  };
}

export class SqliteComponentIndex implements Synchronous<ComponentIndex> {
  private readonly db: DatabaseSync;
  private readonly statements: StatementCache;
  private readonly outbox: SqliteEventOutbox | undefined;

  /**
   * Shares the metadata index's connection: one file, one writer, no cross-connection locking.
   * Versions added and removed are recorded in `outbox` in the same transaction.
   */
  constructor(db: DatabaseSync, options: { readOnly: boolean; outbox?: SqliteEventOutbox }) {
    this.db = db;
    this.outbox = options.outbox;
    this.statements = new StatementCache(db);
    if (!options.readOnly) this.db.exec(SCHEMA);
  }

  private sql(text: string): StatementSync {
    return this.statements.get(text);
  }

  private transaction(work: () => void): void {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      work();
      this.db.exec('COMMIT');
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
  }

  replaceRepository(repository: string, rows: ComponentVersionRow[]): void {
    this.transaction(() => {
      if (this.outbox?.recording) this.outbox.record(this.versionEvents(repository, rows));
      for (const table of ['component_versions', 'component_artifacts', 'component_references']) {
        this.sql(`DELETE FROM ${table} WHERE repository = ?`).run(repository);
      }
      const insert = this.sql(`INSERT OR REPLACE INTO component_versions (repository, name, version, kind, tag, digest, provider, labels, pushed_at, detail, artifacts)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
      const artifact = this.sql('INSERT OR IGNORE INTO component_artifacts (digest, repository, name, version) VALUES (?, ?, ?, ?)');
      const reference = this.sql('INSERT OR IGNORE INTO component_references (ref_name, ref_version, repository, name, version) VALUES (?, ?, ?, ?, ?)');
      for (const r of rows) {
        insert.run(r.repository, r.name, r.version, r.kind, r.tag, r.digest, r.provider, JSON.stringify(r.labels), r.pushedAt,
          JSON.stringify(r.detail), JSON.stringify(r.artifacts));
        for (const digest of [r.digest, ...r.artifacts]) artifact.run(digest, r.repository, r.name, r.version);
        for (const ref of r.detail.references) reference.run(ref.componentName, ref.version, r.repository, r.name, r.version);
      }
      // Readings of manifests that are no longer component versions here are dropped with them.
      this.sql(`DELETE FROM component_descriptor_cache WHERE repository = ? AND digest NOT IN
        (SELECT digest FROM component_versions WHERE repository = ?)`).run(repository, repository);
    });
  }

  /** Component versions that appear or disappear when a repository's rows become `rows`. */
  private versionEvents(repository: string, rows: ComponentVersionRow[]): NewEvent[] {
    const before = this.sql('SELECT name, version, kind, digest FROM component_versions WHERE repository = ?').all(repository) as { name: string; version: string; kind: string; digest: string }[];
    const key = (r: { name: string; version: string }) => `${r.name}\0${r.version}`;
    const after = new Set(rows.map(key));
    const existed = new Set(before.map(key));
    const event = (type: NewEvent['type'], r: { name: string; version: string; kind: string; digest: string }): NewEvent => ({
      type, repository, subject: `${r.name}@${r.version}`, data: { repository, component: r.name, version: r.version, kind: r.kind, digest: r.digest },
    });
    return [
      ...rows.filter((r) => !existed.has(key(r))).map((r) => event('component.version.added', r)),
      ...before.filter((r) => !after.has(key(r))).map((r) => event('component.version.removed', r)),
    ];
  }

  allVersions(): ComponentVersionRow[] {
    return (this.sql('SELECT * FROM component_versions ORDER BY name, repository, version').all() as unknown as Row[]).map(toRow);
  }

  versionsOf(name: string, include?: (repository: string) => boolean): ComponentVersionRow[] {
    if (!include) return (this.sql('SELECT * FROM component_versions WHERE name = ? ORDER BY repository, version').all(name) as unknown as Row[]).map(toRow);
    const repositories = (this.sql('SELECT DISTINCT repository FROM component_versions WHERE name = ? ORDER BY repository').all(name) as { repository: string }[])
      .map((r) => r.repository).filter(include);
    const inRepository = this.sql('SELECT * FROM component_versions WHERE name = ? AND repository = ? ORDER BY version');
    return repositories.flatMap((repository) => (inRepository.all(name, repository) as unknown as Row[]).map(toRow));
  }

  shipping(digest: string): VersionKey[] {
    return this.sql('SELECT repository, name, version FROM component_artifacts WHERE digest = ? ORDER BY name, repository, version').all(digest) as unknown as VersionKey[];
  }

  referencing(name: string, version: string): VersionKey[] {
    return this.sql('SELECT repository, name, version FROM component_references WHERE ref_name = ? AND ref_version = ? ORDER BY name, repository, version')
      .all(name, version) as unknown as VersionKey[];
  }

  repositories(): string[] {
    return (this.sql('SELECT DISTINCT repository FROM component_versions ORDER BY repository').all() as { repository: string }[]).map((r) => r.repository);
  }

  holds(repository: string): boolean {
    return this.sql(`SELECT 1 WHERE EXISTS (SELECT 1 FROM component_versions WHERE repository = $r)
      OR EXISTS (SELECT 1 FROM component_portable WHERE repository = $r)`).get({ $r: repository }) !== undefined;
  }

  cached(digest: string): unknown {
    const row = this.sql('SELECT value FROM component_descriptor_cache WHERE digest = ?').get(digest) as { value: string } | undefined;
    return row ? JSON.parse(row.value) : undefined;
  }

  cache(repository: string, digest: string, value: unknown): void {
    this.sql('INSERT OR REPLACE INTO component_descriptor_cache (digest, repository, value) VALUES (?, ?, ?)').run(digest, repository, JSON.stringify(value));
  }

  recordOwnership(entry: OwnershipReferrer & { digest: string; subject: string }): void {
    this.sql('INSERT OR REPLACE INTO component_ownership (subject, repository, digest, name, version) VALUES (?, ?, ?, ?, ?)')
      .run(entry.subject, entry.repository, entry.digest, entry.name, entry.version);
  }

  forgetOwnership(repository: string, digests: string[]): void {
    const remove = this.sql('DELETE FROM component_ownership WHERE repository = ? AND digest = ?');
    for (const digest of digests) remove.run(repository, digest);
  }

  ownershipReferrers(digest: string): OwnershipReferrer[] {
    // A referrer removed without Trellis noticing (garbage collection) is not reported.
    return this.sql(`SELECT o.repository, o.name, o.version FROM component_ownership o WHERE o.subject = ? AND EXISTS
        (SELECT 1 FROM manifests m JOIN repos r ON r.id = m.repo_id WHERE r.name = o.repository AND m.digest = o.digest)
      ORDER BY o.name, o.version, o.repository`).all(digest) as unknown as OwnershipReferrer[];
  }

  portableEntries(repository: string): string[] {
    return (this.sql('SELECT digest FROM component_portable WHERE repository = ? ORDER BY digest').all(repository) as { digest: string }[]).map((r) => r.digest);
  }

  setPortableEntry(repository: string, digest: string, present: boolean): void {
    if (present) this.sql('INSERT OR IGNORE INTO component_portable (repository, digest) VALUES (?, ?)').run(repository, digest);
    else this.sql('DELETE FROM component_portable WHERE repository = ? AND digest = ?').run(repository, digest);
  }

  portableRepositories(): string[] {
    return (this.sql('SELECT DISTINCT repository FROM component_portable ORDER BY repository').all() as { repository: string }[]).map((r) => r.repository);
  }

  resetDerived(portable: { repository: string; digest: string }[], ownership: (OwnershipReferrer & { digest: string; subject: string })[]): void {
    this.transaction(() => {
      this.db.exec('DELETE FROM component_portable; DELETE FROM component_ownership;');
      for (const entry of portable) this.setPortableEntry(entry.repository, entry.digest, true);
      for (const entry of ownership) this.recordOwnership(entry);
    });
  }

  // The metadata index's tables (src/metadata/sqlite.ts: repos, manifests) are read here, never
  // written; these scans run once at start-up.

  candidateRepositories(configTypes: string[], annotationKeys: string[], anchor: string): string[] {
    const types = configTypes.map(() => '?').join(',');
    const keys = annotationKeys.map(() => 'instr(annotations, ?) > 0').join(' OR ');
    const rows = this.db.prepare(`SELECT r.name FROM repos r WHERE r.id IN (
        SELECT repo_id FROM manifests WHERE config_media_type IN (${types}) OR subject = ? ${keys ? `OR ${keys}` : ''})
      ORDER BY r.name`).all(...configTypes, anchor, ...annotationKeys.map((k) => JSON.stringify(k))) as { name: string }[];
    return rows.map((r) => r.name);
  }

  manifestsOfType(artifactType: string): { repository: string; digest: string; subject: string | null; annotations: Record<string, string> }[] {
    const rows = this.db.prepare(`SELECT r.name AS repository, m.digest, m.subject, m.annotations FROM manifests m JOIN repos r ON r.id = m.repo_id
        WHERE m.artifact_type = ? ORDER BY r.name, m.digest`).all(artifactType) as { repository: string; digest: string; subject: string | null; annotations: string }[];
    return rows.map((r) => ({ ...r, annotations: JSON.parse(r.annotations) as Record<string, string> }));
  }
}
