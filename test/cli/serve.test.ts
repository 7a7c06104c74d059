// `trellis serve` as a process: a replica whose shared locks went with their PostgreSQL connection
// while work ran under them ends at once (exit 75), and a restart finds every acknowledged push.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pg from 'pg';
import { EXIT_LOCKS_LOST } from '../../src/cli/serve.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';
import { freePort } from '../helpers/replicas.ts';
import { makeImage, pushBuilt } from '../helpers/oci-client.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const missing = postgresMissing();
if (missing && process.env.CI === 'true') throw new Error(`${missing}; CI must run the PostgreSQL tests`);

function startServe(dataDir: string, port: number, env: Record<string, string>) {
  const child = spawn(process.execPath, ['bin/trellis.mjs', 'serve', '--listen', `127.0.0.1:${port}`, '--data', dataDir, '--log-level', 'warn'], {
    cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env },
  });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => { output += s; });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { output += s; });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return { child, exited, output: () => output };
}

async function answering(url: string, exited: Promise<unknown>): Promise<void> {
  let gone = false;
  void exited.then(() => { gone = true; });
  for (const deadline = Date.now() + 30_000; Date.now() < deadline && !gone;) {
    const ok = await fetch(`${url}/v2/`).then((res) => res.ok, () => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the server did not answer');
}

test('a replica that loses its shared locks while work runs under them exits 75; restarted, it has every acknowledged push', { skip: missing ?? false, timeout: 90_000 }, async (t) => {
  const database = await createTestDatabase();
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-serve-locks-'));
  const admin = new pg.Client({ connectionString: database.url });
  await admin.connect();
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  // The index.json rewrite after a push holds its shared lock for 3 s before the rename.
  const env = { TRELLIS_METADATA: database.url, TRELLIS_FAULT_PAUSE_BEFORE_INDEX_RENAME_MS: '3000' };
  const first = startServe(dataDir, port, env);
  t.after(async () => {
    first.child.kill('SIGKILL');
    await admin.end();
    await database.drop();
    await rm(dataDir, { recursive: true, force: true });
  });
  await answering(url, first.exited);
  const image = makeImage();
  const pushed = await pushBuilt(url, 'app', 'v1', image);
  assert.equal(pushed.status, 201);

  // Wait until the rewrite holds its lock, then end the connection that holds it.
  let terminated = 0;
  for (const deadline = Date.now() + 10_000; terminated === 0 && Date.now() < deadline;) {
    const { rowCount } = await admin.query(`SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a
      WHERE a.application_name = 'trellis locks' AND a.datname = current_database()
      AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)`);
    terminated = rowCount ?? 0;
    if (!terminated) await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(terminated, 1, 'a lock was held');
  const code = await Promise.race([first.exited, new Promise((r) => setTimeout(() => r('still running'), 10_000))]);
  assert.equal(code, EXIT_LOCKS_LOST, first.output());
  assert.match(first.output(), /shared locks were lost while work ran under them/);

  const second = startServe(dataDir, port, { TRELLIS_METADATA: database.url });
  t.after(() => second.child.kill('SIGKILL'));
  await answering(url, second.exited);
  const res = await fetch(`${url}/v2/app/manifests/v1`, { method: 'HEAD', headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('docker-content-digest'), pushed.digest);
  second.child.kill('SIGTERM');
  assert.equal(await second.exited, 0);
});
