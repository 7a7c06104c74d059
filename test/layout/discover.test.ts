// Finding layouts under a data root: folders walked side by side, a layout recognised by its own
// listing, and the bounded concurrency that walk and start-up adoption share.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findLayouts, limitConcurrency } from '../../src/layout/discover.ts';
import { openStorage } from '../../src/storage/index.ts';

test('findLayouts finds nested layouts and skips blobs/, _ and . folders, invalid names and plain folders', async () => {
  const root = await mkdtemp(join(tmpdir(), 'trellis-discover-'));
  try {
    const layout = async (name: string) => {
      await mkdir(join(root, name, 'blobs', 'sha256'), { recursive: true });
      await writeFile(join(root, name, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    };
    for (const name of ['a', 'a/b', 'a/b/c', 'team/app', 'z']) await layout(name);
    for (let i = 0; i < 60; i++) await layout(`many/r${String(i).padStart(2, '0')}`);
    await mkdir(join(root, 'plain/folder'), { recursive: true });
    await mkdir(join(root, '_trellis/x'), { recursive: true });
    await writeFile(join(root, '_trellis/x/oci-layout'), '{}');
    await mkdir(join(root, '.hidden'), { recursive: true });
    await writeFile(join(root, '.hidden/oci-layout'), '{}');
    await mkdir(join(root, 'a/blobs/inner'), { recursive: true });
    await writeFile(join(root, 'a/blobs/inner/oci-layout'), '{}');
    await mkdir(join(root, 'Upper'), { recursive: true });
    await writeFile(join(root, 'Upper/oci-layout'), '{}');
    // A folder named oci-layout is not a layout marker.
    await mkdir(join(root, 'odd/oci-layout'), { recursive: true });
    const driver = await openStorage('', root, { durable: false });
    const found = await findLayouts(driver);
    const many = Array.from({ length: 60 }, (_, i) => `many/r${String(i).padStart(2, '0')}`);
    assert.deepEqual(found, ['a', 'a/b', 'a/b/c', ...many, 'team/app', 'z']);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('limitConcurrency runs every call, never more than max at once, the waiting ones in order', async () => {
  const limit = limitConcurrency(3);
  let active = 0;
  let peak = 0;
  const started: number[] = [];
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => limit(async () => {
    started.push(i);
    active++;
    peak = Math.max(peak, active);
    await sleep(i % 4);
    active--;
    if (i === 7) throw new Error('seven');
    return i;
  }).catch((err: Error) => err.message)));
  assert.equal(peak, 3);
  assert.deepEqual(started, Array.from({ length: 20 }, (_, i) => i));
  assert.deepEqual(results, Array.from({ length: 20 }, (_, i) => (i === 7 ? 'seven' : i)));
});
