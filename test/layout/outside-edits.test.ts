// Another tool rewrites index.json while Trellis holds changes it has not written yet: the outside
// edit is merged, and Trellis's newer changes (here a tag delete) win over the older file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestRegistry } from '../helpers/registry.ts';
import { REF_NAME, listTags, makeImage, pushBuilt } from '../helpers/oci-client.ts';

test('a tag deleted here stays deleted when an outside edit based on an older index.json is merged', async () => {
  const reg = await startTestRegistry({ indexFlushMinMs: 60_000, indexFlushMaxMs: 60_000, layoutCheckIntervalMs: 50 });
  try {
    const image = makeImage();
    for (const tag of ['a', 'b']) assert.equal((await pushBuilt(reg.url, 'edit/me', tag, image)).status, 201);
    await reg.registry.layout.flushAll();
    const path = join(reg.dataDir, 'edit/me/index.json');
    const before = JSON.parse(await readFile(path, 'utf8')) as { manifests: { annotations?: Record<string, string> }[] };
    assert.equal((await fetch(`${reg.url}/v2/edit/me/manifests/b`, { method: 'DELETE' })).status, 202);
    // The other tool adds tag c to the file it read before the delete (which still lists b).
    before.manifests.push({ ...image.descriptor, annotations: { [REF_NAME]: 'c' } });
    await writeFile(path, JSON.stringify(before));
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual((await listTags(reg.url, 'edit/me')).tags, ['a', 'c']);
    await reg.registry.layout.flushAll();
    const after = JSON.parse(await readFile(path, 'utf8')) as { manifests: { annotations?: Record<string, string> }[] };
    assert.deepEqual(after.manifests.map((d) => d.annotations?.[REF_NAME]).filter(Boolean).sort(), ['a', 'c']);
  } finally {
    await reg.dispose();
  }
});
