// Serving layouts written by other tools, unchanged: the regctl-written fixture (fallback tags,
// nested indexes, a self-referencing entry) and a deliberately corrupt one; and outside edits of a
// layout Trellis writes: a stale copy never revives a deleted manifest, and the fields another
// tool put on its entries survive Trellis's rewrites.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { MAX_INDEX_BYTES } from '../../src/layout/reader.ts';
import { REF_NAME, getManifest, listTags, makeImage, makeReferrer, pushBuilt } from '../helpers/oci-client.ts';

const FIXTURES = resolve(import.meta.dirname, '../fixtures/olareg-layouts');
let reg: TestRegistry;
let dataDir: string;

interface IndexJson { manifests: { digest: string; mediaType: string; annotations?: Record<string, string> }[] }

before(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'trellis-foreign-'));
  await cp(join(FIXTURES, 'testrepo'), join(dataDir, 'testrepo'), { recursive: true });
  await cp(join(FIXTURES, 'corrupt'), join(dataDir, 'corrupt'), { recursive: true });
  reg = await startTestRegistry({}, dataDir);
});
after(async () => {
  await reg.dispose();
  await rm(dataDir, { recursive: true, force: true });
});

async function blobJson(digest: string): Promise<Record<string, unknown> | undefined> {
  try {
    return JSON.parse(await readFile(join(dataDir, 'testrepo/blobs/sha256', digest.slice(7)), 'utf8'));
  } catch {
    return undefined;
  }
}

test('every tag of the regctl-written layout is listed and pullable', async () => {
  const index = JSON.parse(await readFile(join(FIXTURES, 'testrepo/index.json'), 'utf8')) as IndexJson;
  const expected = [...new Set(index.manifests.map((d) => d.annotations?.['org.opencontainers.image.ref.name']).filter((t): t is string => !!t))].sort();
  const res = await fetch(`${reg.url}/v2/testrepo/tags/list`);
  const listed = ((await res.json()) as { tags: string[] }).tags;
  for (const tag of expected) {
    const entry = index.manifests.find((d) => d.annotations?.['org.opencontainers.image.ref.name'] === tag)!;
    if (!(await blobJson(entry.digest))) continue; // the fixture lists some digests whose blobs it omits
    assert.ok(listed.includes(tag), `tag ${tag} missing from ${listed.join(',')}`);
    const manifest = await fetch(`${reg.url}/v2/testrepo/manifests/${tag}`, { headers: { Accept: '*/*' } });
    assert.equal(manifest.status, 200, tag);
    assert.equal(manifest.headers.get('docker-content-digest'), entry.digest);
    await manifest.arrayBuffer();
  }
});

test('referrers recorded as fallback tags are served by the referrers API', async () => {
  const index = JSON.parse(await readFile(join(FIXTURES, 'testrepo/index.json'), 'utf8')) as IndexJson;
  const fallbackTags = index.manifests.filter((d) => /^sha256-[0-9a-f]{64}$/.test(d.annotations?.['org.opencontainers.image.ref.name'] ?? ''));
  assert.ok(fallbackTags.length > 0);
  let checked = 0;
  for (const entry of fallbackTags) {
    const subject = entry.annotations!['org.opencontainers.image.ref.name']!.replace('-', ':');
    const listing = (await blobJson(entry.digest)) as Partial<IndexJson> | undefined;
    if (!Array.isArray(listing?.manifests)) continue; // not an index: not a referrers listing
    const expected: string[] = [];
    for (const d of listing!.manifests!) {
      const referrer = await blobJson(d.digest);
      if ((referrer?.subject as { digest?: string } | undefined)?.digest === subject) expected.push(d.digest);
    }
    const res = await fetch(`${reg.url}/v2/testrepo/referrers/${subject}`);
    assert.equal(res.headers.get('content-type'), 'application/vnd.oci.image.index.v1+json');
    const got = ((await res.json()) as IndexJson).manifests.map((m) => m.digest);
    for (const digest of expected) assert.ok(got.includes(digest), `${digest} is a referrer of ${subject}`);
    checked += expected.length;
  }
  assert.ok(checked > 0, 'the fixture has verifiable referrers');
});

test('the layout is served without being rewritten', async () => {
  const original = await readFile(join(FIXTURES, 'testrepo/index.json'), 'utf8');
  assert.equal(await readFile(join(dataDir, 'testrepo/index.json'), 'utf8'), original);
});

