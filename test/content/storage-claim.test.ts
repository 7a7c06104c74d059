// One storage, one index: a second SQLite index over the same storage (a folder, or a bucket) is
// refused and names the first; a clean stop frees the storage at once, a vanished holder's claim
// goes stale and is taken, and a holder that comes back to find it taken stops; replicas on one
// PostgreSQL database share the storage, and a SQLite index beside them is refused either way.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry, StorageClaimed } from '../../src/content/registry.ts';
import type { ClaimTiming } from '../../src/content/storage-claim.ts';
import { registryOptions } from '../../src/cli/serve.ts';
import { DEFAULT_SETTINGS } from '../../src/config/settings.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';
import { findS3Server } from '../helpers/s3.ts';
import { testS3Server } from '../helpers/registry.ts';
import { startServe, startTrellis, within } from '../cli/run.ts';

if (!findS3Server() && process.env.CI === 'true') throw new Error('CI must run the storage claim tests on S3 too');
const postgres = postgresMissing();

const CLAIM_KEY = '_trellis/index-claim.json';

interface Storage {
  name: string;
  /** A fresh storage setting: another folder, or a prefix of the test bucket. */
  make(): Promise<string>;
}

const STORAGES: Storage[] = [
  { name: 'a shared folder', make: () => scratch('trellis-claim-storage-') },
  ...(findS3Server() ? [{ name: 'S3', make: async () => (await testS3Server()).storageUrl(`claim-${process.pid}-${Math.random().toString(36).slice(2)}`) }] : []),
];

const folders: string[] = [];
async function scratch(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  folders.push(dir);
  return dir;
}
test.after(() => Promise.all(folders.map((dir) => rm(dir, { recursive: true, force: true }))));

async function open(storage: string, options: { metadata?: string; timing?: ClaimTiming; dataDir?: string } = {}): Promise<Registry> {
  const dataDir = options.dataDir ?? await scratch('trellis-claim-data-');
  return Registry.open({
    ...registryOptions({ ...DEFAULT_SETTINGS, data: dataDir, storage, metadata: options.metadata ?? '' }, pino({ level: 'silent' })),
    claimTiming: options.timing,
  });
}

async function refusal(opening: Promise<Registry>): Promise<string> {
  const outcome = await opening.then(async (registry) => {
    await registry.close();
    return 'opened';
  }, (err: unknown) => err);
  assert.ok(outcome instanceof StorageClaimed, `expected a refusal, got ${String(outcome)}`);
  return outcome.message;
}

/** Rewrites the holder's claim as refreshed an hour ago (with `changes`). */
async function backdate(holder: Registry, changes: Record<string, unknown> = {}): Promise<void> {
  const claim = JSON.parse((await holder.driver.readFile(CLAIM_KEY, 65536))!.toString()) as Record<string, unknown>;
  await holder.driver.writeFile(CLAIM_KEY, JSON.stringify({ ...claim, ...changes, refreshed: new Date(Date.now() - 3_600_000).toISOString() }));
}

for (const { name, make } of STORAGES) {
  test(`${name}: a second SQLite index is refused and names the first; a clean stop frees the storage at once`, async () => {
    const storage = await make();
    const first = await open(storage);
    const firstDir = first.options.dataDir;
    const message = await refusal(open(storage));
    assert.match(message, /is in use by another Trellis with its own SQLite index \(index sqlite:[0-9a-f-]{36}, last refreshed by pid \d+ on .+, data directory (.+), at .+\)\. One storage takes one SQLite index, or replicas that share one PostgreSQL database/);
    assert.ok(message.includes(`data directory ${firstDir},`), message);
    await first.close();
    const second = await open(storage);
    await second.close();
    // The first index comes back: the second let the storage go as it stopped.
    const again = await open(storage, { dataDir: firstDir });
    await again.close();
  });

  test(`${name}: a vanished holder's claim goes stale and is taken; the holder, back, is told to stop`, async () => {
    const storage = await make();
    // The holder refreshes every 3 s; its claim, as the test leaves it, says every 200 ms and an
    // hour ago: as if the holder had been frozen since, and had missed many heartbeats.
    const first = await open(storage, { timing: { heartbeatMs: 3_000, staleMs: 2_000, settleMs: 50 } });
    const lost: string[] = [];
    first.whenLost((reason) => lost.push(reason));
    await backdate(first, { heartbeatMs: 200 });
    const second = await open(storage, { timing: { heartbeatMs: 3_600_000, staleMs: 2_000, settleMs: 50 } });
    for (const deadline = Date.now() + 8_000; lost.length === 0 && Date.now() < deadline;) await new Promise((r) => setTimeout(r, 50));
    assert.equal(lost.length, 1, 'the first index was told');
    assert.match(lost[0]!, /^the storage was taken over: the storage .* is in use by another Trellis with its own SQLite index/);
    assert.ok(lost[0]!.includes(second.options.dataDir), lost[0]);
    await first.close();
    await second.close();
  });

  test(`${name}: a claim whose time is old but whose holder still refreshes it (a clock behind ours) is not taken`, async () => {
    const storage = await make();
    const timing = { heartbeatMs: 200, staleMs: 2_000, settleMs: 50 };
    const first = await open(storage, { timing });
    // A holder whose clock is an hour behind: its claim looks long stale, yet it is rewritten every heartbeat.
    await backdate(first);
    assert.match(await refusal(open(storage, { timing })), /is in use by another Trellis with its own SQLite index/);
    await first.close();
  });

  test(`${name}: replicas on one PostgreSQL database share the storage; a SQLite index beside them is refused, and refuses them`, { skip: postgres ?? false }, async (t) => {
    const database = await createTestDatabase();
    t.after(() => database.drop());
    const storage = await make();
    const timing = { heartbeatMs: 100, staleMs: 1_000, settleMs: 50 };
    const replicas = [await open(storage, { metadata: database.url, timing }), await open(storage, { metadata: database.url, timing })];
    assert.match(await refusal(open(storage, { timing })), /is in use by Trellis replicas on a PostgreSQL database/);
    await Promise.all(replicas.map((replica) => replica.close()));
    // Replicas leave their claim to go stale (others may still run); then the storage is free.
    assert.match(await refusal(open(storage, { timing })), /Trellis replicas on a PostgreSQL database/);
    await new Promise((r) => setTimeout(r, timing.staleMs));
    const sqlite = await open(storage, { timing });
    assert.match(await refusal(open(storage, { metadata: database.url, timing })), /another Trellis with its own SQLite index/);
    await sqlite.close();
  });
}

