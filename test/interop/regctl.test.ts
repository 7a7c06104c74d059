// Interop: the real regctl (regclient v0.11.x) against a running Trellis, and against Trellis's data
// directory read as plain OCI layouts (ocidir://).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { interopSession } from '../helpers/interop.ts';
import { layoutDirectory } from '../helpers/registry.ts';
import { requirePeer } from '../helpers/peers.ts';
import { sha256 } from '../helpers/oci-client.ts';


const APP = 'application/vnd.example.app';
const SBOM = 'application/vnd.example.sbom';
const SIG = 'application/vnd.example.sig';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}

interface TreeNode {
  reference: { Digest: string; Tag: string };
  manifest: { artifactType?: string; annotations?: Record<string, string> };
  referrer?: TreeNode[] | null;
}


function find(list: Descriptor[], digest: string): Descriptor {
  const found = list.find((d) => d.digest === digest);
  assert.ok(found, `${digest} not in ${JSON.stringify(list.map((d) => d.digest))}`);
  return found;
}

test('regctl against Trellis', { timeout: 120_000 }, async (t) => {
  const regctl = requirePeer(t, 'regctl');
  if (!regctl) return;
  const { reg, work, exec: execIn } = await interopSession(t, 'regctl');
  const R = reg.host;
  const base = `http://${R}`;
  const exec = (args: string[]) => execIn(regctl, args);

  const run = async (...args: string[]) => (await exec(args)).stdout;
  const lines = (text: string) => text.split('\n').filter(Boolean);
  /** The referrers regctl reports after its own filtering (`.Manifest` is the unfiltered response body). */
  const referrersOf = async (...args: string[]) =>
    (JSON.parse(await run('artifact', 'list', '--format', '{{json .Descriptors}}', ...args)) as Descriptor[] | null) ?? [];
  const getManifest = async (repo: string, ref: string) => {
    const res = await fetch(`${base}/v2/${repo}/manifests/${ref}`, { headers: { Accept: OCI_MANIFEST } });
    assert.equal(res.status, 200, `GET ${repo}:${ref}`);
    return Buffer.from(await res.arrayBuffer());
  };

  await run('registry', 'set', R, '--tls', 'disabled');

  await t.test('image create (scratch image, straight to Trellis)', async () => {
    // regclient writes a scratch image with `"layers": null` (a nil Go slice); distribution 2.8
    // and olareg accept it.
    await run('image', 'create', `${R}/rc/scratch:v1`, '--annotation', 'org.example.seq=1');
    const raw = await run('manifest', 'get', '--format', 'raw-body', `${R}/rc/scratch:v1`);
    const manifest = JSON.parse(raw) as { mediaType: string; annotations: Record<string, string> };
    assert.equal(manifest.mediaType, OCI_MANIFEST);
    assert.equal(manifest.annotations['org.example.seq'], '1');
    assert.deepEqual(await getManifest('rc/scratch', 'v1'), Buffer.from(raw));
  });

  // The subject image for the referrers tests: made with image create + image mod in a local
  // layout (so it has one real layer), then copied into Trellis.
  let subject = '';
  await t.test('image copy from an ocidir layout into Trellis', async () => {
    await mkdir(join(work, 'content'));
    await writeFile(join(work, 'content', 'f.txt'), `layer content ${Math.random()}\n`);
    await run('image', 'create', 'ocidir://src:v1', '--annotation', 'org.example.seq=2');
    await run('image', 'mod', 'ocidir://src:v1', '--layer-add', 'dir=content', '--create', 'v2');
    subject = (await run('image', 'digest', 'ocidir://src:v2')).trim();
    await run('image', 'copy', 'ocidir://src:v2', `${R}/rc/base:v1`);
    const bytes = await getManifest('rc/base', 'v1');
    assert.equal(sha256(bytes), subject);
    assert.deepEqual(bytes, await readFile(join(work, 'src', 'blobs', 'sha256', subject.slice(7))));
    assert.equal((await run('image', 'digest', `${R}/rc/base:v1`)).trim(), subject);
  });

  await t.test('artifact put (tagged)', async () => {
    const body = `artifact body ${Math.random()}\n`;
    await writeFile(join(work, 'app.txt'), body);
    await run('artifact', 'put', '--artifact-type', APP, '-f', 'app.txt', '-m', 'text/plain', `${R}/rc/art:v1`);
    const manifest = JSON.parse((await getManifest('rc/art', 'v1')).toString()) as { artifactType: string; layers: Descriptor[] };
    assert.equal(manifest.artifactType, APP);
    assert.deepEqual(manifest.layers.map((l) => [l.digest, l.mediaType]), [[sha256(body), 'text/plain']]);
    assert.equal(await run('artifact', 'get', `${R}/rc/art:v1`), body);
  });

  let sbom = '';
  let sig = '';
  let nested = '';
  const digestFormat = ['--format', '{{.Manifest.GetDescriptor.Digest}}'];
  await t.test('artifact put --subject', async () => {
    await writeFile(join(work, 'sbom.json'), JSON.stringify({ sbom: Math.random() }));
    await writeFile(join(work, 'sig.bin'), `sig ${Math.random()}`);
    sbom = (await run('artifact', 'put', ...digestFormat, '--artifact-type', SBOM, '--annotation', 'org.example.kind=sbom',
      '-f', 'sbom.json', '-m', 'application/json', '--subject', `${R}/rc/base:v1`)).trim();
    sig = (await run('artifact', 'put', ...digestFormat, '--artifact-type', SIG, '--annotation', 'org.example.kind=sig',
      '-f', 'sig.bin', '--subject', `${R}/rc/base:v1`)).trim();
    assert.match(sbom, /^sha256:[0-9a-f]{64}$/);
    assert.match(sig, /^sha256:[0-9a-f]{64}$/);
    const manifest = JSON.parse((await getManifest('rc/base', sbom)).toString()) as { subject: Descriptor };
    assert.equal(manifest.subject.digest, subject);
    // Trellis returns OCI-Subject, so regctl must not have pushed a sha256-<hex> fallback tag.
    assert.deepEqual(lines(await run('tag', 'ls', `${R}/rc/base`)), ['v1']);
  });

  await t.test('artifact list (and --filter-artifact-type)', async () => {
    const all = await referrersOf(`${R}/rc/base:v1`);
    assert.equal(all.length, 2);
    assert.equal(find(all, sbom).artifactType, SBOM);
    assert.equal(find(all, sbom).annotations?.['org.example.kind'], 'sbom');
    assert.equal(find(all, sig).artifactType, SIG);
    assert.equal(find(all, sig).annotations?.['org.example.kind'], 'sig');
    const filtered = await referrersOf('--filter-artifact-type', SBOM, `${R}/rc/base:v1`);
    assert.deepEqual(filtered.map((d) => d.digest), [sbom]);
    // regctl passes ?artifactType= on; the raw response shows Trellis filtered on the server.
    const body = JSON.parse(await run('artifact', 'list', '--filter-artifact-type', SBOM, '--format', '{{json .Manifest}}', `${R}/rc/base:v1`)) as { manifests: Descriptor[] };
    assert.deepEqual(body.manifests.map((d) => d.digest), [sbom]);
    const byAnnotation = await referrersOf('--filter-annotation', 'org.example.kind=sig', `${R}/rc/base:v1`);
    assert.deepEqual(byAnnotation.map((d) => d.digest), [sig]);
  });

  await t.test('artifact tree (with a referrer of a referrer)', async () => {
    await writeFile(join(work, 'nested.txt'), `nested ${Math.random()}`);
    nested = (await run('artifact', 'put', ...digestFormat, '--artifact-type', SIG, '--annotation', 'org.example.of=sbom',
      '-f', 'nested.txt', '--subject', `${R}/rc/base@${sbom}`)).trim();
    const tree = JSON.parse(await run('artifact', 'tree', '--format', '{{json .}}', `${R}/rc/base:v1`)) as TreeNode;
    const children = tree.referrer ?? [];
    assert.deepEqual(new Set(children.map((c) => c.reference.Digest)), new Set([sbom, sig]));
    const sbomNode = children.find((c) => c.reference.Digest === sbom)!;
    assert.equal(sbomNode.manifest.artifactType, SBOM);
    assert.deepEqual((sbomNode.referrer ?? []).map((c) => c.reference.Digest), [nested]);
    assert.deepEqual(children.find((c) => c.reference.Digest === sig)!.referrer ?? [], []);
  });

  await t.test('tag ls and tag delete (a real 202, no dummy-manifest fallback)', async () => {
    await run('image', 'copy', `${R}/rc/base:v1`, `${R}/rc/base:v2`);
    assert.deepEqual(lines(await run('tag', 'ls', `${R}/rc/base`)), ['v1', 'v2']);
    const { stderr } = await exec(['-v', 'trace', 'tag', 'delete', `${R}/rc/base:v2`]);
    const requests = stderr.split('\n').filter((l) => l.includes('msg="reg http request"'))
      .map((l) => `${/req-method=(\S+)/.exec(l)?.[1]} ${/req-url=(\S+)/.exec(l)?.[1]} ${/resp-status="(\d+)/.exec(l)?.[1]}`);
    assert.deepEqual(requests, [`DELETE http://${R}/v2/rc/base/manifests/v2 202`]);
    assert.deepEqual(lines(await run('tag', 'ls', `${R}/rc/base`)), ['v1']);
    assert.equal(sha256(await getManifest('rc/base', 'v1')), subject);
  });

  await t.test('image copy --referrers between two repositories of Trellis', async () => {
    await run('image', 'copy', '--referrers', `${R}/rc/base:v1`, `${R}/rc/copy:v1`);
    assert.equal((await run('image', 'digest', `${R}/rc/copy:v1`)).trim(), subject);
    const list = await referrersOf(`${R}/rc/copy:v1`);
    assert.deepEqual(new Set(list.map((d) => d.digest)), new Set([sbom, sig]));
    const tree = JSON.parse(await run('artifact', 'tree', '--format', '{{json .}}', `${R}/rc/copy:v1`)) as TreeNode;
    const sbomNode = (tree.referrer ?? []).find((c) => c.reference.Digest === sbom);
    assert.deepEqual((sbomNode?.referrer ?? []).map((c) => c.reference.Digest), [nested]);
  });

  await t.test('image copy --referrers to an ocidir layout', async () => {
    await run('image', 'copy', '--referrers', `${R}/rc/base:v1`, 'ocidir://out:v1');
    assert.equal((await run('image', 'digest', 'ocidir://out:v1')).trim(), subject);
    const list = await referrersOf('ocidir://out:v1');
    assert.deepEqual(new Set(list.map((d) => d.digest)), new Set([sbom, sig]));
    for (const digest of [sbom, sig, nested]) {
      assert.equal(sha256(await readFile(join(work, 'out', 'blobs', 'sha256', digest.slice(7)))), digest);
    }
  });

  await t.test('repo ls', async () => {
    // rc/scratch holds the scratch image pushed by image create.
    assert.deepEqual(lines(await run('repo', 'ls', R)), ['rc/art', 'rc/base', 'rc/copy', 'rc/scratch']);
  });

  await t.test('manifest delete (a referrer, by digest)', async () => {
    await run('manifest', 'delete', `${R}/rc/copy@${sig}`);
    assert.equal((await fetch(`${base}/v2/rc/copy/manifests/${sig}`, { method: 'HEAD' })).status, 404);
    await assert.rejects(run('manifest', 'get', `${R}/rc/copy@${sig}`), /not found|404/i);
    assert.deepEqual((await referrersOf(`${R}/rc/copy:v1`)).map((d) => d.digest), [sbom]);
    assert.equal((await referrersOf(`${R}/rc/base:v1`)).length, 2);
  });

  await t.test('ocidir:// reads of the Trellis data directory', async () => {
    const dir = `ocidir://${await layoutDirectory(reg, 'rc/base')}`;
    // Besides v1, the layout holds the generated fallback tag of each subject with referrers.
    const tags = lines(await run('tag', 'ls', dir));
    assert.deepEqual(tags.filter((t) => !/^sha256-[0-9a-f]{64}$/.test(t)), ['v1']);
    assert.ok(tags.includes(subject.replace(':', '-')));
    const raw = await run('manifest', 'get', '--format', 'raw-body', `${dir}:v1`);
    assert.deepEqual(Buffer.from(raw), await getManifest('rc/base', 'v1'));
    // regctl's default ocidir reader trusts only sha256-<hex> fallback tags, which Trellis writes
    // into its layouts (layoutFallbackTags); --slow-referrers (every manifest in index.json) must agree.
    for (const mode of [[], ['--slow-referrers']]) {
      const list = await referrersOf(...mode, `${dir}:v1`);
      assert.deepEqual(new Set(list.map((d) => d.digest)), new Set([sbom, sig]), mode.join(' '));
      assert.equal(find(list, sbom).artifactType, SBOM);
      assert.equal(find(list, sig).annotations?.['org.example.kind'], 'sig');
      const filtered = await referrersOf(...mode, '--filter-artifact-type', SIG, `${dir}:v1`);
      assert.deepEqual(filtered.map((d) => d.digest), [sig]);
    }
    const tree = JSON.parse(await run('artifact', 'tree', '--format', '{{json .}}', `${dir}:v1`)) as TreeNode;
    const sbomNode = (tree.referrer ?? []).find((c) => c.reference.Digest === sbom);
    assert.deepEqual((sbomNode?.referrer ?? []).map((c) => c.reference.Digest), [nested]);
  });
});