test('a corrupt layout never crashes the server or gets a 5xx', async () => {
  for (const path of ['/v2/corrupt/tags/list', '/v2/corrupt/manifests/v1', `/v2/corrupt/referrers/sha256:${'0'.repeat(64)}`, '/v2/_catalog']) {
    const res = await fetch(`${reg.url}${path}`);
    assert.ok(res.status < 500, `${path}: ${res.status}`);
    await res.arrayBuffer();
  }
  assert.equal((await fetch(`${reg.url}/v2/`)).status, 200);
});

test('an index.json too large to read is reported like a corrupt one: no 5xx, and pushes still reach the layout', async () => {
  const edited = await startTestRegistry({ layoutCheckIntervalMs: 0 });
  try {
    const repo = 'too/large';
    assert.equal((await pushBuilt(edited.url, repo, 'v1', makeImage())).status, 201);
    await edited.registry.layout.flushAll();
    // Another tool leaves an index.json past the size Trellis reads (sparse: no bytes on disk).
    const path = join(edited.dataDir, repo, 'index.json');
    const file = await open(path, 'r+');
    await file.truncate(MAX_INDEX_BYTES + 1);
    await file.close();
    for (const path of [`/v2/${repo}/tags/list`, `/v2/${repo}/manifests/v1`]) {
      const res = await fetch(`${edited.url}${path}`, { headers: { Accept: '*/*' } });
      assert.equal(res.status, 200, path);
      await res.arrayBuffer();
    }
    assert.equal((await pushBuilt(edited.url, repo, 'v2', makeImage())).status, 201);
    await edited.registry.layout.flushAll();
    const after = JSON.parse(await readFile(path, 'utf8')) as IndexJson;
    assert.deepEqual(after.manifests.map((d) => d.annotations?.[REF_NAME]).sort(), ['v1', 'v2']);
  } finally {
    await edited.dispose();
  }
});

interface Entry { mediaType: string; digest: string; size: number; annotations?: Record<string, string>; [field: string]: unknown }

test('a manifest deleted through the API stays deleted when an outside edit based on an older index.json is merged', async () => {
  const edited = await startTestRegistry({ indexFlushMinMs: 60_000, indexFlushMaxMs: 60_000, layoutCheckIntervalMs: 0 });
  try {
    const repo = 'stale/copy';
    const gone = makeImage();
    const kept = makeImage();
    assert.equal((await pushBuilt(edited.url, repo, 'gone', gone)).status, 201);
    assert.equal((await pushBuilt(edited.url, repo, 'kept', kept)).status, 201);
    await edited.registry.layout.flushAll();
    const path = join(edited.dataDir, repo, 'index.json');
    const old = JSON.parse(await readFile(path, 'utf8')) as { manifests: Entry[] };
    assert.equal((await fetch(`${edited.url}/v2/${repo}/manifests/${gone.digest}`, { method: 'DELETE' })).status, 202);
    // Another tool, working from the copy it read before the delete, tags `kept` once more.
    old.manifests.push({ ...kept.descriptor, annotations: { [REF_NAME]: 'also' } });
    await writeFile(path, JSON.stringify(old));
    assert.deepEqual((await listTags(edited.url, repo)).tags, ['also', 'kept']);
    assert.equal((await getManifest(edited.url, repo, gone.digest)).status, 404);
    await edited.registry.layout.flushAll();
    assert.equal((await getManifest(edited.url, repo, gone.digest)).status, 404);
    const after = JSON.parse(await readFile(path, 'utf8')) as { manifests: Entry[] };
    assert.ok(!after.manifests.some((d) => d.digest === gone.digest), 'index.json lists the deleted manifest again');
    // Pushed again through the API, it is back as usual.
    assert.equal((await pushBuilt(edited.url, repo, 'gone', gone)).status, 201);
    assert.equal((await getManifest(edited.url, repo, 'gone')).status, 200);
  } finally {
    await edited.dispose();
  }
});

test('a manifest deleted through the API comes back when an outside tool tags it anew', async () => {
  const edited = await startTestRegistry({ indexFlushMinMs: 60_000, indexFlushMaxMs: 60_000, layoutCheckIntervalMs: 0 });
  try {
    const repo = 'stale/retag';
    const image = makeImage();
    assert.equal((await pushBuilt(edited.url, repo, 'v1', image)).status, 201);
    await edited.registry.layout.flushAll();
    const path = join(edited.dataDir, repo, 'index.json');
    const old = JSON.parse(await readFile(path, 'utf8')) as { manifests: Entry[] };
    assert.equal((await fetch(`${edited.url}/v2/${repo}/manifests/${image.digest}`, { method: 'DELETE' })).status, 202);
    // A tag the manifest never had is an outside tool's new decision, not a stale copy.
    old.manifests.push({ ...image.descriptor, annotations: { [REF_NAME]: 'v2' } });
    await writeFile(path, JSON.stringify(old));
    assert.deepEqual((await listTags(edited.url, repo)).tags, ['v2']);
    assert.equal((await getManifest(edited.url, repo, 'v2')).status, 200);
  } finally {
    await edited.dispose();
  }
});

