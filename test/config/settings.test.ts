import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DEFAULT_SETTINGS, SettingsError, envName, loadSettings, parseListen } from '../../src/config/settings.ts';

test('defaults, then config file, then environment, then flags', async () => {
  assert.equal(loadSettings({ env: {} }).listen, '127.0.0.1:5000');
  assert.equal(loadSettings({ env: {} }).data, './trellis-data');
  const file = join(await mkdtemp(join(tmpdir(), 'trellis-settings-')), 'config.json');
  await writeFile(file, JSON.stringify({ data: '/from/file', maxManifestBytes: 1000, fsync: true }));
  const settings = loadSettings({ configFile: file, env: { TRELLIS_MAX_MANIFEST_BYTES: '2000' }, overrides: { data: '/from/flag' } });
  assert.equal(settings.data, '/from/flag');
  assert.equal(settings.maxManifestBytes, 2000);
  assert.equal(settings.fsync, true);
  assert.equal(envName('maxManifestBytes'), 'TRELLIS_MAX_MANIFEST_BYTES');
});

test('bad settings are refused with a clear message', async () => {
  assert.throws(() => loadSettings({ env: { TRELLIS_FSYNC: 'maybe' } }), SettingsError);
  assert.throws(() => loadSettings({ env: { TRELLIS_MAX_LIST_PAGE: '-1' } }), SettingsError);
  assert.throws(() => loadSettings({ env: { TRELLIS_LISTEN: 'nowhere' } }), SettingsError);
  const file = join(await mkdtemp(join(tmpdir(), 'trellis-settings-')), 'config.json');
  await writeFile(file, JSON.stringify({ colour: 'blue' }));
  assert.throws(() => loadSettings({ configFile: file, env: {} }), /unknown setting colour/);
  assert.throws(() => loadSettings({ env: { TRELLIS_HEADERS_TIMEOUT_SECONDS: '0' } }), /headersTimeoutSeconds must be above 0/);
  assert.throws(() => loadSettings({ env: { TRELLIS_REQUEST_TIMEOUT_SECONDS: '5', TRELLIS_HEADERS_TIMEOUT_SECONDS: '10' } }), /requestTimeoutSeconds/);
  assert.equal(loadSettings({ env: { TRELLIS_BODY_IDLE_TIMEOUT_SECONDS: '0.5' } }).bodyIdleTimeoutSeconds, 0.5);
  assert.deepEqual(parseListen('[::1]:5000'), { host: '::1', port: 5000 });
  assert.deepEqual(parseListen(':80'), { host: '127.0.0.1', port: 80 });
});

test('every setting is documented with its environment variable', async () => {
  const docs = await readFile(resolve(import.meta.dirname, '../../docs/configuration.md'), 'utf8');
  for (const key of Object.keys(DEFAULT_SETTINGS)) {
    assert.ok(docs.includes(`| \`${key}\` | \`${envName(key)}\` |`), `${key} is not documented`);
  }
});

test('names inherited by every object are unknown settings too', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-settings-'));
  for (const key of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
    const file = join(dir, `${key}.json`);
    await writeFile(file, `{${JSON.stringify(key)}: "x"}`);
    assert.throws(() => loadSettings({ configFile: file, env: {} }), new RegExp(`unknown setting ${key}`));
  }
});

test('a duration longer than a Node.js timer can wait is refused, not turned into 1 ms', () => {
  // setTimeout/setInterval/AbortSignal.timeout run anything above 2^31-1 ms after 1 ms: a monthly
  // GC would run back to back, every webhook delivery would time out at once.
  assert.throws(() => loadSettings({ env: { TRELLIS_GC_INTERVAL_SECONDS: String(30 * 24 * 3600) } }), /gcIntervalSeconds must be at most 2147483/);
  assert.throws(() => loadSettings({ env: { TRELLIS_WEBHOOK_TIMEOUT_MS: '3000000000' } }), /webhookTimeoutMs must be at most 2147483647/);
  assert.throws(() => loadSettings({ env: { TRELLIS_BODY_IDLE_TIMEOUT_SECONDS: '3000000' } }), /bodyIdleTimeoutSeconds/);
  assert.equal(loadSettings({ env: { TRELLIS_GC_INTERVAL_SECONDS: String(7 * 24 * 3600) } }).gcIntervalSeconds, 7 * 24 * 3600);
});

test('page sizes, size limits and session caps are whole numbers of at least 1', () => {
  // maxListPage: 0 answered every tag and catalog listing with an empty page and no Link: a
  // registry that looked empty.
  for (const key of ['MAX_LIST_PAGE', 'DEFAULT_REFERRERS_PAGE', 'MAX_MANIFEST_BYTES', 'MAX_REFERRERS_BYTES', 'MAX_UPLOAD_SESSIONS', 'MAX_UPLOAD_SESSIONS_TOTAL']) {
    assert.throws(() => loadSettings({ env: { [`TRELLIS_${key}`]: '0' } }), /must be a whole number of at least 1/, key);
    assert.throws(() => loadSettings({ env: { [`TRELLIS_${key}`]: '2.5' } }), /must be a whole number of at least 1/, key);
  }
  assert.throws(() => loadSettings({ env: { TRELLIS_MAX_BLOB_BYTES: '1.5' } }), /maxBlobBytes must be a whole number/);
  assert.equal(loadSettings({ env: { TRELLIS_MAX_BLOB_BYTES: '0' } }).maxBlobBytes, 0);
  assert.equal(loadSettings({ env: { TRELLIS_MAX_LIST_PAGE: '1' } }).maxListPage, 1);
});

test('webhook timeout and retry delays of 0 are refused: every delivery would fail and be retried in a tight loop', () => {
  for (const key of ['TRELLIS_WEBHOOK_TIMEOUT_MS', 'TRELLIS_WEBHOOK_RETRY_MIN_MS', 'TRELLIS_WEBHOOK_RETRY_MAX_MS']) {
    assert.throws(() => loadSettings({ env: { [key]: '0' } }), /must be above 0/, key);
  }
  assert.throws(() => loadSettings({ env: { TRELLIS_WEBHOOK_RETRY_MIN_MS: '5000', TRELLIS_WEBHOOK_RETRY_MAX_MS: '1000' } }), /webhookRetryMaxMs must be at least webhookRetryMinMs/);
});
