// Generic components, the portable index's guarantees (deletes, concurrent pushes, re-pushes, an
// anchor that never changes), pagination, filters, errors, rate limits, and rebuilding by reindex.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { startTestRegistry, testStorage, type TestRegistry } from '../helpers/registry.ts';
import { getManifest, listReferrers, makeImage, pushBuilt, pushManifest } from '../helpers/oci-client.ts';
import { DEFAULT_SETTINGS } from '../../src/config/settings.ts';
import { Registry } from '../../src/content/registry.ts';
import { registryOptions } from '../../src/cli/serve.ts';
import { ANCHOR_DIGEST, allPages, getJson, pushComponentVersion, repositoryOf } from './ocm-client.ts';
import { Components, componentSettings } from '../../src/components/index.ts';
import { ComponentsApi } from '../../src/registry/components.ts';
import { RateLimiter } from '../../src/registry/rate-limit.ts';
import type { ApiContext } from '../../src/registry/context.ts';

const ENTRY = 'application/vnd.trellis.component-version.v1+json';
interface Summary { name: string; kind: string; repository: string; provider: string | null; latest: string; versionCount: number }
interface VersionEntry { version: string; tag: string | null; digest: string; repository: string }

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry({ componentRepositoryPrefixes: 'apps/, products/', queryRatePerSecond: 0 });
});
after(() => reg.dispose());

const versions = async (name: string) => (await getJson<{ versions: VersionEntry[] }>(`${reg.url}/v2/_trellis/components/versions?component=${name}`)).body.versions ?? [];
const entries = async (base = reg.url) => (await listReferrers(base, 'component-index', ANCHOR_DIGEST)).manifests.filter((m) => m.artifactType === ENTRY);
const entriesOf = async (name: string) => (await entries()).filter((m) => m.annotations?.['software.ocm.component.name'] === name);

test('generic components: by repository prefix and by annotation, versions from tags or org.opencontainers.image.version', async () => {
  const vendor = { 'org.opencontainers.image.vendor': 'ACME Corp' };
  for (const tag of ['1.0.0', '1.1.0', 'latest', 'nightly']) assert.equal((await pushBuilt(reg.url, 'apps/shop', tag, makeImage({ annotations: vendor }))).status, 201);
  assert.equal((await pushBuilt(reg.url, 'apps/shop', 'stable', makeImage({ annotations: { ...vendor, 'org.opencontainers.image.version': '2.0.0' } }))).status, 201);
  assert.equal((await pushBuilt(reg.url, 'misc/tool', 'v3', makeImage({ annotations: { 'dev.trellis.component': 'acme/tool' } }))).status, 201);
  assert.equal((await pushBuilt(reg.url, 'misc/plain', '1.0.0', makeImage())).status, 201);
  const list = (await getJson<{ components: Summary[] }>(`${reg.url}/v2/_trellis/components?q_kind__eq=generic`)).body.components;
  assert.deepEqual(list.map((c) => [c.name, c.repository, c.provider, c.latest, c.versionCount]), [
    ['acme/tool', 'misc/tool', null, 'v3', 1],
    ['apps/shop', 'apps/shop', 'ACME Corp', '2.0.0', 3],
  ]);
  assert.deepEqual((await versions('apps/shop')).map((v) => [v.version, v.tag]), [['2.0.0', 'stable'], ['1.1.0', '1.1.0'], ['1.0.0', '1.0.0']]);
  assert.equal((await entriesOf('apps/shop')).length, 3);
});

test('deleting a version removes it from listings and its portable entry; the anchor stays byte-identical', async () => {
  const name = 'example.com/deletable';
  const one = await pushComponentVersion(reg.url, { name, version: '1.0.0' });
  await pushComponentVersion(reg.url, { name, version: '2.0.0' });
  const anchorBefore = await getManifest(reg.url, 'component-index', ANCHOR_DIGEST);
  assert.equal((await entriesOf(name)).length, 2);
  const res = await fetch(`${reg.url}/v2/${one.repository}/manifests/${one.digest}`, { method: 'DELETE' });
  assert.equal(res.status, 202);
  assert.deepEqual((await versions(name)).map((v) => v.version), ['2.0.0']);
  assert.deepEqual((await entriesOf(name)).map((e) => e.annotations?.['software.ocm.component.version']), ['2.0.0']);
  const anchorAfter = await getManifest(reg.url, 'component-index', ANCHOR_DIGEST);
  assert.equal(anchorAfter.status, 200);
  assert.ok(anchorAfter.bytes.equals(anchorBefore.bytes));
  // Deleting the last version's tag removes the component from the list.
  assert.equal((await fetch(`${reg.url}/v2/${one.repository}/manifests/2.0.0`, { method: 'DELETE' })).status, 202);
  const list = (await getJson<{ components: Summary[] }>(`${reg.url}/v2/_trellis/components?q_name__eq=${name}`)).body.components;
  assert.deepEqual(list, []);
  assert.deepEqual(await entriesOf(name), []);
});

