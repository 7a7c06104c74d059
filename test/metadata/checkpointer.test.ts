// The SQLite checkpoint worker (src/metadata/checkpointer.ts) is started from its source text as
// plain JavaScript, and fails silently if it cannot start (type syntax in that file, for one); this
// checks it does its work: pages committed to the write-ahead log reach the database file without
// the main connection checkpointing (its own bound is ~40 MB of log).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openMetadata, sqlitePath } from '../../src/metadata/index.ts';

test('the checkpoint worker copies the write-ahead log into the database file', { timeout: 30_000 }, async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-checkpoint-'));
  const store = await openMetadata({ location: '', dataDir, durable: false });
  try {
    const before = (await stat(sqlitePath(dataDir))).size;
    for (let i = 0; i < 3000; i++) await store.ensureRepository(`checkpoint/repository-with-a-long-name-${i}`);
    let after = before;
    for (let waited = 0; waited < 20_000 && after <= before; waited += 100) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      after = (await stat(sqlitePath(dataDir))).size;
    }
    assert.ok(after > before, `the database file grew from ${before} bytes once the worker checkpointed`);
  } finally {
    await store.close();
    await rm(dataDir, { recursive: true, force: true });
  }
});

/** Worker threads of this process (Node names their OS threads `WorkerThread`). */
function workerThreads(): number {
  return readdirSync('/proc/self/task').filter((task) => {
    try {
      return readFileSync(`/proc/self/task/${task}/comm`, 'utf8').trim() === 'WorkerThread';
    } catch {
      return false; // the thread ended meanwhile
    }
  }).length;
}

test('the checkpoint worker starts at the first write, not at open', { skip: process.platform !== 'linux' }, async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-checkpoint-'));
  const before = workerThreads();
  const store = await openMetadata({ location: '', dataDir, durable: false });
  try {
    await store.repository('nothing/here');
    await store.repositories({ limit: 10 });
    assert.equal(workerThreads(), before, 'opening and reading start no worker thread');
    await store.ensureRepository('now/written');
    // The thread names itself once it runs.
    for (let waited = 0; waited < 10_000 && workerThreads() === before; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(workerThreads(), before + 1, 'the first write starts the checkpoint worker');
    await store.ensureRepository('written/again');
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(workerThreads(), before + 1, 'and only one');
  } finally {
    await store.close();
    await rm(dataDir, { recursive: true, force: true });
  }
});
