// Queries, searches and component listings with access control: a caller sees only repositories
// it may pull, and pages, cursors and counts are the same as if the others did not exist.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { makeImage, makeReferrer } from '../helpers/oci-client.ts';
import { startTestRegistry } from '../helpers/registry.ts';
import { startAuthRegistry } from './setup.ts';

const SBOM = 'application/spdx+json';

test('queries and component listings never reveal a repository the caller cannot pull', { timeout: 120_000 }, async (t) => {
  const r = await startAuthRegistry(t, {
    users: ['admin', 'bob'],
    auth: {
      admins: { users: ['admin'] },
      policies: { 'team/**': { users: { bob: ['pull'] } }, 'team/secret': { users: {} } },
    },
    settings: { queryRatePerSecond: 0, componentRepositoryPrefixes: 'team/,hidden/' },
  });
  const admin = r.basic('admin');
  const bob = r.basic('bob');
  // Hidden and visible repositories interleave in name and push order.
  const repos = ['hidden/a', 'team/app', 'team/secret', 'team/web', 'hidden/z'];
  for (let round = 0; round < 2; round++) {
    for (const repo of repos) {
      const image = makeImage({ annotations: { 'org.opencontainers.image.version': `1.${round}.0` } });
      assert.equal((await r.push(repo, `1.${round}.0`, admin, image)).status, 201);
      const sbom = makeReferrer(image.descriptor, { artifactType: SBOM, annotations: { team: 'x' } });
      assert.equal((await r.push(repo, sbom.digest, admin, sbom)).status, 201);
    }
  }
  const visible = (repo: string) => repo === 'team/app' || repo === 'team/web';

  const walk = async (path: string, key: string, auth: string) => {
    const items: { repository?: string; name?: string }[] = [];
    const sizes: number[] = [];
    let url: string | undefined = path;
    while (url) {
      const answer = await r.call(url, { auth });
      assert.equal(answer.status, 200, `${url}: ${answer.body}`);
      const page = answer.json()[key] as { repository?: string; name?: string }[];
      items.push(...page);
      sizes.push(page.length);
      const link = answer.headers.get('link');
      url = link ? /<([^>]+)>/.exec(link)![1] : undefined;
      assert.ok(!link || !/hidden|secret/.test(decodeURIComponent(Buffer.from(new URL(url!, r.base).searchParams.get('last') ?? '', 'base64url').toString() + link)), 'cursors name nothing hidden');
    }
    return { items, sizes };
  };

  for (const [path, key] of [
    [`/v2/_oci/references?q_artifacttype__eq=${encodeURIComponent(SBOM)}&n=1`, 'manifests'],
    ['/v2/_trellis/search?q_annotations__org.opencontainers.image.version__gte=1.0&sort=version&n=1', 'results'],
    ['/v2/_trellis/search?n=2', 'results'],
  ] as const) {
    const asAdmin = await walk(path, key, admin);
    assert.ok(asAdmin.items.some((i) => !visible(i.repository!)), 'admin sees everything');
    const asBob = await walk(path, key, bob);
    assert.deepEqual(asBob.items, asAdmin.items.filter((i) => visible(i.repository!)), `${path}: the visible part, in the same order`);
    const per = Number(new URL(path, r.base).searchParams.get('n'));
    assert.ok(asBob.sizes.slice(0, -1).every((n) => n === per), `${path}: every page but the last is full`);
  }
  const components = await walk('/v2/_trellis/components?n=1', 'components', bob);
  assert.deepEqual(components.items.map((c) => c.repository).sort(), ['team/app', 'team/web']);

  // A referrers query on a forbidden repository looks exactly like one on a repository that does
  // not exist and that the caller could not pull either.
  const subject = (await r.call('/v2/_trellis/search?q_repository__eq=team/secret&n=1', { auth: admin })).json().results[0].digest;
  const forbidden = await r.call(`/v2/team/secret/referrers/${subject}?q_annotations__team__eq=x`, { auth: bob });
  const missing = await r.call(`/v2/other/nothing/referrers/${subject}?q_annotations__team__eq=x`, { auth: bob });
  assert.equal(forbidden.status, missing.status);
  assert.deepEqual(forbidden.json(), missing.json());
  // Anonymous callers must sign in first.
  assert.equal((await r.call('/v2/_trellis/search')).status, 401);
  assert.equal((await r.call('/v2/_oci/references')).status, 401);
});

