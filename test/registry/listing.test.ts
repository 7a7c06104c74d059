// Referrers listings are built once and sent again until their repository changes: every kind of
// change (a push, a delete, GC, another tool's edit of the layout) is seen at the next listing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { needsFileStorage, startTestRegistry } from '../helpers/registry.ts';
import { listReferrers, makeImage, makeReferrer, pushBuilt, type Built } from '../helpers/oci-client.ts';

const digests = (list: { manifests: { digest: string }[] }) => list.manifests.map((m) => m.digest).sort();

test('a cached referrers listing follows pushes, deletes, GC and other tools\' edits', async (t) => {
  const reg = await startTestRegistry({ layoutCheckIntervalMs: 0, gcGraceSeconds: 0, gcUntagged: 'delete' });
  t.after(() => reg.dispose());
  const base = `http://${reg.host}`;
  const subject = makeImage();
  assert.equal((await pushBuilt(base, 'app', 'v1', subject)).status, 201);
  const referrer = (n: number): Built => makeReferrer(subject.descriptor, { artifactType: 'application/vnd.example.sig', annotations: { n: String(n) } });
  const [a, b, c] = [referrer(1), referrer(2), referrer(3)];
  assert.equal((await pushBuilt(base, 'app', a.digest, a)).status, 201);
  assert.deepEqual(digests(await listReferrers(base, 'app', subject.digest)), [a.digest]);
  assert.deepEqual(digests(await listReferrers(base, 'app', subject.digest)), [a.digest], 'the same answer again');

  assert.equal((await pushBuilt(base, 'app', b.digest, b)).status, 201);
  assert.deepEqual(digests(await listReferrers(base, 'app', subject.digest)), [a.digest, b.digest].sort(), 'a push is seen');
  // Filtered and paged listings are answers of their own.
  const filtered = await fetch(`${base}/v2/app/referrers/${subject.digest}?artifactType=application/vnd.example.other`);
  assert.deepEqual((await filtered.json() as { manifests: unknown[] }).manifests, []);
  const paged = await fetch(`${base}/v2/app/referrers/${subject.digest}?n=1`);
  assert.equal((await paged.json() as { manifests: unknown[] }).manifests.length, 1);
  assert.match(paged.headers.get('link') ?? '', /rel="next"/);

  assert.equal((await fetch(`${base}/v2/app/manifests/${a.digest}`, { method: 'DELETE' })).status, 202);
  assert.deepEqual(digests(await listReferrers(base, 'app', subject.digest)), [b.digest], 'a delete is seen');

  // GC of an untagged subject's dangling referrers: push a second subject with one referrer, untag it.
  const other = makeImage();
  assert.equal((await pushBuilt(base, 'app', 'tmp', other)).status, 201);
  const orphan = makeReferrer(other.descriptor, { artifactType: 'application/vnd.example.sig' });
  assert.equal((await pushBuilt(base, 'app', orphan.digest, orphan)).status, 201);
  assert.deepEqual(digests(await listReferrers(base, 'app', other.digest)), [orphan.digest]);
  assert.equal((await fetch(`${base}/v2/app/manifests/tmp`, { method: 'DELETE' })).status, 202);
  const report = await (await fetch(`${base}/v2/_trellis/gc`, { method: 'POST' })).json() as { removed: { digest: string }[] };
  assert.ok(report.removed.some((r) => r.digest === orphan.digest), JSON.stringify(report));
  assert.deepEqual(digests(await listReferrers(base, 'app', other.digest)), [], 'what GC removed is gone from the listing');

  if (!needsFileStorage(t)) return;
  // Another tool adds a referrer to the layout: its blob and an index.json entry.
  await reg.registry.layout.flushAll();
  const dir = join(reg.dataDir, 'app');
  await writeFile(join(dir, 'blobs', 'sha256', c.digest.slice('sha256:'.length)), c.bytes);
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: unknown[] };
  index.manifests.push(c.descriptor);
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
  assert.deepEqual(digests(await listReferrers(base, 'app', subject.digest)), [b.digest, c.digest].sort(), 'another tool\'s edit is seen');
});
