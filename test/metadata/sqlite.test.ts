// The SQLite store's plans where a bad one would make cost grow with the repository's size, or
// with what a caller cannot see.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync, type SQLInputValue } from 'node:sqlite';
import { openMetadata } from '../../src/metadata/index.ts';
import { UNTAGGED_ENTRIES } from '../../src/metadata/sqlite.ts';
import { PULLABLE_ATTRIBUTE_PATHS } from '../../src/metadata/sqlite-query.ts';

/** The steps of `sql`'s plan on a database with the store's schema. */
async function planOf(sql: string, ...params: SQLInputValue[]): Promise<string[]> {
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-sqlite-plan-'));
  try {
    const store = await openMetadata({ location: '', dataDir, durable: false });
    await store.close();
    const db = new DatabaseSync(join(dataDir, '_trellis', 'metadata.sqlite'), { readOnly: true });
    try {
      return (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...params) as { detail: string }[]).map((row) => row.detail);
    } finally {
      db.close();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

test('a page of index.json entries is a range of the repository\'s manifests in push order, never a sort of all of them', async () => {
  const plan = await planOf(UNTAGGED_ENTRIES, 1, 0, 2000);
  assert.ok(plan.some((step) => /SEARCH m USING INDEX manifests_by_repo \(repo_id=\? AND id>\?\)/.test(step)), plan.join('\n'));
  assert.ok(!plan.some((step) => step.includes('TEMP B-TREE')), plan.join('\n'));
});

test('attribute paths for a caller who may not pull everything are read from that caller\'s repositories, never from a scan of all', async () => {
  const plan = await planOf(PULLABLE_ATTRIBUTE_PATHS, '["a"]', '', 10);
  const reads = plan.filter((step) => /^(SCAN|SEARCH) [rma] /.test(step));
  assert.deepEqual(reads.map((step) => step.split(' ').slice(0, 2).join(' ')), ['SEARCH r', 'SEARCH m', 'SEARCH a'], plan.join('\n'));
  assert.match(reads[0]!, /\(name=\?\)/);
  assert.match(reads[1]!, /\(repo_id=\?\)/);
  assert.match(reads[2]!, /\(manifest_id=\?\)/);
});
