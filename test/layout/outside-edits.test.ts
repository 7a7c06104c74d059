// Another tool rewrites index.json while Trellis holds changes it has not written yet: the outside
// edit is merged, and Trellis's newer changes (here a tag delete) win over the older file. An
// operator removes a repository's folder, or its index.json, by hand: what went is forgotten, no
// acknowledged push is lost, and no layout is left without its marker or listing a missing file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { testsUsePostgres } from '../helpers/postgres.ts';
import { collectGarbage } from '../../src/gc/collector.ts';
import { OCI_INDEX, OCI_MANIFEST, REF_NAME, type Built, getManifest, listReferrers, listTags, makeImage, makeReferrer, pushBuilt, pushManifest } from '../helpers/oci-client.ts';

test('a tag deleted here stays deleted when an outside edit based on an older index.json is merged', async () => {
  const reg = await startTestRegistry({ indexFlushMinMs: 60_000, indexFlushMaxMs: 60_000, layoutCheckIntervalMs: 50 });
  try {
    const image = makeImage();
    for (const tag of ['a', 'b']) assert.equal((await pushBuilt(reg.url, 'edit/me', tag, image)).status, 201);
    await reg.registry.layout.flushAll();
    const path = join(reg.dataDir, 'edit/me/index.json');
    const before = JSON.parse(await readFile(path, 'utf8')) as { manifests: { annotations?: Record<string, string> }[] };
    assert.equal((await fetch(`${reg.url}/v2/edit/me/manifests/b`, { method: 'DELETE' })).status, 202);
    // The other tool adds tag c to the file it read before the delete (which still lists b).
    before.manifests.push({ ...image.descriptor, annotations: { [REF_NAME]: 'c' } });
    await writeFile(path, JSON.stringify(before));
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual((await listTags(reg.url, 'edit/me')).tags, ['a', 'c']);
    await reg.registry.layout.flushAll();
    const after = JSON.parse(await readFile(path, 'utf8')) as { manifests: { annotations?: Record<string, string> }[] };
    assert.deepEqual(after.manifests.map((d) => d.annotations?.[REF_NAME]).filter(Boolean).sort(), ['a', 'c']);
  } finally {
    await reg.dispose();
  }
});

/** What another tool finds in the folder: its oci-layout marker, and every file index.json (and what it lists) needs. */
async function layoutAsToolsSeeIt(dataDir: string, repo: string): Promise<{ marker: boolean; tags: string[]; missing: string[] }> {
  const marker = await stat(join(dataDir, repo, 'oci-layout')).then(() => true, () => false);
  const index = JSON.parse(await readFile(join(dataDir, repo, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
  const missing: string[] = [];
  const pending = index.manifests.map((d) => d.digest);
  while (pending.length) {
    const digest = pending.pop()!;
    const bytes = await readFile(join(dataDir, repo, 'blobs', ...digest.split(':'))).catch(() => undefined);
    if (!bytes) {
      missing.push(digest);
      continue;
    }
    const body = JSON.parse(bytes.toString('utf8')) as { config?: { digest: string }; layers?: { digest: string }[]; manifests?: { digest: string }[] };
    for (const d of [body.config, ...(body.layers ?? [])]) if (d && !(await stat(join(dataDir, repo, 'blobs', ...d.digest.split(':'))).catch(() => undefined))) missing.push(d.digest);
    pending.push(...(body.manifests ?? []).map((d) => d.digest));
  }
  return { marker, tags: index.manifests.map((d) => d.annotations?.[REF_NAME]).filter((t): t is string => !!t).sort(), missing };
}

/** Pushes `image` as v1, waits for its index.json, then removes the repository's folder as an operator would. */
async function pushThenRemoveFolder(reg: TestRegistry, repo: string, image: Built): Promise<void> {
  assert.equal((await pushBuilt(reg.url, repo, 'v1', image)).status, 201);
  await reg.registry.layout.flushAll();
  await rm(join(reg.dataDir, repo), { recursive: true });
}

test('a repository folder removed by hand: what went with it is gone, the folder stays away, and the next push writes a complete layout', async () => {
  const reg = await startTestRegistry({ layoutCheckIntervalMs: 0 });
  try {
    const repo = 'removed/by-hand';
    const first = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, 'v1', first)).status, 201);
    const signature = makeReferrer(first.descriptor, { artifactType: 'application/vnd.example.sig' });
    assert.equal((await pushBuilt(reg.url, repo, signature.digest, signature)).status, 201);
    await reg.registry.layout.flushAll();
    await rm(join(reg.dataDir, repo), { recursive: true });

    assert.deepEqual((await listTags(reg.url, repo)).tags ?? [], []);
    assert.equal((await fetch(`${reg.url}/v2/${repo}/manifests/v1`, { method: 'HEAD' })).status, 404);
    assert.deepEqual((await listReferrers(reg.url, repo, first.digest)).manifests, []);
    // The uploads went with the folder: a manifest naming them without uploading them again is refused.
    const reuse = await pushManifest(reg.url, repo, 'again', first.bytes, OCI_MANIFEST);
    assert.equal(reuse.status, 400);
    // Nothing is written back into a folder removed whole: it was the repository's delete.
    await reg.registry.layout.flushAll();
    await collectGarbage(reg.registry, { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 0 }, { dryRun: false });
    assert.equal(await stat(join(reg.dataDir, repo)).then(() => 'there', () => 'gone'), 'gone');
    const next = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, 'v2', next)).status, 201);
    await reg.registry.layout.flushAll();
    assert.deepEqual(await layoutAsToolsSeeIt(reg.dataDir, repo), { marker: true, tags: ['v2'], missing: [] });
    assert.deepEqual((await listTags(reg.url, repo)).tags, ['v2']);
  } finally {
    await reg.dispose();
  }
});

