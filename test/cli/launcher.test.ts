// bin/trellis.mjs on a machine whose own Node is older than 24 (the Node 20): it runs
// Trellis on the pinned Node 24 with arguments, stdio, exit codes and signals passed through;
// `npm install -g .`, `npm link` and a packed tarball give a working `trellis` on PATH; `npm run
// trellis` and `npx trellis` resolve paths from the caller's folder; --version names the commit.
import { after, before, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { isolatedEnv } from './run.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const LAUNCHER = join(ROOT, 'bin/trellis.mjs');

/** A Node older than 24 on this machine (TRELLIS_TEST_OLD_NODE, or /usr/bin/node). */
function findOldNode(): string | undefined {
  for (const candidate of [process.env.TRELLIS_TEST_OLD_NODE, '/usr/bin/node', '/usr/local/bin/node']) {
    if (!candidate || !existsSync(candidate)) continue;
    const version = execFileSync(candidate, ['--version'], { encoding: 'utf8' }).trim();
    if (Number(version.slice(1).split('.')[0]) < 24) return candidate;
  }
  return undefined;
}

const oldNode = findOldNode();
let reg: TestRegistry;
let work: string;
let env: NodeJS.ProcessEnv;

function needOldNode(t: TestContext): string | undefined {
  if (oldNode) return oldNode;
  if (process.env.CI === 'true') throw new Error('no Node older than 24 found (.ci/run installs Debian\'s nodejs; or set TRELLIS_TEST_OLD_NODE)');
  t.skip('no Node older than 24 on this machine');
  return undefined;
}

before(async () => {
  reg = await startTestRegistry();
  work = await mkdtemp(join(tmpdir(), 'trellis-launcher-'));
  // PATH as on a machine with only the old Node: no node_modules/.bin (npm test puts it first).
  const path = [oldNode ? dirname(oldNode) : undefined, '/usr/local/bin', '/usr/bin', '/bin'].filter(Boolean).join(':');
  env = { ...isolatedEnv(work), PATH: path };
  for (const key of Object.keys(env)) if (key.startsWith('npm_') || key === 'INIT_CWD') delete env[key];
});
after(async () => {
  await reg.dispose();
  await rm(work, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function run(command: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(command, args, { cwd: options.cwd ?? work, env: options.env ?? env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.once('error', fail);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      done({ code, signal, stdout, stderr });
    });
  });
}

const gitHead = () => execFileSync('git', ['-C', ROOT, 'rev-parse', 'HEAD'], { encoding: 'utf8' }).trim();

test('on Node 20 the launcher runs Trellis on the pinned Node 24: --version and -V name the commit', async (t) => {
  const node = needOldNode(t);
  if (!node) return;
  for (const flag of ['--version', '-V']) {
    const result = await run(node, [LAUNCHER, flag]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, '');
    const match = /^trellis (\S+) \(commit ([0-9a-f]{40})(-dirty)?, Node\.js (v\d+)\.\d+\.\d+\)\n$/.exec(result.stdout);
    assert.ok(match, result.stdout);
    assert.equal(match[1], JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')).version);
    assert.equal(match[2], gitHead());
    assert.ok(Number(match[4]!.slice(1)) >= 24);
  }
});

test('exit codes and output pass through the launcher', async (t) => {
  const node = needOldNode(t);
  if (!node) return;
  await writeFile(join(work, 'a.txt'), 'hello\n');
  const pushed = await run(node, [LAUNCHER, 'push', `${reg.host}/launcher/app:v1`, 'a.txt', '-o', 'json']);
  assert.equal(pushed.code, 0, pushed.stderr);
  assert.match((JSON.parse(pushed.stdout) as { digest: string }).digest, /^sha256:/);
  const missing = await run(node, [LAUNCHER, 'inspect', `${reg.host}/launcher/app:nope`]);
  assert.equal(missing.code, 3);
  assert.match(missing.stderr, /^trellis: .*not found\n$/);
  const usage = await run(node, [LAUNCHER, 'push']);
  assert.equal(usage.code, 2);
});

async function waitFor(check: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const running = new Set<ReturnType<typeof spawn>>();
after(() => {
  for (const child of running) child.kill('SIGKILL');
});

/** `serve` through the launcher; resolves once it listens, with the server's own pid. */
async function serveThroughLauncher(node: string, data: string) {
  const child = spawn(node, [LAUNCHER, 'serve', '--listen', '127.0.0.1:0', '--data', data, '--log-level', 'info'], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => child.once('close', (code, signal) => done({ code, signal })));
  const pidFile = join(data, '_trellis', 'serve.pid');
  running.add(child);
  child.once('close', () => running.delete(child));
  await waitFor(() => /registry listening/.test(output) && existsSync(pidFile), 'the server to listen');
  const serverPid = Number(await readFile(pidFile, 'utf8'));
  return { child, exited, serverPid, pidFile, output: () => output };
}

test('signals reach the server through the launcher: SIGTERM and a terminal\'s double Ctrl-C stop it cleanly; a killed server ends the launcher the same way', async (t) => {
  const node = needOldNode(t);
  if (!node) return;
  const term = await serveThroughLauncher(node, join(work, 'data-term'));
  assert.notEqual(term.serverPid, term.child.pid, 'the server runs in a child on Node 24');
  term.child.kill('SIGTERM');
  assert.deepEqual(await term.exited, { code: 0, signal: null }, term.output());
  assert.match(term.output(), /shutting down: flushing layouts/);
  assert.equal(existsSync(term.pidFile), false, 'shut down cleanly (pid file removed)');

  // Ctrl-C on a terminal reaches the whole process group: the launcher forwards it, so the server
  // sees it twice and must still finish its flush.
  const interrupted = await serveThroughLauncher(node, join(work, 'data-int'));
  process.kill(interrupted.serverPid, 'SIGINT');
  interrupted.child.kill('SIGINT');
  assert.deepEqual(await interrupted.exited, { code: 0, signal: null }, interrupted.output());
  assert.equal(existsSync(interrupted.pidFile), false);

  const killed = await serveThroughLauncher(node, join(work, 'data-kill'));
  process.kill(killed.serverPid, 'SIGKILL');
  assert.deepEqual(await killed.exited, { code: null, signal: 'SIGKILL' });
});

test('without a Node 24 next to it, the launcher says how to get one', async (t) => {
  const node = needOldNode(t);
  if (!node) return;
  const bare = join(work, 'bare');
  await mkdir(join(bare, 'bin'), { recursive: true });
  await cp(LAUNCHER, join(bare, 'bin/trellis.mjs'));
  await writeFile(join(bare, 'package.json'), '{"name":"trellis","type":"module"}');
  const result = await run(node, [join(bare, 'bin/trellis.mjs'), '--version']);
  assert.equal(result.code, 1);
  assert.match(result.stderr, /^trellis: this Node\.js is v\d+.*needs 24 or newer; run `npm ci` in .*bare.*TRELLIS_NODE/);
  assert.equal(result.stderr.trimEnd().split('\n').length, 1);
});

/** npm run by the old Node, as on the machine. */
const npm = (args: string[], options: { cwd?: string; timeoutMs?: number; prefix?: string } = {}) => run('npm', args, {
  cwd: options.cwd ?? ROOT, timeoutMs: options.timeoutMs ?? 180_000, env: options.prefix ? { ...env, npm_config_prefix: options.prefix } : env,
});

test('npm install -g . and npm link give a trellis on PATH that runs on the old Node', async (t) => {
  if (!needOldNode(t)) return;
  for (const how of [['install', '-g', '.'], ['link']]) {
    const prefix = join(work, `prefix-${how[0]}`);
    // The global prefix (where `npm install -g` and `npm link` put the command) is a temporary one.
    const installed = await npm([...how, '--no-audit', '--no-fund'], { prefix });
    assert.equal(installed.code, 0, installed.stderr);
    const result = await run('trellis', ['--version'], { env: { ...env, PATH: `${join(prefix, 'bin')}:${env.PATH}` } });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`^trellis \\S+ \\(commit ${gitHead()}`));
  }
});

test('a packed tarball installed globally works too (types stripped under node_modules)', async (t) => {
  if (!needOldNode(t)) return;
  const packs = join(work, 'packs');
  await mkdir(packs);
  const packedCommit = gitHead();
  const packed = await npm(['pack', ROOT, '--pack-destination', packs]);
  assert.equal(packed.code, 0, packed.stderr);
  const tarball = join(packs, packed.stdout.trim().split('\n').at(-1)!);
  const prefix = join(work, 'prefix-tarball');
  const installed = await npm(['install', '-g', tarball, '--no-audit', '--no-fund'], { cwd: work, timeoutMs: 300_000, prefix });
  assert.equal(installed.code, 0, installed.stderr);
  const pathEnv = { ...env, PATH: `${join(prefix, 'bin')}:${env.PATH}` };
  const version = await run('trellis', ['--version'], { env: pathEnv });
  assert.equal(version.code, 0, version.stderr);
  assert.match(version.stdout, new RegExp(`\\(commit ${packedCommit}`), 'the commit recorded at pack time (no .git in the package)');
  const tags = await run('trellis', ['tags', `${reg.host}/launcher/app`, '-o', 'json'], { env: pathEnv });
  assert.equal(tags.code, 0, tags.stderr);
  assert.equal(tags.stderr, '', 'no experimental-feature warning');
  assert.deepEqual(JSON.parse(tags.stdout), { repository: `${reg.host}/launcher/app`, tags: ['v1'] });
});

test('npm run trellis and npx trellis: paths from the caller\'s folder; npx and npm run -s print only the JSON', async (t) => {
  if (!needOldNode(t)) return;
  const sub = join(ROOT, 'test', 'fixtures');
  const out = join(sub, `launcher-out-${process.pid}`);
  try {
    const pulled = await npm(['run', 'trellis', '--', 'pull', `${reg.host}/launcher/app:v1`, '-d', `launcher-out-${process.pid}`, '-q'], { cwd: sub });
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.equal(await readFile(join(out, 'a.txt'), 'utf8'), 'hello\n', 'relative to the folder npm was run in');
    for (const args of [['run', '-s', 'trellis', '--'], ['exec', '--', 'trellis']]) {
      const listed = await npm([...args, 'tags', `${reg.host}/launcher/app`, '-o', 'json'], { cwd: sub });
      assert.equal(listed.code, 0, listed.stderr);
      assert.deepEqual(JSON.parse(listed.stdout), { repository: `${reg.host}/launcher/app`, tags: ['v1'] }, args.join(' '));
    }
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
