// The layout writer: a failed index.json rewrite is retried by itself (with backoff), so the layout
// catches up with the journal even if nothing else ever changes in the repository; and a fallback
// tag (`sha256-<hex>`) a client pushed itself is written as the client's tag, never replaced by
// Trellis's generated referrers index.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTestRegistry } from '../helpers/registry.ts';
import { interopSession } from '../helpers/interop.ts';
import { requirePeer } from '../helpers/peers.ts';
import { REF_NAME, getManifest, listReferrers, listTags, makeImage, makeReferrer, pushBuilt, pushManifest } from '../helpers/oci-client.ts';
import { trellisCli } from '../cli/run.ts';

test('a failed index.json rewrite is retried without waiting for another change', async () => {
  const reg = await startTestRegistry();
  const repo = 'retry/app';
  try {
    assert.equal((await pushBuilt(reg.url, repo, 'v1', makeImage())).status, 201);
    await reg.registry.layout.flushAll();
    // The disk refuses the next three index.json writes (full, or a transient I/O error).
    const driver = reg.registry.driver;
    const writeFile = driver.writeFile.bind(driver);
    let refused = 0;
    driver.writeFile = async (key, data, options) => {
      if (key.endsWith('/index.json') && refused < 3) {
        refused++;
        throw Object.assign(new Error('ENOSPC: no space left on device (injected)'), { code: 'ENOSPC' });
      }
      return writeFile(key, data, options);
    };
    const image = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, 'v2', image)).status, 201);
    // No other change follows; the layout must still catch up (retries after 100, 200, 400 ms).
    // Caught up: the file lists v2 and the journal records it as flushed (recorded just after the
    // rename, so the two are polled together).
    const caughtUp = async () => {
      const record = (await reg.registry.metadata.repository(repo))!;
      return (await readFile(join(reg.dataDir, repo, 'index.json'), 'utf8')).includes(image.digest) && record.flushedGen === record.gen;
    };
    for (const deadline = Date.now() + 10_000; !(await caughtUp()); await sleep(50)) {
      assert.ok(Date.now() < deadline, `index.json still misses v2 ${refused} refused writes later`);
    }
    assert.equal(refused, 3);
  } finally {
    await reg.dispose();
  }
});

test('closing while a rewrite is under way waits for it, writes what is pending, and leaves nothing scheduled', async () => {
  const reg = await startTestRegistry();
  const repo = 'closing/app';
  try {
    assert.equal((await pushBuilt(reg.url, repo, 'v1', makeImage())).status, 201);
    await reg.registry.layout.flushAll();
    // The next index.json write (started by the writer's own timer) is held, then fails.
    const driver = reg.registry.driver;
    const writeFile = driver.writeFile.bind(driver);
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let entered!: () => void;
    const inside = new Promise<void>((resolve) => (entered = resolve));
    let heldOnce = false;
    driver.writeFile = async (key, data, options) => {
      if (key.endsWith('/index.json') && !heldOnce) {
        heldOnce = true;
        entered();
        await held;
        throw Object.assign(new Error('EIO: i/o error (injected)'), { code: 'EIO' });
      }
      return writeFile(key, data, options);
    };
    const image = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, 'v2', image)).status, 201);
    await inside;
    const metadata = reg.registry.metadata;
    let closed = false;
    const closing = reg.close().then(() => (closed = true));
    await sleep(100);
    assert.equal(closed, false, 'close waits for the rewrite under way');
    release();
    await closing;
    // The rewrite that failed is not retried against the closed store: nothing reads it any more.
    const repository = metadata.repository.bind(metadata);
    let readsAfterClose = 0;
    metadata.repository = async (name) => {
      readsAfterClose++;
      return repository(name);
    };
    await sleep(500);
    assert.equal(readsAfterClose, 0, 'a retry was scheduled after close');
    // close wrote what was pending itself.
    assert.ok((await readFile(join(reg.dataDir, repo, 'index.json'), 'utf8')).includes(image.digest));
  } finally {
    await reg.dispose();
  }
});

