// The client against distribution 2.8 (Debian's docker-registry), which has no referrers API:
// `trellis attach` keeps the sha256-<hex> fallback tag so oras and regctl see the referrer, and
// the reverse; an index with referrers and a nested-namespace member goes Trellis -> distribution
// -> Trellis with every digest unchanged; deleting a referrer takes it out of the fallback tag.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { findPeer, requirePeer } from '../helpers/peers.ts';
import { getManifest, listReferrers, listTags, pushBuilt, type Built } from '../helpers/oci-client.ts';
import { startDistribution, type ServerHandle } from '../../bench/lib/servers.ts';
import { isolatedEnv, trellisCli, trellisOk } from './run.ts';
import { pushGraph } from './fixture.ts';

const run = promisify(execFile);
let trellis: TestRegistry;
let dist: ServerHandle | undefined;
let distHost = '';
let work: string;
let env: NodeJS.ProcessEnv;
let image: Built;
let child: Built;
let sbom: Built;
let sig: Built;
let bundle = '';
let bundleSig = '';

before(async () => {
  trellis = await startTestRegistry();
  work = await mkdtemp(join(tmpdir(), 'trellis-dist-cli-'));
  env = isolatedEnv(work);
  ({ image, child, sbom, sig, bundle, bundleSig } = await pushGraph(trellis.url));
  if (findPeer('docker-registry')) {
    dist = await startDistribution({ tmpRoot: work, logDir: work, label: 'cli' });
    distHost = dist.url.replace('http://', '');
  }
});
after(async () => {
  await dist?.stop();
  await trellis.dispose();
  await rm(work, { recursive: true, force: true });
});

const ok = (...args: string[]) => trellisOk(args, { env, cwd: work });
const json = async <T>(...args: string[]) => JSON.parse((await ok(...args, '-o', 'json')).stdout) as T;
const fallbackTag = (digest: string) => digest.replace(':', '-');

test('copy an index with referrers and a nested-namespace member Trellis -> distribution -> Trellis, every digest unchanged', async (t) => {
  if (!requirePeer(t, 'docker-registry')) return;
  await ok('copy', '-r', `${trellis.host}/src/app`, `${distHost}/mid/app`);
  assert.equal((await getManifest(dist!.url, 'mid/app', 'bundle')).digest, bundle);
  assert.equal((await getManifest(dist!.url, 'mid/app/api', child.digest)).status, 200, 'the nested member has its own repository');
  // distribution has no referrers API: the fallback tags carry the referrers.
  const tags = (await listTags(dist!.url, 'mid/app')).tags;
  for (const subject of [image.digest, sbom.digest, bundle]) assert.ok(tags.includes(fallbackTag(subject)), `fallback tag for ${subject}`);
  assert.deepEqual(await json('tags', `${distHost}/mid/app`), { repository: `${distHost}/mid/app`, tags: ['bundle', 'v1'] });

  // The same filters give the same answer: on the server at Trellis, here for distribution.
  for (const filters of [['q_annotations__kind__eq=sbom'], ['q_size__gt=100', 'q_config__mediatype__eq=application/vnd.oci.empty.v1+json'], ['q_artifacttype__contains=SIG'], ['q_annotations__kind__exists=false']]) {
    const onTrellis = await json<{ results: { digest: string }[]; filteredBy: string }>('query', `${trellis.host}/src/app:v1`, ...filters);
    const onDist = await json<{ results: { digest: string }[]; filteredBy: string }>('query', `${distHost}/mid/app:v1`, ...filters);
    assert.deepEqual([onTrellis.filteredBy, onDist.filteredBy], ['server', 'client']);
    assert.deepEqual(onDist.results.map((r) => r.digest).sort(), onTrellis.results.map((r) => r.digest).sort(), filters.join('&'));
  }

  await ok('copy', '-r', `${distHost}/mid/app`, `${trellis.host}/back/app`);
  assert.deepEqual((await listTags(trellis.url, 'back/app')).tags, ['bundle', 'v1'], 'fallback tags are not copied as tags');
  assert.equal((await getManifest(trellis.url, 'back/app', 'v1')).digest, image.digest);
  assert.equal((await getManifest(trellis.url, 'back/app', 'bundle')).digest, bundle);
  assert.equal((await getManifest(trellis.url, 'back/app/api', child.digest)).status, 200);
  assert.deepEqual((await listReferrers(trellis.url, 'back/app', image.digest)).manifests.map((d) => d.digest), [sbom.digest]);
  assert.deepEqual((await listReferrers(trellis.url, 'back/app', sbom.digest)).manifests.map((d) => d.digest), [sig.digest]);
  assert.deepEqual((await listReferrers(trellis.url, 'back/app', bundle)).manifests.map((d) => d.digest), [bundleSig]);
});

