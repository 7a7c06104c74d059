// copyRepository between two registries over HTTP: which tags travel, and what a missing source
// says (the CLI turns the error's kind into its exit code).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { OCI_INDEX, listTags, makeImage, makeReferrer, pushBuilt, pushManifest } from '../helpers/oci-client.ts';
import { HttpRegistry } from '../../src/transfer/http.ts';
import { copyRepository } from '../../src/transfer/copy.ts';
import { RegistryRequestFailed } from '../../src/transfer/errors.ts';

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

test('a source tag, digest or repository that does not exist is "not found" (exit 3), not a failed copy', async () => {
  const registry = new HttpRegistry(reg.url);
  const image = makeImage();
  assert.equal((await pushBuilt(reg.url, 'nf/src', 'v1', image)).status, 201);
  const notFound = (err: unknown) => err instanceof RegistryRequestFailed && err.kind === 'not-found';
  await assert.rejects(copyRepository(registry, registry, 'nf/src', 'nf/dst', { referrers: true, references: ['nope'] }), notFound);
  await assert.rejects(copyRepository(registry, registry, 'nf/src', 'nf/dst', { referrers: true, references: [`sha256:${'a'.repeat(64)}`] }), notFound);
  await assert.rejects(copyRepository(registry, registry, 'nf/nothing', 'nf/dst', { referrers: true }), notFound);
});
