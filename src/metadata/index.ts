// The metadata seam's entry point: which store a setting names, opening it, and dropping it for a
// rebuild. `metadata` is '' (SQLite under the data directory, the default) or a
// `postgres://user:pass@host:port/db` URL. The contracts are in store.ts, query.ts and
// components.ts; nothing outside this folder names an engine.
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { openSqliteMetadata } from './sqlite.ts';
import type { MetadataStore } from './store.ts';

export type * from './store.ts';
export type * from './query.ts';
export type * from './components.ts';
export type { EventOutbox, EventType, NewEvent, OutboxEvent } from './outbox.ts';
export { EVENT_TYPES } from './outbox.ts';
export { eachRepository, manifestRecord } from './store.ts';

export interface MetadataOptions {
  /** '' for SQLite in `<dataDir>/_trellis/metadata.sqlite`, or a postgres:// URL. */
  location: string;
  dataDir: string;
  /** SQLite: synchronous=FULL (PostgreSQL commits are always durable). */
  durable: boolean;
}

export function isPostgres(location: string): boolean {
  return /^postgres(ql)?:\/\//.test(location);
}

export function sqlitePath(dataDir: string): string {
  return `${dataDir}/_trellis/metadata.sqlite`;
}

/** Where the metadata lives, for messages (a URL's password is not shown). */
export function describeMetadata(options: Pick<MetadataOptions, 'location' | 'dataDir'>): string {
  if (!isPostgres(options.location)) return sqlitePath(options.dataDir);
  const url = new URL(options.location);
  if (url.password) url.password = '***';
  return url.toString();
}

/** Opens the store, creating its schema (PostgreSQL: applying pending migrations) first. */
export async function openMetadata(options: MetadataOptions & { readOnly?: boolean; recordEvents?: boolean }): Promise<MetadataStore> {
  if (isPostgres(options.location)) {
    const { openPostgresMetadata } = await import('./postgres.ts');
    return openPostgresMetadata(options.location, { readOnly: options.readOnly ?? false, recordEvents: options.recordEvents ?? false });
  }
  if (options.location) throw new Error(`metadata must be empty (SQLite in the data directory) or a postgres:// URL, not ${JSON.stringify(options.location)}`);
  const path = sqlitePath(options.dataDir);
  if (!options.readOnly) await mkdir(dirname(path), { recursive: true });
  try {
    return openSqliteMetadata(path, { durable: options.durable, readOnly: options.readOnly ?? false, recordEvents: options.recordEvents ?? false });
  } catch (err) {
    const { errcode, errstr } = err as { errcode?: unknown; errstr?: unknown };
    // SQLITE_CORRUPT (11), SQLITE_NOTADB (26), and their extended codes.
    if (typeof errcode === 'number' && [11, 26].includes(errcode & 0xff)) {
      throw new MetadataDamaged(`the metadata index ${path} is damaged (${String(errstr)}); run \`trellis reindex\` to rebuild it from the layouts`);
    }
    throw err;
  }
}

/** The SQLite index file is not a database, or is corrupt: `trellis reindex` rebuilds it. */
export class MetadataDamaged extends Error {}

/** Whether a store exists to be read (fsck without one reports it missing). */
export async function metadataExists(options: Pick<MetadataOptions, 'location' | 'dataDir'>): Promise<boolean> {
  if (!isPostgres(options.location)) return existsSync(sqlitePath(options.dataDir));
  const { postgresHasSchema } = await import('./postgres.ts');
  return postgresHasSchema(options.location);
}

/**
 * Keeps every other process off the store while `trellis reindex` drops and rebuilds it, or throws
 * MetadataInUse. On SQLite the data directory's lock already does; on PostgreSQL, replicas with
 * data directories of their own may share the database, and this is what stops them.
 */
export async function holdExclusively(options: Pick<MetadataOptions, 'location'>, onLost: (reason: string) => void): Promise<{ release(): Promise<void> }> {
  if (!isPostgres(options.location)) return { release: async () => undefined };
  const { Presence } = await import('./postgres-presence.ts');
  return Presence.exclusive(options.location, onLost);
}

/** Drops everything the store holds, so that the next open starts empty (`trellis reindex`). */
export async function dropMetadata(options: Pick<MetadataOptions, 'location' | 'dataDir'>): Promise<void> {
  if (isPostgres(options.location)) {
    const { dropPostgresMetadata } = await import('./postgres.ts');
    return dropPostgresMetadata(options.location);
  }
  for (const suffix of ['', '-wal', '-shm']) await rm(sqlitePath(options.dataDir) + suffix, { force: true });
}
