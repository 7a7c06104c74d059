// The component index on PostgreSQL (src/metadata/components.ts is the contract); the same rows
// and orders as on SQLite (src/metadata/sqlite-components.ts).
import type pg from 'pg';
import type { ComponentIndex, ComponentKind, ComponentVersionRow, OwnershipReferrer, VersionDetail, VersionKey } from './components.ts';
import { transaction, type Sql } from './postgres.ts';
import type { PostgresEventOutbox } from './postgres-outbox.ts';
import type { NewEvent } from './outbox.ts';

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

type Ownership = OwnershipReferrer & { digest: string; subject: string };

export class PostgresComponentIndex implements ComponentIndex {
  private readonly pool: pg.Pool;
  private readonly outbox: PostgresEventOutbox;

  /** Versions added and removed are recorded in `outbox` in the same transaction. */
  constructor(pool: pg.Pool, outbox: PostgresEventOutbox) {
    this.pool = pool;
    this.outbox = outbox;
  }

  /** Component versions that appear or disappear when a repository's rows become `rows`. */
  private async versionEvents(sql: Sql, repository: string, rows: ComponentVersionRow[]): Promise<NewEvent[]> {
    type Key = { name: string; version: string; kind: string; digest: string };
    const before = (await sql.query<Key>('SELECT name, version, kind, digest FROM component_versions WHERE repository = $1', [repository])).rows;
    const key = (r: { name: string; version: string }) => `${r.name}\0${r.version}`;
    const after = new Set(rows.map(key));
    const existed = new Set(before.map(key));
    const event = (type: NewEvent['type'], r: Key): NewEvent => ({
      type, repository, subject: `${r.name}@${r.version}`, data: { repository, component: r.name, version: r.version, kind: r.kind, digest: r.digest },
    });
    return [
      ...rows.filter((r) => !existed.has(key(r))).map((r) => event('component.version.added', r)),
      ...before.filter((r) => !after.has(key(r))).map((r) => event('component.version.removed', r)),
    ];
  }

  async replaceRepository(repository: string, rows: ComponentVersionRow[]): Promise<void> {
    await transaction(this.pool, async (sql) => {
      if (this.outbox.recording) await this.outbox.record(sql, await this.versionEvents(sql, repository, rows));
      for (const table of ['component_versions', 'component_artifacts', 'component_references']) {
        await sql.query(`DELETE FROM ${table} WHERE repository = $1`, [repository]);
      }
      for (const r of rows) {
        await sql.query(`INSERT INTO component_versions (repository, name, version, kind, tag, digest, provider, labels, pushed_at, detail, artifacts)
          VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
          ON CONFLICT (repository, name, version) DO UPDATE SET kind = EXCLUDED.kind, tag = EXCLUDED.tag, digest = EXCLUDED.digest,
            provider = EXCLUDED.provider, labels = EXCLUDED.labels, pushed_at = EXCLUDED.pushed_at, detail = EXCLUDED.detail, artifacts = EXCLUDED.artifacts`,
        [r.repository, r.name, r.version, r.kind, r.tag, r.digest, r.provider, JSON.stringify(r.labels), r.pushedAt, JSON.stringify(r.detail), JSON.stringify(r.artifacts)]);
        for (const digest of [r.digest, ...r.artifacts]) {
          await sql.query('INSERT INTO component_artifacts (digest, repository, name, version) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING', [digest, r.repository, r.name, r.version]);
        }
        for (const ref of r.detail.references) {
          await sql.query('INSERT INTO component_references (ref_name, ref_version, repository, name, version) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING',
            [ref.componentName, ref.version, r.repository, r.name, r.version]);
        }
      }
      await sql.query(`DELETE FROM component_descriptor_cache WHERE repository = $1 AND digest NOT IN
        (SELECT digest FROM component_versions WHERE repository = $1)`, [repository]);
    });
  }

  async allVersions(): Promise<ComponentVersionRow[]> {
    return (await this.pool.query<Row>('SELECT * FROM component_versions ORDER BY name, repository, version')).rows.map(toRow);
  }

  async versionsOf(name: string, include?: (repository: string) => boolean): Promise<ComponentVersionRow[]> {
    if (!include) return (await this.pool.query<Row>('SELECT * FROM component_versions WHERE name = $1 ORDER BY repository, version', [name])).rows.map(toRow);
    // Which repositories is decided before any version is read: a hidden component costs what an absent one does.
    const repositories = (await this.pool.query<{ repository: string }>('SELECT DISTINCT repository FROM component_versions WHERE name = $1 ORDER BY repository', [name]))
      .rows.map((r) => r.repository).filter(include);
    if (!repositories.length) return [];
    const { rows } = await this.pool.query<Row>('SELECT * FROM component_versions WHERE name = $1 AND repository = ANY($2::text[]) ORDER BY repository, version', [name, repositories]);
    return rows.map(toRow);
  }

  async shipping(digest: string): Promise<VersionKey[]> {
    return (await this.pool.query<VersionKey>('SELECT repository, name, version FROM component_artifacts WHERE digest = $1 ORDER BY name, repository, version', [digest])).rows;
  }

  async referencing(name: string, version: string): Promise<VersionKey[]> {
    return (await this.pool.query<VersionKey>(`SELECT repository, name, version FROM component_references WHERE ref_name = $1 AND ref_version = $2
      ORDER BY name, repository, version`, [name, version])).rows;
  }

