// The artifact graph walk on its own, over a metadata store held in memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { walkGraph } from '../../src/graph/walk.ts';
import type { EdgeRecord, MetadataStore } from '../../src/metadata/store.ts';

/** One index in `big/app` listing `children` manifests (leaves: the store holds no record of them). */
function wideIndex(children: number): MetadataStore {
  const edges: EdgeRecord[] = Array.from({ length: children }, (_, i) => ({
    parentRepository: 'big/app', parent: 'sha256:root', kind: 'manifest', childRepository: 'big/app', child: `sha256:child${i}`, mediaType: 'application/vnd.oci.image.manifest.v1+json',
  }));
  const store = {
    repository: async (name: string) => (name === 'big/app' ? { id: 1, name } : undefined),
    manifest: async () => undefined,
    edgesFrom: async (_repoId: number, digest: string) => (digest === 'sha256:root' ? edges : []),
    edgesTo: async () => [],
  };
  return store as unknown as MetadataStore;
}

test('a long walk lets other requests run between its steps: one caller cannot stall the registry', async () => {
  const metadata = wideIndex(20_000);
  let otherWorkRan = false;
  setImmediate(() => { otherWorkRan = true; });
  const { edges, truncated } = await walkGraph(metadata, { repository: 'big/app', digest: 'sha256:root' }, { direction: 'down', maxDepth: 2, maxEdges: 100_000 });
  assert.equal(edges.length, 20_000);
  assert.equal(truncated, false);
  assert.ok(otherWorkRan, 'the event loop got a turn while 20,000 edges were walked');
});