test('trellis attach on distribution is seen by oras discover and regctl; oras attach is seen by trellis discover; delete updates the fallback tag', async (t) => {
  if (!requirePeer(t, 'docker-registry')) return;
  const oras = requirePeer(t, 'oras');
  const regctl = requirePeer(t, 'regctl');
  if (!oras || !regctl) return;
  assert.equal((await pushBuilt(dist!.url, 'att/app', 'v1', image)).status, 201);
  await writeFile(join(work, 'sbom.json'), '{"sbom":true}');
  const attached = await json<{ digest: string }>('attach', `${distHost}/att/app:v1`, 'sbom.json', '--artifact-type', 'application/spdx+json', '-a', 'kind=sbom');
  const index = JSON.parse((await getManifest(dist!.url, 'att/app', fallbackTag(image.digest))).bytes.toString()) as { manifests: { digest: string; artifactType: string; annotations: Record<string, string> }[] };
  assert.deepEqual(index.manifests.map((d) => [d.digest, d.artifactType, d.annotations.kind]), [[attached.digest, 'application/spdx+json', 'sbom']]);

  const orasTree = JSON.parse((await run(oras, ['discover', '--plain-http', '--format', 'json', `${distHost}/att/app:v1`], { env })).stdout) as { referrers: { digest: string }[] };
  assert.deepEqual(orasTree.referrers.map((r) => r.digest), [attached.digest]);
  await run(regctl, ['registry', 'set', distHost, '--tls', 'disabled'], { env });
  const listed = JSON.parse((await run(regctl, ['artifact', 'list', '--format', '{{json .}}', `${distHost}/att/app:v1`], { env })).stdout) as { descriptors: { digest: string }[] };
  assert.deepEqual(listed.descriptors.map((d) => d.digest), [attached.digest]);
  assert.ok((await run(regctl, ['artifact', 'tree', `${distHost}/att/app:v1`], { env })).stdout.includes(attached.digest));

  const orasAttached = JSON.parse((await run(oras, ['attach', '--plain-http', '--format', 'json', '--artifact-type', 'application/vnd.example.sig', '--annotation', 'kind=sig', `${distHost}/att/app:v1`, 'sbom.json'], { env, cwd: work })).stdout) as { digest: string };
  const tree = await json<{ referrers: { digest: string }[] }>('discover', `${distHost}/att/app:v1`);
  assert.deepEqual(tree.referrers.map((r) => r.digest).sort(), [attached.digest, orasAttached.digest].sort());

  // Filters on a registry that cannot apply them: applied here, said so.
  const filtered = await trellisCli(['discover', `${distHost}/att/app:v1`, '--filter', 'q_annotations__kind__eq=sig', '-o', 'json'], { env });
  assert.equal(filtered.code, 0, filtered.stderr);
  assert.match(filtered.stderr, /did not apply the q_ filters/);
  const body = JSON.parse(filtered.stdout) as { referrers: { digest: string }[]; filteredBy: string };
  assert.deepEqual([body.referrers.map((r) => r.digest), body.filteredBy], [[orasAttached.digest], 'client']);
  const queried = JSON.parse((await ok('query', `${distHost}/att/app:v1`, 'q_artifactType__eq=application/spdx+json', '-o', 'json')).stdout) as { results: { digest: string }[]; filteredBy: string };
  assert.deepEqual([queried.results.map((r) => r.digest), queried.filteredBy], [[attached.digest], 'client']);

  await ok('delete', `${distHost}/att/app@${attached.digest}`);
  const afterDelete = JSON.parse((await run(oras, ['discover', '--plain-http', '--format', 'json', `${distHost}/att/app:v1`], { env })).stdout) as { referrers: { digest: string }[] };
  assert.deepEqual(afterDelete.referrers.map((r) => r.digest), [orasAttached.digest]);
});
