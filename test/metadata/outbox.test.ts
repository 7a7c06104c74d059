// The event outbox on SQLite and PostgreSQL: events commit and roll back with their change, a new consumer starts
// after the newest event, positions survive reopening, pruning keeps what a consumer still needs,
// and positions are never reused once everything was pruned.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { manifestRecord, openMetadata, type MetadataStore } from '../../src/metadata/index.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';
import { parseManifest } from '../../src/oci/manifest.ts';
import { makeImage } from '../helpers/oci-client.ts';

function stored(image = makeImage()) {
  const parsed = parseManifest(image.bytes);
  return { record: manifestRecord(image.digest, parsed, image.bytes.length), links: parsed.links };
}

const missing = postgresMissing();
if (missing && process.env.CI === 'true') throw new Error(`${missing}; CI must run the PostgreSQL outbox tests`);

/** Opens a store on a fresh location, SQLite or PostgreSQL; `open` reopens the same one. */
async function location(t: TestContext, engine: string): Promise<(recordEvents: boolean) => Promise<MetadataStore>> {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-outbox-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  let url = '';
  if (engine === 'postgres') {
    const database = await createTestDatabase();
    t.after(() => database.drop());
    url = database.url;
  }
  return (recordEvents) => openMetadata({ location: url, dataDir: dir, durable: false, recordEvents });
}

for (const engine of ['sqlite', 'postgres']) {
const skip = engine === 'postgres' ? missing ?? false : false;
test(`${engine}: events commit with their change and are read, positioned and pruned in order`, { skip }, async (t) => {
  const open = await location(t, engine);
  let store = await open(true);
  const repo = await store.ensureRepository('app');
  const one = stored();
  await store.putManifest(repo.id, one.record, one.links, ['v1']);
  // Positions only increase; PostgreSQL may skip some (a rolled-back change keeps its sequence numbers).
  const newest = (await store.outbox.after(0, 10)).at(-1)!.seq;
  assert.equal(await store.outbox.position('late'), newest, 'a new consumer starts after the newest event');
  assert.equal(await store.outbox.position('early'), newest);
  await store.putManifest(repo.id, one.record, one.links, ['v1']); // nothing changed: no event
  const two = stored();
  // A change that fails rolls back its events with it.
  await assert.rejects(store.putManifest(repo.id, { ...two.record, mediaType: null as unknown as string }, two.links, ['v2']));
  await store.putManifest(repo.id, two.record, two.links, ['v1']);
  let events = await store.outbox.after(0, 10);
  assert.deepEqual(events.map((e) => [e.type, e.subject]), [
    ['manifest.pushed', `app@${one.record.digest}`], ['tag.set', 'app:v1'],
    ['manifest.pushed', `app@${two.record.digest}`], ['tag.set', 'app:v1'],
  ]);
  for (let i = 1; i < events.length; i++) assert.ok(events[i]!.seq > events[i - 1]!.seq, 'positions increase');
  if (engine === 'sqlite') assert.deepEqual(events.map((e) => e.seq), [1, 2, 3, 4]);
  const seq = events.map((e) => e.seq);
  assert.equal(events[3]!.data.previous, one.record.digest);
  await store.outbox.advance('early', seq[3]!);
  await store.outbox.advance('late', seq[2]!);
  assert.equal(await store.outbox.prune(['early', 'late']), 3, 'only what both have passed');
  await store.close();

  store = await open(true);
  assert.equal(await store.outbox.position('late'), seq[2], 'positions survive reopening');
  await store.outbox.advance('late', seq[3]!);
  assert.equal(await store.outbox.prune(['early', 'late']), 1);
  assert.deepEqual(await store.outbox.after(0, 10), []);
  assert.equal(await store.deleteTag(repo.id, 'v1'), true);
  events = await store.outbox.after(0, 10);
  assert.deepEqual(events.map((e) => e.type), ['tag.removed']);
  assert.ok(events[0]!.seq > seq[3]!, 'positions are never reused after pruning everything');
  assert.deepEqual(events[0]!.data, { repository: 'app', tag: 'v1', digest: two.record.digest });
  assert.equal(await store.outbox.prune(['early']), 0, 'early has not passed it');
  assert.equal(await store.outbox.position('late'), events[0]!.seq, 'a consumer no longer configured was forgotten and starts afresh');
  await store.close();
});

test(`${engine}: without webhooks nothing is recorded`, { skip }, async (t) => {
  const store = await (await location(t, engine))(false);
  const repo = await store.ensureRepository('app');
  const one = stored();
  await store.putManifest(repo.id, one.record, one.links, ['v1']);
  await store.deleteManifests(repo.id, [one.record.digest]);
  assert.deepEqual(await store.outbox.after(0, 10), []);
  await store.close();
});
}