const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const GENERATED_SUBJECT = 'dev.trellis.referrers.subject';

interface IndexEntry {
  digest: string;
  annotations?: Record<string, string>;
}

async function indexEntries(dataDir: string, repo: string): Promise<IndexEntry[]> {
  return (JSON.parse(await readFile(join(dataDir, repo, 'index.json'), 'utf8')) as { manifests: IndexEntry[] }).manifests;
}

async function fsckProblems(dataDir: string): Promise<string> {
  const result = await trellisCli(['fsck', '--data', dataDir]);
  return result.code === 0 ? '' : result.stdout + result.stderr;
}

test('a fallback tag a client pushes itself stays the client\'s: index.json, fsck and reindex keep it', async () => {
  const reg = await startTestRegistry();
  const repo = 'fallback/raw';
  try {
    const subject = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, 'v1', subject)).status, 201);
    const referrer = makeReferrer(subject.descriptor, { artifactType: 'application/vnd.example.sig' });
    assert.equal((await pushBuilt(reg.url, repo, referrer.digest, referrer)).status, 201);
    await reg.registry.layout.flushAll();
    // What an old client does on a registry it believes has no referrers API: its own index under sha256-<hex>.
    const tag = `sha256-${subject.digest.slice(7)}`;
    const clientIndex = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ ...referrer.descriptor, artifactType: 'application/vnd.example.sig' }] };
    const pushed = await pushManifest(reg.url, repo, tag, clientIndex, OCI_INDEX);
    assert.equal(pushed.status, 201);
    // A referrer another client pushes through the API afterwards, without touching the tag.
    const other = makeReferrer(subject.descriptor, { artifactType: 'application/vnd.example.sbom' });
    assert.equal((await pushBuilt(reg.url, repo, other.digest, other)).status, 201);
    await reg.registry.layout.flushAll();

    const entries = await indexEntries(reg.dataDir, repo);
    const tagged = entries.filter((e) => e.annotations?.[REF_NAME] === tag);
    assert.deepEqual(tagged.map((e) => e.digest), [pushed.digest], 'index.json must list the client\'s own entry under its tag');
    assert.equal(tagged[0]!.annotations?.[GENERATED_SUBJECT], undefined);
    assert.equal((await getManifest(reg.url, repo, tag)).digest, pushed.digest);
    const listed = (await listReferrers(reg.url, repo, subject.digest)).manifests.map((d) => d.digest).sort();
    assert.deepEqual(listed, [referrer.digest, other.digest].sort());
    // Both referrers stay discoverable in the layout: untagged entries annotated with their subject.
    for (const r of [referrer, other]) assert.ok(entries.some((e) => e.digest === r.digest && e.annotations?.['io.containerd.manifest.subject'] === subject.digest));

    await reg.close();
    assert.equal(await fsckProblems(reg.dataDir), '');
    const reindexed = await trellisCli(['reindex', '--data', reg.dataDir]);
    assert.equal(reindexed.code, 0, reindexed.stderr);
    assert.equal(await fsckProblems(reg.dataDir), '');
    const again = await startTestRegistry({}, reg.dataDir);
    try {
      assert.equal((await getManifest(again.url, repo, tag)).digest, pushed.digest, 'reindex dropped the tag the client pushed');
      assert.ok((await listTags(again.url, repo)).tags.includes(tag));
      // Once the client's tag is gone, Trellis's own referrers index takes the fallback tag again.
      assert.equal((await fetch(`${again.url}/v2/${repo}/manifests/${tag}`, { method: 'DELETE' })).status, 202);
      await again.registry.layout.flushAll();
      const generated = (await indexEntries(again.dataDir, repo)).filter((e) => e.annotations?.[REF_NAME] === tag);
      assert.equal(generated.length, 1);
      assert.equal(generated[0]!.annotations?.[GENERATED_SUBJECT], subject.digest);
    } finally {
      await again.close();
    }
    assert.equal(await fsckProblems(reg.dataDir), '');
  } finally {
    await reg.dispose();
  }
});

