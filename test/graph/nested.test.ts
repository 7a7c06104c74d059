// Nested namespaces and the artifact graph extension, over HTTP and with unmodified clients.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { requirePeer } from '../helpers/peers.ts';

const run = promisify(execFile);
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const NESTED = 'dev.trellis.repository';
const sha256 = (data: string | Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

let reg: TestRegistry;
let work: string;
before(async () => {
  reg = await startTestRegistry();
  work = await mkdtemp(join(tmpdir(), 'trellis-nested-'));
});
after(async () => {
  await reg.dispose();
  await rm(work, { recursive: true, force: true });
});

async function put(repo: string, ref: string, body: string, type: string) {
  const res = await fetch(`${reg.url}/v2/${repo}/manifests/${ref}`, { method: 'PUT', body, headers: { 'Content-Type': type } });
  return { status: res.status, json: (await res.json().catch(() => ({}))) as { errors?: { code: string; message: string }[] } };
}

async function pushImage(repo: string, seed: string, configType = 'application/vnd.oci.image.config.v1+json') {
  const config = JSON.stringify({ architecture: 'amd64', os: 'linux', seed });
  const layer = `layer ${seed}`;
  for (const blob of [config, layer]) {
    const res = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob });
    assert.equal(res.status, 201);
  }
  const body = JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: configType, digest: sha256(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(layer), size: layer.length }],
  });
  assert.equal((await put(repo, seed, body, OCI_MANIFEST)).status, 201);
  return { digest: sha256(body), size: body.length, layer: sha256(layer) };
}

const entry = (image: { digest: string; size: number }, relative?: string) => ({
  mediaType: OCI_MANIFEST, digest: image.digest, size: image.size, ...(relative !== undefined ? { annotations: { [NESTED]: relative } } : {}),
});

let api: Awaited<ReturnType<typeof pushImage>>;
let web: Awaited<ReturnType<typeof pushImage>>;
let parent: string;

test('an index can list manifests stored in descendant repositories', async () => {
  api = await pushImage('team/app/ko-build/api', 'api');
  web = await pushImage('team/app/ko-build/web', 'web');
  const index = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [entry(api, 'api'), entry(web, 'web')] });
  const res = await put('team/app/ko-build', 'v1', index, OCI_INDEX);
  assert.equal(res.status, 201, JSON.stringify(res.json));
  parent = sha256(index);
});

test('bad nested paths and missing digests are refused, naming the entry', async () => {
  for (const relative of ['../api', '/team/app/ko-build/api', 'api/../../x', 'API', '']) {
    const res = await put('team/app/ko-build', 'bad', JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [entry(api, relative)] }), OCI_INDEX);
    assert.equal(res.status, 400, relative);
    assert.equal(res.json.errors![0]!.code, 'MANIFEST_INVALID');
  }
  const missing = await put('team/app/ko-build', 'bad', JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [entry(api, 'web')] }), OCI_INDEX);
  assert.equal(missing.status, 400);
  assert.equal(missing.json.errors![0]!.code, 'MANIFEST_BLOB_UNKNOWN');
  assert.match(missing.json.errors![0]!.message, /team\/app\/ko-build\/web/);
});

test('unmodified clients pull children and their blobs through the parent', async () => {
  const manifest = await fetch(`${reg.url}/v2/team/app/ko-build/manifests/${api.digest}`);
  assert.equal(manifest.status, 200);
  assert.equal(manifest.headers.get('docker-content-digest'), api.digest);
  await manifest.arrayBuffer();
  const layer = await fetch(`${reg.url}/v2/team/app/ko-build/blobs/${api.layer}`);
  assert.equal(await layer.text(), 'layer api');
  const unrelated = await fetch(`${reg.url}/v2/team/app/manifests/${api.digest}`);
  assert.equal(unrelated.status, 404, 'only repositories whose indexes name the descendant resolve it');
  await unrelated.arrayBuffer();
});

