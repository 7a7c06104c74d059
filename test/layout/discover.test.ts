// Finding layouts under a data root: folders walked side by side, a layout recognised by its own
// listing, at most 32 listings at once; and the bounded concurrency of start-up adoption.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { findLayouts, forEachConcurrently } from '../../src/layout/discover.ts';
import type { StorageDriver } from '../../src/storage/index.ts';
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
    // Listings in flight, counted through the driver.
    let listing = 0;
    let peak = 0;
    const counting = Object.create(driver) as StorageDriver;
    counting.list = async (prefix) => {
      peak = Math.max(peak, ++listing);
      try {
        return await driver.list(prefix);
      } finally {
        listing--;
      }
    };
    const found = await findLayouts(counting);
    const many = Array.from({ length: 60 }, (_, i) => `many/r${String(i).padStart(2, '0')}`);
    assert.deepEqual(found, ['a', 'a/b', 'a/b/c', ...many, 'team/app', 'z']);
    assert.ok(peak > 1 && peak <= 32, `${peak} listings at once`);
    // A listing that fails fails the walk; a walk stopped early returns what it found so far.
    const failing = Object.create(driver) as StorageDriver;
    failing.list = async (prefix) => {
      if (prefix === 'team') throw new Error('EIO on team');
      return driver.list(prefix);
    };
    await assert.rejects(findLayouts(failing), /EIO on team/);
    const stopped = new AbortController();
    stopped.abort();
    assert.deepEqual(await findLayouts(driver, stopped.signal), []);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('forEachConcurrently runs every item, never more than max at once, starting them in order; a failure fails it', async () => {
  let active = 0;
  let peak = 0;
  const started: number[] = [];
  await forEachConcurrently(Array.from({ length: 20 }, (_, i) => i), 3, async (i) => {
    started.push(i);
    active++;
    peak = Math.max(peak, active);
    await sleep(i % 4);
    active--;
  });
  assert.equal(peak, 3);
  assert.deepEqual(started, Array.from({ length: 20 }, (_, i) => i));
  await assert.rejects(forEachConcurrently([1, 2, 3], 2, async (i) => {
    if (i === 2) throw new Error('two');
  }), /two/);
  let ran = 0;
  await forEachConcurrently([], 4, async () => { ran++; });
  assert.equal(ran, 0);
});

test('forEachConcurrently gives the event loop a turn each time its workers together have run for the slice', async () => {
  // Work that completes in promises alone (as adoption's synchronous stats do), on a clock that
  // each item moves by 1 ms: only the slices let the event loop turn.
  const run = async (slice?: { ms: number; now: () => number }) => {
    let done = 0;
    const doneAtTurns: number[] = [];
    let finished = false;
    const turn = () => {
      doneAtTurns.push(done);
      if (!finished) setImmediate(turn);
    };
    setImmediate(turn);
    await forEachConcurrently(Array.from({ length: 40 }, (_, i) => i), 8, async () => {
      clock++;
      done++;
    }, slice);
    finished = true;
    return doneAtTurns;
  };
  let clock = 0;
  assert.deepEqual(await run(), [], 'without slices, no turn until the last item');
  const turns = await run({ ms: 5, now: () => clock });
  const gaps = turns.slice(1).map((done, i) => done - turns[i]!);
  // A slice shared by the 8 workers: a turn once 5 items are done, or the 8 under way when it ran out.
  assert.ok(turns.length >= 4, `${turns.length} turns: ${turns.join(', ')}`);
  assert.ok(Math.max(...gaps, turns[0]!) <= 8, `items between turns: ${turns.join(', ')}`);
});