test('a tag pushed here takes its name in index.json from an entry another tool left there for a manifest Trellis cannot read', async () => {
  const reg = await startTestRegistry({ layoutCheckIntervalMs: 0 });
  const repo = 'foreign/ghost';
  try {
    assert.equal((await pushBuilt(reg.url, repo, 'v1', makeImage())).status, 201);
    await reg.registry.layout.flushAll();
    // Another tool tags a manifest whose blob it never wrote (kept verbatim: it is not Trellis's to drop).
    const path = join(reg.dataDir, repo, 'index.json');
    const index = JSON.parse(await readFile(path, 'utf8')) as { manifests: Record<string, unknown>[] };
    const ghost = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'ab'.repeat(32)}`, size: 10 };
    index.manifests.push({ ...ghost, annotations: { [REF_NAME]: 'ghost' } }, { ...ghost, annotations: { [REF_NAME]: 'other' } });
    await writeFile(path, JSON.stringify(index));
    assert.deepEqual((await listTags(reg.url, repo)).tags, ['v1']);
    // A client then pushes that tag: the registry serves it, and the layout must say the same
    // (oras resolves a ref name to the last entry carrying it, skopeo and regctl to the first).
    const image = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, 'ghost', image)).status, 201);
    await reg.registry.layout.flushAll();
    const entries = await indexEntries(reg.dataDir, repo);
    assert.deepEqual(entries.filter((e) => e.annotations?.[REF_NAME] === 'ghost').map((e) => e.digest), [image.digest]);
    // The other tool's entries under names the registry does not hold stay as written.
    assert.deepEqual(entries.filter((e) => e.annotations?.[REF_NAME] === 'other').map((e) => e.digest), [ghost.digest]);
  } finally {
    await reg.dispose();
  }
});

test('oras attach --distribution-spec v1.1-referrers-tag: the tag oras maintains survives, and readers of the layout find the referrers', { timeout: 120_000 }, async (t) => {
  const oras = requirePeer(t, 'oras');
  if (!oras) return;
  const regctl = requirePeer(t, 'regctl');
  if (!regctl) return;
  const { reg, work, exec } = await interopSession(t, 'fallback-oras');
  const R = reg.host;
  const repo = 'fallback/oras';
  await writeFile(join(work, 'hi.txt'), `subject ${Math.random()}\n`);
  const subject = (JSON.parse((await exec(oras, ['push', '--plain-http', '--format', 'json', `${R}/${repo}:v1`, 'hi.txt:text/plain'])).stdout) as { digest: string }).digest;
  const attached: string[] = [];
  for (const kind of ['sig', 'sbom']) {
    const out = await exec(oras, ['attach', '--plain-http', '--distribution-spec', 'v1.1-referrers-tag', '--format', 'json',
      '--artifact-type', `application/vnd.example.${kind}`, '--annotation', `org.example.kind=${kind}`, `${R}/${repo}:v1`]);
    attached.push((JSON.parse(out.stdout) as { digest: string }).digest);
  }
  const tag = `sha256-${subject.slice(7)}`;
  const served = await getManifest(reg.url, repo, tag);
  assert.equal(served.status, 200, 'oras pushed its fallback tag');
  await reg.registry.layout.flushAll();
  const entries = await indexEntries(reg.dataDir, repo);
  assert.deepEqual(entries.filter((e) => e.annotations?.[REF_NAME] === tag).map((e) => e.digest), [served.digest]);
  // oras reads the tag back through the registry, and both readers of the layout find the referrers.
  const discovered = JSON.parse((await exec(oras, ['discover', '--plain-http', '--distribution-spec', 'v1.1-referrers-tag', '--format', 'json', `${R}/${repo}:v1`])).stdout) as { referrers?: { digest: string }[] };
  assert.deepEqual((discovered.referrers ?? []).map((r) => r.digest).sort(), [...attached].sort());
  const layout = join(reg.dataDir, repo);
  const fromLayout = JSON.parse((await exec(oras, ['discover', '--format', 'json', '--oci-layout', `${layout}:v1`])).stdout) as { referrers?: { digest: string }[] };
  assert.deepEqual((fromLayout.referrers ?? []).map((r) => r.digest).sort(), [...attached].sort());
  const regctlList = JSON.parse((await exec(regctl, ['artifact', 'list', '--format', '{{json .Descriptors}}', `ocidir://${layout}:v1`])).stdout) as { digest: string }[] | null;
  assert.deepEqual((regctlList ?? []).map((r) => r.digest).sort(), [...attached].sort());
  await reg.close();
  assert.equal(await fsckProblems(reg.dataDir), '');
  const reindexed = await trellisCli(['reindex', '--data', reg.dataDir]);
  assert.equal(reindexed.code, 0, reindexed.stderr);
  assert.equal(await fsckProblems(reg.dataDir), '');
  const index = await indexEntries(reg.dataDir, repo);
  assert.deepEqual(index.filter((e) => e.annotations?.[REF_NAME] === tag).map((e) => e.digest), [served.digest], 'reindex kept the tag oras pushed');
});

