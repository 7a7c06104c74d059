// `trellis serve` as a process on PostgreSQL: a replica whose shared locks went with their
// connection while work ran under them ends at once (exit 75), and a restart finds every
// acknowledged push; `trellis reindex` refuses while a replica uses the database, a replica does
// not start while a reindex runs, and one that loses its presence to a reindex ends (exit 75).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXIT_LOCKS_LOST } from '../../src/cli/serve.ts';
import { advisoryLockId } from '../../src/metadata/postgres-locks.ts';
import { databaseFixture, endLockConnections, postgresMissing } from '../helpers/postgres.ts';
import { makeImage, pushBuilt } from '../helpers/oci-client.ts';
import { startServe, startTrellis, within } from './run.ts';

const missing = postgresMissing();
if (missing && process.env.CI === 'true') throw new Error(`${missing}; CI must run the PostgreSQL tests`);

const PRESENCE_LOCK = advisoryLockId('presence');

async function manifestDigest(url: string, repo: string, tag: string): Promise<string | null> {
  const res = await fetch(`${url}/v2/${repo}/manifests/${tag}`, { method: 'HEAD', headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  return res.status === 200 ? res.headers.get('docker-content-digest') : `status ${res.status}`;
}

test('a replica that loses its shared locks while work runs under them exits 75; restarted, it has every acknowledged push', { skip: missing ?? false, timeout: 90_000 }, async (t) => {
  const { url: database, dataDir, admin } = await databaseFixture(t, 'serve-locks');
  const env = { TRELLIS_METADATA: database };
  // The index.json rewrite after a push holds its shared lock for 3 s before the rename.
  const first = await startServe(dataDir, { ...env, TRELLIS_FAULT_PAUSE_BEFORE_INDEX_RENAME_MS: '3000' });
  t.after(() => first.child.kill('SIGKILL'));
  const pushed = await pushBuilt(first.url, 'app', 'v1', makeImage());
  assert.equal(pushed.status, 201);

  // Wait until the rewrite holds its lock, then end the connection that holds it.
  let terminated = 0;
  for (const deadline = Date.now() + 10_000; terminated === 0 && Date.now() < deadline;) {
    terminated = (await endLockConnections(admin, 'trellis locks')).length;
    if (!terminated) await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(terminated, 1, 'a lock was held');
  assert.equal(await within(first.exited, 10_000), EXIT_LOCKS_LOST, first.output());
  assert.match(first.output(), /what kept other processes out was lost while work ran/);
  assert.match(first.output(), /shared lock\(s\) lost with their PostgreSQL connection/);

  const second = await startServe(dataDir, env);
  t.after(() => second.child.kill('SIGKILL'));
  assert.equal(await manifestDigest(second.url, 'app', 'v1'), pushed.digest);
  second.child.kill('SIGTERM');
  assert.equal(await second.exited, 0);
});

test('trellis reindex refuses while a replica uses the database, and the replica loses nothing', { skip: missing ?? false, timeout: 120_000 }, async (t) => {
  const { url: database, dataDir } = await databaseFixture(t, 'serve-reindex');
  const env = { TRELLIS_METADATA: database };
  const server = await startServe(dataDir, env);
  t.after(() => server.child.kill('SIGKILL'));
  const pushed = await pushBuilt(server.url, 'app', 'v1', makeImage());
  assert.equal(pushed.status, 201);

  // Another replica's data directory (on object storage each replica has its own): the directory
  // lock does not stop this reindex, the database's presence lock does.
  const elsewhere = await mkdtemp(join(tmpdir(), 'trellis-serve-elsewhere-'));
  t.after(() => rm(elsewhere, { recursive: true, force: true }));
  const refused = startTrellis(['reindex', '--data', elsewhere], env);
  assert.equal(await refused.exited, 1, refused.output());
  assert.match(refused.output(), /^trellis: other Trellis processes \(replicas serving it, or commands\) use this PostgreSQL database; stop them all before `trellis reindex`\n$/);
  assert.equal(await manifestDigest(server.url, 'app', 'v1'), pushed.digest);
  assert.equal((await pushBuilt(server.url, 'app', 'v2', makeImage())).status, 201);

  server.child.kill('SIGTERM');
  assert.equal(await server.exited, 0, server.output());
  const reindexed = startTrellis(['reindex', '--data', dataDir], env);
  assert.equal(await reindexed.exited, 0, reindexed.output());
  const again = await startServe(dataDir, env);
  t.after(() => again.child.kill('SIGKILL'));
  assert.equal(await manifestDigest(again.url, 'app', 'v1'), pushed.digest);
  again.child.kill('SIGTERM');
  assert.equal(await again.exited, 0);
});

test('a replica does not start while a reindex holds the database; one whose presence a reindex takes exits 75', { skip: missing ?? false, timeout: 120_000 }, async (t) => {
  const { url: database, dataDir, admin } = await databaseFixture(t, 'serve-presence');
  const env = { TRELLIS_METADATA: database };
  // The admin connection stands in for a reindex: it holds the presence lock exclusively.
  await admin.query('SELECT pg_advisory_lock($1::bigint)', [PRESENCE_LOCK]);
  const refused = startTrellis(['serve', '--listen', '127.0.0.1:0', '--data', dataDir], env);
  t.after(() => refused.child.kill('SIGKILL'));
  assert.equal(await within(refused.exited, 30_000), 1, refused.output());
  assert.match(refused.output(), /a `trellis reindex` is rebuilding this PostgreSQL database; start again once it has ended/);
  await admin.query('SELECT pg_advisory_unlock($1::bigint)', [PRESENCE_LOCK]);

  const server = await startServe(dataDir, env);
  t.after(() => server.child.kill('SIGKILL'));
  // A lost presence connection alone is taken again, and the replica goes on.
  const ended = await endLockConnections(admin, 'trellis presence');
  assert.equal(ended.length, 1);
  let retaken = 0;
  for (const deadline = Date.now() + 10_000; retaken === 0 && Date.now() < deadline;) {
    retaken = (await admin.query(`SELECT 1 FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
      WHERE a.application_name = 'trellis presence' AND a.datname = current_database() AND a.pid <> $1
      AND l.locktype = 'advisory' AND l.mode = 'ShareLock' AND l.granted`, [ended[0]])).rowCount ?? 0;
    if (!retaken) await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(retaken, 1, 'the presence was taken again, on a new connection');
  assert.equal((await pushBuilt(server.url, 'app', 'v1', makeImage())).status, 201);

  // Lost again, and a reindex takes the database before the replica can: the replica ends.
  assert.equal((await endLockConnections(admin, 'trellis presence')).length, 1);
  let taken = false;
  for (const deadline = Date.now() + 5_000; !taken && Date.now() < deadline;) {
    taken = (await admin.query<{ taken: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS taken', [PRESENCE_LOCK])).rows[0]!.taken;
  }
  assert.ok(taken, 'the stand-in reindex took the database');
  assert.equal(await within(server.exited, 10_000), EXIT_LOCKS_LOST, server.output());
  assert.match(server.output(), /a `trellis reindex` is rebuilding this PostgreSQL database/);
});