test('an index.json removed by hand is written again from the index: no tag is lost', async () => {
  const reg = await startTestRegistry({ layoutCheckIntervalMs: 0 });
  try {
    const repo = 'removed/index-json';
    for (const tag of ['v1', 'v2']) assert.equal((await pushBuilt(reg.url, repo, tag, makeImage())).status, 201);
    await reg.registry.layout.flushAll();
    await rm(join(reg.dataDir, repo, 'index.json'));

    assert.deepEqual((await listTags(reg.url, repo)).tags, ['v1', 'v2']);
    await reg.registry.layout.flushAll();
    assert.deepEqual(await layoutAsToolsSeeIt(reg.dataDir, repo), { marker: true, tags: ['v1', 'v2'], missing: [] });
  } finally {
    await reg.dispose();
  }
});

test('a push right after its folder was removed by hand (before any check noticed) still leaves a complete layout', async () => {
  const reg = await startTestRegistry({ layoutCheckIntervalMs: 60_000, indexFlushMinMs: 0, indexFlushMaxMs: 10 });
  try {
    const repo = 'removed/then-pushed';
    await pushThenRemoveFolder(reg, repo, makeImage());
    // The rewrite this push schedules finds index.json gone: it restores the layout instead of writing over it.
    assert.equal((await pushBuilt(reg.url, repo, 'v2', makeImage())).status, 201);
    // flushAll (as at shutdown) waits for the restore that rewrite set off, and for the rewrite after it.
    await reg.registry.layout.flushAll();
    assert.deepEqual(await layoutAsToolsSeeIt(reg.dataDir, repo), { marker: true, tags: ['v2'], missing: [] });
  } finally {
    await reg.dispose();
  }
});

