// Serving layouts written by other tools, unchanged: the regctl-written fixture (fallback tags,
// nested indexes, a self-referencing entry) and a deliberately corrupt one.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';

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
