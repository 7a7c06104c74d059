// The query extension over HTTP: q_ filters on referrers, registry-wide referrers and search,
// sorting, pagination, errors, rate limits, and results that survive a rebuild of the index.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { cliEnv, startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { makeImage, makeReferrer, pushBuilt, OCI_INDEX, type Built } from '../helpers/oci-client.ts';

const SPDX = 'application/spdx+json';
const NOTATION = 'application/vnd.cncf.notary.signature';
const COSIGN = 'application/vnd.dev.cosign.artifact.sig.v1+json';
const THUMBPRINT = 'io.cncf.notary.x509chain.thumbprint#S256';
const VERSION = 'org.opencontainers.image.version';
const CREATED = 'org.opencontainers.image.created';

let reg: TestRegistry;
const images: Record<string, Built> = {};
const sboms: Built[] = [];
let signatureA: Built;

interface Listed { digest: string; artifactType?: string; annotations?: Record<string, string>; repository?: string; tags?: string[] }

async function get(path: string): Promise<{ status: number; headers: Headers; json: any }> {
  const res = await fetch(`${reg.url}${path}`);
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : undefined };
}

/** Every item of a listing, following Link pages; fails on a repeated item. */
async function all(path: string, key: 'manifests' | 'results'): Promise<{ items: Listed[]; pages: number }> {
  const items: Listed[] = [];
  let url: string | undefined = path;
  let pages = 0;
  while (url) {
    const answer = await get(url);
    assert.equal(answer.status, 200, JSON.stringify(answer.json));
    items.push(...(answer.json[key] as Listed[]));
    pages++;
    const link = answer.headers.get('link');
    url = link ? /<([^>]+)>/.exec(link)![1] : undefined;
  }
  const ids = items.map((i) => `${i.repository ?? ''}@${i.digest}`);
  assert.equal(new Set(ids).size, ids.length, 'no item twice');
  return { items, pages };
}

async function push(repo: string, ref: string, item: Built): Promise<void> {
  const pushed = await pushBuilt(reg.url, repo, ref, item);
  assert.equal(pushed.status, 201, pushed.body.toString());
}

before(async () => {
  reg = await startTestRegistry({ queryRatePerSecond: 0 });
  const versions: [string, string][] = [['v1.2.0', '1.2.0'], ['v1.10.0', '1.10.0'], ['v2.0.0-rc.1', '2.0.0-rc.1'], ['v0.9', '0.9']];
  for (const [tag, version] of versions) {
    images[version] = makeImage({ annotations: { [VERSION]: version, [CREATED]: `2024-0${versions.findIndex((v) => v[1] === version) + 1}-01T00:00:00Z` } });
    await push('shop/app', tag, images[version]!);
  }
  await push('shop/app', 'latest', images['1.10.0']!);
  const subject = images['1.10.0']!.descriptor;
  for (const [i, created] of ['2024-05-01T10:00:00Z', '2024-07-01T10:00:00+02:00', '2024-06-15T00:00:00Z'].entries()) {
    const sbom = makeReferrer(subject, { artifactType: SPDX, annotations: { [CREATED]: created, n: String(i) } });
    sboms.push(sbom);
    await push('shop/app', sbom.digest, sbom);
  }
  signatureA = makeReferrer(subject, { artifactType: NOTATION, annotations: { [THUMBPRINT]: '["AAAA1111","BBBB2222"]' } });
  await push('shop/app', signatureA.digest, signatureA);
  const signatureB = makeReferrer(subject, { artifactType: NOTATION, annotations: { [THUMBPRINT]: '["CCCC3333"]' } });
  await push('shop/app', signatureB.digest, signatureB);
  const cosign = makeReferrer(subject, { artifactType: COSIGN });
  await push('shop/app', cosign.digest, cosign);
  images.other = makeImage({ annotations: { [VERSION]: '3.1.0' } });
  await push('team/other', 'stable', images.other);
  const otherSbom = makeReferrer(images.other.descriptor, { artifactType: SPDX, annotations: { [CREATED]: '2023-01-01T00:00:00Z' } });
  await push('team/other', otherSbom.digest, otherSbom);
});

after(() => reg.dispose());

