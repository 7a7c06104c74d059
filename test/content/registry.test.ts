// Content lifetime: a file in a layout's blobs/ goes only when nothing references it in any role,
// and a removal journaled by a delete never takes a file a later push (of the same bytes) needs.
// Every scenario ends with `trellis fsck` clean.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { cliEnv, needsFileStorage, startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import {
  OCI_MANIFEST, descriptorOf, getBlob, getManifest, listTags, makeImage, pushBlob, pushBuilt, pushManifest, type Built,
} from '../helpers/oci-client.ts';
import { collectGarbage } from '../../src/gc/collector.ts';

const run = promisify(execFile);
const MAIN = resolve(import.meta.dirname, '../../src/main.ts');

async function fsckClean(dataDir: string): Promise<void> {
  const result = await run(process.execPath, [MAIN, 'fsck', '--data', dataDir], { env: await cliEnv(dataDir) }).catch((err: { stdout: string; code: number }) => err);
  assert.match(result.stdout, / 0 problems/, result.stdout);
}

/** Resolves once the layout writer has flushed everything the journal holds. */
async function settled(reg: TestRegistry): Promise<void> {
  await reg.registry.layout.flushAll();
}

/** An artifact whose one layer is the manifest `inner`, described with a manifest media type (seed 001). */
function artifactOf(inner: Built): Built {
  const config = Buffer.from('{}');
  const manifest = {
    schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'application/vnd.example.bundle',
    config: descriptorOf('application/vnd.oci.empty.v1+json', config), layers: [inner.descriptor],
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  return { bytes, digest: descriptorOf(OCI_MANIFEST, bytes).digest, mediaType: OCI_MANIFEST, descriptor: descriptorOf(OCI_MANIFEST, bytes), blobs: [config] };
}

test('a re-push of the same bytes while the delete\'s file removal is under way keeps its file', async () => {
  const reg = await startTestRegistry();
  const repo = 'race/redo';
  try {
    const image = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, 'v1', image)).status, 201);
    await settled(reg);
    // Hold the removal the delete journals at the moment it is about to unlink the file.
    const driver = reg.registry.driver;
    const remove = driver.remove.bind(driver);
    let reached!: () => void;
    const atRemoval = new Promise<void>((done) => { reached = done; });
    let release!: () => void;
    const gate = new Promise<void>((done) => { release = done; });
    driver.remove = async (key: string) => {
      if (key.endsWith(image.digest.slice(7))) {
        reached();
        await gate;
      }
      return remove(key);
    };
    const deleted = await fetch(`${reg.url}/v2/${repo}/manifests/${image.digest}`, { method: 'DELETE' });
    assert.equal(deleted.status, 202);
    await atRemoval;
    // The same bytes again, under a new tag, while the removal waits.
    const again = pushManifest(reg.url, repo, 'v2', image.bytes);
    await Promise.race([again, sleep(300)]);
    release();
    assert.equal((await again).status, 201);
    await settled(reg);
    assert.deepEqual((await listTags(reg.url, repo)).tags, ['v2']);
    const got = await getManifest(reg.url, repo, 'v2');
    assert.equal(got.status, 200, 'the re-pushed manifest answers 404: its file was removed after the 201');
    assert.ok(got.bytes.equals(image.bytes));
    await reg.close();
    await fsckClean(reg.dataDir);
  } finally {
    await reg.dispose();
  }
});

