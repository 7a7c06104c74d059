// Starts a real Trellis server on a random 127.0.0.1 port over a fresh temp data directory.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { DEFAULT_SETTINGS, type Settings } from '../../src/config/settings.ts';
import { startRegistry, type RunningRegistry } from '../../src/cli/serve.ts';
import { createTestDatabase, testsUsePostgres } from './postgres.ts';

export interface TestRegistry extends RunningRegistry {
  /** host:port, as clients want it. */
  host: string;
  dataDir: string;
  /** Its metadata setting ('' for SQLite); CLI commands on its data directory need TRELLIS_METADATA set to it. */
  metadata: string;
  /** Stops the server and removes its data. */
  dispose(): Promise<void>;
}

/**
 * The metadata setting for a new test registry: with TRELLIS_TEST_METADATA=postgres a fresh
 * database on the test cluster (test/helpers/postgres.ts), else '' (SQLite in the data directory).
 * A data directory reused across restarts keeps its database.
 */
const databases = new Map<string, { url: string; drop(): Promise<void> }>();
export async function testMetadata(dataDir: string): Promise<{ url: string; drop(): Promise<void> } | undefined> {
  if (!testsUsePostgres()) return undefined;
  let database = databases.get(dataDir);
  if (!database) databases.set(dataDir, (database = await createTestDatabase()));
  return database;
}

/** The environment for a `trellis` CLI child on this data directory: the same metadata store. */
export async function cliEnv(dataDir: string, base: NodeJS.ProcessEnv = process.env): Promise<NodeJS.ProcessEnv> {
  const database = await testMetadata(dataDir);
  return database ? { ...base, TRELLIS_METADATA: database.url } : base;
}

export async function startTestRegistry(overrides: Partial<Settings> = {}, dataDir?: string): Promise<TestRegistry> {
  const dir = dataDir ?? (await mkdtemp(join(tmpdir(), 'trellis-test-')));
  const database = overrides.metadata === undefined ? await testMetadata(dir) : undefined;
  const settings: Settings = {
    ...DEFAULT_SETTINGS, listen: '127.0.0.1:0', data: dir, logLevel: 'silent', indexFlushMinMs: 5, metadata: database?.url ?? '', ...overrides,
  };
  const running = await startRegistry(settings, pino({ level: process.env.TRELLIS_TEST_LOG ?? 'silent' }));
  return {
    ...running,
    host: running.url.replace(/^https?:\/\//, ''),
    dataDir: dir,
    metadata: settings.metadata,
    async dispose() {
      await running.close();
      if (!dataDir) {
        await rm(dir, { recursive: true, force: true });
        databases.delete(dir);
        await database?.drop();
      }
    },
  };
}