  async repositories(): Promise<string[]> {
    return (await this.pool.query<{ repository: string }>('SELECT DISTINCT repository FROM component_versions ORDER BY repository')).rows.map((r) => r.repository);
  }

  async holds(repository: string): Promise<boolean> {
    const { rows } = await this.pool.query(`SELECT 1 WHERE EXISTS (SELECT 1 FROM component_versions WHERE repository = $1)
      OR EXISTS (SELECT 1 FROM component_portable WHERE repository = $1)`, [repository]);
    return rows.length > 0;
  }

  async cached(digest: string): Promise<unknown> {
    const row = (await this.pool.query<{ value: string }>('SELECT value FROM component_descriptor_cache WHERE digest = $1', [digest])).rows[0];
    return row ? JSON.parse(row.value) : undefined;
  }

  async cache(repository: string, digest: string, value: unknown): Promise<void> {
    await this.pool.query(`INSERT INTO component_descriptor_cache (digest, repository, value) VALUES ($1, $2, $3)
      ON CONFLICT (digest) DO UPDATE SET repository = EXCLUDED.repository, value = EXCLUDED.value`, [digest, repository, JSON.stringify(value)]);
  }

  private async insertOwnership(sql: Sql, entry: Ownership): Promise<void> {
    await sql.query(`INSERT INTO component_ownership (subject, repository, digest, name, version) VALUES ($1, $2, $3, $4, $5)
      ON CONFLICT (subject, repository, digest) DO UPDATE SET name = EXCLUDED.name, version = EXCLUDED.version`,
    [entry.subject, entry.repository, entry.digest, entry.name, entry.version]);
  }

  async recordOwnership(entry: Ownership): Promise<void> {
    await this.insertOwnership(this.pool, entry);
  }

  async forgetOwnership(repository: string, digests: string[]): Promise<void> {
    await this.pool.query('DELETE FROM component_ownership WHERE repository = $1 AND digest = ANY($2::text[])', [repository, digests]);
  }

  async ownershipReferrers(digest: string): Promise<OwnershipReferrer[]> {
    return (await this.pool.query<OwnershipReferrer>(`SELECT o.repository, o.name, o.version FROM component_ownership o WHERE o.subject = $1 AND EXISTS
        (SELECT 1 FROM manifests m JOIN repos r ON r.id = m.repo_id WHERE r.name = o.repository AND m.digest = o.digest)
      ORDER BY o.name, o.version, o.repository`, [digest])).rows;
  }

  async portableEntries(repository: string): Promise<string[]> {
    return (await this.pool.query<{ digest: string }>('SELECT digest FROM component_portable WHERE repository = $1 ORDER BY digest', [repository])).rows.map((r) => r.digest);
  }

  private async setPortable(sql: Sql, repository: string, digest: string, present: boolean): Promise<void> {
    if (present) await sql.query('INSERT INTO component_portable (repository, digest) VALUES ($1, $2) ON CONFLICT DO NOTHING', [repository, digest]);
    else await sql.query('DELETE FROM component_portable WHERE repository = $1 AND digest = $2', [repository, digest]);
  }

  async setPortableEntry(repository: string, digest: string, present: boolean): Promise<void> {
    await this.setPortable(this.pool, repository, digest, present);
  }

  async portableRepositories(): Promise<string[]> {
    return (await this.pool.query<{ repository: string }>('SELECT DISTINCT repository FROM component_portable ORDER BY repository')).rows.map((r) => r.repository);
  }

  async resetDerived(portable: { repository: string; digest: string }[], ownership: Ownership[]): Promise<void> {
    await transaction(this.pool, async (sql) => {
      await sql.query('DELETE FROM component_portable');
      await sql.query('DELETE FROM component_ownership');
      for (const entry of portable) await this.setPortable(sql, entry.repository, entry.digest, true);
      for (const entry of ownership) await this.insertOwnership(sql, entry);
    });
  }

  async candidateRepositories(configTypes: string[], annotationKeys: string[], anchor: string): Promise<string[]> {
    const { rows } = await this.pool.query<{ name: string }>(`SELECT r.name FROM repos r WHERE r.id IN (
        SELECT repo_id FROM manifests WHERE config_media_type = ANY($1::text[]) OR subject = $2
          OR EXISTS (SELECT 1 FROM unnest($3::text[]) AS k(key) WHERE strpos(annotations, k.key) > 0))
      ORDER BY r.name`, [configTypes, anchor, annotationKeys.map((k) => JSON.stringify(k))]);
    return rows.map((r) => r.name);
  }

  async manifestsOfType(artifactType: string): Promise<{ repository: string; digest: string; subject: string | null; annotations: Record<string, string> }[]> {
    const { rows } = await this.pool.query<{ repository: string; digest: string; subject: string | null; annotations: string }>(`SELECT r.name AS repository, m.digest,
        m.subject, m.annotations FROM manifests m JOIN repos r ON r.id = m.repo_id WHERE m.artifact_type = $1 ORDER BY r.name, m.digest`, [artifactType]);
    return rows.map((r) => ({ ...r, annotations: JSON.parse(r.annotations) as Record<string, string> }));
  }
}
