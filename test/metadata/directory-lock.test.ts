// One process per data directory: a second `trellis serve`, `reindex` or `gc` on a directory a
// server holds refuses with one `trellis: ...` line and a non-zero exit, leaves the first server's
// pid file alone, and the lock never outlives its holder (kill -9 frees it at once).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { MAIN, trellisCli } from '../cli/run.ts';
import { DataDirectoryBusy, lockDataDirectory } from '../../src/metadata/directory-lock.ts';
import { cliEnv, startTestRegistry } from '../helpers/registry.ts';

const PID_FILE = ['_trellis', 'serve.pid'];

/** Starts `trellis serve` on a free port and resolves once it logged that it listens. */
async function serveProcess(dataDir: string) {
  const child = spawn(process.execPath, [MAIN, 'serve', '--listen', '127.0.0.1:0', '--data', dataDir, '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'pipe'], env: await cliEnv(dataDir) });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = once(child, 'exit');
  for (const deadline = Date.now() + 30_000; !output.includes('listening'); await sleep(20)) {
    if (child.exitCode !== null) throw new Error(`trellis serve exited ${child.exitCode}: ${output}`);
    assert.ok(Date.now() < deadline, `trellis serve did not start: ${output}`);
  }
  return { child, exited, output: () => output };
}

test('in one process the lock has one holder, and release lets the next one in', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-lock-'));
  try {
    await mkdir(join(dir, '_trellis'));
    const first = lockDataDirectory(dir, join(dir, '_trellis'), 'trellis serve');
    assert.throws(() => lockDataDirectory(dir, join(dir, '_trellis'), 'trellis gc'), (err: Error) => {
      assert.ok(err instanceof DataDirectoryBusy);
      assert.match(err.message, /is in use by `trellis serve` \(pid \d+/);
      return true;
    });
    first.release();
    lockDataDirectory(dir, join(dir, '_trellis'), 'trellis gc').release();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a second registry opened on a served directory in the same process is refused', async () => {
  const reg = await startTestRegistry();
  try {
    await assert.rejects(startTestRegistry({}, reg.dataDir), DataDirectoryBusy);
  } finally {
    await reg.dispose();
  }
});

test('a second serve, reindex or gc refuses while a server holds the directory; kill -9 frees it', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-lock-cli-'));
  const first = await serveProcess(dataDir);
  try {
    const pid = await readFile(join(dataDir, ...PID_FILE), 'utf8');
    assert.equal(pid, String(first.child.pid));
    for (const args of [['serve', '--listen', '127.0.0.1:0'], ['reindex'], ['gc'], ['gc', '--dry-run']]) {
      const second = await trellisCli([...args, '--data', dataDir], { timeoutMs: 30_000 });
      assert.notEqual(second.code, 0, `trellis ${args[0]} ran beside the server: ${second.stdout}${second.stderr}`);
      const lines = second.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one message, not a stack trace: ${second.stderr}`);
      assert.match(lines[0]!, new RegExp(`^trellis: .* is in use by \`trellis serve .*\` \\(pid ${first.child.pid}, since `), second.stderr);
    }
    // The refused server did not remove the first one's pid file, and the first one still serves.
    assert.equal(await readFile(join(dataDir, ...PID_FILE), 'utf8'), pid);
    assert.equal(first.child.exitCode, null);
    // fsck only reads: it runs beside the server.
    const fsck = await trellisCli(['fsck', '--data', dataDir]);
    assert.equal(fsck.code, 0, fsck.stdout + fsck.stderr);

    first.child.kill('SIGKILL');
    await first.exited;
    // Nothing stale: the next server starts at once, and stops cleanly.
    const next = await serveProcess(dataDir);
    next.child.kill('SIGTERM');
    const [code] = await next.exited;
    assert.equal(code, 0, next.output());
    assert.ok(!existsSync(join(dataDir, ...PID_FILE)), 'a graceful stop removes its own pid file');
    const gc = await trellisCli(['gc', '--data', dataDir]);
    assert.equal(gc.code, 0, gc.stderr);
  } finally {
    if (first.child.exitCode === null && first.child.signalCode === null) first.child.kill('SIGKILL');
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('a data directory this user cannot write is one clear line naming it, not an unexpected error to report', async (t) => {
  // Root writes anywhere: as root the commands run as nobody (setpriv), like a service account
  // given a directory an earlier `sudo trellis serve` created.
  const asNobody = process.getuid?.() === 0;
  if (asNobody) {
    try {
      execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', '']);
    } catch {
      return t.skip('running as root without setpriv to drop to another user');
    }
  }
  const work = await mkdtemp(join(tmpdir(), 'trellis-lock-perm-'));
  const dataDir = join(work, 'data');
  try {
    await mkdir(join(dataDir, '_trellis'), { recursive: true });
    await writeFile(join(dataDir, '_trellis', 'lock'), '');
    await chmod(join(dataDir, '_trellis', 'lock'), 0o444);
    await chmod(join(dataDir, '_trellis'), 0o555);
    await chmod(dataDir, 0o555);
    await chmod(work, 0o755);
    for (const args of [['serve', '--listen', '127.0.0.1:0'], ['gc']]) {
      const command = [MAIN, ...args, '--data', dataDir];
      const result = asNobody ? await runAs(command) : await trellisCli(command.slice(1), { timeoutMs: 30_000 });
      assert.equal(result.code, 1, `trellis ${args[0]}: ${result.stderr}`);
      assert.equal(result.stderr.trim(), `trellis: ${join(dataDir, '_trellis')}: permission denied; choose a folder you can write to`);
    }
  } finally {
    await chmod(dataDir, 0o755).catch(() => undefined);
    await chmod(join(dataDir, '_trellis'), 0o755).catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  }
});

/** Runs the CLI as nobody (the caller is root). */
function runAs(command: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((done) => {
    const child = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, ...command], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('close', (code) => {
      clearTimeout(timer);
      done({ code, stderr });
    });
  });
}
