// Writers on every replica push different manifests to one tag at the same moment, round after
// round. Once a round's writers have their answers, every replica must give one answer for the
// tag, it must be one of the manifests pushed, and the layout's index.json in the bucket must
// name the same digest (it follows the metadata within a bounded delay).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { getManifest, listTags, makeImage, pushBlob, pushManifest, type Built } from '../helpers/oci-client.ts';
import { fsckWhenSettled, startReplicas } from '../helpers/replicas.ts';

const ROUNDS = 6;
const WRITERS_PER_REPLICA = 2;
const REPOSITORY = 'race/app';
const TAG = 'latest';
/** How long index.json may lag behind the metadata (the flush delay, with a wide margin). */
const LAYOUT_LAG_MS = 15_000;

test('concurrent pushes to one tag from every replica leave one answer', { timeout: 180_000 }, async (t) => {
  const set = await startReplicas(t);
  if (!set) return;
  const writers = set.replicas.flatMap((replica) => Array.from({ length: WRITERS_PER_REPLICA }, () => replica.url));

  for (let round = 1; round <= ROUNDS; round++) {
    const images: Built[] = writers.map(() => makeImage());
    // Blobs first, each through the replica that will push its manifest, so the race is the tag's alone.
    await Promise.all(images.map(async (image, i) => {
      for (const blob of image.blobs) assert.equal((await pushBlob(writers[i]!, REPOSITORY, blob)).status, 201);
    }));
    const answers = await Promise.all(images.map((image, i) => pushManifest(writers[i]!, REPOSITORY, TAG, image.bytes, image.mediaType)));
    for (const [i, answer] of answers.entries()) {
      assert.equal(answer.status, 201, `round ${round}, writer ${i} on ${writers[i]}: ${answer.body.toString().slice(0, 300)}`);
    }
    const pushed = new Set(images.map((image) => image.digest));

    const answered: Awaited<ReturnType<typeof getManifest>>[] = await Promise.all(set.replicas.map((replica) => getManifest(replica.url, REPOSITORY, TAG)));
    const seen: (string | null)[] = answered.map((answer) => (answer.status === 200 ? answer.digest : `${answer.status} ${answer.bytes.toString().slice(0, 200)}`));
    assert.equal(new Set(seen).size, 1, `round ${round}: replicas disagree on ${TAG}: ${seen.join(', ')}`);
    const winner = seen[0]!;
    assert.ok(pushed.has(winner), `round ${round}: ${TAG} is ${winner}, which no writer of this round pushed`);
    for (const replica of set.replicas) {
      const { tags } = await listTags(replica.url, REPOSITORY);
      assert.deepEqual(tags, [TAG], `round ${round}: tags on replica ${replica.index}`);
      // Every acknowledged manifest stays reachable by digest, tagged or not.
      for (const image of images) assert.equal((await getManifest(replica.url, REPOSITORY, image.digest)).status, 200, `round ${round}: ${image.digest} on replica ${replica.index}`);
    }

    const deadline = Date.now() + LAYOUT_LAG_MS;
    let layout: Map<string, string> = new Map();
    for (;;) {
      layout = await set.layoutTags(REPOSITORY);
      if (layout.get(TAG) === winner && layout.size === 1) break;
      if (Date.now() > deadline) {
        assert.fail(`round ${round}: index.json in the bucket says ${JSON.stringify([...layout])} ${LAYOUT_LAG_MS / 1000} s after the replicas settled on ${winner}\n${await set.diagnostics()}`);
      }
      await sleep(100);
    }
  }

  // index.json follows within the flush delay; fsck compares the layouts with the metadata.
  const { code, output } = await fsckWhenSettled(set);
  assert.equal(code, 0, `trellis fsck:\n${output}`);
});
