// The first hour with the CLI (issue 15): each mistake a new user made in one sitting ends with
// one `trellis: …` line saying what went wrong and what to do, the documented exit code, no stack
// trace, and no folder created where none was asked for. `delete` by tag asks on a terminal (a
// real pseudo-terminal, through util-linux `script`) and can remove just the tag.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { getManifest, listTags } from '../helpers/oci-client.ts';
import { MAIN, isolatedEnv, trellisCli, trellisOk, type CliResult } from './run.ts';

let reg: TestRegistry;
let work: string;
let env: NodeJS.ProcessEnv;

before(async () => {
  reg = await startTestRegistry();
  work = await mkdtemp(join(tmpdir(), 'trellis-first-hour-'));
  env = isolatedEnv(work);
  await writeFile(join(work, 'app.yaml'), 'replicas: 2\n');
  await trellisOk(['push', `${reg.host}/team/app:v1`, 'app.yaml:text/yaml'], { env, cwd: work });
});
after(async () => {
  await reg.dispose();
  await rm(work, { recursive: true, force: true });
});

const cli = (args: string[], timeoutMs = 30_000) => trellisCli(args, { env, cwd: work, timeoutMs });

/** One `trellis:` line (and, for usage errors, the --help pointer), the exit code, no stack trace. */
function assertOneLine(result: CliResult, code: number, pattern: RegExp, options: { usage?: boolean } = {}): void {
  const lines = result.stderr.trimEnd().split('\n');
  assert.equal(result.code, code, `exit code; stderr: ${result.stderr}`);
  assert.match(lines[0]!, /^trellis: /, result.stderr);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(result.stderr, /\n\s+at |TypeError|Error: E[A-Z]+/, 'no stack trace');
  if (options.usage) assert.match(lines[1] ?? '', /^Run `trellis( [a-z ]+)? --help` for usage\.$/);
  assert.equal(lines.length, options.usage ? 2 : 1, result.stderr);
}

test('a port run into the repository, a scheme, upper case: what to type instead', async () => {
  assertOneLine(await cli(['pull', 'localhost:5000team/app:v1']), 2, /did you mean localhost:5000\/team\/app:v1\?/, { usage: true });
  assertOneLine(await cli(['push', `https://${reg.host}/team/app:v2`, 'app.yaml']), 2, new RegExp(`has no scheme; write ${reg.host}/team/app:v2`), { usage: true });
  assertOneLine(await cli(['tags', `${reg.host}/Team/App`]), 2, new RegExp(`lower case; use ${reg.host}/team/app$`), { usage: true });
});

test('usage errors: one line and a pointer to --help, not the whole help', async () => {
  assertOneLine(await cli(['push']), 2, /missing required argument 'reference'/, { usage: true });
  assertOneLine(await cli(['pull', '--frobnicate']), 2, /unknown option '--frobnicate'/, { usage: true });
  const unknown = await cli(['frobnicate']);
  assertOneLine(unknown, 2, /unknown command 'frobnicate'/, { usage: true });
  assert.equal(unknown.stdout, '');
});

test('push file.yaml: with an empty media type says so, not that the file is missing', async () => {
  assertOneLine(await cli(['push', `${reg.host}/team/app:v2`, 'app.yaml:']), 2, /the media type after ":" is empty; write app\.yaml .*app\.yaml:<type>\/<subtype>/, { usage: true });
  assertOneLine(await cli(['push', `${reg.host}/team/app:v2`, 'app.yaml:yaml']), 2, /"yaml" is not a media type/, { usage: true });
});

test('a q_ filter without a comparison names the form', async () => {
  assertOneLine(await cli(['query', `${reg.host}/team/app:v1`, 'q_annotations__kind=sbom']), 2, /no comparison: the form is q_<attribute>\[__<key>\]__<cmp>=<value>.*e\.g\. q_annotations__kind__eq=sbom/, { usage: true });
});

test('connection refused asks whether a registry runs there, and a copy from it leaves no empty layout', async () => {
  const port = await freePort();
  assertOneLine(await cli(['tags', `127.0.0.1:${port}/team/app`]), 5, new RegExp(`connection refused; is a registry running at 127\\.0\\.0\\.1:${port}\\?`));
  assertOneLine(await cli(['copy', `127.0.0.1:${port}/team/app:v1`, 'oci:./never-written']), 5, /connection refused/);
  assert.equal(existsSync(join(work, 'never-written')), false);
});

test('pull -d onto a dangling link, /proc, or a file: one line at once, nothing created', async () => {
  await symlink(join(work, 'gone', 'deeper'), join(work, 'dangling'));
  assertOneLine(await cli(['pull', `${reg.host}/team/app:v1`, '-d', 'dangling']), 2, /dangling is a symbolic link to .*gone\/deeper, which does not exist/, { usage: true });
  assert.equal(existsSync(join(work, 'gone')), false);
  const started = performance.now();
  assertOneLine(await cli(['pull', `${reg.host}/team/app:v1`, '-d', '/proc/nope'], 20_000), 2, /cannot create the folder \/proc\/nope/, { usage: true });
  assert.ok(performance.now() - started < 15_000, 'answers at once (a recursive mkdir under /proc spun for minutes)');
  assertOneLine(await cli(['pull', `${reg.host}/team/app:v1`, '-d', 'app.yaml']), 2, /app\.yaml exists and is not a folder/, { usage: true });
  // Missing levels under an existing folder are still made.
  await trellisOk(['pull', `${reg.host}/team/app:v1`, '-d', 'out/a/b'], { env, cwd: work });
  assert.ok(existsSync(join(work, 'out/a/b/app.yaml')));
});