test('8 concurrent pushes of distinct versions give exactly 8 entries; pushing one again changes nothing', async () => {
  const name = 'example.com/concurrent';
  const pushed = await Promise.all(Array.from({ length: 8 }, (_, i) => pushComponentVersion(reg.url, { name, version: `0.${i}.0`, provider: 'race.org' })));
  assert.equal((await versions(name)).length, 8);
  const first = (await entriesOf(name)).map((e) => e.digest).sort();
  assert.equal(first.length, 8);
  const again = await getManifest(reg.url, pushed[3]!.repository, pushed[3]!.tag);
  assert.equal((await pushManifest(reg.url, pushed[3]!.repository, pushed[3]!.tag, again.bytes)).status, 201);
  await pushComponentVersion(reg.url, { name, version: '0.5.0', provider: 'race.org' });
  assert.deepEqual((await entriesOf(name)).map((e) => e.digest).sort(), first);
});

test('pagination: every component once, in a stable order, whatever the page size', async () => {
  for (let i = 0; i < 7; i++) await pushComponentVersion(reg.url, { name: `example.com/page/c${i}`, version: '1.0.0', prefix: i % 2 ? 'odd' : '' });
  const { all: everything } = await allPages<Summary>(reg.url, '/v2/_trellis/components', 'components');
  const keys = everything.map((c) => `${c.name}@${c.repository}`);
  assert.equal(new Set(keys).size, keys.length);
  assert.deepEqual(keys, [...keys].sort((a, b) => (a.split('@')[0]! < b.split('@')[0]! ? -1 : a.split('@')[0]! > b.split('@')[0]! ? 1 : a < b ? -1 : 1)));
  for (const n of [1, 2, 3, 5]) {
    const { pages, all } = await allPages<Summary>(reg.url, `/v2/_trellis/components?n=${n}`, 'components');
    assert.deepEqual(all.map((c) => `${c.name}@${c.repository}`), keys);
    assert.ok(pages.every((p) => p.length <= n));
  }
  const filtered = await allPages<Summary>(reg.url, '/v2/_trellis/components?n=2&q_name__contains=page/c', 'components');
  assert.deepEqual(filtered.all.map((c) => c.name), Array.from({ length: 7 }, (_, i) => `example.com/page/c${i}`));
  const paged = await allPages<VersionEntry>(reg.url, '/v2/_trellis/components/versions?component=example.com/concurrent&n=3', 'versions');
  assert.deepEqual(paged.all.map((v) => v.version), ['0.7.0', '0.6.0', '0.5.0', '0.4.0', '0.3.0', '0.2.0', '0.1.0', '0.0.0']);
});

test('filters by provider, name and repository; bad queries and parameters get 400 with an OCI error body', async () => {
  const byProvider = (await getJson<{ components: Summary[] }>(`${reg.url}/v2/_trellis/components?q_provider__eq=RACE.ORG`)).body.components;
  assert.deepEqual(byProvider.map((c) => c.name), ['example.com/concurrent']);
  const byRepo = (await getJson<{ components: Summary[] }>(`${reg.url}/v2/_trellis/components?q_repository__contains=odd/`)).body.components;
  assert.deepEqual(byRepo.map((c) => c.name), ['example.com/page/c1', 'example.com/page/c3', 'example.com/page/c5']);
  assert.deepEqual((await getJson<{ components: Summary[] }>(`${reg.url}/v2/_trellis/components?q_name__eq=nothing.here`)).body.components, []);
  for (const query of ['q_colour__eq=red', 'q_name__resembles=x', 'n=-1', 'n=abc']) {
    const answer = await getJson<{ errors: { code: string; message: string }[] }>(`${reg.url}/v2/_trellis/components?${query}`);
    assert.equal(answer.status, 400, query);
    assert.ok(answer.body.errors[0]!.code && answer.body.errors[0]!.message, query);
  }
  for (const query of ['component=example.com/concurrent&constraint=', 'component=example.com/concurrent&order=sideways', 'component=example.com/concurrent&latest=maybe']) {
    assert.equal((await getJson(`${reg.url}/v2/_trellis/components/versions?${query}`)).status, 400, query);
  }
  assert.equal((await getJson(`${reg.url}/v2/_trellis/components/nowhere`)).status, 404);
  assert.equal((await fetch(`${reg.url}/v2/_trellis/components`, { method: 'DELETE' })).status, 405);
  const discover = await getJson<{ extensions: { name: string; endpoints: string[] }[] }>(`${reg.url}/v2/_oci/ext/discover`);
  assert.ok(discover.body.extensions.some((e) => e.endpoints.includes('_trellis/components/owners')));
});

