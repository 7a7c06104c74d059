// What `trellis serve` loads at start: an open registry on a filesystem with SQLite needs no token
// library, YAML parser, tar, AWS SDK or PostgreSQL client, and loading them costs start-up time
// (jose, yaml and tar together about 55 ms here; docs/benchmarks.md). They load on first use; this
// test fails when one of them is imported at the top of a module the server loads again. The
// same holds for the client's own transfer code and commands.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { freePort } from '../helpers/replicas.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const ROOT_URL = `${pathToFileURL(ROOT).href}/`;
// prom-client (and the OpenTelemetry API it requires) loads after the start (Metrics.loadSoon).
const LOADED_ON_FIRST_USE = ['jose', 'yaml', 'tar', '@aws-sdk/client-s3', 'pg', 'prom-client', '@opentelemetry/api'];
// The client's transfer code and commands (about 8 ms of start-up); src/transfer/errors.ts is allowed.
const CLIENT_ONLY = /^src\/(transfer\/(?!errors\.ts$)|cli\/(client|target|layout|artifacts|filters|output)\.ts$)/;

/**
 * A module hook that appends each package and each of our source files (`src/…`) the process
 * resolves to `out` (a line each) as it
 * happens: the test reads what was loaded by the time the server answered, not by its exit, since
 * a shutdown slower than loadSoon's delay (a loaded CI machine) loads prom-client meanwhile.
 */
function recorder(out: string): string {
  return `import { registerHooks } from 'node:module';
import { appendFileSync } from 'node:fs';
const packages = new Set();
registerHooks({ resolve(specifier, context, next) {
  const result = next(specifier, context);
  const match = /\\/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(result.url);
  const name = match ? match[1] : result.url.startsWith(${JSON.stringify(ROOT_URL)}) ? result.url.slice(${ROOT_URL.length}) : undefined;
  if (name && !packages.has(name)) {
    packages.add(name);
    appendFileSync(${JSON.stringify(out)}, name + '\\n');
  }
  return result;
} });
`;
}

test('serve starts without the libraries it loads on first use', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-startup-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const hook = join(dir, 'record.mjs');
  const out = join(dir, 'packages.json');
  await writeFile(hook, recorder(out));
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', hook, join(ROOT, 'bin/trellis.mjs'), 'serve', '--listen', `127.0.0.1:${port}`, '--data', join(dir, 'data'), '--log-level', 'error'],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, TRELLIS_METADATA: '', TRELLIS_STORAGE: '', TRELLIS_AUTH_FILE: '' } });
  t.after(() => child.kill('SIGKILL'));
  const deadline = Date.now() + 30_000;
  for (;;) {
    const answered = await fetch(`http://127.0.0.1:${port}/v2/`).then((res) => res.status, () => 0);
    if (answered === 200) break;
    assert.ok(Date.now() < deadline && child.exitCode === null, 'the server did not answer within 30 s');
    await sleep(50);
  }
  const packages = (await readFile(out, 'utf8')).split('\n').filter(Boolean);
  child.kill('SIGTERM');
  await once(child, 'exit');
  // The recorder sees packages at all: the server's own dependencies are there.
  assert.ok(packages.includes('pino') && packages.includes('commander'), `packages seen: ${packages.join(', ')}`);
  assert.deepEqual(LOADED_ON_FIRST_USE.filter((name) => packages.includes(name)), []);
  // Nor the client's own code: only the error classes the CLI maps to exit codes.
  assert.ok(packages.includes('src/cli/serve.ts'), `modules seen: ${packages.join(', ')}`);
  assert.deepEqual(packages.filter((name) => CLIENT_ONLY.test(name)), []);
});
