// The layout referrers matrix (docs/layouts.md): layouts written by oras, regctl, olareg, and in
// containerd's, BuildKit's and the image-spec draft's documented formats, served by Trellis as-is;
// the referrers API must list exactly what each writer recorded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import { startTestRegistry } from '../helpers/registry.ts';
import { requirePeer } from '../helpers/peers.ts';
import { EMPTY_BLOB, OCI_INDEX, REF_NAME, descriptorOf, listReferrers, makeImage, makeReferrer, type Built, type Descriptor } from '../helpers/oci-client.ts';
import type { Settings } from '../../src/config/settings.ts';

const run = promisify(execFile);
const SBOM = 'application/vnd.example.sbom';
const SIG = 'application/vnd.example.sig';

/** Serves `layout` as repository `repo` of a fresh Trellis and returns the referrers of `subject`. */
async function referrersServed(layout: string, repo: string, subject: string, settings: Partial<Settings> = {}): Promise<Descriptor[]> {
  const data = await mkdtemp(join(tmpdir(), 'trellis-matrix-'));
  await cp(layout, join(data, repo), { recursive: true });
  const reg = await startTestRegistry(settings, data);
  try {
    const before = await readFile(join(data, repo, 'index.json'), 'utf8');
    const { status, manifests } = await listReferrers(reg.url, repo, subject);
    assert.equal(status, 200);
    assert.equal(await readFile(join(data, repo, 'index.json'), 'utf8'), before, 'serving a layout does not rewrite it');
    return manifests;
  } finally {
    await reg.dispose();
    await rm(data, { recursive: true, force: true });
  }
}

const summary = (list: Descriptor[]) => list.map((d) => `${d.digest} ${d.artifactType ?? '-'} ${JSON.stringify(d.annotations ?? {})}`).sort();

/** Writes a layout by hand from built manifests, in a documented third-party format. */
async function writeLayout(dir: string, items: Built[], entries: Descriptor[], extraBlobs: Buffer[] = [], annotations?: Record<string, string>) {
  await mkdir(join(dir, 'blobs/sha256'), { recursive: true });
  for (const blob of [...items.flatMap((i) => [i.bytes, ...i.blobs]), ...extraBlobs]) {
    await writeFile(join(dir, 'blobs/sha256', descriptorOf('x/y', blob).digest.slice(7)), blob);
  }
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: entries, ...(annotations ? { annotations } : {}) }));
}

test('oras --oci-layout: push, attach and chained attach', async (t) => {
  const oras = requirePeer(t, 'oras');
  if (!oras) return;
  const work = await mkdtemp(join(tmpdir(), 'trellis-oras-layout-'));
  try {
    const opts = { cwd: work, env: { ...process.env, HOME: work } };
    await writeFile(join(work, 'a.txt'), 'hello');
    await run(oras, ['push', '--oci-layout', 'lay:v1', 'a.txt:text/plain', '--artifact-type', 'application/vnd.example.app'], opts);
    await run(oras, ['attach', '--oci-layout', 'lay:v1', '--artifact-type', SBOM, '--annotation', 'kind=sbom', 'a.txt'], opts);
    await run(oras, ['attach', '--oci-layout', 'lay:v1', '--artifact-type', SIG, '--annotation', 'kind=sig'], opts);
    const discovered = JSON.parse((await run(oras, ['discover', '--oci-layout', '--format', 'json', 'lay:v1'], opts)).stdout) as { digest: string; referrers: Descriptor[] };
    const sbom = discovered.referrers.find((r) => r.artifactType === SBOM)!;
    await run(oras, ['attach', '--oci-layout', `lay@${sbom.digest}`, '--artifact-type', SIG, '--annotation', 'kind=sbom-sig'], opts);
    const chained = JSON.parse((await run(oras, ['discover', '--oci-layout', '--format', 'json', `lay@${sbom.digest}`], opts)).stdout) as { referrers: Descriptor[] };

    const served = await referrersServed(join(work, 'lay'), 'oras/lay', discovered.digest);
    assert.deepEqual(summary(served), summary(discovered.referrers));
    assert.deepEqual(summary(await referrersServed(join(work, 'lay'), 'oras/lay', sbom.digest)), summary(chained.referrers));
  } finally {
    await rm(work, { recursive: true, force: true });
  }
});

test('regctl ocidir://: artifact put with subject (fallback tags)', async (t) => {
  const regctl = requirePeer(t, 'regctl');
  if (!regctl) return;
  const work = await mkdtemp(join(tmpdir(), 'trellis-regctl-layout-'));
  try {
    const opts = { cwd: work, env: { ...process.env, HOME: work, REGCTL_CONFIG: join(work, 'regctl.json') } };
    await run(regctl, ['image', 'create', 'ocidir://lay:v1'], opts);
    const subject = (await run(regctl, ['image', 'digest', 'ocidir://lay:v1'], opts)).stdout.trim();
    for (const [type, kind] of [[SBOM, 'sbom'], [SIG, 'sig']] as const) {
      const child = spawn(regctl, ['artifact', 'put', '--artifact-type', type, '--annotation', `kind=${kind}`, '--subject', 'ocidir://lay:v1'], opts);
      child.stdin.end(`{"${kind}":true}`);
      assert.equal(await new Promise((resolve) => child.on('exit', resolve)), 0);
    }
    const listed = JSON.parse((await run(regctl, ['artifact', 'list', '--format', '{{json .}}', 'ocidir://lay:v1'], opts)).stdout) as { descriptors: Descriptor[] };
    assert.equal(listed.descriptors.length, 2);
    assert.deepEqual(summary(await referrersServed(join(work, 'lay'), 'regctl/lay', subject)), summary(listed.descriptors));
  } finally {
    await rm(work, { recursive: true, force: true });
  }
});

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

