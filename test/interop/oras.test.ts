// Interop: the real oras CLI (v1.3.x) against a running Trellis, and against Trellis's data directory
// read as plain OCI layouts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { interopSession } from '../helpers/interop.ts';
import { layoutDirectory } from '../helpers/registry.ts';
import { requirePeer } from '../helpers/peers.ts';
import { sha256 } from '../helpers/oci-client.ts';


const APP = 'application/vnd.example.app';
const SBOM = 'application/vnd.example.sbom';
const SIG = 'application/vnd.example.sig';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

interface DiscoverNode {
  reference?: string;
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  referrers?: DiscoverNode[];
}

interface PushResult {
  digest: string;
  mediaType: string;
  artifactType?: string;
  annotations?: Record<string, string>;
}


function byDigest(nodes: DiscoverNode[] | undefined, digest: string): DiscoverNode {
  const found = (nodes ?? []).find((n) => n.digest === digest);
  assert.ok(found, `referrer ${digest} not in ${JSON.stringify((nodes ?? []).map((n) => n.digest))}`);
  return found;
}

test('oras against Trellis', { timeout: 120_000 }, async (t) => {
  const oras = requirePeer(t, 'oras');
  if (!oras) return;
  const { reg, work, exec } = await interopSession(t, 'oras');
  const R = reg.host;
  const base = `http://${R}`;

  /** Runs oras in the work dir (it refuses absolute file paths). */
  const run = async (...args: string[]) => (await exec(oras, args)).stdout;

  /** Runs oras expecting it to fail; returns its stderr. */
  async function runFailing(...args: string[]): Promise<string> {
    try {
      const out = await run(...args);
      assert.fail(`oras ${args.join(' ')} should have failed, printed: ${out}`);
    } catch (err) {
      if (err instanceof assert.AssertionError) throw err;
      return (err as Error).message;
    }
  }
  const discover = async (...args: string[]) => JSON.parse(await run('discover', '--format', 'json', ...args)) as DiscoverNode;
  const tagsOf = async (repo: string) => (await run('repo', 'tags', '--plain-http', `${R}/${repo}`)).split('\n').filter(Boolean);

  const payload = `hello from the oras interop test ${Date.now()} ${Math.random()}\n`;
  const sbomBytes = JSON.stringify({ sbom: true, nonce: Math.random() });
  await writeFile(join(work, 'hi.txt'), payload);
  await writeFile(join(work, 'sbom.json'), sbomBytes);

  let subject = '';
  let sbom = '';
  let sig = '';
  let nested = '';

  await t.test('push with --artifact-type and --annotation', async () => {
    const out = JSON.parse(await run('push', '--plain-http', '--format', 'json', `${R}/demo/app:v1`, 'hi.txt:text/plain',
      '--artifact-type', APP, '--annotation', 'org.example.k=v')) as PushResult;
    subject = out.digest;
    assert.match(subject, /^sha256:[0-9a-f]{64}$/);
    const res = await fetch(`${base}/v2/demo/app/manifests/v1`, { headers: { Accept: OCI_MANIFEST } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), OCI_MANIFEST);
    const bytes = Buffer.from(await res.arrayBuffer());
    assert.equal(sha256(bytes), subject);
    const manifest = JSON.parse(bytes.toString()) as { artifactType: string; annotations: Record<string, string>; layers: { digest: string; mediaType: string; size: number }[] };
    assert.equal(manifest.artifactType, APP);
    assert.equal(manifest.annotations['org.example.k'], 'v');
    assert.equal(manifest.layers.length, 1);
    assert.equal(manifest.layers[0]!.digest, sha256(payload));
    assert.equal(manifest.layers[0]!.mediaType, 'text/plain');
    assert.equal(manifest.layers[0]!.size, Buffer.byteLength(payload));
  });

  await t.test('pull returns the same bytes', async () => {
    await run('pull', '--plain-http', '-o', 'pulled', `${R}/demo/app:v1`);
    assert.equal(await readFile(join(work, 'pulled', 'hi.txt'), 'utf8'), payload);
  });

  await t.test('resolve', async () => {
    assert.equal((await run('resolve', '--plain-http', `${R}/demo/app:v1`)).trim(), subject);
  });

  await t.test('attach two referrers (with a file, annotation-only)', async () => {
    const a = JSON.parse(await run('attach', '--plain-http', '--format', 'json', '--artifact-type', SBOM,
      '--annotation', 'org.example.kind=sbom', `${R}/demo/app:v1`, 'sbom.json:application/json')) as PushResult;
    const b = JSON.parse(await run('attach', '--plain-http', '--format', 'json', '--artifact-type', SIG,
      '--annotation', 'org.example.kind=sig', `${R}/demo/app:v1`)) as PushResult;
    sbom = a.digest;
    sig = b.digest;
    assert.notEqual(sbom, sig);
    // Trellis answers the Referrers API, so oras must not have fallen back to sha256-<hex> tags.
    assert.deepEqual(await tagsOf('demo/app'), ['v1']);
    const res = await fetch(`${base}/v2/demo/app/manifests/${sbom}`, { headers: { Accept: OCI_MANIFEST } });
    const manifest = JSON.parse(await res.text()) as { subject: { digest: string }; layers: { digest: string }[] };
    assert.equal(manifest.subject.digest, subject);
    assert.deepEqual(manifest.layers.map((l) => l.digest), [sha256(sbomBytes)]);
  });

  await t.test('discover lists both referrers, and filters by artifact type', async () => {
    const tree = await discover('--plain-http', `${R}/demo/app:v1`);
    assert.equal(tree.digest, subject);
    assert.deepEqual(new Set(tree.referrers?.map((r) => r.digest)), new Set([sbom, sig]));
    assert.equal(tree.referrers?.length, 2);
    const s = byDigest(tree.referrers, sbom);
    assert.equal(s.artifactType, SBOM);
    assert.equal(s.mediaType, OCI_MANIFEST);
    assert.equal(s.annotations?.['org.example.kind'], 'sbom');
    const g = byDigest(tree.referrers, sig);
    assert.equal(g.artifactType, SIG);
    assert.equal(g.annotations?.['org.example.kind'], 'sig');

    const filtered = await discover('--plain-http', '--artifact-type', SBOM, `${R}/demo/app:v1`);
    assert.deepEqual(filtered.referrers?.map((r) => r.digest), [sbom]);
    const forced = await discover('--plain-http', '--distribution-spec', 'v1.1-referrers-api', '--artifact-type', SIG, `${R}/demo/app:v1`);
    assert.deepEqual(forced.referrers?.map((r) => r.digest), [sig]);
  });

  await t.test('chained attach and discover depth', async () => {
    nested = (await run('attach', '--plain-http', '--format', 'go-template', '--template', '{{.digest}}', '--artifact-type', SIG,
      '--annotation', 'org.example.of=sbom', `${R}/demo/app@${sbom}`)).trim();
    assert.match(nested, /^sha256:[0-9a-f]{64}$/);
    const full = await discover('--plain-http', `${R}/demo/app:v1`);
    const s = byDigest(full.referrers, sbom);
    assert.deepEqual(s.referrers?.map((r) => r.digest), [nested]);
    assert.equal(byDigest(s.referrers, nested).annotations?.['org.example.of'], 'sbom');
    assert.deepEqual(byDigest(full.referrers, sig).referrers ?? [], []);

    const shallow = await discover('--plain-http', '--depth', '1', `${R}/demo/app:v1`);
    assert.deepEqual(new Set(shallow.referrers?.map((r) => r.digest)), new Set([sbom, sig]));
    assert.deepEqual(byDigest(shallow.referrers, sbom).referrers ?? [], []);
  });

  await t.test('discover --oci-layout on the Trellis data directory', async () => {
    const tree = await discover('--oci-layout', `${await layoutDirectory(reg, 'demo/app')}:v1`);
    assert.equal(tree.digest, subject);
    assert.deepEqual(new Set(tree.referrers?.map((r) => r.digest)), new Set([sbom, sig]));
    assert.equal(byDigest(tree.referrers, sbom).artifactType, SBOM);
    assert.equal(byDigest(tree.referrers, sig).artifactType, SIG);
    assert.deepEqual(byDigest(tree.referrers, sbom).referrers?.map((r) => r.digest), [nested]);
  });

  await t.test('cp -r registry to registry (two repositories of Trellis)', async () => {
    await run('cp', '-r', '--from-plain-http', '--to-plain-http', `${R}/demo/app:v1`, `${R}/demo/copy:v1`);
    assert.equal((await run('resolve', '--plain-http', `${R}/demo/copy:v1`)).trim(), subject);
    const tree = await discover('--plain-http', `${R}/demo/copy:v1`);
    assert.deepEqual(new Set(tree.referrers?.map((r) => r.digest)), new Set([sbom, sig]));
    assert.deepEqual(byDigest(tree.referrers, sbom).referrers?.map((r) => r.digest), [nested]);
    const blob = await fetch(`${base}/v2/demo/copy/blobs/${sha256(sbomBytes)}`);
    assert.equal(blob.status, 200);
    assert.equal(await blob.text(), sbomBytes);
  });

  await t.test('cp -r registry to --to-oci-layout', async () => {
    await run('cp', '-r', '--from-plain-http', '--to-oci-layout', `${R}/demo/app:v1`, './layout:v1');
    const index = JSON.parse(await readFile(join(work, 'layout', 'index.json'), 'utf8')) as { manifests: { digest: string; annotations?: Record<string, string> }[] };
    const tagged = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === 'v1');
    assert.equal(tagged?.digest, subject);
    for (const digest of [subject, sbom, sig, nested, sha256(payload), sha256(sbomBytes)]) {
      const path = join(work, 'layout', 'blobs', 'sha256', digest.slice('sha256:'.length));
      assert.equal(sha256(await readFile(path)), digest);
    }
    const tree = await discover('--oci-layout', './layout:v1');
    assert.deepEqual(new Set(tree.referrers?.map((r) => r.digest)), new Set([sbom, sig]));
  });

  await t.test('repo ls', async () => {
    const repos = (await run('repo', 'ls', '--plain-http', R)).split('\n').filter(Boolean);
    assert.deepEqual(repos, ['demo/app', 'demo/copy']);
  });

  await t.test('tag and repo tags', async () => {
    assert.deepEqual(await tagsOf('demo/app'), ['v1']);
    await run('tag', '--plain-http', `${R}/demo/app:v1`, 'v2', 'v3');
    assert.deepEqual(await tagsOf('demo/app'), ['v1', 'v2', 'v3']);
    assert.equal((await run('resolve', '--plain-http', `${R}/demo/app:v3`)).trim(), subject);
  });

  await t.test('manifest delete (a referrer, by digest)', async () => {
    await run('manifest', 'delete', '--plain-http', '-f', `${R}/demo/copy@${sig}`);
    const head = await fetch(`${base}/v2/demo/copy/manifests/${sig}`, { method: 'HEAD' });
    assert.equal(head.status, 404);
    assert.match(await runFailing('manifest', 'fetch', '--plain-http', `${R}/demo/copy@${sig}`), /not found/i);
    const tree = await discover('--plain-http', `${R}/demo/copy:v1`);
    assert.deepEqual(tree.referrers?.map((r) => r.digest), [sbom]);
    // The original repository is untouched.
    const original = await discover('--plain-http', '--depth', '1', `${R}/demo/app:v1`);
    assert.deepEqual(new Set(original.referrers?.map((r) => r.digest)), new Set([sbom, sig]));
  });

  await t.test('blob delete', async () => {
    const loose = `a loose blob ${Math.random()}`;
    await writeFile(join(work, 'loose.bin'), loose);
    const descriptor = JSON.parse(await run('blob', 'push', '--plain-http', '--descriptor', `${R}/demo/app`, 'loose.bin')) as { digest: string; size: number };
    const pushed = descriptor.digest;
    assert.equal(pushed, sha256(loose));
    assert.equal(descriptor.size, loose.length);
    assert.equal(await run('blob', 'fetch', '--plain-http', '--output', '-', `${R}/demo/app@${pushed}`), loose);
    await run('blob', 'delete', '--plain-http', '-f', `${R}/demo/app@${pushed}`);
    assert.equal((await fetch(`${base}/v2/demo/app/blobs/${pushed}`, { method: 'HEAD' })).status, 404);
    assert.match(await runFailing('blob', 'fetch', '--plain-http', '--output', '-', `${R}/demo/app@${pushed}`), /not found/i);
    await reg.registry.layout.flushAll();
    assert.equal(await reg.registry.driver.stat(`demo/app/blobs/sha256/${pushed.slice(7)}`), undefined);
  });
});