for (const { name, make } of STORAGES) {
  test(`${name}: replicas on two PostgreSQL databases are two indexes; trellis reindex keeps its database's claim`, { skip: postgres ?? false }, async (t) => {
    const [first, second] = [await createTestDatabase(), await createTestDatabase()];
    t.after(() => Promise.all([first.drop(), second.drop()]));
    const storage = await make();
    // Long enough that no claim here goes stale: each one the test meets is live.
    const timing = { heartbeatMs: 100, staleMs: 30_000, settleMs: 50 };
    const replica = await open(storage, { metadata: first.url, timing });
    const message = await refusal(open(storage, { metadata: second.url, timing }));
    assert.match(message, /is in use by Trellis replicas on a PostgreSQL database \(index postgres:[0-9a-f-]{36}, last refreshed by pid/);
    // A claim from before index ids ('postgres' alone) is taken as this database's.
    const claim = JSON.parse((await replica.driver.readFile(CLAIM_KEY, 65536))!.toString()) as Record<string, unknown>;
    await replica.driver.writeFile(CLAIM_KEY, JSON.stringify({ ...claim, index: 'postgres' }));
    await replica.close();
    // The replicas' claim stands after they stop; reindex drops and rebuilds the tables but keeps the id it names.
    const options = registryOptions({ ...DEFAULT_SETTINGS, data: await scratch('trellis-claim-data-'), storage, metadata: first.url }, pino({ level: 'silent' }));
    await Registry.rebuildIndex({ ...options, claimTiming: timing });
    await (await open(storage, { metadata: first.url, timing })).close();
    assert.match(await refusal(open(storage, { metadata: second.url, timing })), /Trellis replicas on a PostgreSQL database/);
  });
}

test('trellis serve on a folder another serve uses as its storage refuses in one line, exit 1', async (t) => {
  const storage = await scratch('trellis-claim-serve-');
  const env = { TRELLIS_STORAGE: storage, TRELLIS_METADATA: '' };
  const first = await startServe(await scratch('trellis-claim-data-'), env);
  t.after(() => first.child.kill('SIGKILL'));
  const second = startTrellis(['serve', '--listen', '127.0.0.1:0', '--data', await scratch('trellis-claim-data-')], env);
  t.after(() => second.child.kill('SIGKILL'));
  assert.equal(await within(second.exited, 30_000), 1, second.output());
  assert.match(second.output(), /^trellis: the storage .* is in use by another Trellis with its own SQLite index .*\n$/);
  assert.equal((await fetch(`${first.url}/v2/`)).status, 200);
  first.child.kill('SIGTERM');
  assert.equal(await first.exited, 0, first.output());
});


for (const { name, make } of STORAGES) {
  test(`${name}: an index opened over another storage is refused; trellis reindex indexes the new one`, async () => {
    const [first, other] = [await make(), await make()];
    const dataDir = await scratch('trellis-claim-data-');
    await (await open(first, { dataDir })).close();
    const message = await refusal(open(other, { dataDir }));
    assert.match(message, /^the metadata index \(sqlite\) was built over another storage than .* \(storage id [0-9a-f-]+, this one is [0-9a-f-]+\); give the storage it indexes \(TRELLIS_STORAGE\), or run `trellis reindex` to index this one instead$/);
    await (await open(first, { dataDir })).close();
    await Registry.rebuildIndex(registryOptions({ ...DEFAULT_SETTINGS, data: dataDir, storage: other }, pino({ level: 'silent' })));
    await (await open(other, { dataDir })).close();
    assert.match(await refusal(open(first, { dataDir })), /was built over another storage/);
  });
}
