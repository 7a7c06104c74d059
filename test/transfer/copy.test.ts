// copyRepository between two registries over HTTP: which tags travel.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { OCI_INDEX, listTags, makeImage, makeReferrer, pushBuilt, pushManifest } from '../helpers/oci-client.ts';
import { HttpRegistry } from '../../src/transfer/http.ts';
import { copyRepository } from '../../src/transfer/copy.ts';

let reg: TestRegistry;

before(async () => {
  reg = await startTestRegistry();
});
after(async () => {
  await reg.dispose();
});

test('fallback tags (sha256-<hex>) are never copied as tags, with or without -r', async () => {
  const image = makeImage();
  assert.equal((await pushBuilt(reg.url, 'fb/src', 'v1', image)).status, 201);
  const sig = makeReferrer(image.descriptor, { artifactType: 'application/vnd.example.sig' });
  assert.equal((await pushBuilt(reg.url, 'fb/src', sig.digest, sig)).status, 201);
  // What a registry without the referrers API (or a client writing for one) leaves behind.
  const fallback = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ ...sig.descriptor, artifactType: 'application/vnd.example.sig' }] };
  assert.equal((await pushManifest(reg.url, 'fb/src', image.digest.replace(':', '-'), fallback, OCI_INDEX)).status, 201);
  const registry = new HttpRegistry(reg.url);
  for (const referrers of [true, false]) {
    const destination = `fb/dst-${referrers}`;
    await copyRepository(registry, registry, 'fb/src', destination, { referrers });
    assert.deepEqual((await listTags(reg.url, destination)).tags, ['v1'], `referrers: ${referrers}`);
  }
});
