// `trellis gc` as a process on PostgreSQL, where replicas may serve the same registry meanwhile:
// it waits for the shared `gc` lock another collector holds, and it ends at once (exit 75) if its
// shared locks go with their connection while it works; run again, it finishes the job.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { access, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXIT_LOCKS_LOST } from '../../src/cli/serve.ts';
import { advisoryLockId } from '../../src/metadata/postgres-locks.ts';
import { databaseFixture, endLockConnections, postgresMissing } from '../helpers/postgres.ts';
import { makeImage, pushBuilt } from '../helpers/oci-client.ts';
import { startServe, startTrellis as trellis, within } from './run.ts';

const missing = postgresMissing();
if (missing && process.env.CI === 'true') throw new Error(`${missing}; CI must run the PostgreSQL tests`);

/** A registry on `database` with app:v1 pushed twice: the first manifest is untagged, the second tagged. */
async function withUntagged(database: string, dataDir: string): Promise<{ untagged: string; tagged: string }> {
  const server = await startServe(dataDir, { TRELLIS_METADATA: database });
  try {
    const first = await pushBuilt(server.url, 'app', 'v1', makeImage());
    const second = await pushBuilt(server.url, 'app', 'v1', makeImage());
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
  const { url: database, dataDir, admin } = await databaseFixture(t, 'gc-wait');
  const { untagged, tagged } = await withUntagged(database, dataDir);

  await admin.query('SELECT pg_advisory_lock($1::bigint)', [advisoryLockId('gc')]);
  const gc = trellis(['gc', '--data', dataDir], { TRELLIS_METADATA: database, ...GC_ENV });
  t.after(() => gc.child.kill('SIGKILL'));
  assert.equal(await within(gc.exited, 3000), 'still running', gc.output());
  await admin.query('SELECT pg_advisory_unlock($1::bigint)', [advisoryLockId('gc')]);
  assert.equal(await within(gc.exited, 30_000), 0, gc.output());
  assert.match(gc.output(), new RegExp(`removed manifest app@${untagged}`));
  assert.deepEqual(await layoutOf(dataDir, [untagged, tagged]), { listed: [tagged], files: [false, true] });
});

test('trellis gc on PostgreSQL exits 75 when its shared locks are lost mid-run; run again, it finishes', { skip: missing ?? false, timeout: 90_000 }, async (t) => {
  const { url: database, dataDir, admin } = await databaseFixture(t, 'gc-lost');
  const { untagged, tagged } = await withUntagged(database, dataDir);

  // The index.json rewrite that drops the untagged manifest holds its lock for 3 s before the rename.
  const gc = trellis(['gc', '--data', dataDir], { TRELLIS_METADATA: database, ...GC_ENV, TRELLIS_FAULT_PAUSE_BEFORE_INDEX_RENAME_MS: '3000' });
  t.after(() => gc.child.kill('SIGKILL'));
  let terminated = 0;
  for (const deadline = Date.now() + 20_000; terminated === 0 && Date.now() < deadline;) {
    terminated = (await endLockConnections(admin, 'trellis locks')).length;
    if (!terminated) await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(terminated, 1, `a lock was held: ${gc.output()}`);
  assert.equal(await within(gc.exited, 10_000), EXIT_LOCKS_LOST, gc.output());
  assert.match(gc.output(), /garbage collection stopped: what kept other processes out was lost/);
  assert.match(gc.output(), /shared lock\(s\) lost with their PostgreSQL connection/);

  const again = trellis(['gc', '--data', dataDir], { TRELLIS_METADATA: database, ...GC_ENV });
  assert.equal(await within(again.exited, 30_000), 0, again.output());
  assert.deepEqual(await layoutOf(dataDir, [untagged, tagged]), { listed: [tagged], files: [false, true] });
});

test('trellis gc on the PostgreSQL index of another storage (no TRELLIS_STORAGE given) refuses and changes nothing', { skip: missing ?? false, timeout: 90_000 }, async (t) => {
  const { url: database, dataDir } = await databaseFixture(t, 'gc-elsewhere');
  const { untagged, tagged } = await withUntagged(database, dataDir);
  const elsewhere = await mkdtemp(join(tmpdir(), 'trellis-gc-elsewhere-'));
  t.after(() => rm(elsewhere, { recursive: true, force: true }));
  const gc = trellis(['gc', '--data', elsewhere], { TRELLIS_METADATA: database, ...GC_ENV });
  assert.equal(await within(gc.exited, 30_000), 1, gc.output());
  assert.match(gc.output(), /^trellis: the metadata index \(postgres\) was built over another storage than .*; give the storage it indexes \(TRELLIS_STORAGE\), or run `trellis reindex` to index this one instead\n$/);
  // The registry's own storage still has both manifests, and its gc removes the untagged one.
  assert.deepEqual((await layoutOf(dataDir, [untagged, tagged])).files, [true, true]);
  const own = trellis(['gc', '--data', dataDir], { TRELLIS_METADATA: database, ...GC_ENV });
  assert.equal(await within(own.exited, 30_000), 0, own.output());
  assert.deepEqual(await layoutOf(dataDir, [untagged, tagged]), { listed: [tagged], files: [false, true] });
});
