// The browsing endpoints: the namespace tree, tag details and attribute names, open and with
// access control (hidden repositories leave no trace in entries, counts, cursors or names).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { OCI_INDEX, OCI_MANIFEST, makeImage, pushBuilt, pushManifest } from '../helpers/oci-client.ts';
import { startAuthRegistry } from '../auth/setup.ts';

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry();
});
after(() => reg.dispose());

const get = async (path: string) => {
  const res = await fetch(`${reg.url}${path}`);
  return { status: res.status, link: res.headers.get('link'), body: (await res.json()) as any };
};

test('the tree lists the direct entries of a namespace, with repositories below each', async () => {
  for (const repo of ['a', 'a/b', 'a/b/c', 'a/d/e', 'a-x', 'z/y']) assert.equal((await pushBuilt(reg.url, repo, 'v1', makeImage())).status, 201);
  const root = await get('/v2/_trellis/tree');
  assert.equal(root.status, 200);
  assert.deepEqual(root.body.entries, [
    { name: 'a', repository: true, descendants: 3 },
    { name: 'a-x', repository: true, descendants: 0 },
    { name: 'z', repository: false, descendants: 1 },
  ]);
  const a = await get('/v2/_trellis/tree?prefix=a');
  assert.deepEqual(a.body.entries, [{ name: 'a/b', repository: true, descendants: 1 }, { name: 'a/d', repository: false, descendants: 1 }]);
  assert.equal((await get('/v2/_trellis/tree?prefix=a/')).body.entries.length, 2);
  const first = await get('/v2/_trellis/tree?n=2');
  assert.deepEqual(first.body.entries.map((e: { name: string }) => e.name), ['a', 'a-x']);
  assert.equal(first.link, '</v2/_trellis/tree?n=2&last=a-x>; rel="next"');
  const second = await get('/v2/_trellis/tree?n=2&last=a-x');
  assert.deepEqual(second.body.entries.map((e: { name: string }) => e.name), ['z']);
  assert.equal(second.link, null);
  const bad = await get('/v2/_trellis/tree?prefix=..%2Fetc');
  assert.equal(bad.status, 400);
  assert.equal(bad.body.errors[0].code, 'NAME_INVALID');
  assert.equal((await fetch(`${reg.url}/v2/_trellis/tree`, { method: 'POST' })).status, 405);
});

