// Interop: umoci builds an image in an OCI layout, skopeo moves it in and out of a running Trellis,
// and both read Trellis's data directory as plain OCI layouts. Their manifests carry no top-level
// mediaType, so Trellis must take it from the request's Content-Type.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { interopSession } from '../helpers/interop.ts';
import { layoutDirectory } from '../helpers/registry.ts';
import { requirePeer } from '../helpers/peers.ts';
import { OCI_MANIFEST, sha256, type Descriptor } from '../helpers/oci-client.ts';


interface Inspect {
  Digest: string;
  RepoTags: string[];
  Layers: string[];
  Os: string;
}


test('skopeo and umoci against Trellis', { timeout: 120_000 }, async (t) => {
  const skopeo = requirePeer(t, 'skopeo');
  if (!skopeo) return;
  const umoci = requirePeer(t, 'umoci');
  if (!umoci) return;
  const { reg, work, exec: execIn } = await interopSession(t, 'skopeo');
  const policy = join(work, 'policy.json');
  await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  const R = reg.host;
  const base = `http://${R}`;
  const exec = async (bin: string, args: string[]) => (await execIn(bin, args)).stdout;

  const sk = (...args: string[]) => exec(skopeo, ['--policy', policy, ...args]);
  const um = (...args: string[]) => exec(umoci, args);
  const layoutEntry = async (dir: string, tag: string) => {
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
    const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
    assert.ok(entry, `${dir} has no tag ${tag}`);
    return entry;
  };

  const fileContent = `umoci wrote this ${Math.random()}\n`;
  const lay = join(work, 'lay');
  let digest = '';
  let manifestBytes = Buffer.alloc(0);

  await t.test('umoci init / new / unpack --rootless / repack', async () => {
    await um('init', '--layout', lay);
    await um('new', '--image', `${lay}:base`);
    await um('unpack', '--rootless', '--image', `${lay}:base`, join(work, 'bundle'));
    await writeFile(join(work, 'bundle', 'rootfs', 'hello.txt'), fileContent);
    await um('repack', '--image', `${lay}:v1`, join(work, 'bundle'));
    digest = (await layoutEntry(lay, 'v1')).digest;
    manifestBytes = await readFile(join(lay, 'blobs', 'sha256', digest.slice(7)));
    assert.equal(sha256(manifestBytes), digest);
    const manifest = JSON.parse(manifestBytes.toString()) as { mediaType?: string; layers: Descriptor[] };
    assert.equal(manifest.layers.length, 1);
    assert.equal(manifest.mediaType, undefined, 'umoci 0.4 writes no top-level mediaType');
  });

  await t.test('skopeo copy oci: -> docker://Trellis', async () => {
    await sk('copy', '--dest-tls-verify=false', `oci:${lay}:v1`, `docker://${R}/sk/app:v1`);
    await sk('copy', '--dest-tls-verify=false', `oci:${lay}:v1`, `docker://${R}/sk/app:v2`);
    const res = await fetch(`${base}/v2/sk/app/manifests/v1`, { headers: { Accept: OCI_MANIFEST } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), OCI_MANIFEST);
    assert.equal(res.headers.get('docker-content-digest'), digest);
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), manifestBytes);
  });

  await t.test('skopeo inspect (and --raw)', async () => {
    const info = JSON.parse(await sk('inspect', '--tls-verify=false', `docker://${R}/sk/app:v1`)) as Inspect;
    assert.equal(info.Digest, digest);
    assert.deepEqual(info.RepoTags, ['v1', 'v2']);
    const manifest = JSON.parse(manifestBytes.toString()) as { layers: Descriptor[] };
    assert.deepEqual(info.Layers, manifest.layers.map((l) => l.digest));
    assert.equal(await sk('inspect', '--raw', '--tls-verify=false', `docker://${R}/sk/app:v1`), manifestBytes.toString());
  });

  await t.test('skopeo list-tags', async () => {
    const tags = JSON.parse(await sk('list-tags', '--tls-verify=false', `docker://${R}/sk/app`)) as { Tags: string[] };
    assert.deepEqual(tags.Tags, ['v1', 'v2']);
  });

  await t.test('skopeo copy docker://Trellis -> oci:, then umoci unpack', async () => {
    const out = join(work, 'out');
    await sk('copy', '--src-tls-verify=false', `docker://${R}/sk/app:v1`, `oci:${out}:v1`);
    assert.equal((await layoutEntry(out, 'v1')).digest, digest);
    await um('unpack', '--rootless', '--image', `${out}:v1`, join(work, 'bundle2'));
    assert.equal(await readFile(join(work, 'bundle2', 'rootfs', 'hello.txt'), 'utf8'), fileContent);
  });

  await t.test('skopeo inspect oci: and umoci ls on the Trellis data directory', async () => {
    const dir = await layoutDirectory(reg, 'sk/app');
    const info = JSON.parse(await sk('inspect', `oci:${dir}:v1`)) as Inspect;
    assert.equal(info.Digest, digest);
    assert.equal(info.Os, 'linux');
    assert.equal(await sk('inspect', '--raw', `oci:${dir}:v2`), manifestBytes.toString());
    assert.deepEqual((await um('ls', '--layout', dir)).split('\n').filter(Boolean).sort(), ['v1', 'v2']);
    await um('unpack', '--rootless', '--image', `${dir}:v1`, join(work, 'bundle3'));
    assert.equal(await readFile(join(work, 'bundle3', 'rootfs', 'hello.txt'), 'utf8'), fileContent);
  });

  await t.test('skopeo delete', async () => {
    // skopeo resolves the tag and deletes the manifest by digest, so every tag on it goes.
    await sk('delete', '--tls-verify=false', `docker://${R}/sk/app:v1`);
    assert.equal((await fetch(`${base}/v2/sk/app/manifests/${digest}`, { method: 'HEAD' })).status, 404);
    await assert.rejects(sk('inspect', '--tls-verify=false', `docker://${R}/sk/app:v2`), /manifest unknown/i);
    const tags = JSON.parse(await sk('list-tags', '--tls-verify=false', `docker://${R}/sk/app`)) as { Tags: string[] };
    assert.deepEqual(tags.Tags, []);
  });
});
