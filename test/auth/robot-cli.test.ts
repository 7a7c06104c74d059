// `trellis robot create|list|revoke` edits the store a running registry reads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const MAIN = resolve(import.meta.dirname, '../../src/main.ts');

test('trellis robot create, list and revoke', { timeout: 60_000 }, async (t) => {
  const data = await mkdtemp(join(tmpdir(), 'trellis-robot-cli-'));
  t.after(() => rm(data, { recursive: true, force: true }));
  const trellis = (...args: string[]) => run(process.execPath, [MAIN, ...args, '--data', data], { timeout: 30_000 });
  const created = JSON.parse((await trellis('robot', 'create', 'builder', '--group', 'ci', 'deploy', '--expires-days', '30')).stdout) as { username: string; secret: string; groups: string[]; expires: string };
  assert.equal(created.username, 'robot$builder');
  assert.match(created.secret, /^trellis_[A-Za-z0-9_-]{43}$/);
  assert.deepEqual(created.groups, ['ci', 'deploy']);
  assert.ok(Date.parse(created.expires) > Date.now() + 29 * 86_400_000);
  const file = join(data, '_trellis', 'robots.json');
  assert.ok(!(await readFile(file, 'utf8')).includes(created.secret), 'only a hash of the secret is stored');
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  await assert.rejects(trellis('robot', 'create', 'builder'), /already exists/);
  await assert.rejects(trellis('robot', 'create', 'Bad Name'), /must be lowercase/);
  assert.match((await trellis('robot', 'list')).stdout, /^robot\$builder\tgroups=ci,deploy\t/);
  assert.equal((await trellis('robot', 'revoke', 'robot$builder')).stdout.trim(), 'revoked robot$builder');
  assert.equal((await trellis('robot', 'list')).stdout, '');
  await assert.rejects(trellis('robot', 'revoke', 'builder'), /no robot named builder/);
});
