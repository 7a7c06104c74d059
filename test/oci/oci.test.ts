// Digests, names and manifest parsing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { digestOf, parseDigest } from '../../src/oci/digest.ts';
import { isValidTag, repositoryNameProblem } from '../../src/oci/names.ts';
import { MAX_MANIFEST_DEPTH, MAX_MANIFEST_DESCRIPTORS, ManifestInvalid, nestsDeeperThan, parseManifest } from '../../src/oci/manifest.ts';

const D = `sha256:${'a'.repeat(64)}`;
const desc = (mediaType: string, digest = D) => ({ mediaType, digest, size: 1 });

test('digests: supported, unsupported and malformed are told apart', () => {
  assert.deepEqual(parseDigest(D), { algorithm: 'sha256', hex: 'a'.repeat(64), digest: D });
  assert.equal(typeof parseDigest(`sha512:${'b'.repeat(128)}`), 'object');
  assert.equal(parseDigest(`blake3:${'a'.repeat(64)}`), 'unsupported');
  for (const bad of ['sha256:' + 'A'.repeat(64), 'sha256:abc', 'sha256', ':abc', 'sha256:../../etc', `sha512:${'a'.repeat(64)}`]) assert.equal(parseDigest(bad), 'malformed', bad);
  assert.equal(digestOf(Buffer.from('{}')), 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a');
});

test('repository names and tags', () => {
  for (const ok of ['a', 'a/b', 'team/app/ko-build/api', 'a.b_c__d--e', 'x'.repeat(255)]) assert.equal(repositoryNameProblem(ok), undefined, ok);
  for (const bad of ['', 'A', '..', 'a/../b', '/a', 'a/', 'a//b', '_a', 'a/_uploads', 'a/blobs', 'index.json', 'a/oci-layout', 'x'.repeat(256), 'a%2fb']) {
    assert.ok(repositoryNameProblem(bad), bad);
  }
  assert.ok(isValidTag('v1.0_rc-1') && isValidTag('_x') && !isValidTag('.x') && !isValidTag('a:b') && !isValidTag('x'.repeat(129)));
});

test('manifest parsing finds every link and the effective artifact type', () => {
  const manifest = parseManifest(Buffer.from(JSON.stringify({
    schemaVersion: 2, config: desc('application/vnd.example.config'), layers: [desc('application/vnd.oci.image.layer.nondistributable.v1.tar'), desc('a/b')],
    subject: desc('application/vnd.oci.image.manifest.v1+json', `sha256:${'c'.repeat(64)}`), annotations: { k: 'v' },
  })), 'application/vnd.oci.image.manifest.v1+json');
  assert.equal(manifest.mediaType, 'application/vnd.oci.image.manifest.v1+json');
  assert.equal(manifest.artifactType, 'application/vnd.example.config');
  assert.equal(manifest.subject, `sha256:${'c'.repeat(64)}`);
  assert.deepEqual(manifest.links.map((l) => [l.kind, l.required]), [['config', true], ['layer', false], ['layer', true], ['subject', false]]);

  const scratch = parseManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, config: desc('a/b'), layers: null })));
  assert.deepEqual(scratch.links.map((l) => l.kind), ['config'], 'null layers (Go clients) read as none');

  const index = parseManifest(Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [desc('application/vnd.oci.image.manifest.v1+json')] })));
  assert.equal(index.mediaType, 'application/vnd.oci.image.index.v1+json');
  assert.equal(index.artifactType, undefined);

  const artifact = parseManifest(Buffer.from(JSON.stringify({
    mediaType: 'application/vnd.oci.artifact.manifest.v1+json', artifactType: 'application/vnd.example', blobs: [desc('application/vnd.oci.image.manifest.v1+json'), desc('text/plain')],
  })));
  assert.deepEqual(artifact.links.map((l) => l.kind), ['manifest', 'blob']);
});

test('manifest parsing refuses what it cannot store faithfully', () => {
  const refuses = (body: unknown, contentType?: string) => assert.throws(() => parseManifest(Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)), contentType), ManifestInvalid);
  refuses('nope');
  refuses({ schemaVersion: 1, fsLayers: [] });
  refuses({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: desc('a/b'), layers: [] }, 'application/vnd.oci.image.index.v1+json');
  refuses({ schemaVersion: 2, config: { ...desc('a/b'), size: -1 }, layers: [] });
  refuses({ schemaVersion: 2, config: desc('a/b'), layers: [], annotations: { k: 1 } });
  refuses({ schemaVersion: 2 });
  refuses({ mediaType: 'application/vnd.oci.artifact.manifest.v1+json', blobs: [] });
});

test('nesting depth and descriptor counts are bounded before the work is done', () => {
  const nest = (n: number) => Buffer.from('['.repeat(n) + ']'.repeat(n));
  assert.equal(nestsDeeperThan(nest(MAX_MANIFEST_DEPTH), MAX_MANIFEST_DEPTH), false);
  assert.equal(nestsDeeperThan(nest(MAX_MANIFEST_DEPTH + 1), MAX_MANIFEST_DEPTH), true);
  // Brackets inside strings (and escaped quotes) do not count.
  assert.equal(nestsDeeperThan(Buffer.from(JSON.stringify({ a: '[[[[{{{{', b: 'x\\"[[[[' })), 2), false);
  const started = performance.now();
  assert.throws(() => parseManifest(nest(2_000_000)), (err) => err instanceof ManifestInvalid && /nests deeper/.test(err.message));
  assert.ok(performance.now() - started < 1000, 'refused without parsing');
  const many = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: Array.from({ length: MAX_MANIFEST_DESCRIPTORS + 1 }, () => desc('application/vnd.oci.image.manifest.v1+json')) };
  assert.throws(() => parseManifest(Buffer.from(JSON.stringify(many))), /at most 50000/);
});
