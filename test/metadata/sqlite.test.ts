// The SQLite store's plans where a bad one would make cost grow with the repository's size.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { openMetadata } from '../../src/metadata/index.ts';
import { UNTAGGED_ENTRIES } from '../../src/metadata/sqlite.ts';

test('a page of index.json entries is a range of the repository\'s manifests in push order, never a sort of all of them', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-sqlite-plan-'));
  try {
    const store = await openMetadata({ location: '', dataDir, durable: false });
    await store.close();
    const db = new DatabaseSync(join(dataDir, '_trellis', 'metadata.sqlite'), { readOnly: true });
    try {
      const plan = (db.prepare(`EXPLAIN QUERY PLAN ${UNTAGGED_ENTRIES}`).all(1, 0, 2000) as { detail: string }[]).map((row) => row.detail);
      assert.ok(plan.some((step) => /SEARCH m USING INDEX manifests_by_repo \(repo_id=\? AND id>\?\)/.test(step)), plan.join('\n'));
      assert.ok(!plan.some((step) => step.includes('TEMP B-TREE')), plan.join('\n'));
    } finally {
      db.close();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