test('referrers take q_ filters, including annotation keys with dots and #, and say which applied', async () => {
  const subject = images['1.10.0']!.digest;
  const answer = await get(`/v2/shop/app/referrers/${subject}?q_annotations__${encodeURIComponent(THUMBPRINT)}__contains=bbbb2222`);
  assert.equal(answer.status, 200);
  assert.equal(answer.headers.get('content-type'), OCI_INDEX);
  assert.equal(answer.headers.get('oci-filters-applied'), `q_annotations__${THUMBPRINT.toLowerCase()}__contains`);
  assert.deepEqual(answer.json.manifests.map((m: Listed) => m.digest), [signatureA.digest]);

  const both = await get(`/v2/shop/app/referrers/${subject}?artifactType=${encodeURIComponent(SPDX)}&q_annotations__n__ne=1`);
  assert.equal(both.headers.get('oci-filters-applied'), 'artifactType,q_annotations__n__ne');
  assert.deepEqual(new Set(both.json.manifests.map((m: Listed) => m.digest)), new Set([sboms[0]!.digest, sboms[2]!.digest]));

  // Proposal F's own spelling: fields of the listed descriptors under manifests__
  const sizes = (await get(`/v2/shop/app/referrers/${subject}`)).json.manifests.map((m: { size: number }) => m.size).sort((a: number, b: number) => a - b);
  const [low, high] = [sizes[0], sizes[sizes.length - 1]];
  const ranged = await get(`/v2/shop/app/referrers/${subject}?q_manifests__size__gt=${low}&q_manifests__size__lt=${high}&q_manifests__mediatype__contains=OCI`);
  assert.deepEqual(ranged.json.manifests.map((m: { size: number }) => m.size).sort((a: number, b: number) => a - b), sizes.filter((n: number) => n > low && n < high));
  assert.ok(ranged.json.manifests.length > 0);

  const none = await get(`/v2/shop/app/referrers/${subject}?q_artifacttype__eq=application/none`);
  assert.equal(none.status, 200);
  assert.deepEqual(none.json.manifests, []);
});

test('the newest SBOM of an image is one request: sort by created (as time, with offsets), descending, n=1', async () => {
  const subject = images['1.10.0']!.digest;
  const answer = await get(`/v2/shop/app/referrers/${subject}?artifactType=${encodeURIComponent(SPDX)}&sort=created&order=desc&n=1`);
  assert.equal(answer.status, 200);
  // 2024-07-01T10:00+02:00 is 08:00Z, still the newest; 2024-06-15 second.
  assert.deepEqual(answer.json.manifests.map((m: Listed) => m.digest), [sboms[1]!.digest]);
  const page = await all(`/v2/shop/app/referrers/${subject}?artifactType=${encodeURIComponent(SPDX)}&sort=created&order=desc&n=1`, 'manifests');
  assert.deepEqual(page.items.map((m) => m.digest), [sboms[1]!.digest, sboms[2]!.digest, sboms[0]!.digest]);
  assert.equal(page.pages, 3);
});

test('every image whose version is above 1.4.0 is one request, in semver order', async () => {
  const { items } = await all(`/v2/_trellis/search?q_annotations__${VERSION}__gt=1.4.0&sort=version`, 'results');
  assert.deepEqual(items.map((i) => `${i.repository}:${i.annotations?.[VERSION]}`), ['shop/app:1.10.0', 'shop/app:2.0.0-rc.1', 'team/other:3.1.0']);
  const app = items[0]!;
  assert.deepEqual(app.tags, ['latest', 'v1.10.0']);
  const old = await all(`/v2/_trellis/search?q_annotations__${VERSION}__lte=1.2.0&q_repository__eq=shop/app`, 'results');
  assert.deepEqual(new Set(old.items.map((i) => i.annotations?.[VERSION])), new Set(['0.9', '1.2.0']));
  const tagged = await all('/v2/_trellis/search?q_tag__eq=STABLE', 'results');
  assert.deepEqual(tagged.items.map((i) => i.digest), [images.other!.digest]);
  const bySize = await all(`/v2/_trellis/search?q_size__gt=0&q_layers__mediatype__contains=layer&q_repository__contains=team/`, 'results');
  assert.deepEqual(bySize.items.map((i) => i.digest), [images.other!.digest]);
});