test('tag details: digest, kind, total size, platforms and push time, paged with Link', async () => {
  const amd = makeImage({ config: { architecture: 'amd64', os: 'linux' } });
  const arm = makeImage({ config: { architecture: 'arm64', os: 'linux', variant: 'v8' } });
  assert.equal((await pushBuilt(reg.url, 'multi', 'amd', amd)).status, 201);
  assert.equal((await pushBuilt(reg.url, 'multi', 'arm', arm)).status, 201);
  const index = {
    schemaVersion: 2, mediaType: OCI_INDEX, manifests: [
      { mediaType: OCI_MANIFEST, digest: amd.digest, size: amd.bytes.length, platform: { os: 'linux', architecture: 'amd64' } },
      { mediaType: OCI_MANIFEST, digest: arm.digest, size: arm.bytes.length, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ],
  };
  const before = Date.now();
  const pushed = await pushManifest(reg.url, 'multi', 'all', index, OCI_INDEX);
  assert.equal(pushed.status, 201);
  const { status, body } = await get('/v2/multi/_trellis/tags');
  assert.equal(status, 200);
  assert.deepEqual(body.tags.map((t: { tag: string }) => t.tag), ['all', 'amd', 'arm']);
  const [all, amdTag, armTag] = body.tags;
  assert.equal(all.digest, pushed.digest);
  assert.equal(all.mediaType, OCI_INDEX);
  assert.deepEqual(all.platforms, ['linux/amd64', 'linux/arm64/v8']);
  const indexBytes = Buffer.byteLength(JSON.stringify(index));
  assert.equal(all.size, indexBytes + amd.bytes.length + arm.bytes.length);
  assert.ok(Date.parse(all.pushedAt) >= before - 1000);
  assert.deepEqual(amdTag.platforms, ['linux/amd64']);
  assert.deepEqual(armTag.platforms, ['linux/arm64/v8']);
  assert.equal(amdTag.size, amd.bytes.length + amd.blobs.reduce((s, b) => s + b.length, 0));
  assert.equal(amdTag.artifactType, 'application/vnd.oci.image.config.v1+json');

  const page = await get('/v2/multi/_trellis/tags?n=1&last=all');
  assert.deepEqual(page.body.tags.map((t: { tag: string }) => t.tag), ['amd']);
  assert.equal(page.link, '</v2/multi/_trellis/tags?n=1&last=amd>; rel="next"');
  assert.equal((await get('/v2/nothing-here/_trellis/tags')).status, 404);
  assert.equal((await get('/v2/multi/_trellis/tags?n=x')).status, 400);
});

test('attribute names: what queries accept, including registry facts and annotation keys', async () => {
  assert.equal((await pushBuilt(reg.url, 'annotated', 'v1', makeImage({ annotations: { 'org.example.Team': 'blue' } }))).status, 201);
  const { body } = await get('/v2/_trellis/attributes');
  for (const path of ['repository', 'tag', 'digest', 'pushedat', 'artifacttype', 'config__mediatype', 'annotations__org.example.team']) {
    assert.ok(body.attributes.includes(path), path);
  }
  const annotations = await get('/v2/_trellis/attributes?prefix=annotations__');
  assert.deepEqual(annotations.body.attributes, ['annotations__org.example.team']);
  // Each suggestion is accepted by the query endpoints.
  for (const path of body.attributes as string[]) {
    assert.equal((await fetch(`${reg.url}/v2/_trellis/search?q_${path}__exists=true&n=1`)).status, 200, path);
  }
});

test('with access control, browsing reveals nothing a caller cannot pull', { timeout: 60_000 }, async (t) => {
  const r = await startAuthRegistry(t, {
    users: ['admin', 'bob'],
    auth: { admins: { users: ['admin'] }, policies: { '*': { authenticated: ['pull'] }, 'team/secret': { users: {} }, 'vault': { users: {} } } },
  });
  const admin = r.basic('admin');
  const bob = r.basic('bob');
  for (const repo of ['team/app', 'team/secret', 'team/secret/deep', 'vault/x', 'open']) {
    const annotations: Record<string, string> = repo.startsWith('vault') || repo.includes('secret') ? { 'com.hidden.marker': 'x' } : { 'com.open.marker': 'y' };
    assert.equal((await r.push(repo, 'v1', admin, makeImage({ annotations }))).status, 201);
  }
  const root = (await r.call('/v2/_trellis/tree', { auth: bob })).json();
  assert.deepEqual(root.entries, [{ name: 'open', repository: true, descendants: 0 }, { name: 'team', repository: false, descendants: 1 }]);
  assert.deepEqual((await r.call('/v2/_trellis/tree?prefix=team', { auth: bob })).json().entries, [{ name: 'team/app', repository: true, descendants: 0 }]);
  assert.equal((await r.call('/v2/_trellis/tree?prefix=vault', { auth: bob })).json().entries.length, 0);
  assert.equal((await r.call('/v2/_trellis/tree', { auth: admin })).json().entries.length, 3);

  const names = (await r.call('/v2/_trellis/attributes?prefix=annotations__', { auth: bob })).json().attributes;
  assert.deepEqual(names, ['annotations__com.open.marker']);
  const all = (await r.call('/v2/_trellis/attributes?prefix=annotations__', { auth: admin })).json().attributes;
  assert.deepEqual(all, ['annotations__com.hidden.marker', 'annotations__com.open.marker']);

  assert.equal((await r.call('/v2/team/secret/_trellis/tags', { auth: bob })).status, 403);
  assert.equal((await r.call('/v2/team/secret/_trellis/tags')).status, 401);
  assert.equal((await r.call('/v2/team/app/_trellis/tags', { auth: bob })).json().tags[0].tag, 'v1');
  assert.equal((await r.call('/v2/_trellis/tree')).status, 401);
});

test('with access control, attribute names come from the caller\'s repositories alone: paths flooding a hidden one neither hide them nor show', { timeout: 120_000 }, async (t) => {
  const r = await startAuthRegistry(t, {
    users: ['admin', 'bob', 'mallory'],
    auth: { admins: { users: ['admin'] }, policies: { team: { users: { bob: ['pull'] } }, mallory: { users: { mallory: ['pull', 'push'] } } } },
  });
  assert.equal((await r.push('team', 'v1', r.basic('admin'), makeImage({ annotations: { 'com.open.marker': 'y' } }))).status, 201);
  // Anyone who may push anywhere can add ~2,000 attribute paths per manifest; these sort before
  // bob's, 12,000 of them (a look at the registry's first 10,000 path names would find only these).
  for (let m = 0; m < 6; m++) {
    const annotations = Object.fromEntries(Array.from({ length: 1990 }, (_, k) => [`com.aaa.junk.m${m}.k${k}`, 'v']));
    assert.equal((await r.push('mallory', `t${m}`, r.basic('mallory'), makeImage({ annotations }))).status, 201);
  }
  const answer = await r.call('/v2/_trellis/attributes?prefix=annotations__', { auth: r.basic('bob') });
  assert.equal(answer.status, 200);
  assert.deepEqual(answer.json().attributes, ['annotations__com.open.marker']);
  // The flooder sees its own paths, as many as an admin does.
  const junk = '/v2/_trellis/attributes?prefix=annotations__com.aaa.junk.m0.k1';
  const own = (await r.call(junk, { auth: r.basic('mallory') })).json().attributes;
  assert.ok(own.length > 1000, `${own.length} paths`);
  assert.deepEqual(own, (await r.call(junk, { auth: r.basic('admin') })).json().attributes);
});

test('the tree and attribute names spend the client\'s query budget: over it, 429 TOOMANYREQUESTS with Retry-After', async () => {
  const limited = await startTestRegistry({ queryRatePerSecond: 0.5, queryRateBurst: 3 });
  try {
    const statuses: number[] = [];
    let last: Response | undefined;
    for (const path of ['/v2/_trellis/tree', '/v2/_trellis/attributes', '/v2/_trellis/search', '/v2/_trellis/tree', '/v2/_trellis/attributes']) {
      last = await fetch(`${limited.url}${path}`);
      statuses.push(last.status);
    }
    assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
    assert.equal(last!.headers.get('retry-after'), '2');
    assert.equal(((await last!.json()) as { errors: { code: string; message: string }[] }).errors[0]!.code, 'TOOMANYREQUESTS');
  } finally {
    await limited.dispose();
  }
});

test('attribute names are cut at 5,000 after the prefix is applied, not before: a prefix finds names beyond the first 5,000', { timeout: 60_000 }, async () => {
  const own = await startTestRegistry();
  try {
    // 5,970 paths that sort before the one asked for (a manifest keeps at most 2,000 values).
    for (let m = 0; m < 3; m++) {
      const annotations = Object.fromEntries(Array.from({ length: 1990 }, (_, k) => [`com.aaa.m${m}.k${k}`, 'v']));
      assert.equal((await pushBuilt(own.url, 'many', `t${m}`, makeImage({ annotations }))).status, 201);
    }
    assert.equal((await pushBuilt(own.url, 'late', 'v1', makeImage({ annotations: { 'com.zzz.marker': 'x' } }))).status, 201);
    const found = await (await fetch(`${own.url}/v2/_trellis/attributes?prefix=annotations__com.zzz`)).json() as { attributes: string[] };
    assert.deepEqual(found.attributes, ['annotations__com.zzz.marker']);
    const facts = await (await fetch(`${own.url}/v2/_trellis/attributes?prefix=tag`)).json() as { attributes: string[] };
    assert.deepEqual(facts.attributes, ['tag']);
  } finally {
    await own.dispose();
  }
});
