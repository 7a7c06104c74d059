// `trellis gc` as a process on PostgreSQL, where replicas may serve the same registry meanwhile:
// it waits for the shared `gc` lock another collector holds, and it ends at once (exit 75) if its
// shared locks go with their connection while it works; run again, it finishes the job.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { EXIT_LOCKS_LOST } from '../../src/cli/serve.ts';
import { advisoryLockId } from '../../src/metadata/postgres-locks.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';
import { freePort } from '../helpers/replicas.ts';
import { makeImage, pushBuilt } from '../helpers/oci-client.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const missing = postgresMissing();
if (missing && process.env.CI === 'true') throw new Error(`${missing}; CI must run the PostgreSQL tests`);

function trellis(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, ['bin/trellis.mjs', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => { output += s; });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { output += s; });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return { child, exited, output: () => output };
}

function within<T>(promise: Promise<T>, ms: number): Promise<T | 'still running'> {
  return Promise.race([promise, new Promise<'still running'>((r) => setTimeout(() => r('still running'), ms))]);
}

/** A registry on `database` with app:v1 pushed twice: the first manifest is untagged, the second tagged. */
async function withUntagged(database: string, dataDir: string): Promise<{ untagged: string; tagged: string }> {
  const port = await freePort();
  const server = trellis(['serve', '--listen', `127.0.0.1:${port}`, '--data', dataDir, '--log-level', 'warn'], { TRELLIS_METADATA: database });
  try {
    const url = `http://127.0.0.1:${port}`;
    for (const deadline = Date.now() + 30_000; !(await fetch(`${url}/v2/`).then((r) => r.ok, () => false));) {
      assert.ok(Date.now() < deadline && server.child.exitCode === null, `the server did not answer: ${server.output()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const first = await pushBuilt(url, 'app', 'v1', makeImage());
    const second = await pushBuilt(url, 'app', 'v1', makeImage());
    assert.equal(first.status, 201);
    assert.equal(second.status, 201);
    return { untagged: first.digest, tagged: second.digest };
  } finally {
    server.child.kill('SIGTERM');
    assert.equal(await server.exited, 0, server.output());
  }
}

/** The manifests app's index.json lists, and whether each digest's file is still in the layout. */
async function layoutOf(dataDir: string, digests: string[]): Promise<{ listed: string[]; files: boolean[] }> {
  const index = JSON.parse(await readFile(join(dataDir, 'app', 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
  const files = await Promise.all(digests.map((digest) => access(join(dataDir, 'app', 'blobs', ...digest.split(':'))).then(() => true, () => false)));
  return { listed: index.manifests.map((m) => m.digest), files };
}

const GC_ENV = { TRELLIS_GC_UNTAGGED: 'delete', TRELLIS_GC_GRACE_SECONDS: '0' };

test('trellis gc on PostgreSQL waits for the gc lock another collector holds', { skip: missing ?? false, timeout: 90_000 }, async (t) => {
  const database = await createTestDatabase();
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-gc-wait-'));
  const admin = new pg.Client({ connectionString: database.url });
  await admin.connect();
  t.after(async () => {
    await admin.end();
    await database.drop();
    await rm(dataDir, { recursive: true, force: true });
  });
  const { untagged, tagged } = await withUntagged(database.url, dataDir);

  await admin.query('SELECT pg_advisory_lock($1::bigint)', [advisoryLockId('gc')]);
  const gc = trellis(['gc', '--data', dataDir], { TRELLIS_METADATA: database.url, ...GC_ENV });
  t.after(() => gc.child.kill('SIGKILL'));
  assert.equal(await within(gc.exited, 3000), 'still running', gc.output());
  await admin.query('SELECT pg_advisory_unlock($1::bigint)', [advisoryLockId('gc')]);
  assert.equal(await within(gc.exited, 30_000), 0, gc.output());
  assert.match(gc.output(), new RegExp(`removed manifest app@${untagged}`));
  assert.deepEqual(await layoutOf(dataDir, [untagged, tagged]), { listed: [tagged], files: [false, true] });
});

test('trellis gc on PostgreSQL exits 75 when its shared locks are lost mid-run; run again, it finishes', { skip: missing ?? false, timeout: 90_000 }, async (t) => {
  const database = await createTestDatabase();
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-gc-lost-'));
  const admin = new pg.Client({ connectionString: database.url });
  await admin.connect();
  t.after(async () => {
    await admin.end();
    await database.drop();
    await rm(dataDir, { recursive: true, force: true });
  });
  const { untagged, tagged } = await withUntagged(database.url, dataDir);

  // The index.json rewrite that drops the untagged manifest holds its lock for 3 s before the rename.
  const gc = trellis(['gc', '--data', dataDir], { TRELLIS_METADATA: database.url, ...GC_ENV, TRELLIS_FAULT_PAUSE_BEFORE_INDEX_RENAME_MS: '3000' });
  t.after(() => gc.child.kill('SIGKILL'));
  let terminated = 0;
  for (const deadline = Date.now() + 20_000; terminated === 0 && Date.now() < deadline;) {
    const { rowCount } = await admin.query(`SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a
      WHERE a.application_name = 'trellis locks' AND a.datname = current_database()
      AND (SELECT count(*) FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted) >= 2`);
    terminated = rowCount ?? 0;
    if (!terminated) await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(terminated, 1, `the gc lock and an index lock were held: ${gc.output()}`);
  assert.equal(await within(gc.exited, 10_000), EXIT_LOCKS_LOST, gc.output());
  assert.match(gc.output(), /garbage collection stopped: its shared locks were lost/);

  const again = trellis(['gc', '--data', dataDir], { TRELLIS_METADATA: database.url, ...GC_ENV });
  assert.equal(await within(again.exited, 30_000), 0, again.output());
  assert.deepEqual(await layoutOf(dataDir, [untagged, tagged]), { listed: [tagged], files: [false, true] });
});