test('a manifest push cut off between its file\'s rename and its commit leaves nothing served after a restart', async () => {
  // The crash test's failure (client's manifest untagged but 200 by digest after kill -9): a
  // delete by digest, its file removed after the rewrite, then a re-push of the same bytes killed
  // after the file was renamed into blobs/ but before its rows were committed. Such a file looked
  // like a manifest another tool put into blobs/ without listing it, and was served by digest.
  // The commit is made to fail here, as a kill at that instant would leave it.
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-test-cutoff-'));
  const repo = 'crash/cutoff';
  const image = makeImage();
  const file = join(dataDir, repo, 'blobs', 'sha256', image.digest.slice(7));
  let reg: TestRegistry | undefined = await startTestRegistry({}, dataDir);
  try {
    assert.equal((await pushBuilt(reg.url, repo, 'v1', image)).status, 201);
    const deleted = await fetch(`${reg.url}/v2/${repo}/manifests/${image.digest}`, { method: 'DELETE' });
    assert.equal(deleted.status, 202);
    await settled(reg);
    assert.equal(existsSync(file), false, 'the deleted manifest\'s file was not removed after the rewrite');
    const metadata = reg.registry.metadata;
    metadata.putManifest = () => { throw new Error('killed before the commit'); };
    assert.notEqual((await pushManifest(reg.url, repo, 'v2', image.bytes)).status, 201);
    assert.equal(existsSync(file), true, 'the cut-off push did not get as far as renaming its file into place');
    await reg.close();

    reg = await startTestRegistry({}, dataDir);
    assert.deepEqual((await listTags(reg.url, repo)).tags, []);
    assert.equal((await getManifest(reg.url, repo, image.digest)).status, 404, 'an unacknowledged push is served by digest after the restart');
    assert.equal((await getBlob(reg.url, repo, image.digest)).status, 404);
    // Served as absent at once; the file itself goes in the start's catch-up, in the background.
    await reg.registry.adopted();
    assert.equal(existsSync(file), false, 'the cut-off push\'s file outlived the restart');
    // The client carries on: the same bytes again are stored and served.
    assert.equal((await pushManifest(reg.url, repo, 'v3', image.bytes)).status, 201);
    await settled(reg);
    assert.equal((await getManifest(reg.url, repo, image.digest)).status, 200);
    await reg.close();
    await fsckClean(dataDir);
  } finally {
    await reg?.close();
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('four clients deleting by digest and re-pushing the same bytes lose nothing (bounded)', async () => {
  const reg = await startTestRegistry({ indexFlushMinMs: 1, indexFlushMaxMs: 5 });
  const repo = 'race/clients';
  // Bounded by a cycle count, with a time limit for a very slow machine.
  const CYCLES = 60;
  const deadline = Date.now() + 20_000;
  const lost: string[] = [];
  let cycles = 0;
  try {
    const client = async (id: number) => {
      const image = makeImage({ layer: Buffer.from(`client ${id}`) });
      assert.equal((await pushBuilt(reg.url, repo, `c${id}-0`, image)).status, 201);
      for (let i = 1; cycles < CYCLES && Date.now() < deadline; i++) {
        const deleted = await fetch(`${reg.url}/v2/${repo}/manifests/${image.digest}`, { method: 'DELETE' });
        assert.equal(deleted.status, 202, await deleted.text());
        // Give the layout writer a chance to rewrite index.json and journal the removal.
        await sleep(i % 4);
        assert.equal((await pushManifest(reg.url, repo, `c${id}-${i}`, image.bytes)).status, 201);
        await sleep(i % 3);
        const got = await getManifest(reg.url, repo, `c${id}-${i}`);
        if (got.status !== 200) lost.push(`c${id}-${i}: GET answered ${got.status} after a 201`);
        cycles++;
      }
    };
    await Promise.all([0, 1, 2, 3].map(client));
    assert.ok(cycles >= CYCLES, `only ${cycles} delete/re-push cycles ran in 20 s`);
    assert.deepEqual(lost, []);
    await settled(reg);
    await reg.close();
    await fsckClean(reg.dataDir);
  } finally {
    await reg.dispose();
  }
});

test('a manifest that is also another artifact\'s layer keeps its file when deleted by the API', async () => {
  const reg = await startTestRegistry();
  const repo = 'roles/api';
  try {
    const inner = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, 'inner', inner)).status, 201);
    // The client skips the upload of the layer: HEAD /blobs/<inner> answers 200.
    const head = await fetch(`${reg.url}/v2/${repo}/blobs/${inner.digest}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    const outer = artifactOf(inner);
    assert.equal((await pushBuilt(reg.url, repo, 'outer', outer)).status, 201);
    const deleted = await fetch(`${reg.url}/v2/${repo}/manifests/${inner.digest}`, { method: 'DELETE' });
    assert.equal(deleted.status, 202);
    await settled(reg);
    const layer = await getBlob(reg.url, repo, inner.digest);
    assert.equal(layer.status, 200, 'the artifact\'s layer is gone with the deleted manifest');
    assert.ok(layer.bytes.equals(inner.bytes));
    assert.equal((await getManifest(reg.url, repo, 'outer')).status, 200);
    await reg.close();
    await fsckClean(reg.dataDir);
  } finally {
    await reg.dispose();
  }
});

test('a manifest that is also another artifact\'s layer keeps its file when GC collects it untagged', async () => {
  const reg = await startTestRegistry();
  const repo = 'roles/gc';
  try {
    const inner = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, inner.digest, inner)).status, 201);
    const outer = artifactOf(inner);
    assert.equal((await pushBuilt(reg.url, repo, 'outer', outer)).status, 201);
    await collectGarbage(reg.registry, { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 0 }, { dryRun: false, now: Date.now() + 60_000 });
    await settled(reg);
    const layer = await getBlob(reg.url, repo, inner.digest);
    assert.equal(layer.status, 200, 'GC removed a file the tagged artifact uses as its layer');
    // What the manifest itself used is still there too: the content is whole.
    for (const blob of inner.blobs) assert.equal((await getBlob(reg.url, repo, descriptorOf('x', blob).digest)).status, 200);
    await reg.close();
    await fsckClean(reg.dataDir);
    // The layer is a plain file of the layout, as other tools read it.
    const onDisk = await readFile(join(reg.dataDir, repo, 'blobs', 'sha256', inner.digest.slice(7)));
    assert.ok(onDisk.equals(inner.bytes));
  } finally {
    await reg.dispose();
  }
});

test('a blob uploaded again while its removal is journaled is kept', async () => {
  const reg = await startTestRegistry();
  const repo = 'roles/upload';
  try {
    const orphan = randomBytes(100);
    assert.equal((await pushBlob(reg.url, repo, orphan)).status, 201);
    const digest = descriptorOf('x', orphan).digest;
    // GC journals the unused blob's removal; the client uploads the same bytes before it runs.
    const report = await collectGarbage(reg.registry, { untagged: 'keep', danglingReferrers: 'keep', graceSeconds: 0 }, { dryRun: false, now: Date.now() + 60_000 });
    assert.ok(report.removed.some((i) => i.digest === digest));
    assert.equal((await pushBlob(reg.url, repo, orphan)).status, 201);
    await settled(reg);
    assert.equal((await getBlob(reg.url, repo, digest)).status, 200);
    assert.ok((await stat(join(reg.dataDir, repo, 'blobs', 'sha256', digest.slice(7)))).isFile());
  } finally {
    await reg.dispose();
  }
});

test('a blob file cut short under its digest\'s name is replaced by a verified upload, never shared or kept', async (t) => {
  if (!needsFileStorage(t)) return;
  const reg = await startTestRegistry();
  try {
    const bytes = randomBytes(5000);
    const digest = descriptorOf('x', bytes).digest;
    assert.equal((await pushBlob(reg.url, 'short/a', bytes)).status, 201);
    // What a copy another tool cut off, or a power loss before write-back, leaves: the right name, too few bytes.
    await truncate(join(reg.dataDir, 'short/a/blobs/sha256', digest.slice(7)), 1000);
    // Another repository's upload of the same bytes is not swapped for a link to the short file…
    assert.equal((await pushBlob(reg.url, 'short/b', bytes)).status, 201);
    const b = await getBlob(reg.url, 'short/b', digest);
    assert.equal(b.bytes.length, bytes.length, 'short/b serves the short file after its upload of the whole blob was acknowledged');
    // …and an upload into the repository holding it replaces it, instead of being dropped for it.
    assert.equal((await pushBlob(reg.url, 'short/a', bytes)).status, 201);
    const a = await getBlob(reg.url, 'short/a', digest);
    assert.ok(a.bytes.equals(bytes), `short/a serves ${a.bytes.length} bytes under ${digest} after an acknowledged upload of ${bytes.length}`);
  } finally {
    await reg.dispose();
  }
});

test('deleting a manifest and then its blobs never leaves index.json listing a manifest without them', async () => {
  // What the conformance suite and cleanup scripts do; the rewrite is slow here (a large repository).
  const reg = await startTestRegistry({ indexFlushMinMs: 60_000, indexFlushMaxMs: 60_000 });
  const repo = 'order/layers';
  try {
    const image = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, 'v1', image)).status, 201);
    await settled(reg);
    assert.equal((await fetch(`${reg.url}/v2/${repo}/manifests/${image.digest}`, { method: 'DELETE' })).status, 202);
    const layer = descriptorOf('x', image.blobs[1]!).digest;
    assert.equal((await fetch(`${reg.url}/v2/${repo}/blobs/${layer}`, { method: 'DELETE' })).status, 202);
    assert.equal((await fetch(`${reg.url}/v2/${repo}/blobs/${layer}`, { method: 'HEAD' })).status, 404, 'a deleted blob answers 404 at once');
    assert.equal((await fetch(`${reg.url}/v2/${repo}/blobs/${layer}`, { method: 'DELETE' })).status, 404);
    // index.json still lists the manifest until its rewrite: its layer must still be there.
    const index = await readFile(join(reg.dataDir, repo, 'index.json'), 'utf8');
    assert.ok(index.includes(image.digest));
    assert.ok((await stat(join(reg.dataDir, repo, 'blobs', 'sha256', layer.slice(7))).catch(() => undefined))?.isFile(),
      'the layer of a manifest index.json still lists was removed');
    await settled(reg);
    await assert.rejects(stat(join(reg.dataDir, repo, 'blobs', 'sha256', layer.slice(7))), 'the deleted blob goes after the rewrite');
    await reg.close();
    await fsckClean(reg.dataDir);
  } finally {
    await reg.dispose();
  }
});

test('manifest bodies are served from a cache that a rewrite of the file invalidates (its etag changes)', async (t) => {
  // On S3 a content-addressed key is never rewritten with other bytes (the shared object is kept).
  if (!needsFileStorage(t)) return;
  const reg = await startTestRegistry();
  const repo = 'cache/manifests';
  try {
    const image = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, 'v1', image)).status, 201);
    const first = await reg.registry.resolveManifest(repo, 'v1');
    const bytes = await reg.registry.manifestBytes(first);
    assert.ok(bytes?.equals(image.bytes));
    const again = await reg.registry.manifestBytes(await reg.registry.resolveManifest(repo, 'v1'));
    assert.equal(again, bytes, 'the second read is the cached buffer, not another read');
    // Another tool rewrites the file in place: the next resolve sees a new etag.
    const rewritten = Buffer.from(`${image.bytes.toString()}\n`);
    await writeFile(join(reg.dataDir, first.key), rewritten);
    const after = await reg.registry.resolveManifest(repo, 'v1');
    assert.notEqual(after.info.etag, first.info.etag);
    assert.ok((await reg.registry.manifestBytes(after))?.equals(rewritten), 'stale bytes served after a rewrite');
  } finally {
    await reg.dispose();
  }
});