test('whether an attribute is known is decided over what the caller may see: no oracle for hidden annotation keys', { timeout: 120_000 }, async (t) => {
  const r = await startAuthRegistry(t, {
    users: ['admin', 'bob'],
    auth: { admins: { users: ['admin'] }, policies: { 'team/**': { users: { bob: ['pull', 'push'] } }, 'secret/**': { users: {} } } },
    settings: { queryRatePerSecond: 0 },
  });
  const admin = r.basic('admin');
  const bob = r.basic('bob');
  // Only the hidden repository has the key; bob's own image has a referrer with another one.
  const hiddenImage = makeImage();
  assert.equal((await r.push('secret/vault', 'v1', admin, hiddenImage)).status, 201);
  const hiddenRef = makeReferrer(hiddenImage.descriptor, { artifactType: SBOM, annotations: { 'com.example.hidden-key': 'yes' } });
  assert.equal((await r.push('secret/vault', hiddenRef.digest, admin, hiddenRef)).status, 201);
  const own = makeImage();
  assert.equal((await r.push('team/app', 'v1', bob, own)).status, 201);
  const ownRef = makeReferrer(own.descriptor, { artifactType: SBOM, annotations: { 'com.example.visible': 'yes' } });
  assert.equal((await r.push('team/app', ownRef.digest, bob, ownRef)).status, 201);

  const asked = (key: string) => [
    `/v2/_trellis/search?q_annotations__${key}__exists=true`,
    `/v2/_oci/references?q_annotations__${key}__exists=true`,
    `/v2/team/app/referrers/${own.digest}?q_annotations__${key}__eq=yes`,
    `/v2/_trellis/search?sort=annotations__${key}`,
    `/v2/_oci/references?sort=annotations__${key}&order=desc`,
  ];
  const hidden = asked('com.example.hidden-key');
  const absent = asked('com.example.nobody-has-this');
  for (let i = 0; i < hidden.length; i++) {
    const a = await r.call(hidden[i]!, { auth: bob });
    const b = await r.call(absent[i]!, { auth: bob });
    assert.equal(a.status, 200, `${hidden[i]}: ${a.body}`);
    assert.equal(b.status, 200, `${absent[i]}: ${b.body}`);
    assert.equal(a.body.toString(), b.body.toString(), hidden[i]);
  }
  // What bob can see still answers: his own referrer's key.
  const visible = await r.call('/v2/_oci/references?q_annotations__com.example.visible__exists=true', { auth: bob });
  assert.deepEqual(visible.json().manifests.map((m: { digest: string }) => m.digest), [ownRef.digest]);
  // The admin sees the hidden referrer; malformed queries are still refused for everyone.
  const all = await r.call('/v2/_oci/references?q_annotations__com.example.hidden-key__exists=true', { auth: admin });
  assert.deepEqual(all.json().manifests.map((m: { digest: string }) => m.digest), [hiddenRef.digest]);
  assert.equal((await r.call('/v2/_trellis/search?q_annotations__x__between=1', { auth: bob })).status, 400);
});

test('the portable component index lists only versions every reader of it may pull, and a restart after a policy change withdraws or adds them', { timeout: 120_000 }, async (t) => {
  const policies = (index: Record<string, unknown>) => ({
    admins: { users: ['admin'] },
    policies: { '*': { authenticated: ['pull'] }, secret: { users: { bob: ['admin'] } }, ...index },
  });
  const r = await startAuthRegistry(t, { users: ['admin', 'alice', 'bob'], auth: policies({}), settings: { componentRepositoryPrefixes: 'open/,secret/' } });
  const admin = r.basic('admin');
  const alice = r.basic('alice');
  for (const repo of ['open/app', 'secret/app']) assert.equal((await r.push(repo, '1.0.0', admin)).status, 201);
  const anchor = (await r.call('/v2/component-index/manifests/index.ocm', { method: 'HEAD', auth: admin })).headers.get('docker-content-digest');
  let base = r.base;
  const listed = async (auth: string) => {
    await fetch(new URL('/v2/_trellis/components', base), { headers: { Authorization: admin } }); // waits for the start-up derivation
    const answer = await fetch(new URL(`/v2/component-index/referrers/${anchor}`, base), { headers: { Authorization: auth } });
    assert.equal(answer.status, 200);
    const body = (await answer.json()) as { manifests: { annotations: Record<string, string> }[] };
    return body.manifests.map((m) => m.annotations['dev.trellis.component.repository']).sort();
  };
  // component-index falls under `*`: every signed-in user reads it, and not all of them may pull secret/app.
  assert.deepEqual(await listed(alice), ['open/app']);
  assert.deepEqual(await listed(admin), ['open/app'], 'not hidden from some: never written');
  assert.equal((await r.call('/v2/secret/app/manifests/1.0.0', { auth: alice })).status, 403);

  // Each restart is closed in the test itself: the setup's cleanup removes the data directory.
  const restart = async (index: Record<string, unknown>) => {
    await writeFile(r.authFile, JSON.stringify({ htpasswd: 'htpasswd', ...policies(index) }));
    const again = await startTestRegistry({ authFile: r.authFile, componentRepositoryPrefixes: 'open/,secret/' }, r.reg.dataDir);
    base = again.url;
    return again;
  };
  await r.reg.close();
  // Read by admins only: every version is published.
  const adminsOnly = await restart({ 'component-index': { users: {} } });
  try {
    assert.deepEqual(await listed(admin), ['open/app', 'secret/app']);
  } finally {
    await adminsOnly.close();
  }
  // Back to every signed-in user: the entry naming secret/app is withdrawn at start.
  const everyone = await restart({});
  try {
    assert.deepEqual(await listed(alice), ['open/app']);
    assert.deepEqual(await listed(admin), ['open/app']);
  } finally {
    await everyone.close();
  }
});
