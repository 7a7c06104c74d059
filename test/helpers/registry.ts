// Starts a real Trellis server on a random 127.0.0.1 port over a fresh temp data directory.
// TRELLIS_TEST_STORAGE=s3 puts its blobs and layouts on a real S3-compatible server (versitygw,
// one per test process, a fresh prefix per registry) instead of the data directory.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { TestContext } from 'node:test';
import { pino } from 'pino';
import { DEFAULT_SETTINGS, type Settings } from '../../src/config/settings.ts';
import { startRegistry, type RunningRegistry } from '../../src/cli/serve.ts';
import { createTestDatabase, testsUsePostgres } from './postgres.ts';
import { exportLayout } from '../../src/cli/layout.ts';
import { startS3Server, useCredentials, type S3Server } from './s3.ts';

let s3: Promise<S3Server> | undefined;

/** The shared S3 server of this test process, started on first use and stopped at exit. */
export function testS3Server(): Promise<S3Server> {
  s3 ??= startS3Server().then((server) => {
    useCredentials(server);
    server.stopAtExit();
    return server;
  });
  return s3;
}

/** Storage settings for a test registry: the data directory, or an S3 prefix named after it. */
export async function testStorage(dataDir: string): Promise<Partial<Settings>> {
  if (!storageOnS3()) return {};
  return { storage: (await testS3Server()).storageUrl(`${basename(dataDir)}-${process.pid}`) };
}

/** Environment for a `trellis` process over `dataDir` (serve, fsck, gc): its storage setting. */
export async function testStorageEnv(dataDir: string): Promise<Record<string, string>> {
  const { storage } = await testStorage(dataDir);
  return storage ? { TRELLIS_STORAGE: storage, ...(await testS3Server()).env } : {};
}

export function storageOnS3(): boolean {
  return process.env.TRELLIS_TEST_STORAGE === 's3';
}

/**
 * A directory holding the repository as an OCI Image Layout, for tools that read layouts: the
 * repository's own folder in the data directory, or, with storage on S3, what `trellis layout
 * export` writes from the running registry (a standard layout, referrers included).
 */
export async function layoutDirectory(reg: TestRegistry, repository: string): Promise<string> {
  await reg.registry.layout.flushAll();
  if (!storageOnS3()) return join(reg.dataDir, repository);
  const dir = join(await mkdtemp(join(tmpdir(), 'trellis-export-')), 'layout');
  await exportLayout(reg.url, repository, dir, { referrers: true });
  return dir;
}

/** For tests that read or edit the data directory's files: skipped when storage is on S3. */
export function needsFileStorage(t: TestContext): boolean {
  if (!storageOnS3()) return true;
  t.skip('reads the layouts as files; storage is on S3 (TRELLIS_TEST_STORAGE=s3)');
  return false;
}

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
  const storage = await testStorageEnv(dataDir);
  return { ...base, ...(database ? { TRELLIS_METADATA: database.url } : {}), ...storage };
}

export async function startTestRegistry(overrides: Partial<Settings> = {}, dataDir?: string): Promise<TestRegistry> {
  const dir = dataDir ?? (await mkdtemp(join(tmpdir(), 'trellis-test-')));
  const database = overrides.metadata === undefined ? await testMetadata(dir) : undefined;
  const settings: Settings = {
    ...DEFAULT_SETTINGS, listen: '127.0.0.1:0', data: dir, logLevel: 'silent', indexFlushMinMs: 5, metadata: database?.url ?? '', ...(await testStorage(dir)), ...overrides,
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
