// Garbage collection on one replica while the others take pushes. Replica 0 collects again and
// again with no grace period (anything unreferenced is collectable at once) and untagged
// manifests deleted; replicas 1 and 2 take pushes of new images (blobs, a pause, then the
// manifest: the window in which a fresh blob is not yet referenced), overwrites of a moving tag
// (which make the old image garbage) and blobs nobody references (garbage from the start). Every
// acknowledged image that is still tagged must then pull, with all its blobs, from every replica,
// and `trellis fsck` must be clean.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeImage, pushBlob } from '../helpers/oci-client.ts';
import { assertAllOnEveryReplica, fsckWhenSettled, pushRetrying, startReplicas, withDiagnostics } from '../helpers/replicas.ts';

const PUSHERS = 4;
const LOAD_MS = 12_000;

interface Acked {
  repository: string;
  tag: string;
  digest: string;
}

test('GC on one replica while the others take pushes keeps everything live', { timeout: 180_000 }, async (t) => {
  const set = await startReplicas(t, {
    replicaEnv: (index) => (index === 0 ? { TRELLIS_GC_GRACE_SECONDS: '0', TRELLIS_GC_UNTAGGED: 'delete' } : {} as Record<string, string>),
  });
  if (!set) return;
  const collector = set.replicas[0]!;
  const pushTargets = set.replicas.slice(1);
  const kept: Acked[] = [];
  const moving = new Map<string, Acked>();
  const gaveUp: string[] = [];
  let retries = 0;
  const refusals = new Map<string, number>();
  let collections = 0;
  let removed = 0;
  let running = true;

  const pusher = async (id: number) => {
    const base = pushTargets[id % pushTargets.length]!.url;
    for (let n = 0; running; n++) {
      const repository = `gc/p${id % 2}`;
      // Garbage from the start: a blob no manifest will ever use.
      await pushBlob(base, repository, randomBytes(256)).catch(() => undefined);
      const image = makeImage();
      const tag = n % 2 ? `keep-${id}-${n}` : `moving-${id}`;
      const outcome = await pushRetrying(base, repository, tag, image, { pauseBeforeManifestMs: Math.random() * 100 });
      retries += outcome.failures.length;
      for (const failure of outcome.failures) {
        const kind = failure.replace(/sha256:[0-9a-f]+/g, '<digest>').slice(0, 160);
        refusals.set(kind, (refusals.get(kind) ?? 0) + 1);
      }
      if (!outcome.acked) {
        gaveUp.push(`${repository}:${tag}: ${outcome.failures.join(' | ')}`);
        continue;
      }
      const item = { repository, tag, digest: image.digest };
      if (tag.startsWith('moving-')) moving.set(`${repository}:${tag}`, item);
      else kept.push(item);
    }
  };
  const collect = async () => {
    while (running) {
      const res = await fetch(`${collector.url}/v2/_trellis/gc`, { method: 'POST' });
      const body = await res.text();
      assert.equal(res.status, 200, `POST /v2/_trellis/gc: ${body}`);
      collections++;
      removed += (JSON.parse(body) as { removed: unknown[] }).removed.length;
    }
  };

  const load = Promise.all([...Array.from({ length: PUSHERS }, (_, id) => pusher(id)), collect()]);
  await sleep(LOAD_MS);
  running = false;
  await load;
  t.diagnostic(`${kept.length + moving.size} tags acknowledged, ${retries} push attempts refused and retried, ${collections} collections removed ${removed} items`);
  for (const [kind, count] of refusals) t.diagnostic(`refused ${count}×: ${kind}`);
  assert.ok(collections >= 2, `GC ran only ${collections} times`);
  assert.ok(removed > 0, 'GC removed nothing: the test made garbage, so GC did not run on it');
  assert.deepEqual(gaveUp, [], 'pushes refused 10 times in a row');

  // Once more after the pushes, then everything acknowledged and still tagged must be whole.
  assert.equal((await fetch(`${collector.url}/v2/_trellis/gc`, { method: 'POST' })).status, 200);
  await withDiagnostics(set, () => assertAllOnEveryReplica(set, [...kept, ...moving.values()]));
  // index.json follows within the flush delay; fsck compares the layouts with the metadata.
  const { code, output } = await fsckWhenSettled(set);
  assert.equal(code, 0, `trellis fsck:\n${output.split('\n').slice(0, 40).join('\n')}`);
});
