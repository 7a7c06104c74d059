// The metadata seam's contract suite, run against every implementation: SQLite and PostgreSQL
// (a throw-away cluster, test/helpers/postgres.ts). Each case speaks only the contracts of
// src/metadata/index.ts, so a new engine passes these before anything else runs on it.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eachRepository, manifestRecord, openMetadata, type MetadataStore } from '../../src/metadata/index.ts';
import { parseManifest, referrerDescriptor } from '../../src/oci/manifest.ts';
import { parseQuery } from '../../src/query/language.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';

const CONFIG = 'application/vnd.oci.image.config.v1+json';
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const INDEX = 'application/vnd.oci.image.index.v1+json';
const sha = (text: string) => `sha256:${createHash('sha256').update(text).digest('hex')}`;

/** A manifest row as a push would store it (record, links), from a JSON body. */
function manifest(body: Record<string, unknown>, pushedAt = Date.now()) {
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, ...body }));
  const parsed = parseManifest(bytes);
  return { record: manifestRecord(sha(bytes.toString()), parsed, bytes.length, pushedAt), links: parsed.links };
}
const desc = (text: string, mediaType = 'application/octet-stream') => ({ mediaType, digest: sha(text), size: text.length });
function image(name: string, extra: Record<string, unknown> = {}, pushedAt?: number) {
  return manifest({ mediaType: MANIFEST, config: desc(`config ${name}`, CONFIG), layers: [desc(`layer ${name}`)], ...extra }, pushedAt);
}

interface Engine {
  name: string;
  skip: string | false;
  open(): Promise<{ store: MetadataStore; second(): Promise<MetadataStore>; dispose(): Promise<void> }>;
}

const missing = postgresMissing();
if (missing && process.env.CI === 'true') throw new Error(`${missing}; CI must run the PostgreSQL contract suite`);

const engines: Engine[] = [
  {
    name: 'sqlite',
    skip: false,
    async open() {
      const dataDir = await mkdtemp(join(tmpdir(), 'trellis-contract-'));
      const store = await openMetadata({ location: '', dataDir, durable: false });
      return { store, second: async () => store, dispose: async () => { await store.close(); await rm(dataDir, { recursive: true, force: true }); } };
    },
  },
  {
    name: 'postgres',
    skip: missing ?? false,
    async open() {
      const database = await createTestDatabase();
      const options = { location: database.url, dataDir: '', durable: false };
      const store = await openMetadata(options);
      const others: MetadataStore[] = [];
      return {
        store,
        // Another store on the same database: a second replica with its own pool.
        second: async () => { const other = await openMetadata(options); others.push(other); return other; },
        dispose: async () => { for (const s of [store, ...others]) await s.close(); await database.drop(); },
      };
    },
  },
];