test('copy to oci:/<missing>/x refuses instead of creating folders at /', async () => {
  const missing = `/trellis-missing-${randomBytes(4).toString('hex')}`;
  assertOneLine(await cli(['copy', '-r', `${reg.host}/team/app:v1`, `oci:${missing}/x`]), 2, new RegExp(`the folder ${missing} does not exist; create it first`), { usage: true });
  assertOneLine(await cli(['copy', `${reg.host}/team/app:v1`, `${missing}/x.tar`]), 2, new RegExp(`the folder ${missing} does not exist`), { usage: true });
  assert.equal(existsSync(missing), false);
});

test('gc, fsck and reindex on a mistyped --data say it does not exist and create nothing', async () => {
  for (const command of ['gc', 'fsck', 'reindex']) {
    const typo = join(work, `trellis-dta-${command}`);
    assertOneLine(await cli([command, '--data', typo]), 2, new RegExp(`data directory ${typo} does not exist`), { usage: true });
    assert.equal(existsSync(typo), false, `${command} created ${typo}`);
  }
});

test('serve with --data under /proc: one line at once instead of spinning', async () => {
  assertOneLine(await cli(['serve', '--listen', '127.0.0.1:0', '--data', '/proc/trellis-nope'], 20_000), 2, /cannot create the folder \/proc\/trellis-nope/, { usage: true });
});

test('serve on a busy port: one line naming the address and --listen', async () => {
  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  const port = (busy.address() as { port: number }).port;
  try {
    const data = join(work, 'serve-data');
    assertOneLine(await cli(['serve', '--listen', `127.0.0.1:${port}`, '--data', data]), 1, new RegExp(`127\\.0\\.0\\.1:${port} is already in use .*--listen HOST:PORT`));
  } finally {
    await new Promise<void>((resolve) => busy.close(() => resolve()));
  }
});

test('delete by tag off a terminal needs --force or --tag-only; --tag-only keeps the manifest and its other tags', async () => {
  await trellisOk(['tag', `${reg.host}/team/app:v1`, 'stable', 'latest'], { env, cwd: work });
  const digest = (await getManifest(reg.url, 'team/app', 'v1')).digest!;
  assertOneLine(await cli(['delete', `${reg.host}/team/app:latest`]), 2, /deletes the manifest sha256:[0-9a-f]{64} and every tag on it; add --force .* or --tag-only/, { usage: true });
  assert.equal((await getManifest(reg.url, 'team/app', 'latest')).digest, digest, 'nothing deleted');

  const untagged = JSON.parse((await trellisOk(['delete', `${reg.host}/team/app:latest`, '--tag-only', '-o', 'json'], { env, cwd: work })).stdout) as { untagged: string; digest: string };
  assert.deepEqual(untagged, { untagged: `${reg.host}/team/app:latest`, digest });
  assert.deepEqual((await listTags(reg.url, 'team/app')).tags.sort(), ['stable', 'v1']);
  assertOneLine(await cli(['delete', `${reg.host}/team/app@${digest}`, '--tag-only']), 2, /--tag-only needs a tag/, { usage: true });
});

const hasScript = (() => {
  try {
    execFileSync('script', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

/** Runs trellis on a pseudo-terminal (util-linux `script`), typing `answer` (asynchronously: the registry runs in this process). */
function onTerminal(args: string[], answer: string): Promise<CliResult> {
  const command = [process.execPath, MAIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qec', command, '/dev/null'], { env, cwd: work, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stdout += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr: '' });
    });
    // Answer once the question is on the terminal.
    const ask = setInterval(() => {
      if (!stdout.includes('[N]?')) return;
      clearInterval(ask);
      child.stdin.write(answer);
    }, 50);
    child.once('close', () => clearInterval(ask));
  });
}

test('delete by tag on a terminal asks: the manifest, only the tag, or nothing', { skip: !hasScript && process.env.CI !== 'true' ? 'util-linux script is not installed' : false }, async () => {
  await trellisOk(['push', `${reg.host}/team/prompt:v1`, 'app.yaml'], { env, cwd: work });
  await trellisOk(['tag', `${reg.host}/team/prompt:v1`, 'a', 'b'], { env, cwd: work });
  const digest = (await getManifest(reg.url, 'team/prompt', 'v1')).digest!;

  const no = await onTerminal(['delete', `${reg.host}/team/prompt:a`], 'n\n');
  assert.equal(no.code, 1, no.stdout);
  assert.match(no.stdout, new RegExp(`@${digest} has its tags a, b, v1; deleting the manifest removes them all`));
  assert.match(no.stdout, /Delete the manifest \[y\], only the tag a \[t\], or nothing \[N\]\?/);
  assert.match(no.stdout, /trellis: nothing deleted/);
  assert.deepEqual((await listTags(reg.url, 'team/prompt')).tags.sort(), ['a', 'b', 'v1']);

  const tagOnly = await onTerminal(['delete', `${reg.host}/team/prompt:a`], 't\n');
  assert.equal(tagOnly.code, 0, tagOnly.stdout);
  assert.deepEqual((await listTags(reg.url, 'team/prompt')).tags.sort(), ['b', 'v1']);

  const all = await onTerminal(['delete', `${reg.host}/team/prompt:b`], 'y\n');
  assert.equal(all.code, 0, all.stdout);
  assert.equal((await getManifest(reg.url, 'team/prompt', digest)).status, 404);
});

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
