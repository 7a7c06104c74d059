// Garbage collection: what each policy keeps, dry runs, nested namespaces, and GC running while
// pushes continue (bounded stress: every acknowledged tagged push stays pullable, fsck is clean).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { startTestRegistry, testStorageEnv, type TestRegistry } from '../helpers/registry.ts';
import {
  OCI_INDEX, descriptorOf, getBlob, getManifest, listReferrers, makeImage, makeReferrer, pushBlob, pushBuilt, pushManifest,
} from '../helpers/oci-client.ts';
import { collectGarbage, type GcPolicy } from '../../src/gc/collector.ts';

const run = promisify(execFile);
const MAIN = resolve(import.meta.dirname, '../../src/main.ts');

async function scenario(reg: TestRegistry) {
  const base = reg.url;
  const repo = 'gc/app';
  const tagged = makeImage();
  assert.equal((await pushBuilt(base, repo, 'v1', tagged)).status, 201);
  const untagged = makeImage();
  assert.equal((await pushBuilt(base, repo, untagged.digest, untagged)).status, 201);
  const referrer = makeReferrer(tagged.descriptor, { artifactType: 'application/vnd.example.sbom' });
  assert.equal((await pushBuilt(base, repo, referrer.digest, referrer)).status, 201);
  const dangling = makeReferrer(descriptorOf('application/vnd.oci.image.manifest.v1+json', randomBytes(10)), { artifactType: 'application/vnd.example.sig' });
  assert.equal((await pushBuilt(base, repo, dangling.digest, dangling)).status, 201);
  const child = makeImage();
  assert.equal((await pushBuilt(base, repo, child.digest, child)).status, 201);
  const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [child.descriptor] };
  assert.equal((await pushManifest(base, repo, 'multi', index, OCI_INDEX)).status, 201);
  const orphan = randomBytes(32);
  assert.equal((await pushBlob(base, repo, orphan)).status, 201);
  return { tagged, untagged, referrer, dangling, child, orphan: descriptorOf('x/y', orphan).digest };
}

const later = () => Date.now() + 60_000; // everything counts as older than the grace period

test('policies: keep/keep removes only unused blobs; delete/delete also untagged manifests and dangling referrers', async () => {
  const reg = await startTestRegistry();
  try {
    const s = await scenario(reg);
    const keep: GcPolicy = { untagged: 'keep', danglingReferrers: 'keep', graceSeconds: 10 };
    const dry = await collectGarbage(reg.registry, keep, { dryRun: true, now: later() });
    assert.deepEqual(dry.removed.map((i) => [i.kind, i.digest]), [['blob', s.orphan]]);
    assert.equal((await getBlob(reg.url, 'gc/app', s.orphan)).status, 200, 'a dry run removes nothing');

    const policy: GcPolicy = { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 10 };
    const planned = await collectGarbage(reg.registry, policy, { dryRun: true, now: later() });
    const done = await collectGarbage(reg.registry, policy, { dryRun: false, now: later() });
    assert.deepEqual(done.removed.map((i) => i.digest).sort(), planned.removed.map((i) => i.digest).sort(), 'the dry run predicted the run');
    const removed = new Map(done.removed.map((i) => [i.digest, i.reason]));
    assert.equal(removed.get(s.untagged.digest), 'untagged and not referenced');
    assert.equal(removed.get(s.dangling.digest), 'referrer whose subject is gone');
    for (const blob of s.untagged.blobs) assert.ok(removed.has(descriptorOf('x/y', blob).digest), 'the untagged image\'s own blobs go too');
    assert.ok(removed.has(s.orphan));
    for (const kept of [s.tagged, s.referrer, s.child]) {
      assert.ok(!removed.has(kept.digest));
      assert.equal((await getManifest(reg.url, 'gc/app', kept.digest)).status, 200);
      for (const blob of kept.blobs) assert.equal((await getBlob(reg.url, 'gc/app', descriptorOf('x/y', blob).digest)).status, 200);
    }
    assert.equal((await getManifest(reg.url, 'gc/app', s.untagged.digest)).status, 404);
    assert.deepEqual((await listReferrers(reg.url, 'gc/app', s.tagged.digest)).manifests.map((d) => d.digest), [s.referrer.digest]);
    await reg.close();
    const fsck = await run(process.execPath, [MAIN, 'fsck', '--data', reg.dataDir], { env: { ...process.env, ...(await testStorageEnv(reg.dataDir)) } });
    assert.match(fsck.stdout, / 0 problems/);
  } finally {
    await reg.dispose();
  }
});

test('the grace period protects recent pushes and uploads', async () => {
  const reg = await startTestRegistry();
  try {
    await scenario(reg);
    const report = await collectGarbage(reg.registry, { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 3600 }, { dryRun: false });
    assert.deepEqual(report.removed, []);
  } finally {
    await reg.dispose();
  }
});

