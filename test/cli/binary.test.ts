// `npm run build:binary` (scripts/build-binary.mjs): dist/trellis is one executable that runs with
// no Node.js on PATH at all: --version names the commit, it serves a registry (its metadata
// checkpoint worker included), pushes and pulls through it, and stops cleanly on SIGTERM.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../..');
const BINARY = join(ROOT, 'dist/trellis');
let work: string;
let env: NodeJS.ProcessEnv;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'trellis-binary-'));
  // Nothing but the executable: no node on PATH, a fresh cache folder.
  await mkdir(join(work, 'empty-path'));
  env = { HOME: work, PATH: join(work, 'empty-path'), TRELLIS_CACHE_DIR: join(work, 'cache'), NO_PROXY: '127.0.0.1', DOCKER_CONFIG: join(work, 'docker') };
  await exec('npm', ['run', 'build:binary'], { cwd: ROOT, env: { ...process.env }, timeout: 300_000, maxBuffer: 16 << 20 });
});
after(async () => {
  await rm(work, { recursive: true, force: true });
});

const binary = (...args: string[]) => exec(BINARY, args, { cwd: work, env });

test('dist/trellis runs without Node on PATH and names its commit', async () => {
  await assert.rejects(exec('/bin/sh', ['-c', 'command -v node'], { env }), 'no node on this PATH');
  const { stdout } = await binary('--version');
  const head = (await exec('git', ['-C', ROOT, 'rev-parse', 'HEAD'])).stdout.trim();
  assert.match(stdout, new RegExp(`^trellis \\S+ \\(commit ${head}(-dirty)?, Node\\.js v24\\.`));
  const usage = await binary('push').catch((err: { code: number; stderr: string }) => err);
  assert.equal((usage as { code: number }).code, 2);
  assert.match((usage as { stderr: string }).stderr, /^trellis: missing required argument 'reference'\n/);
});

test('dist/trellis serves a registry, pushes and pulls through it, and stops on SIGTERM', async () => {
  const data = join(work, 'data');
  const server = spawn(BINARY, ['serve', '--listen', '127.0.0.1:0', '--data', data, '--log-level', 'info'], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  server.stdout.on('data', (c: Buffer) => (output += c.toString()));
  server.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((done) => server.once('close', (code) => done(code)));
  try {
    const end = Date.now() + 60_000;
    while (!/"url":"http:\/\/127\.0\.0\.1:\d+"/.test(output)) {
      if (Date.now() > end) throw new Error(`the server did not start: ${output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const host = /"url":"http:\/\/(127\.0\.0\.1:\d+)"/.exec(output)![1]!;
    await writeFile(join(work, 'note.txt'), 'from the single executable\n');
    await binary('push', `${host}/bin/app:v1`, 'note.txt:text/plain');
    await binary('pull', `${host}/bin/app:v1`, '-d', 'out');
    assert.equal(await readFile(join(work, 'out/note.txt'), 'utf8'), 'from the single executable\n');
  } finally {
    server.kill('SIGTERM');
  }
  assert.equal(await exited, 0, output);
  assert.equal(existsSync(join(data, '_trellis/serve.pid')), false, 'shut down cleanly');
});