for (const engine of engines) {
  describe(`metadata contract: ${engine.name}`, { skip: engine.skip }, () => {
    let store: MetadataStore;
    let second: () => Promise<MetadataStore>;
    let dispose: () => Promise<void>;
    before(async () => ({ store, second, dispose } = await engine.open()));
    after(() => dispose());

    test('repositories: created once, listed in order, by namespace and children', async () => {
      const [a, again] = await Promise.all([store.ensureRepository('ns/a'), store.ensureRepository('ns/a')]);
      assert.equal(a.id, again.id);
      for (const name of ['ns/b', 'ns/a/deep', 'other', 'ns2/x']) await store.ensureRepository(name);
      assert.deepEqual(await store.repositories({ limit: 100, namespace: 'ns/' }), ['ns/a', 'ns/a/deep', 'ns/b']);
      assert.deepEqual(await store.repositories({ limit: 100, namespace: 'ns/', childrenOnly: true }), ['ns/a', 'ns/b']);
      assert.deepEqual(await store.repositories({ limit: 2, after: 'ns/a' }), ['ns/a/deep', 'ns/b']);
      assert.equal((await store.repository('ns/a'))?.gen, 0);
      assert.equal(await store.repository('nope'), undefined);
    });

    test('a repository created with the identity of its first index.json records it in the same write; an existing one keeps its own', async () => {
      const made = await store.ensureRepository('stamped/a', 'stamp-1');
      assert.equal(made.indexStamp, 'stamp-1');
      assert.equal((await store.repository('stamped/a'))?.indexStamp, 'stamp-1');
      assert.equal((await store.ensureRepository('stamped/a', 'stamp-2')).indexStamp, 'stamp-1');
      assert.equal((await store.ensureRepository('stamped/b')).indexStamp, null);
    });

    test('repository records a page at a time in name order; eachRepository walks every one, with a turn of the event loop between pages', async () => {
      const page = await store.repositoryPage({ after: 'ns/a', limit: 2 });
      assert.deepEqual(page.map((repo) => repo.name), ['ns/a/deep', 'ns/b']);
      assert.deepEqual(page[0], await store.repository('ns/a/deep'));
      const all = await store.repositories({ limit: 1000 });
      // Turns of the event loop while the walk runs (a synchronous store takes none by itself).
      let turns = 0;
      let walking = true;
      const turn = () => {
        turns++;
        if (walking) setImmediate(turn);
      };
      setImmediate(turn);
      const walked: string[] = [];
      for await (const repo of eachRepository(store, 2)) walked.push(repo.name);
      walking = false;
      assert.deepEqual(walked, all);
      assert.ok(turns >= Math.floor(all.length / 2) - 1, `${turns} turns for ${all.length} repositories in pages of 2`);
    });

    test('storage binding: none at first, recorded, replaced, seen by another store on the same index', async () => {
      assert.equal(await store.storageBinding(), undefined);
      await store.bindStorage('storage-1');
      assert.equal(await store.storageBinding(), 'storage-1');
      await store.bindStorage('storage-2');
      assert.equal(await (await second()).storageBinding(), 'storage-2');
    });

    test('index id: made once, the same from another store on the same index, distinct from another index\'s', async () => {
      const id = await store.indexId();
      assert.match(id, new RegExp(`^${engine.name}:[0-9a-f-]{36}$`));
      assert.equal(await store.indexId(), id);
      assert.equal(await (await second()).indexId(), id);
      const other = await engine.open();
      try {
        assert.notEqual(await other.store.indexId(), id);
      } finally {
        await other.dispose();
      }
    });

    test('blobs: recorded, found from other repositories, forgotten', async () => {
      const a = await store.ensureRepository('blobs/a');
      const b = await store.ensureRepository('blobs/b');
      await store.recordBlob(a.id, sha('x'), 1);
      assert.equal(await store.hasBlob(a.id, sha('x')), true);
      assert.equal(await store.hasBlob(b.id, sha('x')), false);
      assert.equal(await store.findBlob(sha('x'), b.id), 'blobs/a');
      assert.equal(await store.findBlob(sha('x'), a.id), undefined);
      await store.forgetBlob(a.id, sha('x'));
      assert.equal(await store.hasBlob(a.id, sha('x')), false);
    });

    test('forgetLostFiles: the blob rows and foreign entries named go, the change counter moves', async () => {
      const repo = await store.ensureRepository('lost/files');
      for (const name of ['kept', 'lost one', 'lost two']) await store.recordBlob(repo.id, sha(name), 1);
      assert.deepEqual(await store.blobDigests(repo.id), [sha('kept'), sha('lost one'), sha('lost two')].sort());
      const foreign = { mediaType: 'application/vnd.example', digest: sha('foreign kept'), size: 12 };
      const before = (await store.repository('lost/files'))!;
      await store.forgetLostFiles(repo.id, { blobs: [sha('lost one'), sha('lost two')], extras: { foreignEntries: [foreign] } });
      const after = (await store.repository('lost/files'))!;
      assert.deepEqual(await store.blobDigests(repo.id), [sha('kept')]);
      assert.deepEqual(after.layoutExtras, { foreignEntries: [foreign] });
      assert.ok(after.gen > before.gen, 'the next rewrite must write index.json again');
    });

    test('manifests and tags: one transaction, a change counter, no-op re-pushes', async () => {
      const repo = await store.ensureRepository('m/app');
      const one = image('one');
      await store.putManifest(repo.id, one.record, one.links, ['v1', 'latest']);
      assert.equal((await store.repository('m/app'))!.gen, 1);
      await store.putManifest(repo.id, one.record, one.links, ['v1']);
      assert.equal((await store.repository('m/app'))!.gen, 1, 'the same manifest and tags change nothing');
      assert.equal(await store.resolveTag(repo.id, 'v1'), one.record.digest);
      assert.deepEqual(await store.tags(repo.id, { limit: 10 }), ['latest', 'v1']);
      assert.deepEqual(await store.tags(repo.id, { limit: 10, after: 'latest' }), ['v1']);
      const stored = await store.manifest(repo.id, one.record.digest);
      assert.equal(stored?.mediaType, MANIFEST);
      assert.equal(stored?.size, one.record.size);
      assert.equal(await store.hasBlob(repo.id, one.record.digest), true, 'a manifest is a blob of its repository');
      const edges = await store.edgesFrom(repo.id, one.record.digest);
      assert.deepEqual(edges.map((e) => [e.kind, e.child, e.childRepository]), [['config', sha('config one'), 'm/app'], ['layer', sha('layer one'), 'm/app']]);
      assert.deepEqual((await store.edgesTo('m/app', sha('layer one'))).map((e) => e.parent), [one.record.digest]);
      assert.deepEqual((await store.pendingRepositories()).map((r) => r.name).filter((n) => n === 'm/app'), ['m/app']);
      assert.deepEqual((await store.taggedEntries(repo.id, { limit: 10 })).map((e) => e.tag), ['latest', 'v1']);
      assert.deepEqual(await store.untaggedEntries(repo.id, 0, 10), []);
    });

    test('pushReads: the repository, the manifest and blobs across repositories, in one read', async () => {
      assert.deepEqual(await store.pushReads('pr/none', sha('x'), [{ repository: 'pr/none', digest: sha('a') }]),
        { repository: undefined, manifestKnown: false, blobsHeld: [false] });
      const repo = await store.ensureRepository('pr/app');
      const child = await store.ensureRepository('pr/app/child');
      await store.recordBlob(repo.id, sha('a'), 1);
      await store.recordBlob(child.id, sha('b'), 1);
      const one = image('pr');
      await store.putManifest(repo.id, one.record, one.links, ['v1']);
      const reads = await store.pushReads('pr/app', one.record.digest, [
        { repository: 'pr/app', digest: sha('a') }, { repository: 'pr/app/child', digest: sha('b') }, { repository: 'pr/app', digest: sha('b') },
        { repository: 'pr/unknown', digest: sha('a') }, { repository: 'pr/app', digest: sha('a') }, { repository: 'pr/app', digest: one.record.digest },
      ]);
      assert.equal(reads.repository?.id, repo.id);
      assert.equal(reads.repository?.name, 'pr/app');
      assert.equal(reads.repository?.gen, 1);
      assert.equal(reads.manifestKnown, true);
      assert.deepEqual(reads.blobsHeld, [true, true, false, false, true, true], 'in the order asked, per repository');
      assert.deepEqual(await store.pushReads('pr/app', sha('other'), []), { ...reads, manifestKnown: false, blobsHeld: [] });
      assert.equal((await store.pushReads('pr/app/child', one.record.digest, [])).manifestKnown, false, 'a manifest is per repository');
    });

    test('putManifest: a re-push of a known manifest moves its push time (GC grace and queries see it)', async () => {
      const repo = await store.ensureRepository('pm/repush');
      const first = image('repush', {}, 1_000_000);
      await store.putManifest(repo.id, first.record, first.links, []);
      const again = image('repush', {}, 1_000_500);
      await store.putManifest(repo.id, again.record, again.links, []);
      assert.equal((await store.manifest(repo.id, first.record.digest))!.pushedAt, 1_000_000, 'within a second: nothing written');
      const later = image('repush', {}, 5_000_000);
      const gen = (await store.repository('pm/repush'))!.gen;
      await store.putManifest(repo.id, later.record, later.links, []);
      assert.equal((await store.manifest(repo.id, first.record.digest))!.pushedAt, 5_000_000);
      assert.equal((await store.repository('pm/repush'))!.gen, gen, 'the layout does not change');
      const policy = { keepUntagged: false, keepDanglingReferrers: false };
      assert.deepEqual(await store.unreachableManifests(repo.id, { ...policy, pushedBefore: 4_000_000 }), [], 'young again');
      assert.equal(await store.stillUnreachable(repo.id, first.record.digest, 4_000_000), false);
      const pushed = parseQuery(new URLSearchParams(`q_pushedat__eq=${new Date(5_000_000).toISOString()}&q_repository__eq=pm/repush`), () => true);
      assert.deepEqual((await store.queries.run(pushed, { kind: 'manifests' }, { limit: 10 }, undefined)).map((m) => m.pushedAt), [5_000_000]);
    });

    test('putManifest: known manifests under new tags, repeated tags, tombstoned tags, attestations', async () => {
      const repo = await store.ensureRepository('pm/app');
      const one = image('pm one');
      await store.putManifest(repo.id, one.record, one.links, ['a', 'b']);
      assert.equal(await store.deleteTag(repo.id, 'b'), true);
      const gen = (await store.repository('pm/app'))!.gen;
      await store.putManifest(repo.id, one.record, one.links, ['b', 'c', 'b']);
      assert.equal((await store.repository('pm/app'))!.gen, gen + 1, 'one change, however many tags');
      assert.deepEqual(await store.tags(repo.id, { limit: 10 }), ['a', 'b', 'c']);
      for (const tag of ['a', 'b', 'c']) assert.equal(await store.resolveTag(repo.id, tag), one.record.digest);
      assert.deepEqual((await store.taggedEntries(repo.id, { limit: 10 })).map((e) => e.tag), ['a', 'b', 'c']);
      await store.putManifest(repo.id, one.record, one.links, ['c', 'a']);
      assert.equal((await store.repository('pm/app'))!.gen, gen + 1, 'the same tags again change nothing');
      // A BuildKit index marks its attestation manifest as describing the image it names.
      const attestation = manifest({ mediaType: MANIFEST, config: desc('att config', CONFIG), layers: [desc('in-toto')] });
      await store.putManifest(repo.id, attestation.record, attestation.links, []);
      const index = manifest({
        mediaType: INDEX, manifests: [
          { mediaType: MANIFEST, digest: one.record.digest, size: one.record.size, platform: { architecture: 'amd64', os: 'linux' } },
          {
            mediaType: MANIFEST, digest: attestation.record.digest, size: attestation.record.size, platform: { architecture: 'unknown', os: 'unknown' },
            annotations: { 'vnd.docker.reference.type': 'attestation-manifest', 'vnd.docker.reference.digest': one.record.digest },
          },
        ],
      });
      await store.putManifest(repo.id, index.record, index.links, ['multi']);
      const referrers = await store.referrers(repo.id, one.record.digest, { includeAttestations: true, limit: 10 });
      assert.deepEqual(referrers.map((r) => r.digest), [attestation.record.digest]);
      assert.deepEqual(await store.referrerDescriptors(repo.id, one.record.digest, { includeAttestations: true, limit: 10 }),
        referrers.map((r) => ({ digest: r.digest, json: JSON.stringify(referrerDescriptor(r)) })));
      assert.deepEqual(await store.referrers(repo.id, one.record.digest, { limit: 10 }), [], 'only when asked');
    });

    test('deletes: tags tombstoned, manifest files released only once flushed', async () => {
      const repo = await store.ensureRepository('d/app');
      const one = image('d1');
      await store.putManifest(repo.id, one.record, one.links, ['v1', 'v2']);
      assert.equal(await store.deleteTag(repo.id, 'v2'), true);
      assert.equal(await store.deleteTag(repo.id, 'v2'), false);
      const gen = (await store.repository('d/app'))!.gen;
      assert.deepEqual(await store.deleteManifests(repo.id, [one.record.digest, sha('absent')]), [one.record.digest]);
      assert.deepEqual(await store.deleteManifests(repo.id, [one.record.digest]), []);
      assert.equal(await store.resolveTag(repo.id, 'v1'), undefined, 'its tags go with it');
      assert.equal(await store.awaitsUnlink(repo.id, one.record.digest), true, 'served as absent');
      assert.equal(await store.contentInUse(repo.id, one.record.digest), false);
      assert.equal(await store.isReferenced(repo.id, one.record.digest), true, 'a pending unlink keeps its file referenced');
      assert.deepEqual(await store.dueUnlinks(repo.id, gen - 1), [], 'not before index.json shows the delete');
      const due = async () => (await store.repositoriesWithDueUnlinks()).includes('d/app');
      assert.equal(await due(), false, 'start-up has nothing to remove before the flush');
      const after = (await store.repository('d/app'))!.gen;
      await store.markFlushed(repo.id, after, 'stamp');
      assert.deepEqual(await store.dueUnlinks(repo.id, after), [one.record.digest]);
      assert.equal(await due(), true);
      await store.dropPendingUnlink(repo.id, one.record.digest);
      assert.deepEqual(await store.dueUnlinks(repo.id, after), []);
      assert.equal(await due(), false);
      // A blob GC removes is journaled the same way, and a blob row keeps it in use until then.
      await store.recordBlob(repo.id, sha('gc blob'), 7);
      assert.equal(await store.contentInUse(repo.id, sha('gc blob')), true);
      await store.scheduleUnlink(repo.id, sha('gc blob'));
      assert.equal(await store.hasBlob(repo.id, sha('gc blob')), false);
      assert.equal(await store.awaitsUnlink(repo.id, sha('gc blob')), true);
      assert.equal((await store.repository('d/app'))!.flushedGen, after);
      assert.equal((await store.repository('d/app'))!.indexStamp, 'stamp');
    });

    test('referrers: by subject, artifact type and page; dirty subjects until their index is written', async () => {
      const repo = await store.ensureRepository('r/app');
      const subject = image('subject');
      await store.putManifest(repo.id, subject.record, subject.links, ['v1']);
      const referrers = [];
      for (let i = 0; i < 5; i++) {
        const r = manifest({ mediaType: MANIFEST, artifactType: i % 2 ? 'application/x.sig' : 'application/x.sbom', config: desc('{}', 'application/vnd.oci.empty.v1+json'),
          layers: [desc(`r${i}`)], subject: { mediaType: MANIFEST, digest: subject.record.digest, size: subject.record.size } });
        referrers.push(r.record.digest);
        await store.putManifest(repo.id, r.record, r.links, []);
      }
      referrers.sort();
      const all = await store.referrers(repo.id, subject.record.digest, { limit: 10 });
      assert.deepEqual(all.map((r) => r.digest), referrers, 'digest order');
      const firstPage = await store.referrers(repo.id, subject.record.digest, { limit: 2 });
      const rest = await store.referrers(repo.id, subject.record.digest, { limit: 10, after: firstPage[1]!.digest });
      assert.deepEqual([...firstPage, ...rest].map((r) => r.digest), referrers);
      assert.equal((await store.referrers(repo.id, subject.record.digest, { limit: 10, artifactTypes: ['application/x.sig'] })).length, 2);
      assert.equal((await store.untaggedEntries(repo.id, 0, 10)).length, 5, 'referrers are untagged layout entries');
      const dirty = await store.dirtySubjects(repo.id);
      assert.deepEqual(dirty.map((d) => d.subject), [subject.record.digest]);
      await store.setReferrerIndex(repo.id, subject.record.digest, { digest: sha('idx'), size: 3 }, dirty[0]!.marked);
      assert.deepEqual(await store.dirtySubjects(repo.id), []);
      assert.deepEqual((await store.referrerIndexes(repo.id)).map((r) => ({ ...r })), [{ subject: subject.record.digest, digest: sha('idx'), size: 3 }]);
      assert.equal(await store.isReferenced(repo.id, sha('idx')), true);
      // Serialised descriptors: the bytes the records would give, also for annotations whose keys
      // JavaScript orders (integer-like), that need escaping, or that are absent.
      const annotated = manifest({ mediaType: MANIFEST, config: desc('{}', 'application/vnd.oci.empty.v1+json'), layers: [desc('annotated')],
        subject: { mediaType: MANIFEST, digest: subject.record.digest, size: subject.record.size },
        annotations: { 'org.example.b': 'line\nbreak "quoted" \\ é 🦀', '10': 'ten', '2': 'two', 'org.example.a': '' } });
      await store.putManifest(repo.id, annotated.record, annotated.links, []);
      for (const filter of [{ limit: 10 }, { limit: 2, after: referrers[1]! }, { limit: 10, artifactTypes: ['application/x.sig'] }, { limit: 10, includeAttestations: true }]) {
        const records = await store.referrers(repo.id, subject.record.digest, filter);
        const descriptors = await store.referrerDescriptors(repo.id, subject.record.digest, filter);
        assert.deepEqual(descriptors, records.map((r) => ({ digest: r.digest, json: JSON.stringify(referrerDescriptor(r)) })));
      }
      assert.equal((await store.referrerDescriptors(repo.id, subject.record.digest, { limit: 10 })).length, 6);
    });

    test('mergeLayout: outside tags taken, local unflushed changes win, vanished manifests forgotten', async () => {
      const repo = await store.ensureRepository('merge/app');
      const mine = image('mine');
      const theirs = image('theirs');
      const gone = image('gone');
      await store.putManifest(repo.id, gone.record, gone.links, ['old']);
      await store.markFlushed(repo.id, (await store.repository('merge/app'))!.gen, 's1');
      await store.putManifest(repo.id, mine.record, mine.links, ['shared']); // not flushed yet
      await store.mergeLayout(repo.id, {
        manifests: [theirs], tags: new Map([['shared', theirs.record.digest], ['added', theirs.record.digest]]), entries: [], extras: { annotations: { a: 'b' } }, indexStamp: 's2',
      }, [gone.record.digest]);
      assert.equal(await store.resolveTag(repo.id, 'shared'), mine.record.digest, 'the unflushed local change wins');
      assert.equal(await store.resolveTag(repo.id, 'added'), theirs.record.digest);
      assert.equal(await store.resolveTag(repo.id, 'old'), undefined);
      assert.equal(await store.manifest(repo.id, gone.record.digest), undefined);
      const after = (await store.repository('merge/app'))!;
      assert.deepEqual(after.layoutExtras, { annotations: { a: 'b' } });
      assert.equal(after.indexStamp, 's2');
    });

    test('mergeLayout: a manifest deleted here stays deleted unless tagged anew; other tools\' entries are kept whole', async () => {
      const repo = await store.ensureRepository('merge/stale');
      const deleted = image('deleted');
      const kept = image('kept');
      const flush = async () => store.markFlushed(repo.id, (await store.repository('merge/stale'))!.gen, `s${Date.now()}`);
      await store.putManifest(repo.id, deleted.record, deleted.links, ['a']);
      await store.putManifest(repo.id, kept.record, kept.links, ['b']);
      await flush();
      assert.deepEqual(await store.deleteManifests(repo.id, [deleted.record.digest]), [deleted.record.digest]);
      await flush(); // the delete is in index.json; an old copy of it is written back later
      const entry = JSON.stringify({ ...kept.record, annotations: { 'org.opencontainers.image.ref.name': 'b', note: 'theirs' }, platform: { os: 'linux' } });
      const old = { manifests: [deleted, kept], tags: new Map([['a', deleted.record.digest], ['b', kept.record.digest]]), extras: {} };
      await store.mergeLayout(repo.id, { ...old, entries: [{ tag: 'b', digest: kept.record.digest, json: entry }], indexStamp: 'old-copy' }, []);
      assert.equal(await store.manifest(repo.id, deleted.record.digest), undefined, 'a stale copy does not revive a deleted manifest');
      assert.equal(await store.resolveTag(repo.id, 'a'), undefined);
      const record = (await store.repository('merge/stale'))!;
      assert.ok(record.gen > record.flushedGen, 'the stale file is rewritten');
      assert.deepEqual((await store.taggedEntries(repo.id, { limit: 10 })).map((e) => [e.tag, e.layoutEntry]), [['b', entry]]);
      // A tag the manifest never had is the other tool's own decision: it comes back, its old tag does not.
      old.tags.set('new', deleted.record.digest);
      await store.mergeLayout(repo.id, { ...old, entries: [], indexStamp: 'retagged' }, []);
      assert.ok(await store.manifest(repo.id, deleted.record.digest));
      assert.equal(await store.resolveTag(repo.id, 'new'), deleted.record.digest);
      assert.equal(await store.resolveTag(repo.id, 'a'), undefined);
      assert.deepEqual((await store.taggedEntries(repo.id, { limit: 10 })).map((e) => e.layoutEntry), [null, null], 'the entries are the new file\'s');
      // Once its file is removed, a tool listing it again must have written it again: a genuine re-add.
      await store.deleteManifests(repo.id, [kept.record.digest]);
      await store.dropPendingUnlink(repo.id, kept.record.digest, true);
      await store.mergeLayout(repo.id, { ...old, entries: [], indexStamp: 're-added' }, []);
      assert.ok(await store.manifest(repo.id, kept.record.digest));
    });

    test('retention: unreachable manifests by policy, re-checked before a sweep', async () => {
      const repo = await store.ensureRepository('gc/app');
      const old = Date.now() - 100_000;
      const tagged = image('tagged', {}, old);
      const loose = image('loose', {}, old);
      await store.putManifest(repo.id, tagged.record, tagged.links, ['v1']);
      await store.putManifest(repo.id, loose.record, loose.links, []);
      const policy = { keepUntagged: false, keepDanglingReferrers: false, pushedBefore: Date.now() - 1000 };
      assert.deepEqual((await store.unreachableManifests(repo.id, policy)).map((u) => u.digest), [loose.record.digest]);
      assert.deepEqual(await store.unreachableManifests(repo.id, { ...policy, keepUntagged: true }), []);
      assert.deepEqual(await store.unreachableManifests(repo.id, { ...policy, liveRoots: [loose.record.digest] }), [], 'a live root is kept as a tag would be');
      assert.equal(await store.stillUnreachable(repo.id, loose.record.digest, policy.pushedBefore), true);
      assert.equal(await store.stillUnreachable(repo.id, tagged.record.digest, policy.pushedBefore), false);
      const referenced = await store.referencedDigests(repo.id, new Set([loose.record.digest]));
      assert.ok(referenced.has(sha('layer tagged')) && !referenced.has(sha('layer loose')));
      assert.equal(await store.isReferenced(repo.id, sha('layer loose')), true);
      assert.deepEqual((await store.manifestDigests(repo.id)).sort(), [loose.record.digest, tagged.record.digest].sort());
    });

    test('nested links: an index naming a descendant repository', async () => {
      const parent = await store.ensureRepository('nest');
      const child = await store.ensureRepository('nest/child');
      const leaf = image('leaf');
      await store.putManifest(child.id, leaf.record, leaf.links, []);
      const index = manifest({ mediaType: INDEX, manifests: [{ ...desc('x', MANIFEST), digest: leaf.record.digest, size: leaf.record.size }] });
      index.links[0]!.repository = 'nest/child';
      await store.putManifest(parent.id, index.record, index.links, ['v1']);
      assert.deepEqual(await store.linkedRepositories(parent.id), ['nest/child']);
      assert.deepEqual((await store.edgesTo('nest/child', leaf.record.digest)).map((e) => e.parentRepository), ['nest']);
      assert.equal(await store.stillUnreachable(child.id, leaf.record.digest, Date.now() + 1000), false, 'an ancestor index keeps it');
    });

    test('unindexed children: index entries no manifest record describes, here or from an ancestor', async () => {
      const parent = await store.ensureRepository('unread');
      const child = await store.ensureRepository('unread/child');
      const known = image('known child');
      await store.putManifest(parent.id, known.record, known.links, []);
      const index = manifest({ mediaType: INDEX, manifests: [
        { ...desc('x', MANIFEST), digest: known.record.digest, size: known.record.size },
        desc('unread here', MANIFEST),
        desc('unread below', MANIFEST),
      ] });
      index.links[2]!.repository = 'unread/child';
      await store.putManifest(parent.id, index.record, index.links, ['v1']);
      assert.deepEqual(await store.unindexedChildren(parent.id), [sha('unread here')]);
      assert.deepEqual(await store.unindexedChildren(child.id), [sha('unread below')]);
      await store.deleteManifests(parent.id, [index.record.digest]);
      assert.deepEqual(await store.unindexedChildren(parent.id), [], 'a removed index names nothing');
      assert.deepEqual(await store.unindexedChildren(child.id), []);
    });

    test('queries: grants as data cut no page short and reveal no hidden repository', async () => {
      for (let i = 0; i < 12; i++) {
        const name = ['q/open', 'q/secret', 'q/other'][i % 3]!;
        const repo = await store.ensureRepository(name);
        const m = image(`q${i}`, { annotations: { 'org.opencontainers.image.version': `1.${i}.0`, team: i % 2 ? 'blue' : 'green' } });
        await store.putManifest(repo.id, m.record, m.links, [`v${i}`]);
      }
      const params = new URLSearchParams('q_annotations__team__eq=blue&sort=version&order=desc');
      const known = await store.queries.knownAttributes(['annotations__team', 'annotations__org.opencontainers.image.version', 'annotations__nope', 'tag']);
      assert.deepEqual([...known].sort(), ['annotations__org.opencontainers.image.version', 'annotations__team', 'tag']);
      const query = parseQuery(params, (p) => known.has(p));
      const access = { pullable: ['q/open', 'q/other'] };
      const seen: string[] = [];
      for (let after: string | undefined, pages = 0; pages < 20; pages++) {
        const page = await store.queries.run(query, { kind: 'manifests' }, { after, limit: 2 }, access);
        if (!page.length) break;
        assert.ok(page.every((m) => m.repository !== 'q/secret'));
        seen.push(...page.map((m) => m.annotations['org.opencontainers.image.version']!));
        after = page[page.length - 1]!.cursor;
      }
      assert.deepEqual(seen, ['1.11.0', '1.9.0', '1.5.0', '1.3.0'], 'blue, visible, version descending');
      const tagQuery = parseQuery(new URLSearchParams('q_tag__gte=v10'), () => true);
      const tagged = await store.queries.run(tagQuery, { kind: 'manifests' }, { limit: 50 }, undefined);
      assert.deepEqual(tagged.map((m) => m.annotations['org.opencontainers.image.version']).sort(), ['1.10.0', '1.11.0']);
      const first = tagged[0]!;
      assert.deepEqual(first.tags, [`v${first.annotations['org.opencontainers.image.version']!.split('.')[1]}`]);
    });

    test('components: a repository replaced at once, read back in order', async () => {
      const row = (version: string) => ({
        repository: 'comp/repo', name: 'example.com/c', version, kind: 'ocm' as const, tag: version, digest: sha(version), provider: 'acme',
        labels: { l: '1' }, pushedAt: 1, detail: { resources: [], sources: [], references: [{ name: 'dep', componentName: 'example.com/dep', version: '2.0', labels: {} }] },
        artifacts: [sha(`art ${version}`)],
      });
      await store.components.replaceRepository('comp/repo', [row('1.0'), row('1.1')]);
      assert.deepEqual((await store.components.versionsOf('example.com/c')).map((r) => r.version), ['1.0', '1.1']);
      assert.deepEqual((await store.components.shipping(sha('art 1.1'))).map((k) => ({ ...k })), [{ repository: 'comp/repo', name: 'example.com/c', version: '1.1' }]);
      assert.equal((await store.components.referencing('example.com/dep', '2.0')).length, 2);
      await store.components.replaceRepository('comp/repo', [row('2.0')]);
      assert.deepEqual((await store.components.allVersions()).map((r) => r.version), ['2.0']);
      assert.equal(await store.components.holds('comp/repo'), true);
      await store.components.cache('comp/repo', sha('2.0'), { x: 1 });
      assert.deepEqual(await store.components.cached(sha('2.0')), { x: 1 });
      await store.components.setPortableEntry('comp/repo', sha('p'), true);
      assert.deepEqual(await store.components.portableEntries('comp/repo'), [sha('p')]);
      assert.deepEqual(await store.components.portableRepositories(), ['comp/repo']);
    });

    test('locks: one holder per key (across stores on one database when shared), tryRun refuses a held key', async () => {
      const other = await second();
      assert.equal(other.locks.shared, store.locks.shared);
      const order: string[] = [];
      let release!: () => void;
      const held = new Promise<void>((resolve) => { release = resolve; });
      let entered!: () => void;
      const inside = new Promise<void>((resolve) => { entered = resolve; });
      const first = store.locks.run('contract:key', async () => { order.push('first in'); entered(); await held; order.push('first out'); });
      await inside;
      assert.equal(await other.locks.tryRun('contract:key', async () => 'ran'), undefined, 'a held key is refused to tryRun');
      assert.deepEqual(await other.locks.tryRun('contract:another key', async () => 'ran'), { value: 'ran' }, 'other keys are free');
      const waiter = other.locks.run('contract:key', async () => { order.push('second'); });
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual(order, ['first in'], 'the second holder waits');
      release();
      await Promise.all([first, waiter]);
      assert.deepEqual(order, ['first in', 'first out', 'second']);
      await assert.rejects(store.locks.run('contract:key', async () => { throw new Error('work failed'); }), /work failed/);
      assert.deepEqual(await other.locks.tryRun('contract:key', async () => 'free again'), { value: 'free again' }, 'a failed holder lets the key go');
    });

    test('concurrency: two writers, one tag (also from a second store on the same database)', async () => {
      const other = await second();
      const repo = await store.ensureRepository('race/tag');
      const before = (await store.repository('race/tag'))!.gen;
      const writes = Array.from({ length: 8 }, (_, i) => image(`racer ${i}`));
      await Promise.all(writes.map((w, i) => (i % 2 ? other : store).putManifest(repo.id, w.record, w.links, ['latest'])));
      const winner = await store.resolveTag(repo.id, 'latest');
      assert.ok(writes.some((w) => w.record.digest === winner), 'the tag names one of the pushed manifests');
      assert.equal((await store.repository('race/tag'))!.gen, before + writes.length, 'every push is one change');
      for (const w of writes) assert.ok(await store.manifest(repo.id, w.record.digest), 'no push is lost');
      assert.deepEqual(await other.tags(repo.id, { limit: 10 }), ['latest']);
    });

    test('concurrency: a subject marked again after its rewrite read the mark stays dirty, whichever store marked it', async () => {
      // Stores opened at different times count marks from different bases (replicas): the one
      // opened first marks lower. Its later mark must still outlive a rewrite of the earlier one.
      const later = await second();
      const repo = await store.ensureRepository('race/dirty');
      const subject = image('marked subject');
      await store.putManifest(repo.id, subject.record, subject.links, ['v1']);
      const referrer = (n: number) => manifest({ mediaType: MANIFEST, artifactType: 'application/x.sig', config: desc('{}', 'application/vnd.oci.empty.v1+json'),
        layers: [desc(`marked ${n}`)], subject: { mediaType: MANIFEST, digest: subject.record.digest, size: subject.record.size } });
      const [first, second_] = [referrer(1), referrer(2)];
      await later.putManifest(repo.id, first.record, first.links, []);
      // A rewrite reads the mark, then a push (from the other store) marks the subject again.
      const [read] = await store.dirtySubjects(repo.id);
      await store.putManifest(repo.id, second_.record, second_.links, []);
      await store.setReferrerIndex(repo.id, subject.record.digest, { digest: sha('index of 1'), size: 10 }, read!.marked);
      assert.deepEqual((await store.dirtySubjects(repo.id)).map((d) => d.subject), [subject.record.digest], 'the push after the read is still to be written');
      // The same for a delete after the read.
      const [again] = await store.dirtySubjects(repo.id);
      await store.deleteManifests(repo.id, [first.record.digest]);
      await store.setReferrerIndex(repo.id, subject.record.digest, { digest: sha('index of 1 and 2'), size: 10 }, again!.marked);
      assert.deepEqual((await store.dirtySubjects(repo.id)).map((d) => d.subject), [subject.record.digest], 'the delete after the read is still to be written');
    });

    test('concurrency: a delete racing a push of the same manifest leaves no tag on a missing manifest', async () => {
      const other = await second();
      const repo = await store.ensureRepository('race/delete');
      for (let round = 0; round < 6; round++) {
        const m = image(`contested ${round}`);
        await store.putManifest(repo.id, m.record, m.links, []);
        await Promise.all([
          other.deleteManifests(repo.id, [m.record.digest]),
          store.putManifest(repo.id, m.record, m.links, [`t${round}`]),
        ]);
        const tagged = await store.resolveTag(repo.id, `t${round}`);
        const present = await store.manifest(repo.id, m.record.digest);
        if (tagged) assert.ok(present, 'a tag always names a manifest the index holds');
        if (present) assert.equal(await store.awaitsUnlink(repo.id, m.record.digest), false, 'a present manifest is never served as absent');
      }
    });
  });
}