test('crane, skopeo and oras copy the parent index with no client change', async (t) => {
  const crane = requirePeer(t, 'crane');
  const skopeo = requirePeer(t, 'skopeo');
  const oras = requirePeer(t, 'oras');
  if (!crane || !skopeo || !oras) return;
  const env = { ...process.env, HOME: work };
  await run(crane, ['pull', '--insecure', '--format', 'oci', `${reg.host}/team/app/ko-build:v1`, join(work, 'crane')], { env });
  for (const image of [api, web]) await readFile(join(work, 'crane/blobs/sha256', image.digest.slice(7)));
  await run(skopeo, ['copy', '--all', '--preserve-digests', '--src-tls-verify=false', `docker://${reg.host}/team/app/ko-build:v1`, `oci:${join(work, 'skopeo')}:v1`], { env });
  for (const digest of [parent, api.digest, web.digest, api.layer, web.layer]) await readFile(join(work, 'skopeo/blobs/sha256', digest.slice(7)));
  await run(oras, ['cp', '-r', '--from-plain-http', '--to-oci-layout', `${reg.host}/team/app/ko-build:v1`, `${join(work, 'oras')}:v1`], { env, cwd: work });
  const copied = JSON.parse(await readFile(join(work, 'oras/blobs/sha256', parent.slice(7)), 'utf8'));
  assert.equal(copied.manifests[0].annotations[NESTED], 'api', 'the annotation round-trips unchanged');
  // A copy into one flat repository of the same registry is accepted too.
  await run(crane, ['copy', '--insecure', `${reg.host}/team/app/ko-build:v1`, `${reg.host}/flat/copy:v1`], { env });
  const flat = await fetch(`${reg.url}/v2/flat/copy/manifests/v1`);
  assert.equal(flat.headers.get('docker-content-digest'), parent);
  await flat.arrayBuffer();
});

test('deleting a child an ancestor index lists is refused until the index goes', async () => {
  const refused = await fetch(`${reg.url}/v2/team/app/ko-build/web/manifests/${web.digest}`, { method: 'DELETE' });
  assert.equal(refused.status, 409);
  assert.match(((await refused.json()) as { errors: { message: string }[] }).errors[0]!.message, /team\/app\/ko-build/);
});

test('the graph extension walks down across namespaces and up to ancestors', async () => {
  const down = await fetch(`${reg.url}/v2/team/app/ko-build/_trellis/graph/v1?direction=down&depth=2`);
  const body = (await down.json()) as { root: { digest: string }; edges: { from: { repository: string }; to: { repository: string; digest: string }; kind: string; depth: number }[] };
  assert.equal(body.root.digest, parent);
  const children = body.edges.filter((e) => e.depth === 1).map((e) => `${e.to.repository}@${e.to.digest}`).sort();
  assert.deepEqual(children, [`team/app/ko-build/api@${api.digest}`, `team/app/ko-build/web@${web.digest}`].sort());
  assert.ok(body.edges.some((e) => e.depth === 2 && e.kind === 'layer' && e.to.digest === api.layer && e.to.repository === 'team/app/ko-build/api'));

  const up = await fetch(`${reg.url}/v2/team/app/ko-build/api/_trellis/graph/${api.digest}?direction=up`);
  const parents = ((await up.json()) as { edges: { from: { repository: string; digest: string }; kind: string }[] }).edges;
  assert.deepEqual(parents.map((e) => [e.from.repository, e.from.digest, e.kind]), [['team/app/ko-build', parent, 'manifest']]);

  const page = await fetch(`${reg.url}/v2/team/app/ko-build/_trellis/graph/v1?direction=down&depth=2&n=1`);
  assert.match(page.headers.get('link') ?? '', /rel="next"/);
  assert.equal(((await page.json()) as { edges: unknown[] }).edges.length, 1);
  const bad = await fetch(`${reg.url}/v2/team/app/ko-build/_trellis/graph/v1?depth=99`);
  assert.equal(bad.status, 400);
  await bad.arrayBuffer();
});

test('a Helm application bundle: an index with artifactType whose members are listed by type', async () => {
  const chart = await pushImage('bundles/shop', 'chart', 'application/vnd.cncf.helm.config.v1+json');
  const image1 = await pushImage('bundles/shop', 'frontend');
  const image2 = await pushImage('bundles/shop', 'backend');
  const bundle = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, artifactType: 'application/vnd.example.helm.bundle', manifests: [entry(chart), entry(image1), entry(image2)] });
  assert.equal((await put('bundles/shop', 'bundle', bundle, OCI_INDEX)).status, 201);
  const charts = await fetch(`${reg.url}/v2/bundles/shop/_trellis/graph/bundle?artifactType=${encodeURIComponent('application/vnd.cncf.helm.config.v1+json')}`);
  assert.deepEqual(((await charts.json()) as { edges: { to: { digest: string } }[] }).edges.map((e) => e.to.digest), [chart.digest]);
  const images = await fetch(`${reg.url}/v2/bundles/shop/_trellis/graph/bundle?artifactType=${encodeURIComponent('application/vnd.oci.image.config.v1+json')}`);
  assert.deepEqual(((await images.json()) as { edges: { to: { digest: string } }[] }).edges.map((e) => e.to.digest).sort(), [image1.digest, image2.digest].sort());
});

test('once the parent index is gone the child can be deleted', async () => {
  assert.equal((await fetch(`${reg.url}/v2/team/app/ko-build/manifests/${parent}`, { method: 'DELETE' })).status, 202);
  assert.equal((await fetch(`${reg.url}/v2/team/app/ko-build/web/manifests/${web.digest}`, { method: 'DELETE' })).status, 202);
});
