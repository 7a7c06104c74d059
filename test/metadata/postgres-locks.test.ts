// PostgreSQL's shared locks hold across processes and die with their holder: a replica killed
// while it holds a lock (its connection dropped, as kill -9 does) lets the others in at once.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { openMetadata, type MetadataStore } from '../../src/metadata/index.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';

const missing = postgresMissing();
if (missing && process.env.CI === 'true') throw new Error(`${missing}; CI must test PostgreSQL locks`);

/** `count` replicas' metadata stores on a fresh database, and an admin connection to it; all go when the test ends. */
async function replicasOnOneDatabase(t: TestContext, count: number): Promise<{ replicas: MetadataStore[]; admin: pg.Client }> {
  const database = await createTestDatabase();
  const replicas: MetadataStore[] = [];
  for (let i = 0; i < count; i++) replicas.push(await openMetadata({ location: database.url, dataDir: '', durable: false }));
  const admin = new pg.Client({ connectionString: database.url });
  await admin.connect();
  t.after(async () => {
    await admin.end();
    for (const replica of replicas) await replica.close();
    await database.drop();
  });
  return { replicas, admin };
}

test('a lock whose holder lost its connection is free for the others; its work no longer blocks them', { skip: missing ?? false }, async (t) => {
  const { replicas, admin } = await replicasOnOneDatabase(t, 2);
  const [replicaA, replicaB] = [replicas[0]!, replicas[1]!];

  let entered!: () => void;
  const inside = new Promise<void>((resolve) => { entered = resolve; });
  const stuck = replicaA.locks.run('content:app', async () => {
    entered();
    await new Promise(() => undefined); // a replica that never finishes: it is about to die
  });
  void stuck;
  await inside;
  assert.equal(await replicaB.locks.tryRun('content:app', async () => true), undefined, 'held by replica A');
  // What kill -9 does to replica A's side: its lock connection ends.
  const { rows } = await admin.query<{ pid: number }>(`SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
    WHERE a.application_name = 'trellis locks' AND a.datname = current_database() AND l.locktype = 'advisory' AND l.granted`);
  assert.equal(rows.length, 1, 'the holder is one lock connection');
  await admin.query('SELECT pg_terminate_backend($1)', [rows[0]!.pid]);
  const started = Date.now();
  assert.equal(await replicaB.locks.run('content:app', async () => 'B holds it'), 'B holds it');
  assert.ok(Date.now() - started < 5000, 'taken without waiting for a timeout');
});

test('a process is told when locks it holds go with their connection, and only then', { skip: missing ?? false }, async (t) => {
  const { replicas, admin } = await replicasOnOneDatabase(t, 1);
  const replica = replicas[0]!;
  const lost: string[] = [];
  replica.locks.whenLost((reason) => lost.push(reason));
  const terminateLockConnection = async () => {
    const { rowCount } = await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE application_name = 'trellis locks' AND datname = current_database()`);
    assert.equal(rowCount, 1);
  };
  const settle = () => new Promise((resolve) => setTimeout(resolve, 300));

  // Nothing held: the connection is simply opened again at the next lock.
  assert.equal(await replica.locks.run('content:idle', async () => 'done'), 'done');
  await terminateLockConnection();
  await settle();
  assert.deepEqual(lost, []);
  assert.equal(await replica.locks.run('content:idle', async () => 'again'), 'again');

  // Held: the work goes on, but the others are no longer kept out, and the process must know.
  let entered!: () => void;
  const inside = new Promise<void>((resolve) => { entered = resolve; });
  let finish!: () => void;
  const work = replica.locks.run('content:app', async () => {
    entered();
    await new Promise<void>((resolve) => { finish = resolve; });
  });
  await inside;
  await terminateLockConnection();
  for (let waited = 0; lost.length === 0 && waited < 5000; waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(lost.length, 1);
  assert.match(lost[0]!, /1 shared lock\(s\) lost/);
  finish();
  await work;
  await settle();
  assert.equal(lost.length, 1, 'told once');
});
