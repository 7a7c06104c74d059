// Interop: the real crane (go-containerregistry v0.21.x) against a running Trellis.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { interopSession } from '../helpers/interop.ts';
import { requirePeer } from '../helpers/peers.ts';
import { OCI_MANIFEST, sha256, ustar, type Descriptor } from '../helpers/oci-client.ts';


interface ImageManifest {
  schemaVersion: number;
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
}


test('crane against Trellis', { timeout: 120_000 }, async (t) => {
  const crane = requirePeer(t, 'crane');
  if (!crane) return;
  const { reg, work, exec } = await interopSession(t, 'crane');
  const R = reg.host;
  const base = `http://${R}`;
  const run = async (...args: string[]) => (await exec(crane, ['--insecure', ...args])).stdout;

  const lines = (text: string) => text.split('\n').filter(Boolean);
  const blob = async (repo: string, digest: string) => {
    const res = await fetch(`${base}/v2/${repo}/blobs/${digest}`);
    assert.equal(res.status, 200, `GET blob ${digest} from ${repo}`);
    return Buffer.from(await res.arrayBuffer());
  };

  const fileContent = Buffer.from(`crane layer ${Math.random()}\n`);
  const layerTar = ustar('hello.txt', fileContent);
  await writeFile(join(work, 'layer.tar'), layerTar);

  let digest = '';
  let manifest: ImageManifest | undefined;

  await t.test('append --oci-empty-base', async () => {
    const out = (await run('append', '--oci-empty-base', '-f', 'layer.tar', '-t', `${R}/cr/app:v1`)).trim();
    const match = /@(sha256:[0-9a-f]{64})$/.exec(out);
    assert.ok(match, `unexpected append output: ${out}`);
    digest = match[1]!;
    const res = await fetch(`${base}/v2/cr/app/manifests/v1`, { headers: { Accept: OCI_MANIFEST } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), OCI_MANIFEST);
    const bytes = Buffer.from(await res.arrayBuffer());
    assert.equal(sha256(bytes), digest);
    manifest = JSON.parse(bytes.toString()) as ImageManifest;
    assert.equal(manifest.mediaType, OCI_MANIFEST);
    assert.equal(manifest.layers.length, 1);
    assert.equal(manifest.layers[0]!.mediaType, 'application/vnd.oci.image.layer.v1.tar+gzip');
    const layer = await blob('cr/app', manifest.layers[0]!.digest);
    assert.equal(sha256(layer), manifest.layers[0]!.digest);
    assert.deepEqual(gunzipSync(layer), layerTar);
  });

  await t.test('digest and manifest', async () => {
    assert.equal((await run('digest', `${R}/cr/app:v1`)).trim(), digest);
    const raw = await run('manifest', `${R}/cr/app:v1`);
    assert.equal(sha256(raw), digest);
    assert.deepEqual(JSON.parse(raw), manifest);
  });

  await t.test('pull --format oci', async () => {
    await run('pull', '--format', 'oci', `${R}/cr/app:v1`, 'pulled');
    const index = JSON.parse(await readFile(join(work, 'pulled', 'index.json'), 'utf8')) as { manifests: Descriptor[] };
    assert.deepEqual(index.manifests.map((m) => m.digest), [digest]);
    const file = (d: string) => readFile(join(work, 'pulled', 'blobs', 'sha256', d.slice(7)));
    assert.equal(sha256(await file(digest)), digest);
    for (const d of [manifest!.config, ...manifest!.layers]) assert.deepEqual(await file(d.digest), await blob('cr/app', d.digest));
  });

  await t.test('push a layout made by crane pull', async () => {
    const out = (await run('push', 'pulled', `${R}/cr/pushed:v1`)).trim();
    assert.equal(out, `${R}/cr/pushed@${digest}`);
    assert.equal((await run('digest', `${R}/cr/pushed:v1`)).trim(), digest);
    assert.deepEqual(gunzipSync(await blob('cr/pushed', manifest!.layers[0]!.digest)), layerTar);
  });

  await t.test('copy', async () => {
    await run('copy', `${R}/cr/app:v1`, `${R}/cr/copied:v1`);
    assert.equal((await run('digest', `${R}/cr/copied:v1`)).trim(), digest);
    assert.deepEqual(await blob('cr/copied', manifest!.config.digest), await blob('cr/app', manifest!.config.digest));
  });

  await t.test('tag and ls', async () => {
    assert.deepEqual(lines(await run('ls', `${R}/cr/app`)), ['v1']);
    await run('tag', `${R}/cr/app:v1`, 'v2');
    assert.deepEqual(lines(await run('ls', `${R}/cr/app`)), ['v1', 'v2']);
    assert.equal((await run('digest', `${R}/cr/app:v2`)).trim(), digest);
  });

  await t.test('catalog', async () => {
    assert.deepEqual(lines(await run('catalog', R)), ['cr/app', 'cr/copied', 'cr/pushed']);
  });

  await t.test('delete (by tag, then by digest)', async () => {
    await run('delete', `${R}/cr/app:v2`);
    assert.deepEqual(lines(await run('ls', `${R}/cr/app`)), ['v1']);
    assert.equal((await run('digest', `${R}/cr/app:v1`)).trim(), digest);

    await run('delete', `${R}/cr/copied@${digest}`);
    assert.equal((await fetch(`${base}/v2/cr/copied/manifests/${digest}`, { method: 'HEAD' })).status, 404);
    await assert.rejects(run('manifest', `${R}/cr/copied:v1`), /MANIFEST_UNKNOWN/);
    assert.deepEqual(lines(await run('ls', `${R}/cr/copied`)), []);
    // Other repositories holding the same manifest are untouched.
    assert.equal((await run('digest', `${R}/cr/pushed:v1`)).trim(), digest);
  });
});
