// Opening the metadata store the setting names: SQLite by default, PostgreSQL by URL with its
// versioned migrations applied once (also when several replicas start together), anything else
// refused with a message.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { describeMetadata, dropMetadata, metadataExists, openMetadata } from '../../src/metadata/index.ts';
import { MIGRATIONS } from '../../src/metadata/postgres-schema.ts';
import { loadSettings } from '../../src/config/settings.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';

const missing = postgresMissing();
if (missing && process.env.CI === 'true') throw new Error(`${missing}; CI must run the PostgreSQL tests`);

test('the metadata setting: SQLite by default, TRELLIS_METADATA names PostgreSQL, other schemes are refused', async () => {
  assert.equal(loadSettings({ env: {} }).metadata, '');
  assert.equal(loadSettings({ env: { TRELLIS_METADATA: 'postgres://u:p@127.0.0.1:5432/db' } }).metadata, 'postgres://u:p@127.0.0.1:5432/db');
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-open-'));
  try {
    await assert.rejects(openMetadata({ location: 'mysql://x/y', dataDir, durable: false }), /postgres:\/\/ URL/);
    assert.equal(await metadataExists({ location: '', dataDir }), false);
    const store = await openMetadata({ location: '', dataDir, durable: false });
    assert.equal(store.engine, 'sqlite');
    await store.close();
    assert.equal(await metadataExists({ location: '', dataDir }), true);
    await dropMetadata({ location: '', dataDir });
    assert.equal(await metadataExists({ location: '', dataDir }), false);
    assert.equal(describeMetadata({ location: 'postgres://u:secret@h:1/db', dataDir }), 'postgres://u:***@h:1/db');
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('PostgreSQL: migrations applied once at start, by one of several replicas starting together; reindex drops them', { skip: missing ?? false }, async () => {
  const database = await createTestDatabase();
  try {
    const location = { location: database.url, dataDir: '' };
    assert.equal(await metadataExists(location), false);
    const stores = await Promise.all([1, 2, 3].map(() => openMetadata({ ...location, durable: false })));
    const repo = await stores[0]!.ensureRepository('a/b');
    assert.equal((await stores[2]!.repository('a/b'))?.id, repo.id, 'every replica sees one schema');
    for (const store of stores) await store.close();
    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    const { rows } = await client.query<{ version: number }>('SELECT version FROM trellis_migrations ORDER BY version');
    await client.end();
    assert.deepEqual(rows.map((r) => r.version), MIGRATIONS.map((m) => m.version));
    const again = await openMetadata({ ...location, durable: false });
    assert.equal(again.engine, 'postgres');
    assert.ok(await again.repository('a/b'), 'a restart keeps the data');
    await again.close();
    await dropMetadata(location);
    assert.equal(await metadataExists(location), false);
  } finally {
    await database.drop();
  }
});