test('children that an ancestor index lists through a nested namespace stay alive', async () => {
  const reg = await startTestRegistry();
  try {
    const child = makeImage();
    assert.equal((await pushBuilt(reg.url, 'team/build/api', child.digest, child)).status, 201);
    const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ ...child.descriptor, annotations: { 'dev.trellis.repository': 'api' } }] };
    assert.equal((await pushManifest(reg.url, 'team/build', 'v1', index, OCI_INDEX)).status, 201);
    const report = await collectGarbage(reg.registry, { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 0 }, { dryRun: false, now: later() });
    assert.deepEqual(report.removed, []);
    assert.equal((await getManifest(reg.url, 'team/build/api', child.digest)).status, 200);
  } finally {
    await reg.dispose();
  }
});

test('GC running while pushes continue keeps every acknowledged push (bounded stress)', async () => {
  const reg = await startTestRegistry();
  const policy: GcPolicy = { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 1 };
  const acknowledged = new Map<string, { digest: string; blobs: Buffer[]; referrer: string }>();
  const deadline = Date.now() + 5000;
  let gcRuns = 0;
  let collected = 0;
  try {
    const pusher = async (id: number) => {
      // At least 4 rounds, so every pusher overwrites a tag even on slow storage (S3).
      for (let i = 0; Date.now() < deadline || i < 4; i++) {
        const repo = `stress/r${id % 2}`;
        const tag = `w${id}-t${i % 3}`; // tags are overwritten, so old manifests become garbage
        const image = makeImage();
        const pushed = await pushBuilt(reg.url, repo, tag, image);
        if (pushed.status !== 201) continue; // a blob collected before its manifest arrived: the push failed, loudly
        const referrer = makeReferrer(image.descriptor, { artifactType: 'application/vnd.example.sig' });
        const attached = await pushBuilt(reg.url, repo, referrer.digest, referrer);
        acknowledged.set(`${repo}:${tag}`, { digest: image.digest, blobs: image.blobs, referrer: attached.status === 201 ? referrer.digest : '' });
      }
    };
    const collector = async () => {
      while (Date.now() < deadline) {
        const report = await collectGarbage(reg.registry, policy, { dryRun: false });
        gcRuns++;
        collected += report.removed.length;
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await Promise.all([pusher(0), pusher(1), pusher(2), pusher(3), collector()]);
    assert.ok(gcRuns > 3, `GC ran ${gcRuns} times`);
    await new Promise((r) => setTimeout(r, 1100));
    collected += (await collectGarbage(reg.registry, policy, { dryRun: false })).removed.length;
    assert.ok(collected > 0, 'overwritten tags left garbage that was collected');
    for (const [ref, push] of acknowledged) {
      const [repo, tag] = ref.split(':') as [string, string];
      const got = await getManifest(reg.url, repo, tag);
      assert.equal(got.digest, push.digest, `${ref} still resolves to its last acknowledged push`);
      for (const blob of push.blobs) assert.equal((await getBlob(reg.url, repo, descriptorOf('x/y', blob).digest)).status, 200);
      if (push.referrer) assert.ok((await listReferrers(reg.url, repo, push.digest)).manifests.some((d) => d.digest === push.referrer));
    }
    await reg.close();
    const fsck = await run(process.execPath, [MAIN, 'fsck', '--data', reg.dataDir], { env: { ...process.env, ...(await testStorageEnv(reg.dataDir)) } });
    assert.match(fsck.stdout, / 0 problems/);
  } finally {
    await reg.dispose();
  }
});

test('trellis gc --dry-run reports without removing, and refuses while a server holds the data', async () => {
  const reg = await startTestRegistry();
  try {
    const s = await scenario(reg);
    await assert.rejects(run(process.execPath, [MAIN, 'gc', '--data', reg.dataDir]), /is serving/);
    await reg.close();
    const env = { ...process.env, TRELLIS_GC_GRACE_SECONDS: '0', TRELLIS_GC_UNTAGGED: 'delete', ...(await testStorageEnv(reg.dataDir)) };
    await new Promise((r) => setTimeout(r, 20));
    const dry = await run(process.execPath, [MAIN, 'gc', '--dry-run', '--data', reg.dataDir], { env });
    assert.match(dry.stdout, new RegExp(`would remove manifest gc/app@${s.untagged.digest}: untagged and not referenced`));
    const real = await run(process.execPath, [MAIN, 'gc', '--json', '--data', reg.dataDir], { env });
    const report = JSON.parse(real.stdout) as { removed: { digest: string }[] };
    assert.ok(report.removed.some((i) => i.digest === s.untagged.digest));
    const again = await run(process.execPath, [MAIN, 'gc', '--dry-run', '--data', reg.dataDir], { env });
    assert.match(again.stdout, /^0 items/m);
  } finally {
    await reg.dispose();
  }
});
