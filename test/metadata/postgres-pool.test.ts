// PostgreSQL's pool bounds every wait: a connection whose transaction is left idle is ended by the
// server (its locks freed), and a lock wait ends in an error instead of a request that never ends.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPool } from '../../src/metadata/postgres.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';

const missing = postgresMissing();
if (missing && process.env.CI === 'true') throw new Error(`${missing}; CI must run the PostgreSQL tests`);

test('every pooled connection has a lock timeout and an idle-in-transaction timeout', { skip: missing ?? false }, async () => {
  const database = await createTestDatabase();
  const pool = createPool(database.url);
  try {
    const setting = async (name: string) => (await pool.query<{ setting: string }>('SELECT setting FROM pg_settings WHERE name = $1', [name])).rows[0]!.setting;
    assert.equal(await setting('lock_timeout'), '60000');
    assert.equal(await setting('idle_in_transaction_session_timeout'), '120000');

    // A lock held by a transaction another connection left open: the waiter gets an error.
    await pool.query('CREATE TABLE t (id int PRIMARY KEY)');
    await pool.query('INSERT INTO t VALUES (1)');
    const holder = await pool.connect();
    const waiter = await pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('UPDATE t SET id = 1 WHERE id = 1');
      await waiter.query("SET lock_timeout = '200ms'"); // the same mechanism, shortened for the test
      await assert.rejects(waiter.query('UPDATE t SET id = 1 WHERE id = 1'), /lock timeout/);
      await holder.query('ROLLBACK');
    } finally {
      holder.release();
      waiter.release();
    }
  } finally {
    await pool.end();
    await database.drop();
  }
});
