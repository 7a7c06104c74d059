// The SQLite checkpoint worker (src/metadata/checkpointer.ts) is started from its source text as
// plain JavaScript, and fails silently if it cannot start (type syntax in that file, for one); this
// checks it does its work: pages committed to the write-ahead log reach the database file without
// the main connection checkpointing (its own bound is ~40 MB of log).
import { test } from 'node:test';
import assert from 'node:assert/strict';
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