test('registry-wide references name their repository; pages visit every match once', async () => {
  const { items, pages } = await all(`/v2/_oci/references?q_artifacttype__eq=${encodeURIComponent(SPDX)}&n=1`, 'manifests');
  assert.equal(pages, 4);
  assert.deepEqual(items.map((i) => i.repository).sort(), ['shop/app', 'shop/app', 'shop/app', 'team/other']);
  const everything = await all('/v2/_oci/references?n=2', 'manifests');
  assert.equal(everything.items.length, 7);
  const sorted = await all(`/v2/_oci/references?sort=created&order=asc&n=2`, 'manifests');
  assert.deepEqual(sorted.items.map((i) => i.annotations?.[CREATED]), ['2023-01-01T00:00:00Z', '2024-05-01T10:00:00Z', '2024-06-15T00:00:00Z', '2024-07-01T10:00:00+02:00']);
  const discover = await get('/v2/_oci/ext/discover');
  assert.ok(discover.json.extensions.some((e: { endpoints: string[] }) => e.endpoints.includes('_oci/references')));
});

test('invalid queries get 400 with an OCI error body naming the problem; valid ones with no match get 200 and nothing', async () => {
  for (const [query, message] of [
    ['q_annotations__nope.key__eq=1', /no item has the attribute "annotations__nope.key"/],
    ['q_size__around=1', /unknown comparison "around"/],
    ['q_size__gt=big', /gt needs a number/],
    ['sort=size&last=garbage', /last is not a cursor/],
  ] as const) {
    for (const path of ['/v2/_oci/references', '/v2/_trellis/search', `/v2/shop/app/referrers/${images['1.2.0']!.digest}`]) {
      const answer = await get(`${path}?${query}`);
      assert.equal(answer.status, 400, `${path}?${query}`);
      assert.equal(answer.json.errors[0].code, 'QUERY_INVALID');
      assert.match(answer.json.errors[0].message, message);
    }
  }
  const empty = await get('/v2/_trellis/search?q_mediatype__eq=application/nothing');
  assert.equal(empty.status, 200);
  assert.deepEqual(empty.json.results, []);
});

test('a pushed referrer is found at once, a deleted one is gone, and a rebuilt index answers the same', async () => {
  const subject = images['1.2.0']!;
  const fresh = makeReferrer(subject.descriptor, { artifactType: 'application/vnd.in-toto+json', annotations: { 'predicate.type': 'https://slsa.dev/provenance/v1' } });
  await push('shop/app', fresh.digest, fresh);
  const found = await get('/v2/_oci/references?q_annotations__predicate.type__contains=slsa.dev');
  assert.deepEqual(found.json.manifests.map((m: Listed) => m.digest), [fresh.digest]);
  const removed = await fetch(`${reg.url}/v2/shop/app/manifests/${fresh.digest}`, { method: 'DELETE' });
  assert.equal(removed.status, 202);
  const gone = await get('/v2/_oci/references?q_annotations__predicate.type__contains=slsa.dev');
  assert.deepEqual(gone.json.manifests, []);

  const queries = ['/v2/_oci/references?n=3', `/v2/_trellis/search?sort=pushed&order=desc`, `/v2/_trellis/search?q_annotations__${VERSION}__gte=1`];
  const before = await Promise.all(queries.map((q) => all(q, q.includes('search') ? 'results' : 'manifests')));
  await reg.close();
  await promisify(execFile)(process.execPath, [resolve(import.meta.dirname, '../../src/main.ts'), 'reindex', '--data', reg.dataDir], { env: await cliEnv(reg.dataDir) });
  const restarted = await startTestRegistry({ queryRatePerSecond: 0 }, reg.dataDir);
  const oldUrl = reg.url;
  Object.assign(reg, { url: restarted.url, close: restarted.close, dispose: restarted.dispose });
  const afterRebuild = await Promise.all(queries.map((q) => all(q, q.includes('search') ? 'results' : 'manifests')));
  // The same matches; unsorted queries list them in index order, which a rebuild may change, and
  // push times come back from the files' modification times.
  const strip = (r: { items: Listed[] }) => r.items.map((i) => JSON.stringify({ ...i, pushedAt: undefined })).sort();
  for (let i = 0; i < queries.length; i++) assert.deepEqual(strip(afterRebuild[i]!), strip(before[i]!), `${queries[i]} after reindex (was ${oldUrl})`);
});

