// The SQLite store's plans where a bad one would make cost grow with the repository's size, or
// with what a caller cannot see.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync, constants, type SQLInputValue } from 'node:sqlite';
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

test('paged reads are compiled once: a LIMIT bound anew does not make SQLite prepare them again', async () => {
  // SQLite calls the authorizer only while it compiles a statement. One that depends on a bound
  // value (a bare `LIMIT ?`) compiles again at each call: up to 10 times the cost of running it.
  const connections = new Set<DatabaseSync>();
  const prepare = DatabaseSync.prototype.prepare;
  DatabaseSync.prototype.prepare = function (this: DatabaseSync, ...args: Parameters<typeof prepare>) {
    connections.add(this);
    return prepare.apply(this, args);
  };
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-sqlite-prepare-'));
  const store = await openMetadata({ location: '', dataDir, durable: false, recordEvents: true });
  try {
    const repo = await store.ensureRepository('a');
    const subject = `sha256:${'0'.repeat(64)}`;
    const reads = async (limit: number) => {
      await store.taggedEntries(repo.id, { limit });
      await store.untaggedEntries(repo.id, 0, limit);
      await store.tags(repo.id, { limit });
      await store.repositories({ limit });
      await store.repositories({ limit, namespace: 'a/', childrenOnly: true });
      await store.referrerDescriptors(repo.id, subject, { limit });
      await store.referrerDescriptors(repo.id, subject, { limit, includeAttestations: true });
      await store.outbox.after(0, limit);
      await store.queries.attributePaths(limit, undefined);
    };
    // Setting an authorizer expires every prepared statement: so first, then the first reads.
    let compiled = 0;
    for (const db of connections) db.setAuthorizer(() => {
      compiled++;
      return constants.SQLITE_OK;
    });
    await reads(10);
    compiled = 0;
    await reads(20);
    await reads(30);
    assert.equal(compiled, 0);
  } finally {
    DatabaseSync.prototype.prepare = prepare;
    await store.close();
    await rm(dataDir, { recursive: true, force: true });
  }
});
