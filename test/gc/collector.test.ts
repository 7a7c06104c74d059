// Garbage collection: what each policy keeps, dry runs, nested namespaces, and GC running while
// pushes continue (bounded stress: every acknowledged tagged push stays pullable, fsck is clean).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, utimes, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { cliEnv, needsFileStorage, startTestRegistry, storageOnS3, type TestRegistry } from '../helpers/registry.ts';
import { blobKey } from '../../src/layout/paths.ts';
import {
  OCI_INDEX, type Built, descriptorOf, getBlob, getManifest, listReferrers, makeImage, makeReferrer, pushBlob, pushBuilt, pushManifest, sha256,
} from '../helpers/oci-client.ts';
import { collectGarbage, type GcPolicy } from '../../src/gc/collector.ts';
import { startAuthRegistry } from '../auth/setup.ts';

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
    // The layout's own referrers-index blobs come and go with index.json rewrites; the dry run
    // predicts the run only if no rewrite falls between them.
    await reg.registry.layout.flushAll();
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
    const fsck = await run(process.execPath, [MAIN, 'fsck', '--data', reg.dataDir], { env: await cliEnv(reg.dataDir) });
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

test('a re-push restarts the grace period: the manifest an index is about to list is not taken', async () => {
  const reg = await startTestRegistry();
  try {
    const child = makeImage();
    assert.equal((await pushBuilt(reg.url, 'gc/repush', child.digest, child)).status, 201);
    await new Promise((resolve) => setTimeout(resolve, 1200));
    // A client pushing an index pushes its children again first; that push is acknowledged.
    assert.equal((await pushBuilt(reg.url, 'gc/repush', child.digest, child)).status, 201);
    const repushed = Date.now();
    const report = await collectGarbage(reg.registry, { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 1 }, { dryRun: false, now: repushed + 500 });
    assert.deepEqual(report.removed, []);
    const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [child.descriptor] };
    assert.equal((await pushManifest(reg.url, 'gc/repush', 'multi', index, OCI_INDEX)).status, 201);
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

test('GC running while pushes continue keeps every acknowledged push (bounded stress)', async (t) => {
  const reg = await startTestRegistry();
  // A push must finish within the grace period, or GC takes its blobs first (and the push is
  // refused): an image push on S3 under a loaded CI machine can take over a second.
  const graceSeconds = storageOnS3() ? 4 : 1;
  const policy: GcPolicy = { untagged: 'delete', danglingReferrers: 'delete', graceSeconds };
  const acknowledged = new Map<string, { digest: string; blobs: Buffer[]; referrer: string; wrapped?: Built }>();
  const deadline = Date.now() + 5000;
  let gcRuns = 0;
  let collected = 0;
  let pushes = 0;
  const refused: string[] = [];
  try {
    const pusher = async (id: number) => {
      // At least 5 acknowledged pushes each (20 in all, every pusher overwriting a tag) even on
      // slow storage (S3), within a bounded number of rounds.
      let mine = 0;
      for (let i = 0; (Date.now() < deadline || mine < 5) && i < 40; i++) {
        const repo = `stress/r${id % 2}`;
        const tag = `w${id}-t${i % 3}`; // tags are overwritten, so old manifests become garbage
        const image = makeImage();
        const pushed = await pushBuilt(reg.url, repo, tag, image);
        // A blob collected before its manifest arrived (slower than the 1 s grace period) fails the push, loudly.
        if (pushed.status !== 201) {
          refused.push(`${repo}:${tag} answered ${pushed.status}: ${pushed.body.toString().slice(0, 200)}`);
          continue;
        }
        pushes++;
        mine++;
        const referrer = makeReferrer(image.descriptor, { artifactType: 'application/vnd.example.sig' });
        const attached = await pushBuilt(reg.url, repo, referrer.digest, referrer);
        // Every other round, an artifact whose layer is an untagged image manifest (seed 001):
        // GC must keep that image and its blobs as long as the artifact is tagged.
        let wrapped: Built | undefined;
        if (i % 2 === 0) {
          const inner = makeImage();
          const config = Buffer.from('{}');
          const artifact = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: 'application/vnd.example.bundle',
            config: descriptorOf('application/vnd.oci.empty.v1+json', config), layers: [inner.descriptor] };
          if ((await pushBuilt(reg.url, repo, inner.digest, inner)).status === 201 && (await pushBlob(reg.url, repo, config)).status === 201
            && (await pushManifest(reg.url, repo, `${tag}-bundle`, artifact)).status === 201) wrapped = inner;
        }
        acknowledged.set(`${repo}:${tag}`, { digest: image.digest, blobs: image.blobs, referrer: attached.status === 201 ? referrer.digest : '', ...(wrapped ? { wrapped } : {}) });
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
    t.diagnostic(`${pushes} acknowledged pushes, ${refused.length} refused, ${gcRuns} GC runs`);
    // A run that acknowledged almost nothing proves nothing.
    assert.ok(pushes >= 20, `only ${pushes} pushes were acknowledged in 5 s`);
    assert.ok(refused.length <= pushes / 10, `${refused.length} of ${pushes + refused.length} pushes refused:\n${refused.slice(0, 5).join('\n')}`);
    assert.ok(gcRuns > 3, `GC ran ${gcRuns} times`);
    // The injected clock puts everything past the grace period, without waiting for it.
    collected += (await collectGarbage(reg.registry, policy, { dryRun: false, now: Date.now() + graceSeconds * 1000 + 100 })).removed.length;
    assert.ok(collected > 0, 'overwritten tags left garbage that was collected');
    await reg.registry.layout.flushAll();
    for (const [ref, push] of acknowledged) {
      const [repo, tag] = ref.split(':') as [string, string];
      const got = await getManifest(reg.url, repo, tag);
      assert.equal(got.digest, push.digest, `${ref} still resolves to its last acknowledged push`);
      for (const blob of push.blobs) assert.equal((await getBlob(reg.url, repo, descriptorOf('x/y', blob).digest)).status, 200);
      if (push.referrer) assert.ok((await listReferrers(reg.url, repo, push.digest)).manifests.some((d) => d.digest === push.referrer));
      for (const bytes of push.wrapped ? [push.wrapped.bytes, ...push.wrapped.blobs] : []) {
        assert.equal((await getBlob(reg.url, repo, descriptorOf('x/y', bytes).digest)).status, 200, `${ref}-bundle lost part of its layer's content`);
      }
    }
    await reg.close();
    const fsck = await run(process.execPath, [MAIN, 'fsck', '--data', reg.dataDir], { env: await cliEnv(reg.dataDir) });
    assert.match(fsck.stdout, / 0 problems/);
  } finally {
    await reg.dispose();
  }
});

test('trellis gc --dry-run reports without removing, and refuses while a server holds the data', async () => {
  const reg = await startTestRegistry();
  try {
    const s = await scenario(reg);
    await assert.rejects(run(process.execPath, [MAIN, 'gc', '--data', reg.dataDir], { env: await cliEnv(reg.dataDir) }), /trellis: .* is in use by `trellis/);
    await reg.close();
    const env = { ...(await cliEnv(reg.dataDir)), TRELLIS_GC_GRACE_SECONDS: '0', TRELLIS_GC_UNTAGGED: 'delete' };
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

/** Every manifest index.json lists, with every blob it needs present in the layout (as a reader of the live layout sees it). */
/** What a reader of the live layout (files, or the bucket) would trip over. */
async function layoutProblems(reg: TestRegistry, repo: string): Promise<string[]> {
  const problems: string[] = [];
  const { driver } = reg.registry;
  const index = JSON.parse((await driver.readFile(`${repo}/index.json`, 1 << 20))!.toString('utf8')) as { manifests: { digest: string }[] };
  for (const entry of index.manifests) {
    const bytes = await driver.readFile(blobKey(repo, entry.digest), 1 << 20).catch(() => undefined);
    if (!bytes) {
      problems.push(`index.json lists ${entry.digest}, whose file is missing`);
      continue;
    }
    const manifest = JSON.parse(bytes.toString()) as { config?: { digest: string }; layers?: { digest: string }[] };
    for (const d of [manifest.config, ...(manifest.layers ?? [])]) {
      if (d && !(await driver.stat(blobKey(repo, d.digest)))) problems.push(`index.json lists ${entry.digest}, whose blob ${d.digest} is missing`);
    }
  }
  return problems;
}

test('GC removes no blob before the index.json rewrite that stops listing the manifests using it', async () => {
  // A slow rewrite (the delay grows with a repository's size): the collected manifest stays in
  // index.json until it runs, and its blobs must stay with it.
  const reg = await startTestRegistry({ indexFlushMinMs: 60_000, indexFlushMaxMs: 60_000 });
  try {
    const repo = 'gc/order';
    const kept = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, 'v1', kept)).status, 201);
    const untagged = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, untagged.digest, untagged)).status, 201);
    await reg.registry.layout.flushAll();
    const indexJson = async () => (await reg.registry.driver.readFile(`${repo}/index.json`, 1 << 20))!.toString('utf8');
    assert.ok((await indexJson()).includes(untagged.digest));

    const report = await collectGarbage(reg.registry, { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 0 }, { dryRun: false, now: later() });
    assert.ok(report.removed.some((i) => i.digest === untagged.digest));
    for (const blob of untagged.blobs) assert.ok(report.removed.some((i) => i.digest === descriptorOf('x', blob).digest));
    assert.equal((await getManifest(reg.url, repo, untagged.digest)).status, 404, 'the API forgets it at once');
    assert.deepEqual(await layoutProblems(reg, repo), [], 'a reader of the live layout sees a manifest whose blobs GC removed');

    await reg.registry.layout.flushAll();
    assert.deepEqual(await layoutProblems(reg, repo), []);
    assert.ok(!(await indexJson()).includes(untagged.digest));
    for (const blob of untagged.blobs) assert.equal(await reg.registry.driver.stat(blobKey(repo, descriptorOf('x', blob).digest)), undefined, 'collected blobs go after the rewrite');
    await reg.close();
    const fsck = await run(process.execPath, [MAIN, 'fsck', '--data', reg.dataDir], { env: await cliEnv(reg.dataDir) });
    assert.match(fsck.stdout, / 0 problems/);
  } finally {
    await reg.dispose();
  }
});

test('GC reads an index.json another tool edited before it sweeps: the files that tool\'s new entries need are kept', async (t) => {
  if (!needsFileStorage(t)) return;
  const reg = await startTestRegistry();
  try {
    const repo = 'gc/outside';
    const ours = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, 'v1', ours)).status, 201);
    await reg.registry.layout.flushAll();
    // Another tool (rsync -a, cp -p: mtimes preserved) adds an image to the layout and tags it;
    // no request names the repository before the scheduled GC runs.
    const theirs = makeImage();
    const old = new Date(Date.now() - 2 * 3600_000);
    for (const bytes of [...theirs.blobs, theirs.bytes]) {
      const file = join(reg.dataDir, blobKey(repo, descriptorOf('x', bytes).digest));
      await writeFile(file, bytes);
      await utimes(file, old, old);
    }
    const indexPath = join(reg.dataDir, repo, 'index.json');
    const index = JSON.parse(await readFile(indexPath, 'utf8')) as { manifests: unknown[] };
    index.manifests.push({ ...theirs.descriptor, annotations: { 'org.opencontainers.image.ref.name': 'v2' } });
    await writeFile(indexPath, JSON.stringify(index));

    const report = await collectGarbage(reg.registry, { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 3600 }, { dryRun: false });
    await reg.registry.layout.flushAll();
    assert.deepEqual(report.removed.map((i) => i.digest), [], 'GC collected content index.json lists');
    assert.equal((await getManifest(reg.url, repo, 'v2')).digest, theirs.digest);
    for (const blob of theirs.blobs) assert.equal((await getBlob(reg.url, repo, descriptorOf('x', blob).digest)).status, 200);
    assert.deepEqual(await layoutProblems(reg, repo), []);
  } finally {
    await reg.dispose();
  }
});

/** Another tool adds an entry to the repository's index.json; Trellis reads it (any request does). Returns the file's path. */
async function listInIndexJson(reg: TestRegistry, repo: string, entry: object, refName: string): Promise<string> {
  const indexPath = join(reg.dataDir, repo, 'index.json');
  const index = JSON.parse(await readFile(indexPath, 'utf8')) as { manifests: unknown[] };
  index.manifests.push({ ...entry, annotations: { 'org.opencontainers.image.ref.name': refName } });
  await writeFile(indexPath, JSON.stringify(index));
  await reg.registry.repository(repo);
  return indexPath;
}

test('GC keeps the file of an index.json entry that is not a manifest Trellis reads (another tool\'s entry)', async (t) => {
  if (!needsFileStorage(t)) return;
  const reg = await startTestRegistry({ layoutCheckIntervalMs: 0 });
  try {
    const repo = 'gc/foreign';
    assert.equal((await pushBuilt(reg.url, repo, 'v1', makeImage())).status, 201);
    await reg.registry.layout.flushAll();
    // Another tool lists a plain file of its own in index.json.
    const data = randomBytes(100);
    const entry = descriptorOf('application/vnd.example.data', data);
    await writeFile(join(reg.dataDir, blobKey(repo, entry.digest)), data);
    const indexPath = await listInIndexJson(reg, repo, entry, 'data');

    await collectGarbage(reg.registry, { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 0 }, { dryRun: false, now: later() });
    await reg.registry.layout.flushAll();
    const after = JSON.parse(await readFile(indexPath, 'utf8')) as { manifests: { digest: string }[] };
    assert.ok(after.manifests.some((d) => d.digest === entry.digest), 'the other tool\'s entry was dropped from index.json');
    assert.ok(await reg.registry.driver.stat(blobKey(repo, entry.digest)), 'GC removed the file of an entry index.json lists');
  } finally {
    await reg.dispose();
  }
});

/**
 * Another tool's image whose layer media type carries a parameter: Go tools read it, Trellis's
 * validation refuses it.
 */
function unreadableImage(architecture: string): { config: Buffer; layer: Buffer; manifest: Buffer } {
  const config = Buffer.from(JSON.stringify({ architecture, os: 'linux' }));
  const layer = randomBytes(100);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: descriptorOf('application/vnd.oci.image.config.v1+json', config),
    layers: [descriptorOf('application/vnd.oci.image.layer.v1.tar+zstd;chunked=true', layer)],
  }));
  return { config, layer, manifest };
}

/** Writes files into the repository's blobs/ as another tool would, two hours old (cp -p, rsync -a). */
async function writeOldBlobs(reg: TestRegistry, repo: string, files: Buffer[]): Promise<void> {
  const old = new Date(Date.now() - 2 * 3600_000);
  for (const bytes of files) {
    const file = join(reg.dataDir, blobKey(repo, descriptorOf('x', bytes).digest));
    await writeFile(file, bytes);
    await utimes(file, old, old);
  }
}

test('GC keeps the config and layers of a manifest another tool lists that Trellis cannot read', async (t) => {
  if (!needsFileStorage(t)) return;
  const reg = await startTestRegistry({ layoutCheckIntervalMs: 0 });
  try {
    const repo = 'gc/unreadable';
    assert.equal((await pushBuilt(reg.url, repo, 'v1', makeImage())).status, 201);
    await reg.registry.layout.flushAll();
    // Trellis refuses the manifest, so its index.json entry is kept as another tool's.
    const { config, layer, manifest } = unreadableImage('amd64');
    await writeOldBlobs(reg, repo, [config, layer, manifest]);
    await listInIndexJson(reg, repo, descriptorOf('application/vnd.oci.image.manifest.v1+json', manifest), 'odd');

    const report = await collectGarbage(reg.registry, { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 3600 }, { dryRun: false });
    await reg.registry.layout.flushAll();
    assert.deepEqual(report.removed.map((i) => i.digest), [], 'GC collected files another tool\'s entry needs');
    for (const bytes of [config, layer, manifest]) assert.ok(await reg.registry.driver.stat(blobKey(repo, descriptorOf('x', bytes).digest)));
  } finally {
    await reg.dispose();
  }
});

test('GC keeps what a manifest Trellis cannot read uses when an index it reads lists it, until that index goes', async (t) => {
  if (!needsFileStorage(t)) return;
  const reg = await startTestRegistry({ layoutCheckIntervalMs: 0 });
  try {
    const repo = 'gc/unread-child';
    assert.equal((await pushBuilt(reg.url, repo, 'v1', makeImage())).status, 201);
    await reg.registry.layout.flushAll();
    // Another tool's index, valid for Trellis, whose one child Trellis refuses: the index is adopted, the child is not.
    const { config, layer, manifest: child } = unreadableImage('arm64');
    const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [descriptorOf('application/vnd.oci.image.manifest.v1+json', child)] }));
    const digests = [config, layer, child, index].map((bytes) => descriptorOf('x', bytes).digest);
    await writeOldBlobs(reg, repo, [config, layer, child, index]);
    await listInIndexJson(reg, repo, descriptorOf(OCI_INDEX, index), 'multi');
    assert.equal((await getManifest(reg.url, repo, 'multi')).digest, digests[3]);

    const policy: GcPolicy = { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 3600 };
    const kept = await collectGarbage(reg.registry, policy, { dryRun: false });
    await reg.registry.layout.flushAll();
    assert.deepEqual(kept.removed.map((i) => i.digest), [], 'GC collected files an index\'s unread child needs');
    for (const digest of digests) assert.ok(await reg.registry.driver.stat(blobKey(repo, digest)), `${digest} was removed`);

    // Once the index is deleted, nothing lists the child: its files are garbage like any other.
    assert.equal((await fetch(`${reg.url}/v2/${repo}/manifests/${digests[3]}`, { method: 'DELETE' })).status, 202);
    const swept = await collectGarbage(reg.registry, policy, { dryRun: false });
    await reg.registry.layout.flushAll();
    assert.deepEqual(swept.removed.map((i) => i.digest).sort(), digests.slice(0, 3).sort());
    for (const digest of digests) assert.equal(await reg.registry.driver.stat(blobKey(repo, digest)), undefined, `${digest} was kept`);
    assert.deepEqual(await layoutProblems(reg, repo), []);
  } finally {
    await reg.dispose();
  }
});

test('GC keeps what another tool names under a ref name that is no registry tag, with its referrers, as a tag would', async (t) => {
  if (!needsFileStorage(t)) return;
  const reg = await startTestRegistry({ layoutCheckIntervalMs: 0 });
  try {
    const repo = 'gc/ref-name';
    assert.equal((await pushBuilt(reg.url, repo, 'v1', makeImage())).status, 201);
    await reg.registry.layout.flushAll();
    // skopeo copy … oci:DIR:team/x writes this entry: Trellis reads the image, but `team/x` is no tag.
    const image = makeImage();
    await writeOldBlobs(reg, repo, [...image.blobs, image.bytes]);
    await listInIndexJson(reg, repo, image.descriptor, 'team/x');
    const signature = makeReferrer(image.descriptor, { artifactType: 'application/vnd.example.sig' });
    assert.equal((await pushBuilt(reg.url, repo, signature.digest, signature)).status, 201);

    const report = await collectGarbage(reg.registry, { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 0 }, { dryRun: false, now: later() });
    await reg.registry.layout.flushAll();
    assert.deepEqual(report.removed.map((i) => i.digest), [], 'GC took an image another tool named, or its signature');
    assert.equal((await getManifest(reg.url, repo, image.digest)).status, 200);
    assert.deepEqual((await listReferrers(reg.url, repo, image.digest)).manifests.map((d) => d.digest), [signature.digest]);
    assert.deepEqual(await layoutProblems(reg, repo), []);
  } finally {
    await reg.dispose();
  }
});

test('a referrer of a manifest that a tagged index starts listing while GC runs is kept with it', async () => {
  const reg = await startTestRegistry();
  try {
    const repo = 'gc/listed-meanwhile';
    const image = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, image.digest, image)).status, 201);
    const signature = makeReferrer(image.descriptor, { artifactType: 'application/vnd.example.sig' });
    assert.equal((await pushBuilt(reg.url, repo, signature.digest, signature)).status, 201);
    // Both are garbage when GC marks; a tagged index listing the image arrives before GC sweeps.
    const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [image.descriptor] };
    const metadata = reg.registry.metadata;
    const mark = metadata.unreachableManifests.bind(metadata);
    metadata.unreachableManifests = async (...args) => {
      const found = await mark(...args);
      assert.equal((await pushManifest(reg.url, repo, 'v1', index, OCI_INDEX)).status, 201);
      return found;
    };
    await collectGarbage(reg.registry, { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 0 }, { dryRun: false, now: later() });
    assert.equal((await getManifest(reg.url, repo, image.digest)).status, 200);
    assert.deepEqual((await listReferrers(reg.url, repo, image.digest)).manifests.map((d) => d.digest), [signature.digest],
      'the listed image lost its signature: no order of the index push and GC gives that');
  } finally {
    await reg.dispose();
  }
});

test('a blob uploaded just now is within the grace period even when another repository\'s old file is shared for it', async (t) => {
  if (!needsFileStorage(t)) return;
  const reg = await startTestRegistry();
  try {
    const image = makeImage();
    const layer = image.blobs[1]!;
    // The layer has sat unused in another repository for two hours.
    assert.equal((await pushBlob(reg.url, 'gc/elsewhere', layer)).status, 201);
    const old = new Date(Date.now() - 2 * 3600_000);
    await utimes(join(reg.dataDir, blobKey('gc/elsewhere', descriptorOf('x', layer).digest)), old, old);
    // A client pushes the image here: the layer upload is acknowledged (the old file is shared),
    // then GC runs before the manifest arrives.
    for (const blob of image.blobs) assert.equal((await pushBlob(reg.url, 'gc/here', blob)).status, 201);
    await collectGarbage(reg.registry, { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 3600 }, { dryRun: false });
    const pushed = await pushManifest(reg.url, 'gc/here', 'v1', image.bytes);
    assert.equal(pushed.status, 201, `GC took a blob uploaded a moment ago: ${pushed.body.toString().slice(0, 300)}`);
    assert.equal((await getBlob(reg.url, 'gc/here', descriptorOf('x', layer).digest)).status, 200);
  } finally {
    await reg.dispose();
  }
});

test('a mount of a blob the repository already holds restarts its grace period: GC does not take it before the manifest arrives', async (t) => {
  if (!needsFileStorage(t)) return;
  const reg = await startTestRegistry();
  try {
    const image = makeImage();
    const layer = image.blobs[1]!;
    const digest = descriptorOf('x', layer).digest;
    // The layer has sat unused here for two hours (its manifest deleted, say), and in another repository.
    assert.equal((await pushBlob(reg.url, 'gc/here', layer)).status, 201);
    assert.equal((await pushBlob(reg.url, 'gc/elsewhere', layer)).status, 201);
    const old = new Date(Date.now() - 2 * 3600_000);
    await utimes(join(reg.dataDir, blobKey('gc/here', digest)), old, old);
    // A client mounts it (acknowledged: 201), uploads the rest, and GC runs before the manifest arrives.
    const mounted = await fetch(`${reg.url}/v2/gc/here/blobs/uploads/?mount=${digest}&from=gc/elsewhere`, { method: 'POST' });
    assert.equal(mounted.status, 201);
    for (const blob of image.blobs) if (blob !== layer) assert.equal((await pushBlob(reg.url, 'gc/here', blob)).status, 201);
    await collectGarbage(reg.registry, { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 3600 }, { dryRun: false });
    const pushed = await pushManifest(reg.url, 'gc/here', 'v1', image.bytes);
    assert.equal(pushed.status, 201, `GC took a blob mounted a moment ago: ${pushed.body.toString().slice(0, 300)}`);
    assert.equal((await getBlob(reg.url, 'gc/here', digest)).status, 200);
  } finally {
    await reg.dispose();
  }
});

test('a pusher\'s HEAD of an old unused blob renews it: GC before the manifest arrives does not take it; a puller\'s HEAD does not', async (t) => {
  if (!needsFileStorage(t)) return;
  const r = await startAuthRegistry(t, {
    users: ['admin', 'builder', 'reader'],
    auth: { admins: { users: ['admin'] }, policies: { 'gc/**': { users: { builder: ['pull', 'push'], reader: ['pull'] } } } },
  });
  const repo = 'gc/head';
  const image = makeImage();
  const [config, layer] = image.blobs as [Buffer, Buffer];
  // Both blobs have sat unused here for two hours (their manifest deleted, say).
  for (const blob of image.blobs) assert.equal((await r.call(`/v2/${repo}/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob, auth: r.basic('builder') })).status, 201);
  const old = new Date(Date.now() - 2 * 3600_000);
  for (const blob of image.blobs) await utimes(join(r.reg.dataDir, blobKey(repo, sha256(blob))), old, old);
  // The builder checks the layer (exists: it skips the upload), the reader checks the config.
  assert.equal((await r.call(`/v2/${repo}/blobs/${sha256(layer)}`, { method: 'HEAD', auth: r.basic('builder') })).status, 200);
  assert.equal((await r.call(`/v2/${repo}/blobs/${sha256(config)}`, { method: 'HEAD', auth: r.basic('reader') })).status, 200);

  const report = await collectGarbage(r.reg.registry, { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 3600 }, { dryRun: false });
  assert.deepEqual(report.removed.map((i) => i.digest), [sha256(config)], 'only the blob a puller looked at is garbage');
  assert.equal((await r.call(`/v2/${repo}/blobs/${sha256(layer)}`, { method: 'HEAD', auth: r.basic('builder') })).status, 200);
  // The builder uploads the config again (HEAD said it is gone) and pushes the manifest.
  assert.equal((await r.call(`/v2/${repo}/blobs/${sha256(config)}`, { method: 'HEAD', auth: r.basic('builder') })).status, 404);
  assert.equal((await r.push(repo, 'v1', r.basic('builder'), image)).status, 201);
});
