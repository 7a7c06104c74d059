// The event outbox on SQLite: events commit and roll back with their change, a new consumer starts
// after the newest event, positions survive reopening, pruning keeps what a consumer still needs,
// and positions are never reused once everything was pruned.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteMetadataStore } from '../../src/metadata/sqlite.ts';
import { manifestRecord } from '../../src/metadata/store.ts';
import { parseManifest } from '../../src/oci/manifest.ts';
import { makeImage } from '../helpers/oci-client.ts';

function stored(image = makeImage()) {
  const parsed = parseManifest(image.bytes);
  return { record: manifestRecord(image.digest, parsed, image.bytes.length), links: parsed.links };
}

test('events commit with their change and are read, positioned and pruned in order', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-outbox-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'metadata.sqlite');
  let store = new SqliteMetadataStore(path, { recordEvents: true });
  const repo = store.ensureRepository('app');
  const one = stored();
  store.putManifest(repo.id, one.record, one.links, ['v1']);
  assert.equal(await store.outbox.position('late'), 2, 'a new consumer starts after the newest event');
  assert.equal(await store.outbox.position('early'), 2);
  store.putManifest(repo.id, one.record, one.links, ['v1']); // nothing changed: no event
  const two = stored();
  // A change that fails rolls back its events with it.
  assert.throws(() => store.putManifest(repo.id, { ...two.record, mediaType: null as unknown as string }, two.links, ['v2']));
  store.putManifest(repo.id, two.record, two.links, ['v1']);
  let events = await store.outbox.after(0, 10);
  assert.deepEqual(events.map((e) => [e.seq, e.type, e.subject]), [
    [1, 'manifest.pushed', `app@${one.record.digest}`], [2, 'tag.set', 'app:v1'],
    [3, 'manifest.pushed', `app@${two.record.digest}`], [4, 'tag.set', 'app:v1'],
  ]);
  assert.equal(events[3]!.data.previous, one.record.digest);
  await store.outbox.advance('early', 4);
  await store.outbox.advance('late', 3);
  assert.equal(await store.outbox.prune(['early', 'late']), 3, 'only what both have passed');
  await store.close();

  store = new SqliteMetadataStore(path, { recordEvents: true });
  assert.equal(await store.outbox.position('late'), 3, 'positions survive reopening');
  await store.outbox.advance('late', 4);
  assert.equal(await store.outbox.prune(['early', 'late']), 1);
  assert.deepEqual(await store.outbox.after(0, 10), []);
  assert.equal(store.deleteTag(repo.id, 'v1'), true);
  events = await store.outbox.after(0, 10);
  assert.deepEqual(events.map((e) => [e.seq, e.type]), [[5, 'tag.removed']], 'positions are never reused after pruning everything');
  assert.deepEqual(events[0]!.data, { repository: 'app', tag: 'v1', digest: two.record.digest });
  assert.equal(await store.outbox.prune(['early']), 0, 'early has not passed it');
  assert.equal(await store.outbox.position('late'), 5, 'a consumer no longer configured was forgotten and starts afresh');
  await store.close();
});

test('without webhooks nothing is recorded', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-outbox-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const store = new SqliteMetadataStore(join(dir, 'metadata.sqlite'));
  const repo = store.ensureRepository('app');
  const one = stored();
  store.putManifest(repo.id, one.record, one.links, ['v1']);
  store.deleteManifests(repo.id, [one.record.digest]);
  assert.deepEqual(await store.outbox.after(0, 10), []);
  await store.close();
});
