// OCM component versions as OCM writes them: real CTF archives imported through the registry API,
// then every storage form OCM has used, read back through the components API and, for the
// portable index, with `oras discover`.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { requirePeer } from '../helpers/peers.ts';
import { getManifest, makeImage, makeReferrer, pushBuilt, pushManifest } from '../helpers/oci-client.ts';
import { ANCHOR_DIGEST, FIXTURES, getJson, importCtf, pushComponentVersion } from './ocm-client.ts';

const run = promisify(execFile);
const HELLO = 'github.com/acme.org/helloworld';
const LOCAL_BLOB = 'sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08';
const PODINFO = 'sha256:62be4af3382a4493cb7f1dd4ec47bcb28f1863b615fc9e4a1dceefbe93898dd0';

interface Summary { name: string; kind: string; repository: string; provider: string | null; labels: Record<string, string>; latest: string; versionCount: number }
interface VersionEntry { version: string; tag: string | null; digest: string; repository: string; pushedAt: string }

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry();
  // Three CTFs of the same component version under three OCM repository prefixes.
  await importCtf(reg.url, join(FIXTURES, 'helloworld-01/transport-archive'), 'ctf-a');
  await importCtf(reg.url, join(FIXTURES, 'with-and-without-resource-02/with-resource'), 'ctf-b');
  await importCtf(reg.url, join(FIXTURES, 'with-and-without-resource-02/without-resource'), 'ctf-c');
});
after(() => reg.dispose());

const components = async (query = '') => (await getJson<{ components: Summary[] }>(`${reg.url}/v2/_trellis/components${query}`)).body.components;

test('CTF archives imported through the API are listed as OCM components', async () => {
  const listed = (await components()).filter((c) => c.name === HELLO);
  assert.deepEqual(listed.map((c) => c.repository), ['ctf-a', 'ctf-b', 'ctf-c'].map((p) => `${p}/component-descriptors/${HELLO}`));
  for (const c of listed) assert.deepEqual({ kind: c.kind, provider: c.provider, latest: c.latest, versionCount: c.versionCount }, { kind: 'ocm', provider: 'acme.org', latest: '1.0.0', versionCount: 1 });
  assert.deepEqual((await components('?prefix=ctf-b')).map((c) => c.repository), [`ctf-b/component-descriptors/${HELLO}`]);
});

test('a version detail carries provider and resources from the descriptor', async () => {
  const a = await getJson<Record<string, unknown>>(`${reg.url}/v2/_trellis/components/version?component=${HELLO}&version=1.0.0&repository=ctf-a/component-descriptors/${HELLO}`);
  assert.equal(a.status, 200);
  assert.equal(a.body.provider, 'acme.org');
  assert.equal(a.body.tag, '1.0.0');
  const [resource] = a.body.resources as { name: string; version: string; type: string; access: Record<string, string> }[];
  assert.deepEqual({ name: resource!.name, version: resource!.version, type: resource!.type }, { name: 'resource', version: '6.7.1', type: 'something' });
  assert.equal(resource!.access.localReference, LOCAL_BLOB);
  const c = await getJson<Record<string, unknown>>(`${reg.url}/v2/_trellis/components/version?component=${HELLO}&version=1.0.0&repository=ctf-c/component-descriptors/${HELLO}`);
  assert.equal((c.body.resources as { access: Record<string, string> }[])[0]!.access.imageReference, 'ghcr.io/jakobmoellerdev/podinfo/podinfo:6.7.1');
  // Ambiguous without a repository: a 400 that says how to choose.
  const ambiguous = await getJson<{ errors: { message: string }[] }>(`${reg.url}/v2/_trellis/components/version?component=${HELLO}&version=1.0.0`);
  assert.equal(ambiguous.status, 400);
  assert.match(ambiguous.body.errors[0]!.message, /repository=/);
});

test('owners: which component versions ship an artifact', async () => {
  const local = await getJson<{ owners: { name: string; version: string; repository: string; via: string }[] }>(`${reg.url}/v2/_trellis/components/owners?digest=${LOCAL_BLOB}`);
  assert.deepEqual(local.body.owners, [{ name: HELLO, version: '1.0.0', repository: `ctf-a/component-descriptors/${HELLO}`, via: 'descriptor' }]);
  const chart = await getJson<{ owners: { repository: string }[] }>(`${reg.url}/v2/_trellis/components/owners?digest=${PODINFO}`);
  assert.deepEqual(chart.body.owners.map((o) => o.repository), ['ctf-b', 'ctf-c'].map((p) => `${p}/component-descriptors/${HELLO}`));
  const bad = await getJson<{ errors: { code: string }[] }>(`${reg.url}/v2/_trellis/components/owners?digest=nope`);
  assert.equal(bad.status, 400);
  assert.equal(bad.body.errors[0]!.code, 'DIGEST_INVALID');
});

