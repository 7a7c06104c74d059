// The graph the copy tests move around: src/app:v1 (an image) with an SBOM referrer that has a
// signature referrer, src/app:bundle (an index listing v1 and a nested-namespace member in
// src/app/api) with a signature of its own.
import assert from 'node:assert/strict';
import { OCI_INDEX, makeImage, makeReferrer, pushBuilt, pushManifest, type Built } from '../helpers/oci-client.ts';

export interface GraphFixture {
  image: Built;
  child: Built;
  sbom: Built;
  sig: Built;
  bundle: string;
  bundleSig: string;
}

export async function pushGraph(base: string): Promise<GraphFixture> {
  const image = makeImage();
  const child = makeImage();
  const sbom = makeReferrer(image.descriptor, { artifactType: 'application/vnd.example.sbom', annotations: { kind: 'sbom' } });
  const sig = makeReferrer(sbom.descriptor, { artifactType: 'application/vnd.example.sig', annotations: { kind: 'sig' } });
  assert.equal((await pushBuilt(base, 'src/app', 'v1', image)).status, 201);
  assert.equal((await pushBuilt(base, 'src/app', sbom.digest, sbom)).status, 201);
  assert.equal((await pushBuilt(base, 'src/app', sig.digest, sig)).status, 201);
  assert.equal((await pushBuilt(base, 'src/app/api', child.digest, child)).status, 201);
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ ...child.descriptor, annotations: { 'dev.trellis.repository': 'api' } }, image.descriptor] }));
  const pushed = await pushManifest(base, 'src/app', 'bundle', index, OCI_INDEX);
  assert.equal(pushed.status, 201);
  const onIndex = makeReferrer({ mediaType: OCI_INDEX, digest: pushed.digest, size: index.length }, { artifactType: 'application/vnd.example.sig' });
  assert.equal((await pushBuilt(base, 'src/app', onIndex.digest, onIndex)).status, 201);
  return { image, child, sbom, sig, bundle: pushed.digest, bundleSig: onIndex.digest };
}