test('listings drop components the caller cannot pull before paginating', async () => {
  const components = await Components.open(reg.registry, componentSettings({ ...DEFAULT_SETTINGS, componentRepositoryPrefixes: 'apps/, products/' }), pino({ level: 'silent' }));
  const api = new ComponentsApi(components);
  const hidden = (repository: string) => repository.startsWith('odd/');
  const call = async (path: string) => {
    let status = 0;
    let headers: Record<string, unknown> = {};
    let body: Buffer = Buffer.alloc(0);
    const res = {
      writeHead(s: number, h: Record<string, unknown>) { status = s; headers = h; },
      end(b?: Buffer) { body = b ?? Buffer.alloc(0); },
    };
    const ctx = {
      req: { method: 'GET' }, res, url: new URL(path, 'http://registry.invalid'), head: false, registry: reg.registry,
      limits: { maxManifestBytes: 4 << 20, maxListPage: 1000, defaultReferrersPage: 250, maxReferrersBytes: 4 << 20, bodyIdleTimeoutMs: 0 }, log: pino({ level: 'silent' }),
      access: { canPull: (repository: string) => !hidden(repository) }, rateLimits: { query: new RateLimiter({ perSecond: 0, burst: 0 }) }, client: 'test',
    } as unknown as ApiContext;
    await api.handle(ctx);
    return { status, headers, json: JSON.parse(body.toString()) as Record<string, unknown> };
  };
  const seen: string[] = [];
  let path: string | undefined = '/v2/_trellis/components?n=1&q_name__contains=page/c';
  while (path) {
    const page = await call(path);
    assert.equal(page.status, 200);
    const items = page.json.components as Summary[];
    assert.equal(items.length, 1, 'a hidden component must not leave a page short');
    seen.push(...items.map((c) => c.repository));
    const link = page.headers.Link as string | undefined;
    path = link ? /<([^>]+)>/.exec(link)![1] : undefined;
  }
  assert.deepEqual(seen, [0, 2, 4, 6].map((i) => `component-descriptors/example.com/page/c${i}`));
  assert.equal((await call('/v2/_trellis/components/versions?component=example.com/page/c1').catch((err: { status: number }) => ({ status: err.status }))).status, 404);
});

test('component requests are rate limited per client with 429 and Retry-After', async () => {
  const limited = await startTestRegistry({ queryRatePerSecond: 1, queryRateBurst: 2 });
  try {
    const statuses = [];
    let retry: string | null = null;
    for (let i = 0; i < 4; i++) {
      const res = await fetch(`${limited.url}/v2/_trellis/components`);
      statuses.push(res.status);
      if (res.status === 429) {
        retry = res.headers.get('retry-after');
        assert.equal(((await res.json()) as { errors: { code: string }[] }).errors[0]!.code, 'TOOMANYREQUESTS');
      } else {
        await res.arrayBuffer();
      }
    }
    assert.deepEqual(statuses.slice(0, 2), [200, 200]);
    assert.equal(statuses[3], 429);
    assert.ok(Number(retry) >= 1);
  } finally {
    await limited.dispose();
  }
});