test('queries are rate limited per client: 429 TOOMANYREQUESTS with Retry-After', async () => {
  const limited = await startTestRegistry({ queryRatePerSecond: 0.5, queryRateBurst: 2 });
  try {
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 3; i++) {
      last = await fetch(`${limited.url}/v2/_trellis/search`);
      statuses.push(last.status);
    }
    assert.deepEqual(statuses, [200, 200, 429]);
    assert.equal(last!.headers.get('retry-after'), '2');
    assert.equal(((await last!.json()) as { errors: { code: string }[] }).errors[0]!.code, 'TOOMANYREQUESTS');
    // plain registry endpoints are not limited
    assert.equal((await fetch(`${limited.url}/v2/`)).status, 200);
  } finally {
    await limited.dispose();
  }
});

test('the catalog lists a namespace: the whole subtree, or only its direct children, paginated', async () => {
  for (const name of ['ns/ko-build/a', 'ns/ko-build/b/deep', 'ns/ko-build/c', 'ns/ko-buildx', 'ns/other']) {
    assert.equal((await pushBuilt(reg.url, name, 'v1', makeImage())).status, 201);
  }
  const list = async (query: string) => {
    const names: string[] = [];
    let url: string | undefined = `/v2/_catalog?${query}`;
    while (url) {
      const answer = await get(url);
      assert.equal(answer.status, 200);
      names.push(...answer.json.repositories);
      const link = answer.headers.get('link');
      url = link ? /<([^>]+)>/.exec(link)![1] : undefined;
    }
    return names;
  };
  assert.deepEqual(await list('prefix=ns/ko-build&n=1'), ['ns/ko-build/a', 'ns/ko-build/b/deep', 'ns/ko-build/c']);
  assert.deepEqual(await list('prefix=ns/ko-build/&children=true&n=1'), ['ns/ko-build/a', 'ns/ko-build/c']);
  assert.equal((await get('/v2/_catalog?prefix=../etc')).status, 400);
});

test('a NUL in an annotation key or value is pushed and queried like any text, on either metadata store', async () => {
  const nul = makeImage({ annotations: { 'nul\u0000key': 'a\u0000b', plain: 'x\u0000y', 'rank\u0000': '5' } });
  await push('nul/app', 'v1', nul);
  for (const query of ['q_annotations__nul%00key__eq=a%00b', 'q_annotations__plain__contains=%00', 'q_annotations__nul%00key__exists=true', 'sort=annotations__rank%00&order=desc']) {
    const answer = await get(`/v2/_trellis/search?${query}`);
    assert.equal(answer.status, 200, `${query}: ${JSON.stringify(answer.json)}`);
    assert.deepEqual(answer.json.results.map((r: Listed) => r.digest), [nul.digest], query);
    assert.equal(answer.json.results[0].annotations.plain, 'x\u0000y', 'annotations are answered as pushed');
  }
  for (const path of ['/v2/_trellis/search', '/v2/_oci/references', `/v2/nul/app/referrers/${nul.digest}`]) {
    const none = await get(`${path}?q_annotations__plain__eq=%00`);
    assert.equal(none.status, 200, `${path}: ${JSON.stringify(none.json)}`);
    assert.deepEqual(none.json.results ?? none.json.manifests, []);
  }
});

test('OCI-Filters-Applied names a parameter with an annotation key beyond ASCII percent-encoded, instead of failing the answer (500)', async () => {
  const subject = images['1.2.0']!;
  const priced = makeReferrer(subject.descriptor, { artifactType: 'application/vnd.example.price', annotations: { 'preis€': '5', 'a,b': 'c' } });
  await push('shop/app', priced.digest, priced);
  for (const path of [`/v2/shop/app/referrers/${subject.digest}`, '/v2/_oci/references']) {
    const answer = await get(`${path}?q_annotations__preis%E2%82%AC__eq=5&q_annotations__a%2Cb__exists=true`);
    assert.equal(answer.status, 200, `${path}: ${JSON.stringify(answer.json)}`);
    assert.deepEqual(answer.json.manifests.map((m: Listed) => m.digest), [priced.digest]);
    assert.equal(answer.headers.get('oci-filters-applied'), 'q_annotations__preis%E2%82%AC__eq,q_annotations__a%2Cb__exists');
  }
  const removed = await fetch(`${reg.url}/v2/shop/app/manifests/${priced.digest}`, { method: 'DELETE' });
  assert.equal(removed.status, 202);
});