test('entries under ref names that are not registry tags (skopeo\'s oci:DIR:team/x, 1.0+build) survive a rewrite', async () => {
  const reg = await startTestRegistry({ layoutCheckIntervalMs: 0 });
  const repo = 'foreign/refnames';
  try {
    const tagged = makeImage();
    const other = makeImage();
    assert.equal((await pushBuilt(reg.url, repo, 'v1', tagged)).status, 201);
    assert.equal((await pushBuilt(reg.url, repo, 'v2', other)).status, 201);
    await fetch(`${reg.url}/v2/${repo}/manifests/v2`, { method: 'DELETE' }); // other stays, untagged
    await reg.registry.layout.flushAll();
    // What `skopeo copy … oci:<dir>:<ref>` appends: the image-spec allows `/` and `+` in a ref
    // name, the registry's tag grammar does not. One of them names a manifest that is tagged too,
    // two name the same untagged manifest.
    const path = join(reg.dataDir, repo, 'index.json');
    const index = JSON.parse(await readFile(path, 'utf8')) as { manifests: Record<string, unknown>[] };
    const refs = [[tagged, 'team/x'], [tagged, '1.0+build'], [other, 'a/b'], [other, 'c/d']] as const;
    for (const [image, ref] of refs) index.manifests.push({ ...image.descriptor, annotations: { [REF_NAME]: ref } });
    await writeFile(path, JSON.stringify(index));
    assert.deepEqual((await listTags(reg.url, repo)).tags, ['v1']);
    // A push makes Trellis rewrite index.json.
    assert.equal((await pushBuilt(reg.url, repo, 'v3', makeImage())).status, 201);
    await reg.registry.layout.flushAll();
    const entries = await indexEntries(reg.dataDir, repo);
    for (const [image, ref] of refs) {
      assert.deepEqual(entries.filter((e) => e.annotations?.[REF_NAME] === ref).map((e) => e.digest), [image.digest], `${ref} is still listed`);
    }
    assert.deepEqual(entries.filter((e) => e.annotations?.[REF_NAME] === 'v1').map((e) => e.digest), [tagged.digest]);
    // Only what the other tool wrote and the tags: no untagged duplicate of a manifest it named.
    assert.equal(entries.filter((e) => e.digest === other.digest).length, 2);
    // A manifest deleted here takes its entries along (its files go; no entry may name them).
    assert.equal((await fetch(`${reg.url}/v2/${repo}/manifests/${other.digest}`, { method: 'DELETE' })).status, 202);
    await reg.registry.layout.flushAll();
    assert.deepEqual((await indexEntries(reg.dataDir, repo)).filter((e) => e.digest === other.digest), []);
    assert.equal(await fsckProblems(reg.dataDir), '');
  } finally {
    await reg.dispose();
  }
});