test('rewriting index.json keeps every field of the entries another tool wrote', async () => {
  const edited = await startTestRegistry({ layoutCheckIntervalMs: 0 });
  try {
    const repo = 'umoci/made';
    const image = makeImage();
    const referrer = makeReferrer(image.descriptor, { artifactType: 'application/example' });
    assert.equal((await pushBuilt(edited.url, repo, 'seed', image)).status, 201);
    assert.equal((await pushBuilt(edited.url, repo, referrer.digest, referrer)).status, 201);
    await edited.registry.layout.flushAll();
    const path = join(edited.dataDir, repo, 'index.json');
    const index = JSON.parse(await readFile(path, 'utf8')) as { manifests: Entry[] };
    // What umoci and skopeo write: the ref name with their own annotations, a platform, and more.
    const tagged: Entry = {
      ...image.descriptor,
      annotations: { [REF_NAME]: 'umoci', 'org.opencontainers.image.created': '2024-01-02T03:04:05Z', 'com.example.note': 'kept' },
      platform: { architecture: 'arm64', os: 'linux', variant: 'v8' },
      urls: ['https://example.com/blob'],
      artifactType: 'application/vnd.example.thing',
    };
    const untagged = index.manifests.find((d) => d.digest === referrer.digest)!;
    Object.assign(untagged, { annotations: { ...untagged.annotations, 'com.example.note': 'untagged' }, platform: { architecture: 'amd64', os: 'linux' } });
    index.manifests.push(tagged);
    await writeFile(path, JSON.stringify(index));
    assert.deepEqual((await listTags(edited.url, repo)).tags, ['seed', 'umoci']);
    // Trellis rewrites index.json for a push of another tag.
    assert.equal((await pushBuilt(edited.url, repo, 'next', makeImage())).status, 201);
    await edited.registry.layout.flushAll();
    const after = JSON.parse(await readFile(path, 'utf8')) as { manifests: Entry[] };
    assert.ok(after.manifests.some((d) => d.annotations?.[REF_NAME] === 'next'), 'index.json was rewritten');
    assert.deepEqual(after.manifests.find((d) => d.annotations?.[REF_NAME] === 'umoci'), tagged);
    assert.deepEqual(after.manifests.find((d) => d.digest === referrer.digest && !d.annotations?.[REF_NAME]), untagged);
    // An entry Trellis wrote itself stays as it was.
    assert.deepEqual(after.manifests.find((d) => d.annotations?.[REF_NAME] === 'seed'), index.manifests.find((d) => d.annotations?.[REF_NAME] === 'seed'));
  } finally {
    await edited.dispose();
  }
});

test('rewriting index.json keeps the entries another tool wrote that Trellis cannot parse (a blake3 digest, an odd annotation)', async () => {
  const edited = await startTestRegistry({ layoutCheckIntervalMs: 0 });
  try {
    const repo = 'other/unparsed';
    assert.equal((await pushBuilt(edited.url, repo, 'seed', makeImage())).status, 201);
    await edited.registry.layout.flushAll();
    const path = join(edited.dataDir, repo, 'index.json');
    const index = JSON.parse(await readFile(path, 'utf8')) as { manifests: Record<string, unknown>[] };
    // blake3 is a registered algorithm of image-spec 1.1 that Trellis does not verify; the second
    // entry breaks the annotation rule. Neither is Trellis's to drop.
    const blake3 = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `blake3:${'ab'.repeat(32)}`, size: 10, annotations: { [REF_NAME]: 'b3' } };
    const odd = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'cd'.repeat(32)}`, size: 10, annotations: { [REF_NAME]: 'odd', count: 1 } };
    index.manifests.push(blake3, odd);
    await writeFile(path, JSON.stringify(index));
    assert.deepEqual((await listTags(edited.url, repo)).tags, ['seed']);
    assert.equal((await pushBuilt(edited.url, repo, 'next', makeImage())).status, 201);
    await edited.registry.layout.flushAll();
    const after = JSON.parse(await readFile(path, 'utf8')) as { manifests: Record<string, unknown>[] };
    assert.ok(after.manifests.some((d) => (d.annotations as Record<string, string>)[REF_NAME] === 'next'), 'index.json was rewritten');
    assert.deepEqual(after.manifests.filter((d) => d.digest === blake3.digest), [blake3]);
    assert.deepEqual(after.manifests.filter((d) => d.digest === odd.digest), [odd]);
  } finally {
    await edited.dispose();
  }
});
