// kill -9 of a replica under load: clients push through nginx while replicas are killed with
// SIGKILL one after another and started again. A client whose request is cut off (a connection
// error or a 502 from the balancer) starts that push over, as a real client would. Whatever was
// acknowledged must survive: every acknowledged tag resolves to its digest on every replica with
// all its blobs, and `trellis fsck` finds the layouts and the metadata consistent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeImage } from '../helpers/oci-client.ts';
import { assertAllOnEveryReplica, fsckWhenSettled, pushRetrying, startReplicas, withDiagnostics } from '../helpers/replicas.ts';

const PUSHERS = 6;
const KILLS = 3;
/** Load before the first kill, between kills, and after the last restart. */
const LOAD_BETWEEN_KILLS_MS = 2500;

interface Acked {
  repository: string;
  tag: string;
  digest: string;
}

test('kill -9 of a replica under load loses no acknowledged write', { timeout: 240_000 }, async (t) => {
  const set = await startReplicas(t);
  if (!set) return;
  const acked: Acked[] = [];
  const gaveUp: string[] = [];
  let failures = 0;
  let running = true;

  const pusher = async (id: number) => {
    for (let n = 0; running; n++) {
      const repository = `load/p${id % 3}`;
      const tag = `w${id}-${n}`;
      const image = makeImage();
      const outcome = await pushRetrying(set.url, repository, tag, image);
      failures += outcome.failures.length;
      if (outcome.acked) acked.push({ repository, tag, digest: image.digest });
      else gaveUp.push(`${repository}:${tag}: ${outcome.failures.join(' | ')}`);
    }
  };
  const load = Promise.all(Array.from({ length: PUSHERS }, (_, id) => pusher(id)));

  try {
    for (let kill = 0; kill < KILLS; kill++) {
      await sleep(LOAD_BETWEEN_KILLS_MS);
      const victim = kill % set.replicas.length;
      await set.kill(victim);
      await sleep(500); // the balancer finds it gone and routes around it
      const restarting = performance.now();
      await set.restart(victim);
      t.diagnostic(`replica ${victim} killed and answering again after ${((performance.now() - restarting) / 1000).toFixed(1)} s`);
    }
    await sleep(LOAD_BETWEEN_KILLS_MS);
  } finally {
    running = false;
    await load;
  }
  const loadEnded = performance.now();
  t.diagnostic(`${acked.length} pushes acknowledged, ${failures} attempts failed and were retried, ${gaveUp.length} given up`);
  assert.ok(acked.length >= PUSHERS, `too few pushes went through: ${acked.length}`);
  assert.deepEqual(gaveUp, [], 'pushes that failed 10 times in a row');

  await withDiagnostics(set, () => assertAllOnEveryReplica(set, acked));
  t.diagnostic(`every acknowledged tag checked on every replica in ${((performance.now() - loadEnded) / 1000).toFixed(1)} s`);
  // index.json follows within the flush delay; fsck compares the layouts with the metadata.
  const { code, output } = await fsckWhenSettled(set);
  assert.equal(code, 0, `trellis fsck:\n${output.split('\n').slice(0, 40).join('\n')}`);
});
