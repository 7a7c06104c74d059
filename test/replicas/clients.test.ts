// oras, regctl, crane and skopeo through nginx in front of three replicas: each client pushes,
// reads back, copies, tags and deletes with every request free to land on any replica, and
// each replica asked directly must then serve what was pushed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { clientScratch } from '../helpers/interop.ts';
import { requirePeer } from '../helpers/peers.ts';
import { sha256, ustar, type Descriptor } from '../helpers/oci-client.ts';
import { assertOnEveryReplica, startReplicas, withDiagnostics } from '../helpers/replicas.ts';

const APP = 'application/vnd.example.app';
const SBOM = 'application/vnd.example.sbom';

const lines = (text: string) => text.split('\n').filter(Boolean);

test('real clients through the balancer', { timeout: 240_000 }, async (t) => {
  const set = await startReplicas(t);
  if (!set) return;
  const R = set.host;

  const check = (_client: string, body: () => Promise<void>) => withDiagnostics(set, body);

  await t.test('oras: push, attach, discover, pull, copy, tag, delete', async (t) => {
    const oras = requirePeer(t, 'oras');
    if (!oras) return;
    const { work, exec } = await clientScratch(t, 'replica-oras');
    const run = async (...args: string[]) => (await exec(oras, args)).stdout;
    await check('oras', async () => {
      const payload = `oras through nginx ${Math.random()}\n`;
      await writeFile(join(work, 'hi.txt'), payload);
      await writeFile(join(work, 'sbom.json'), JSON.stringify({ sbom: Math.random() }));
      const subject = (JSON.parse(await run('push', '--plain-http', '--format', 'json', `${R}/cl/oras:v1`, 'hi.txt:text/plain', '--artifact-type', APP)) as { digest: string }).digest;
      const sbom = (JSON.parse(await run('attach', '--plain-http', '--format', 'json', '--artifact-type', SBOM, `${R}/cl/oras:v1`, 'sbom.json:application/json')) as { digest: string }).digest;
      const tree = JSON.parse(await run('discover', '--plain-http', '--format', 'json', `${R}/cl/oras:v1`)) as { referrers?: Descriptor[] };
      assert.deepEqual((tree.referrers ?? []).map((r) => r.digest), [sbom]);
      await run('pull', '--plain-http', '-o', 'pulled', `${R}/cl/oras:v1`);
      assert.equal(await readFile(join(work, 'pulled', 'hi.txt'), 'utf8'), payload);
      await run('cp', '-r', '--from-plain-http', '--to-plain-http', `${R}/cl/oras:v1`, `${R}/cl/oras-copy:v1`);
      assert.equal((await run('resolve', '--plain-http', `${R}/cl/oras-copy:v1`)).trim(), subject);
      await run('tag', '--plain-http', `${R}/cl/oras:v1`, 'v2');
      assert.deepEqual(lines(await run('repo', 'tags', '--plain-http', `${R}/cl/oras`)), ['v1', 'v2']);
      for (const repo of ['cl/oras', 'cl/oras-copy']) {
        await assertOnEveryReplica(set, repo, 'v1', subject);
        for (const replica of set.replicas) {
          const res = await fetch(`${replica.url}/v2/${repo}/referrers/${subject}`);
          const body = (await res.json()) as { manifests: Descriptor[] };
          assert.deepEqual(body.manifests.map((m) => m.digest), [sbom], `replica ${replica.index}: referrers of ${repo}@${subject}`);
        }
      }
      await run('manifest', 'delete', '--plain-http', '-f', `${R}/cl/oras-copy@${sbom}`);
      for (const replica of set.replicas) {
        assert.equal((await fetch(`${replica.url}/v2/cl/oras-copy/manifests/${sbom}`, { method: 'HEAD' })).status, 404, `replica ${replica.index}`);
      }
    });
  });

  await t.test('regctl: image copy from a layout, artifact put with a subject, tag ls, delete', async (t) => {
    const regctl = requirePeer(t, 'regctl');
    if (!regctl) return;
    const { work, exec } = await clientScratch(t, 'replica-regctl');
    const run = async (...args: string[]) => (await exec(regctl, args)).stdout;
    await check('regctl', async () => {
      await run('registry', 'set', R, '--tls', 'disabled');
      await mkdir(join(work, 'content'));
      await writeFile(join(work, 'content', 'f.txt'), `regctl through nginx ${Math.random()}\n`);
      await run('image', 'create', 'ocidir://src:v1');
      await run('image', 'mod', 'ocidir://src:v1', '--layer-add', 'dir=content', '--create', 'v2');
      const subject = (await run('image', 'digest', 'ocidir://src:v2')).trim();
      await run('image', 'copy', 'ocidir://src:v2', `${R}/cl/regctl:v1`);
      assert.equal((await run('image', 'digest', `${R}/cl/regctl:v1`)).trim(), subject);
      await writeFile(join(work, 'sbom.json'), JSON.stringify({ sbom: Math.random() }));
      const sbom = (await run('artifact', 'put', '--format', '{{.Manifest.GetDescriptor.Digest}}', '--artifact-type', SBOM,
        '-f', 'sbom.json', '-m', 'application/json', '--subject', `${R}/cl/regctl:v1`)).trim();
      const listed = (JSON.parse(await run('artifact', 'list', '--format', '{{json .Descriptors}}', `${R}/cl/regctl:v1`)) as Descriptor[] | null) ?? [];
      assert.deepEqual(listed.map((d) => d.digest), [sbom]);
      await run('image', 'copy', '--referrers', `${R}/cl/regctl:v1`, `${R}/cl/regctl:v2`);
      assert.deepEqual(lines(await run('tag', 'ls', `${R}/cl/regctl`)), ['v1', 'v2']);
      await run('image', 'copy', `${R}/cl/regctl:v1`, 'ocidir://out:v1');
      assert.equal((await run('image', 'digest', 'ocidir://out:v1')).trim(), subject);
      await assertOnEveryReplica(set, 'cl/regctl', 'v2', subject);
      await run('tag', 'delete', `${R}/cl/regctl:v2`);
      assert.deepEqual(lines(await run('tag', 'ls', `${R}/cl/regctl`)), ['v1']);
      for (const replica of set.replicas) {
        assert.equal((await fetch(`${replica.url}/v2/cl/regctl/manifests/v2`, { method: 'HEAD' })).status, 404, `replica ${replica.index}: deleted tag v2`);
      }
    });
  });

  await t.test('crane: append, pull, push, copy, tag, delete', async (t) => {
    const crane = requirePeer(t, 'crane');
    if (!crane) return;
    const { work, exec } = await clientScratch(t, 'replica-crane');
    const run = async (...args: string[]) => (await exec(crane, ['--insecure', ...args])).stdout;
    await check('crane', async () => {
      // A layer tar crane reads with -f: any bytes in a tar container; a tiny ustar built by hand.
      await writeFile(join(work, 'layer.tar'), ustar('hello.txt', Buffer.from(`crane through nginx ${Math.random()}\n`)));
      const out = (await run('append', '--oci-empty-base', '-f', 'layer.tar', '-t', `${R}/cl/crane:v1`)).trim();
      const digest = /@(sha256:[0-9a-f]{64})$/.exec(out)?.[1];
      assert.ok(digest, `unexpected crane append output: ${out}`);
      await run('pull', '--format', 'oci', `${R}/cl/crane:v1`, 'pulled');
      const index = JSON.parse(await readFile(join(work, 'pulled', 'index.json'), 'utf8')) as { manifests: Descriptor[] };
      assert.deepEqual(index.manifests.map((m) => m.digest), [digest]);
      assert.equal((await run('push', 'pulled', `${R}/cl/crane-pushed:v1`)).trim(), `${R}/cl/crane-pushed@${digest}`);
      await run('copy', `${R}/cl/crane:v1`, `${R}/cl/crane-copied:v1`);
      await run('tag', `${R}/cl/crane:v1`, 'v2');
      assert.deepEqual(lines(await run('ls', `${R}/cl/crane`)), ['v1', 'v2']);
      for (const [repo, tag] of [['cl/crane', 'v2'], ['cl/crane-pushed', 'v1'], ['cl/crane-copied', 'v1']] as const) {
        assert.equal((await run('digest', `${R}/${repo}:${tag}`)).trim(), digest);
        await assertOnEveryReplica(set, repo, tag, digest);
      }
      await run('delete', `${R}/cl/crane-copied@${digest}`);
      for (const replica of set.replicas) {
        assert.equal((await fetch(`${replica.url}/v2/cl/crane-copied/manifests/${digest}`, { method: 'HEAD' })).status, 404, `replica ${replica.index}`);
      }
    });
  });

  await t.test('skopeo: copy a layout in and out, inspect, list-tags, delete', async (t) => {
    const skopeo = requirePeer(t, 'skopeo');
    if (!skopeo) return;
    const crane = requirePeer(t, 'crane');
    if (!crane) return;
    const { work, exec } = await clientScratch(t, 'replica-skopeo');
    const policy = join(work, 'policy.json');
    await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
    const sk = async (...args: string[]) => (await exec(skopeo, ['--policy', policy, ...args])).stdout;
    await check('skopeo', async () => {
      // The source layout: an image crane builds offline (no registry involved).
      await writeFile(join(work, 'layer.tar'), ustar('hello.txt', Buffer.from(`skopeo through nginx ${Math.random()}\n`)));
      await exec(crane, ['append', '--oci-empty-base', '-f', 'layer.tar', '-t', 'local/img:v1', '-o', 'img.tar']);
      await sk('copy', 'docker-archive:img.tar', 'oci:lay:v1');
      const layoutIndex = JSON.parse(await readFile(join(work, 'lay', 'index.json'), 'utf8')) as { manifests: Descriptor[] };
      const digest = layoutIndex.manifests[0]!.digest;
      await sk('copy', '--dest-tls-verify=false', 'oci:lay:v1', `docker://${R}/cl/skopeo:v1`);
      await sk('copy', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${R}/cl/skopeo:v1`, `docker://${R}/cl/skopeo:v2`);
      const info = JSON.parse(await sk('inspect', '--tls-verify=false', `docker://${R}/cl/skopeo:v1`)) as { Digest: string; RepoTags: string[] };
      assert.equal(info.Digest, digest);
      assert.deepEqual(info.RepoTags, ['v1', 'v2']);
      await sk('copy', '--src-tls-verify=false', `docker://${R}/cl/skopeo:v1`, 'oci:out:v1');
      const manifest = await readFile(join(work, 'out', 'blobs', 'sha256', digest.slice(7)));
      assert.equal(sha256(manifest), digest);
      await assertOnEveryReplica(set, 'cl/skopeo', 'v2', digest);
      await sk('delete', '--tls-verify=false', `docker://${R}/cl/skopeo:v1`);
      const tags = JSON.parse(await sk('list-tags', '--tls-verify=false', `docker://${R}/cl/skopeo`)) as { Tags: string[] };
      assert.deepEqual(tags.Tags, []);
      for (const replica of set.replicas) {
        assert.equal((await fetch(`${replica.url}/v2/cl/skopeo/manifests/${digest}`, { method: 'HEAD' })).status, 404, `replica ${replica.index}`);
      }
    });
  });
});
