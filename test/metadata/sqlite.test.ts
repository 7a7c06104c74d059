// The SQLite store's plans where a bad one would make cost grow with the repository's size, or
// with what a caller cannot see.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { openMetadata } from '../../src/metadata/index.ts';
import { UNTAGGED_ENTRIES } from '../../src/metadata/sqlite.ts';
import { PULLABLE_ATTRIBUTE_PATHS } from '../../src/metadata/sqlite-query.ts';

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

test('attribute paths for a caller who may not pull everything are read from that caller\'s repositories, never from a scan of all', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-sqlite-plan-'));
  try {
    const store = await openMetadata({ location: '', dataDir, durable: false });
    await store.close();
    const db = new DatabaseSync(join(dataDir, '_trellis', 'metadata.sqlite'), { readOnly: true });
    try {
      const plan = (db.prepare(`EXPLAIN QUERY PLAN ${PULLABLE_ATTRIBUTE_PATHS}`).all('["a"]', 10) as { detail: string }[]).map((row) => row.detail);
      const reads = plan.filter((step) => /^(SCAN|SEARCH) [rma] /.test(step));
      assert.deepEqual(reads.map((step) => step.split(' ').slice(0, 2).join(' ')), ['SEARCH r', 'SEARCH m', 'SEARCH a'], plan.join('\n'));
      assert.match(reads[0]!, /\(name=\?\)/);
      assert.match(reads[1]!, /\(repo_id=\?\)/);
      assert.match(reads[2]!, /\(manifest_id=\?\)/);
    } finally {
      db.close();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