test('versions with + round-trip through their .build- tags; alias and digest-like tags are not versions', async () => {
  const spec = { name: 'example.com/roundtrip', prefix: 'ocm', provider: 'example.com' };
  const pushed = await pushComponentVersion(reg.url, { ...spec, version: '1.2.3+ci.42' });
  assert.equal(pushed.tag, '1.2.3.build-ci.42');
  await pushComponentVersion(reg.url, { ...spec, version: '1.2.4-rc.1' });
  await pushComponentVersion(reg.url, { ...spec, version: '1.10.0' });
  const top = await getManifest(reg.url, pushed.repository, '1.10.0');
  assert.equal((await pushManifest(reg.url, pushed.repository, 'latest', top.bytes)).status, 201);
  assert.equal((await pushManifest(reg.url, pushed.repository, `sha256-${'a'.repeat(64)}`, top.bytes)).status, 201);
  const list = await getJson<{ versions: VersionEntry[] }>(`${reg.url}/v2/_trellis/components/versions?component=${spec.name}`);
  assert.deepEqual(list.body.versions.map((v) => [v.version, v.tag]), [['1.10.0', '1.10.0'], ['1.2.4-rc.1', '1.2.4-rc.1'], ['1.2.3+ci.42', '1.2.3.build-ci.42']]);
  assert.equal(list.body.versions[2]!.digest, pushed.digest);
  const detail = await getJson<{ version: string; tag: string }>(`${reg.url}/v2/_trellis/components/version?component=${spec.name}&version=${encodeURIComponent('1.2.3+ci.42')}`);
  assert.deepEqual([detail.body.version, detail.body.tag], ['1.2.3+ci.42', '1.2.3.build-ci.42']);
  const ranged = await getJson<{ versions: VersionEntry[] }>(`${reg.url}/v2/_trellis/components/versions?component=${spec.name}&constraint=${encodeURIComponent('>=1.2.3 <1.10.0')}&order=asc`);
  assert.deepEqual(ranged.body.versions.map((v) => v.version), ['1.2.3+ci.42', '1.2.4-rc.1']);
  const latest = await getJson<{ versions: VersionEntry[] }>(`${reg.url}/v2/_trellis/components/versions?component=${spec.name}&latest=true`);
  assert.deepEqual(latest.body.versions.map((v) => v.version), ['1.10.0']);
  const invalid = await getJson<{ errors: { code: string; message: string }[] }>(`${reg.url}/v2/_trellis/components/versions?component=${spec.name}&constraint=${encodeURIComponent('>=banana')}`);
  assert.equal(invalid.status, 400);
  assert.match(invalid.body.errors[0]!.message, /constraint/);
  assert.equal((await getJson(`${reg.url}/v2/_trellis/components/versions?component=no.such/thing`)).status, 404);
  assert.equal((await getJson(`${reg.url}/v2/_trellis/components/versions`)).status, 400);
});

test('every storage form: JSON and YAML descriptors, legacy cnudie config, index form with the anchor subject', async () => {
  await pushComponentVersion(reg.url, { name: 'example.com/forms/json', version: '1.0.0', form: 'json', provider: 'json.org' });
  await pushComponentVersion(reg.url, { name: 'example.com/forms/yaml', version: '1.0.0', form: 'yaml', provider: 'yaml.org' });
  await pushComponentVersion(reg.url, { name: 'example.com/forms/cnudie', version: '0.9.0', form: 'cnudie-json', provider: 'gardener.cloud' });
  const v2 = await pushComponentVersion(reg.url, { name: 'example.com/forms/index', version: '2.0.0', indexForm: true, v2: true, provider: 'index.org' });
  const untagged = await pushComponentVersion(reg.url, { name: 'example.com/forms/anchored', version: '3.0.0', v2: true, provider: 'anchor.org', byDigest: true });
  const listed = await components('?q_name__contains=example.com/forms');
  assert.deepEqual(listed.map((c) => [c.name, c.provider, c.latest]), [
    ['example.com/forms/anchored', 'anchor.org', '3.0.0'], ['example.com/forms/cnudie', 'gardener.cloud', '0.9.0'],
    ['example.com/forms/index', 'index.org', '2.0.0'], ['example.com/forms/json', 'json.org', '1.0.0'], ['example.com/forms/yaml', 'yaml.org', '1.0.0'],
  ]);
  const index = await getJson<{ versions: VersionEntry[] }>(`${reg.url}/v2/_trellis/components/versions?component=example.com/forms/index`);
  assert.equal(index.body.versions[0]!.digest, v2.digest);
  // Pushed by digest only: found through the anchor's referrers, with no tag.
  const anchored = await getJson<{ versions: VersionEntry[] }>(`${reg.url}/v2/_trellis/components/versions?component=example.com/forms/anchored`);
  assert.deepEqual(anchored.body.versions.map((v) => [v.version, v.tag, v.digest]), [['3.0.0', null, untagged.digest]]);
});