test('olareg data directory: referrers pushed with oras', async (t) => {
  const olareg = requirePeer(t, 'olareg');
  const oras = requirePeer(t, 'oras');
  if (!olareg || !oras) return;
  const work = await mkdtemp(join(tmpdir(), 'trellis-olareg-layout-'));
  const port = await freePort();
  const server = spawn(olareg, ['serve', '--addr', '127.0.0.1', '--port', String(port), '--dir', join(work, 'data'), '--api-delete'], { stdio: 'ignore' });
  try {
    const opts = { cwd: work, env: { ...process.env, HOME: work } };
    for (let i = 0; i < 100; i++) {
      if (await fetch(`http://127.0.0.1:${port}/v2/`).then((r) => r.ok, () => false)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await writeFile(join(work, 'a.txt'), 'hello olareg');
    const ref = `127.0.0.1:${port}/ola/app:v1`;
    await run(oras, ['push', '--plain-http', ref, 'a.txt:text/plain', '--artifact-type', 'application/vnd.example.app'], opts);
    await run(oras, ['attach', '--plain-http', '--artifact-type', SBOM, '--annotation', 'kind=sbom', ref, 'a.txt'], opts);
    await run(oras, ['attach', '--plain-http', '--artifact-type', SIG, '--annotation', 'kind=sig', ref], opts);
    const discovered = JSON.parse((await run(oras, ['discover', '--plain-http', '--format', 'json', ref], opts)).stdout) as { digest: string; referrers: Descriptor[] };
    assert.equal(discovered.referrers.length, 2);
    server.kill('SIGTERM');
    await new Promise((resolve) => server.on('exit', resolve));
    const index = await readFile(join(work, 'data/ola/app/index.json'), 'utf8');
    assert.match(index, /org\.olareg\.referrer\.subject/, 'olareg recorded referrers its own way');
    assert.deepEqual(summary(await referrersServed(join(work, 'data/ola/app'), 'ola/app', discovered.digest)), summary(discovered.referrers));
  } finally {
    server.kill('SIGKILL');
    await rm(work, { recursive: true, force: true });
  }
});

test('containerd 2.x export format: untagged entries annotated io.containerd.manifest.subject', async () => {
  const work = await mkdtemp(join(tmpdir(), 'trellis-ctr-layout-'));
  const image = makeImage();
  const sbom = makeReferrer(image.descriptor, { artifactType: SBOM, annotations: { kind: 'sbom' } });
  await writeLayout(join(work, 'lay'), [image, sbom], [
    { ...image.descriptor, annotations: { 'io.containerd.image.name': 'docker.io/library/app:v1', [REF_NAME]: 'v1' } },
    { ...sbom.descriptor, artifactType: SBOM, annotations: { 'io.containerd.manifest.subject': image.digest } },
  ]);
  const served = await referrersServed(join(work, 'lay'), 'ctr/lay', image.digest);
  assert.deepEqual(summary(served), [`${sbom.digest} ${SBOM} {"kind":"sbom"}`]);
  await rm(work, { recursive: true, force: true });
});

test('image-spec PR #1171 draft: referrers reachable only through org.opencontainers.image.referrer.subject', async () => {
  const work = await mkdtemp(join(tmpdir(), 'trellis-draft-layout-'));
  const image = makeImage();
  const sig = makeReferrer(image.descriptor, { artifactType: SIG, annotations: { kind: 'sig' } });
  const response = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ ...sig.descriptor, artifactType: SIG, annotations: { kind: 'sig' } }] }));
  await writeLayout(join(work, 'lay'), [image, sig], [
    { ...image.descriptor, annotations: { [REF_NAME]: 'v1' } },
    { ...descriptorOf(OCI_INDEX, response), annotations: { 'org.opencontainers.image.referrer.subject': image.digest } },
  ], [response]);
  assert.deepEqual(summary(await referrersServed(join(work, 'lay'), 'draft/lay', image.digest)), [`${sig.digest} ${SIG} {"kind":"sig"}`]);
  await rm(work, { recursive: true, force: true });
});

test('BuildKit attestations are referrers only behind the buildkitAttestations switch', async () => {
  const work = await mkdtemp(join(tmpdir(), 'trellis-bk-layout-'));
  const image = makeImage();
  const attestation = makeImage({ config: { architecture: 'unknown', os: 'unknown' } });
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_INDEX, manifests: [
      { ...image.descriptor, platform: { architecture: 'amd64', os: 'linux' } },
      { ...attestation.descriptor, platform: { architecture: 'unknown', os: 'unknown' }, annotations: { 'vnd.docker.reference.type': 'attestation-manifest', 'vnd.docker.reference.digest': image.digest } },
    ],
  }));
  await writeLayout(join(work, 'lay'), [image, attestation], [{ ...descriptorOf(OCI_INDEX, index), annotations: { 'io.containerd.image.name': 'docker.io/library/app:v1', [REF_NAME]: 'v1' } }], [index, EMPTY_BLOB]);
  assert.deepEqual(await referrersServed(join(work, 'lay'), 'bk/lay', image.digest), []);
  const listed = await referrersServed(join(work, 'lay'), 'bk/lay', image.digest, { buildkitAttestations: true });
  assert.deepEqual(listed.map((d) => d.digest), [attestation.digest]);
  await rm(work, { recursive: true, force: true });
});
