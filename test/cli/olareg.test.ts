// The client against olareg (a registry with the referrers API but no nested namespaces): push,
// attach seen by oras, discover, and an index with referrers and a nested-namespace member copied
// Trellis -> olareg -> Trellis with every digest unchanged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startTestRegistry } from '../helpers/registry.ts';
import { requirePeer } from '../helpers/peers.ts';
import { getManifest, listReferrers } from '../helpers/oci-client.ts';
import { freePort } from '../../bench/lib/servers.ts';
import { trellisOk } from './run.ts';
import { pushGraph } from './fixture.ts';

const run = promisify(execFile);

test('trellis against olareg: push, attach, discover, copy both ways', { timeout: 180_000 }, async (t) => {
  const olareg = requirePeer(t, 'olareg');
  const oras = requirePeer(t, 'oras');
  if (!olareg || !oras) return;
  const work = await mkdtemp(join(tmpdir(), 'trellis-olareg-cli-'));
  const trellis = await startTestRegistry();
  const port = await freePort();
  const server = spawn(olareg, ['serve', '--addr', '127.0.0.1', '--port', String(port), '--dir', join(work, 'data'), '--api-delete'], { stdio: 'ignore' });
  t.after(async () => {
    server.kill('SIGKILL');
    await trellis.dispose();
    await rm(work, { recursive: true, force: true });
  });
  for (let i = 0; i < 100; i++) {
    if (await fetch(`http://127.0.0.1:${port}/v2/`).then((r) => r.ok, () => false)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const ola = `127.0.0.1:${port}`;
  const env = { ...process.env, HOME: work, DOCKER_CONFIG: join(work, 'docker') };
  const json = async <T>(...args: string[]) => JSON.parse((await trellisOk([...args, '-o', 'json'], { env, cwd: work })).stdout) as T;

  await writeFile(join(work, 'a.txt'), 'hello');
  const pushed = await json<{ digest: string }>('push', `${ola}/ola/app:v1`, 'a.txt');
  const attached = await json<{ digest: string }>('attach', `${ola}/ola/app:v1`, 'a.txt', '--artifact-type', 'application/vnd.example.sbom');
  const orasTree = JSON.parse((await run(oras, ['discover', '--plain-http', '--format', 'json', `${ola}/ola/app:v1`], { env })).stdout) as { referrers: { digest: string }[] };
  assert.deepEqual(orasTree.referrers.map((r) => r.digest), [attached.digest]);
  const tree = await json<{ subject: { digest: string }; referrers: { digest: string }[] }>('discover', `${ola}/ola/app:v1`);
  assert.deepEqual([tree.subject.digest, tree.referrers.map((r) => r.digest)], [pushed.digest, [attached.digest]]);

  const { image, child, sbom, bundle } = await pushGraph(trellis.url);
  await json('copy', '-r', `${trellis.host}/src/app`, `${ola}/mid/app`);
  await json('copy', '-r', `${ola}/mid/app`, `${trellis.host}/back/app`);
  assert.equal((await getManifest(trellis.url, 'back/app', 'bundle')).digest, bundle);
  assert.equal((await getManifest(trellis.url, 'back/app/api', child.digest)).status, 200);
  assert.deepEqual((await listReferrers(trellis.url, 'back/app', image.digest)).manifests.map((d) => d.digest), [sbom.digest]);
});
