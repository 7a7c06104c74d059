// `trellis layout export|import`: a repository with referrers (chained) and a nested-namespace
// child goes out to a layout directory and a tar, is read by oras and regctl, and comes back in
// with every digest unchanged.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { requirePeer } from '../helpers/peers.ts';
import { OCI_INDEX, getManifest, listReferrers, listTags, makeImage, makeReferrer, pushBuilt, pushManifest, type Descriptor } from '../helpers/oci-client.ts';

const run = promisify(execFile);
const MAIN = resolve(import.meta.dirname, '../../src/main.ts');
let reg: TestRegistry;
let work: string;
const image = makeImage();
const child = makeImage();
const sbom = makeReferrer(image.descriptor, { artifactType: 'application/vnd.example.sbom', annotations: { kind: 'sbom' } });
const sig = makeReferrer(sbom.descriptor, { artifactType: 'application/vnd.example.sig', annotations: { kind: 'sig' } });
let bundle = '';

const trellis = (...args: string[]) => run(process.execPath, [MAIN, ...args, '--registry', reg.url]);

before(async () => {
  reg = await startTestRegistry();
  work = await mkdtemp(join(tmpdir(), 'trellis-layout-cli-'));
  assert.equal((await pushBuilt(reg.url, 'src/app', 'v1', image)).status, 201);
  assert.equal((await pushBuilt(reg.url, 'src/app', sbom.digest, sbom)).status, 201);
  assert.equal((await pushBuilt(reg.url, 'src/app', sig.digest, sig)).status, 201);
  assert.equal((await pushBuilt(reg.url, 'src/app/api', child.digest, child)).status, 201);
  const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ ...child.descriptor, annotations: { 'dev.trellis.repository': 'api' } }] };
  const pushed = await pushManifest(reg.url, 'src/app', 'bundle', index, OCI_INDEX);
  assert.equal(pushed.status, 201);
  bundle = pushed.digest;
});
after(async () => {
  await reg.dispose();
  await rm(work, { recursive: true, force: true });
});

const digests = (list: Descriptor[]) => list.map((d) => d.digest).sort();

test('export writes a layout oras and regctl discover referrers in', async (t) => {
  const out = join(work, 'exported');
  const { stdout } = await trellis('layout', 'export', 'src/app', out);
  assert.match(stdout, /2 tags, 5 manifests/);
  assert.equal(JSON.parse(await readFile(join(out, 'oci-layout'), 'utf8')).imageLayoutVersion, '1.0.0');
  await stat(join(out, 'api/oci-layout')); // the nested child is a nested layout
  await stat(join(out, 'api/blobs/sha256', child.digest.slice(7)));
  const oras = requirePeer(t, 'oras');
  const regctl = requirePeer(t, 'regctl');
  if (!oras || !regctl) return;
  const orasFound = JSON.parse((await run(oras, ['discover', '--oci-layout', '--format', 'json', `${out}:v1`], { cwd: work })).stdout) as { referrers: (Descriptor & { referrers?: Descriptor[] })[] };
  assert.deepEqual(orasFound.referrers.map((r) => r.digest), [sbom.digest]);
  assert.deepEqual(orasFound.referrers[0]!.referrers?.map((r) => r.digest), [sig.digest], 'chained referrers too');
  const env = { ...process.env, HOME: work, REGCTL_CONFIG: join(work, 'regctl.json') };
  const regctlFound = JSON.parse((await run(regctl, ['artifact', 'list', '--format', '{{json .}}', `ocidir://${out}:v1`], { env })).stdout) as { descriptors: Descriptor[] };
  assert.deepEqual(digests(regctlFound.descriptors), [sbom.digest]);
});

test('export to a tar and import it elsewhere: tags, referrers, nested children, digests unchanged', async () => {
  const file = join(work, 'app.tar');
  await trellis('layout', 'export', 'src/app', file);
  const { stdout } = await trellis('layout', 'import', file, 'dst/app');
  assert.match(stdout, /imported .* into dst\/app: 2 tags/);
  assert.deepEqual((await listTags(reg.url, 'dst/app')).tags, ['bundle', 'v1']);
  assert.equal((await getManifest(reg.url, 'dst/app', 'v1')).digest, image.digest);
  assert.equal((await getManifest(reg.url, 'dst/app', 'bundle')).digest, bundle);
  assert.deepEqual(digests((await listReferrers(reg.url, 'dst/app', image.digest)).manifests), [sbom.digest]);
  assert.deepEqual(digests((await listReferrers(reg.url, 'dst/app', sbom.digest)).manifests), [sig.digest]);
  assert.equal((await getManifest(reg.url, 'dst/app/api', child.digest)).status, 200, 'the nested child went to dst/app/api');
});

test('clear errors for bad sources and targets', async () => {
  const notLayout = join(work, 'not-a-layout');
  await writeFile(join(work, 'plain.txt'), 'x');
  await assert.rejects(trellis('layout', 'import', notLayout, 'x/y'), (err: { code: number; stderr: string }) => err.code === 2 && /does not exist/.test(err.stderr));
  await assert.rejects(trellis('layout', 'export', 'src/app', work), (err: { code: number; stderr: string }) => err.code === 2 && /not empty/.test(err.stderr));
  await assert.rejects(trellis('layout', 'export', 'Bad/Name', join(work, 'z')), (err: { code: number; stderr: string }) => err.code === 2 && /repository name/.test(err.stderr));
});