test('references, referencedBy, and OCM ownership referrers', async () => {
  await pushComponentVersion(reg.url, { name: 'example.com/lib', version: '1.0.0' });
  await pushComponentVersion(reg.url, {
    name: 'example.com/app', version: '1.0.0', labels: { team: 'platform' },
    references: [{ name: 'lib', componentName: 'example.com/lib', version: '1.0.0' }],
  });
  const app = await getJson<{ references: { componentName: string; version: string }[]; labels: Record<string, string> }>(`${reg.url}/v2/_trellis/components/version?component=example.com/app&version=1.0.0`);
  assert.deepEqual(app.body.references.map((r) => [r.componentName, r.version]), [['example.com/lib', '1.0.0']]);
  assert.deepEqual(app.body.labels, { team: 'platform' });
  const lib = await getJson<{ referencedBy: { name: string; version: string }[] }>(`${reg.url}/v2/_trellis/components/version?component=example.com/lib&version=1.0.0`);
  assert.deepEqual(lib.body.referencedBy.map((r) => [r.name, r.version]), [['example.com/app', '1.0.0']]);
  // An image elsewhere, claimed by an ownership referrer.
  const image = await pushBuilt(reg.url, 'images/web', 'v1', makeImage());
  const subject = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: image.digest, size: (await getManifest(reg.url, 'images/web', 'v1')).bytes.length };
  const claim = makeReferrer(subject, { artifactType: 'application/vnd.ocm.software.ownership.v1+json', annotations: { 'software.ocm.component.name': 'example.com/app', 'software.ocm.component.version': '1.0.0' } });
  assert.equal((await pushBuilt(reg.url, 'images/web', claim.digest, claim)).status, 201);
  const owners = await getJson<{ owners: { name: string; version: string; repository: string; via: string; referrerRepository: string }[] }>(`${reg.url}/v2/_trellis/components/owners?digest=${image.digest}`);
  assert.deepEqual(owners.body.owners, [{ name: 'example.com/app', version: '1.0.0', repository: 'component-descriptors/example.com/app', via: 'ownership-referrer', referrerRepository: 'images/web' }]);
  // Filters on labels and provider.
  assert.deepEqual((await components('?q_labels__team__eq=PLATFORM')).map((c) => c.name), ['example.com/app']);
  assert.ok((await components('?q_provider__eq=gardener.cloud')).every((c) => c.provider === 'gardener.cloud'));
});

test('the portable index lists every component version through a plain referrers call (oras discover)', async (t) => {
  const oras = requirePeer(t, 'oras');
  if (!oras) return;
  const anchor = await getManifest(reg.url, 'component-index', 'index.ocm');
  assert.equal(anchor.digest, ANCHOR_DIGEST);
  assert.equal(anchor.bytes.length, 837);
  const { stdout } = await run(oras, ['discover', '--plain-http', `${reg.host}/component-index@${ANCHOR_DIGEST}`, '--format', 'json']);
  const found = JSON.parse(stdout) as { referrers?: { artifactType: string; annotations: Record<string, string> }[]; manifests?: { artifactType: string; annotations: Record<string, string> }[] };
  const entries = (found.referrers ?? found.manifests ?? []).filter((r) => r.artifactType === 'application/vnd.trellis.component-version.v1+json');
  const pairs = entries.map((e) => `${e.annotations['dev.trellis.component.repository']} ${e.annotations['software.ocm.component.name']}:${e.annotations['software.ocm.component.version']}`).sort();
  const expected: string[] = [];
  for (const c of await components()) {
    const versions = await getJson<{ versions: VersionEntry[] }>(`${reg.url}/v2/_trellis/components/versions?component=${c.name}&repository=${c.repository}`);
    for (const v of versions.body.versions) expected.push(`${c.repository} ${c.name}:${v.version}`);
  }
  assert.deepEqual(pairs, expected.sort());
  assert.ok(pairs.includes(`ctf-a/component-descriptors/${HELLO} ${HELLO}:1.0.0`));
  const hello = entries.find((e) => e.annotations['dev.trellis.component.repository'] === `ctf-a/component-descriptors/${HELLO}`)!;
  assert.equal(hello.annotations['dev.trellis.component.provider'], 'acme.org');
});