test('a layout another tool is still creating (oci-layout, no index.json yet) gets no index.json from Trellis', async () => {
  const data = await mkdtemp(join(tmpdir(), 'trellis-half-'));
  await mkdir(join(data, 'half/blobs'), { recursive: true });
  await writeFile(join(data, 'half/oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const reg = await startTestRegistry({ layoutCheckIntervalMs: 0 }, data);
  try {
    await reg.registry.adopted();
    await fetch(`${reg.url}/v2/half/tags/list`);
    await collectGarbage(reg.registry, { untagged: 'keep', danglingReferrers: 'keep', graceSeconds: 3600 }, { dryRun: false });
    await reg.registry.layout.flushAll();
    assert.equal(await stat(join(data, 'half/index.json')).then(() => 'written', () => 'absent'), 'absent');
  } finally {
    await reg.dispose();
    await rm(data, { recursive: true, force: true });
  }
});

test('the same image pushed again right after its folder was removed by hand (before any check noticed) is kept', async () => {
  const reg = await startTestRegistry({ layoutCheckIntervalMs: 60_000, indexFlushMinMs: 0, indexFlushMaxMs: 10 });
  try {
    const repo = 'removed/same-again';
    const image = makeImage();
    await pushThenRemoveFolder(reg, repo, image);
    // A CI job pushes the very same image again: its blobs are uploaded again, its manifest is one the index still holds.
    assert.equal((await pushBuilt(reg.url, repo, 'v1', image)).status, 201);
    assert.equal((await pushBuilt(reg.url, repo, 'latest', image)).status, 201);
    await reg.registry.layout.flushAll();
    for (const tag of ['v1', 'latest']) assert.equal((await getManifest(reg.url, repo, tag)).status, 200, `the acknowledged push of ${tag} was lost`);
    assert.deepEqual(await layoutAsToolsSeeIt(reg.dataDir, repo), { marker: true, tags: ['latest', 'v1'], missing: [] });
  } finally {
    await reg.dispose();
  }
});

test('a folder removed by hand while a rewrite that lists nothing was due leaves nothing pending', async () => {
  const reg = await startTestRegistry({ layoutCheckIntervalMs: 60_000, indexFlushMinMs: 60_000, indexFlushMaxMs: 60_000 });
  try {
    const repo = 'removed/nothing-left';
    // An index with no children: no blob row anywhere, so nothing but the change counter tells of it.
    const empty = await pushManifest(reg.url, repo, 'empty', { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }, OCI_INDEX);
    assert.equal(empty.status, 201);
    await reg.registry.layout.flushAll();
    assert.equal((await fetch(`${reg.url}/v2/${repo}/manifests/${empty.digest}`, { method: 'DELETE' })).status, 202);
    await rm(join(reg.dataDir, repo), { recursive: true });
    await reg.registry.layout.flushAll();
    // Still pending, every replica's takeOverAbandoned would rewrite it, find it lost and do nothing, forever.
    assert.deepEqual((await reg.registry.metadata.pendingRepositories()).map((r) => r.name), []);
    assert.equal(await stat(join(reg.dataDir, repo)).then(() => 'there', () => 'gone'), 'gone');
  } finally {
    await reg.dispose();
  }
});

test('a replica whose restore another replica finished first notices the next removal too', async (t) => {
  if (!testsUsePostgres()) return t.skip('replicas share a PostgreSQL index (TRELLIS_TEST_METADATA=postgres)');
  const slow = { layoutCheckIntervalMs: 60_000, indexFlushMinMs: 60_000, indexFlushMaxMs: 60_000 };
  const a = await startTestRegistry(slow);
  const b = await startTestRegistry({ ...slow, metadata: a.metadata, storage: a.registry.options.storage || a.dataDir });
  try {
    const repo = 'removed/two-replicas';
    assert.equal((await pushBuilt(a.url, repo, 'v1', makeImage())).status, 201);
    await a.registry.layout.flushAll();
    await rm(join(a.dataDir, repo, 'index.json'));
    // Both replicas notice (one by its check, one by a rewrite) and both set off a rewrite that restores it.
    await a.registry.layout.flush(repo);
    await b.registry.layout.flush(repo);
    await a.registry.layout.flushAll();
    await b.registry.layout.flushAll();
    assert.deepEqual(await layoutAsToolsSeeIt(a.dataDir, repo), { marker: true, tags: ['v1'], missing: [] });

    // Later the folder is removed whole, and the next push lands on the replica that restored nothing.
    await rm(join(a.dataDir, repo), { recursive: true });
    assert.equal((await pushBuilt(b.url, repo, 'v2', makeImage())).status, 201);
    await b.registry.layout.flushAll();
    await a.registry.layout.flushAll();
    assert.deepEqual(await layoutAsToolsSeeIt(a.dataDir, repo), { marker: true, tags: ['v2'], missing: [] });
    assert.deepEqual((await listTags(b.url, repo)).tags, ['v2']);
  } finally {
    await b.dispose();
    await a.dispose();
  }
});

test('a folder removed by hand while its index.json is being rewritten is not written back without its files or marker', async () => {
  // The rewrite a push schedules pauses between building index.json and renaming it into place.
  process.env.TRELLIS_FAULT_PAUSE_BEFORE_INDEX_RENAME_MS = '400';
  const reg = await startTestRegistry({ layoutCheckIntervalMs: 60_000, indexFlushMinMs: 0, indexFlushMaxMs: 10 })
    .finally(() => delete process.env.TRELLIS_FAULT_PAUSE_BEFORE_INDEX_RENAME_MS);
  try {
    const repo = 'removed/while-rewritten';
    assert.equal((await pushBuilt(reg.url, repo, 'v1', makeImage())).status, 201);
    await new Promise((resolve) => setTimeout(resolve, 150));
    await rm(join(reg.dataDir, repo), { recursive: true });
    await reg.registry.layout.flushAll();
    await reg.registry.layout.flushAll();
    const left = await stat(join(reg.dataDir, repo, 'index.json')).then(() => 'index.json', () => 'nothing');
    if (left === 'index.json') assert.deepEqual(await layoutAsToolsSeeIt(reg.dataDir, repo), { marker: true, tags: [], missing: [] });
    assert.deepEqual((await listTags(reg.url, repo)).tags ?? [], []);
  } finally {
    await reg.dispose();
  }
});