test('reindex rebuilds identical component listings and portable index', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-components-reindex-'));
  const overrides = { componentRepositoryPrefixes: 'apps/' };
  let server = await startTestRegistry(overrides, dir);
  try {
    await pushComponentVersion(server.url, { name: 'example.com/kept', version: '1.0.0+build.7', labels: { tier: 'gold' } });
    await pushComponentVersion(server.url, { name: 'example.com/kept', version: '1.1.0', v2: true, prefix: 'ocm' });
    await pushBuilt(server.url, 'apps/web', '3.2.1', makeImage({ annotations: { 'org.opencontainers.image.vendor': 'web.org' } }));
    // A rebuild takes push times from the files, a few milliseconds off the original: left out.
    const timeless = (value: unknown) => JSON.parse(JSON.stringify(value, (key, v: unknown) => (key === 'pushedAt' ? undefined : v))) as unknown;
    const snapshot = async (base: string) => timeless({
      components: (await getJson(`${base}/v2/_trellis/components`)).body,
      versions: (await getJson(`${base}/v2/_trellis/components/versions?component=example.com/kept`)).body,
      detail: (await getJson(`${base}/v2/_trellis/components/version?component=example.com/kept&version=1.1.0`)).body,
      entries: (await entries(base)).map((e) => e.digest).sort(),
    });
    const before = (await snapshot(server.url)) as { entries: string[] };
    assert.equal(before.entries.length, 3);
    await server.dispose();
    // The same index and storage the registry used (PostgreSQL and S3 in those passes).
    const settings = { ...DEFAULT_SETTINGS, data: dir, ...overrides, metadata: server.metadata, ...(await testStorage(dir)) };
    await Registry.rebuildIndex(registryOptions(settings, pino({ level: 'silent' })));
    server = await startTestRegistry(overrides, dir);
    assert.deepEqual(await snapshot(server.url), before);
    assert.equal(repositoryOf({ name: 'example.com/kept', prefix: 'ocm' }), 'ocm/component-descriptors/example.com/kept');
  } finally {
    await server.dispose();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a registry closed before its start-up walk ended logs no error from the component derivation waiting for it', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-components-close-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const settings = { ...DEFAULT_SETTINGS, data: dir, componentRepositoryPrefixes: 'apps/' };
  const errors: string[] = [];
  const log = pino({ level: 'debug' }, { write: (line: string) => { if (JSON.parse(line).level >= 50) errors.push(line); } });
  // The walk never starts (the server never listened): the derivation waits for it, and the
  // close lets it go just as the index closes.
  const registry = await Registry.open({ ...registryOptions(settings, log), adoptInBackground: true, catchUpAfter: new Promise<void>(() => undefined) });
  const components = await Components.open(registry, componentSettings(settings), log, { background: true });
  await registry.close();
  await components.ready;
  assert.deepEqual(errors, []);
});

test('paging the components list visits names beyond the Basic Multilingual Plane too (cursor in the index order)', async () => {
  // The index lists names in code-point order: `uni\uFFFD` before `uni😀`, which UTF-16 order reverses.
  for (const [repo, name] of [['uni/a', 'uni😀'], ['uni/b', 'uni\uFFFD'], ['uni/c', 'uniz']] as const) {
    assert.equal((await pushBuilt(reg.url, repo, '1.0.0', makeImage({ annotations: { 'dev.trellis.component': name } }))).status, 201);
  }
  const whole = (await getJson<{ components: Summary[] }>(`${reg.url}/v2/_trellis/components?q_name__contains=uni`)).body.components.map((c) => c.name);
  assert.deepEqual(whole, ['uniz', 'uni\uFFFD', 'uni😀']);
  const { all } = await allPages<Summary>(reg.url, '/v2/_trellis/components?q_name__contains=uni&n=1', 'components');
  assert.deepEqual(all.map((c) => c.name), whole);
});

test('a NUL in a component name neither stalls its repository\'s listing nor fails a lookup, on either metadata store', async () => {
  const good = makeImage({ annotations: { 'dev.trellis.component': 'nul/good' } });
  assert.equal((await pushBuilt(reg.url, 'nulcomp/a', '1.0.0', good)).status, 201);
  assert.equal((await pushBuilt(reg.url, 'nulcomp/a', '2.0.0', makeImage({ annotations: { 'dev.trellis.component': 'nul/bad\u0000name' } }))).status, 201);
  // The repository is derived again after this delete: the good version must leave the listing.
  assert.equal((await fetch(`${reg.url}/v2/nulcomp/a/manifests/${good.digest}`, { method: 'DELETE' })).status, 202);
  const list = (await getJson<{ components: Summary[] }>(`${reg.url}/v2/_trellis/components?q_repository__eq=nulcomp/a`)).body.components;
  assert.deepEqual(list.map((c) => [c.name, c.latest]), [['nul/bad\uFFFDname', '2.0.0']]);
  for (const path of ['versions?component=nul/bad%00name', 'version?component=nul/bad%00name&version=2.0.0', 'versions?component=%00']) {
    const answer = await getJson<{ errors?: { code: string }[] }>(`${reg.url}/v2/_trellis/components/${path}`);
    assert.ok(answer.status === 200 || answer.status === 404, `${path}: ${answer.status} ${JSON.stringify(answer.body)}`);
  }
  assert.equal((await getJson(`${reg.url}/v2/_trellis/components/versions?component=nul/bad%00name`)).status, 200);
});
