// The container image (Containerfile), built with podman from a Debian base without a daemon
// (scripts/container.sh) and run with podman: it answers /v2/ on the published port, takes an
// oras push and pull, reports healthy, runs as a non-root user, keeps its data in the /data volume
// across a new container, and stops cleanly on SIGTERM. Skipped only off CI without podman.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { findPeer } from '../helpers/peers.ts';

const exec = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../..');
const SCRIPT = join(ROOT, 'scripts/container.sh');
const IMAGE = 'localhost/trellis:test';
const suffix = randomBytes(3).toString('hex');
const NAME = `trellis-test-${suffix}`;
const VOLUME = `trellis-test-data-${suffix}`;

const hasPodman = (() => {
  try {
    execFileSync('podman', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const skip = !hasPodman && process.env.CI !== 'true' ? 'podman is not installed (CI installs it in .ci/run)' : false;

const podman = async (...args: string[]) => (await exec(SCRIPT, ['podman', ...args], { maxBuffer: 16 << 20 })).stdout.trim();

let work: string;
let port: number;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const { port: chosen } = server.address() as { port: number };
  await new Promise<void>((done) => server.close(() => done()));
  return chosen;
}

async function waitForRegistry(url: string): Promise<Response> {
  const end = Date.now() + 60_000;
  for (;;) {
    try {
      return await fetch(url);
    } catch (err) {
      if (Date.now() > end) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** A container on the image, the port published on 127.0.0.1 only, data in the named volume. */
async function startContainer(): Promise<void> {
  await podman('run', '-d', '--name', NAME, '-p', `127.0.0.1:${port}:5000`, '-v', `${VOLUME}:/data`, IMAGE);
}

before(async () => {
  if (skip) return;
  work = await mkdtemp(join(tmpdir(), 'trellis-container-'));
  port = await freePort();
  // Builds the base from debootstrap the first time (cached in .cache/container), then the image.
  await exec(SCRIPT, ['build', IMAGE], { maxBuffer: 64 << 20, timeout: 540_000 });
});

after(async () => {
  if (skip) return;
  await podman('rm', '-f', '-t', '0', NAME).catch(() => undefined);
  await podman('volume', 'rm', '-f', VOLUME).catch(() => undefined);
  await rm(work, { recursive: true, force: true });
});

test('the image: non-root, /data volume, port 5000, health check, serve on 0.0.0.0 inside', { skip }, async () => {
  const config = JSON.parse(await podman('image', 'inspect', IMAGE)) as { Config: { User: string; Volumes: Record<string, unknown>; ExposedPorts: Record<string, unknown>; Env: string[]; Cmd: string[]; Entrypoint: string[] }; Healthcheck?: { Test: string[] } }[];
  const image = config[0]!;
  assert.equal(image.Config.User, 'trellis');
  assert.ok('/data' in image.Config.Volumes);
  assert.ok('5000/tcp' in image.Config.ExposedPorts);
  assert.ok(image.Config.Env.includes('TRELLIS_LISTEN=0.0.0.0:5000'));
  assert.deepEqual([...image.Config.Entrypoint, ...image.Config.Cmd], ['node', '/app/bin/trellis.mjs', 'serve']);
  assert.match(JSON.stringify(image.Healthcheck?.Test ?? []), /\/healthz/);
});

test('podman run: /v2/ answers, oras pushes and pulls, healthy, data survives a new container, SIGTERM stops it cleanly', { skip }, async (t) => {
  const oras = findPeer('oras');
  if (!oras && process.env.CI === 'true') throw new Error('oras is not installed (run .ci/install-peers.sh)');
  await startContainer();
  const base = `http://127.0.0.1:${port}`;
  const ping = await waitForRegistry(`${base}/v2/`);
  assert.equal(ping.status, 200);
  assert.equal(ping.headers.get('docker-distribution-api-version'), 'registry/2.0');
  // The web UI ships in the image.
  const ui = await fetch(`${base}/ui/`);
  assert.equal(ui.status, 200);
  assert.match(await ui.text(), /<div id="root"|<script type="module"/);
  assert.match(await podman('exec', NAME, 'id', '-un'), /^trellis$/);
  assert.match(await podman('exec', NAME, 'node', '/app/bin/trellis.mjs', '--version'), /^trellis \S+ \(commit [0-9a-f]{40}/);
  await podman('healthcheck', 'run', NAME); // exits non-zero when unhealthy
  // The image carries a warm compile cache: the server's modules load without being stripped again.
  const loading = await podman('exec', NAME, 'sh', '-c', 'NODE_DEBUG_NATIVE=COMPILE_CACHE node --input-type=module -e "await import(\'/app/src/cli/serve.ts\')" 2>&1');
  assert.match(loading, /retrieving transpile cache for StrippedTypeScript/);
  assert.doesNotMatch(loading, /writing cache for StrippedTypeScript/, 'a server module was not in the image\'s compile cache');

  if (!oras) return t.skip('oras is not installed (run .ci/install-peers.sh)');
  await writeFile(join(work, 'hello.txt'), `hello from ${suffix}\n`);
  // Large enough to be written by the server's write thread (a worker module of the image).
  const large = randomBytes(3 << 20);
  await writeFile(join(work, 'large.bin'), large);
  await exec(oras, ['push', '--plain-http', `127.0.0.1:${port}/demo/app:v1`, 'hello.txt:text/plain', 'large.bin:application/octet-stream'], { cwd: work });
  await exec(oras, ['pull', '--plain-http', '-o', join(work, 'pulled'), `127.0.0.1:${port}/demo/app:v1`], { cwd: work });
  assert.equal(await readFile(join(work, 'pulled/hello.txt'), 'utf8'), `hello from ${suffix}\n`);
  assert.ok((await readFile(join(work, 'pulled/large.bin'))).equals(large));

  // SIGTERM: the server flushes its layouts and exits 0, well before podman's 10 s kill.
  const started = performance.now();
  await podman('stop', NAME);
  assert.ok(performance.now() - started < 9_000, 'stopped by SIGTERM, not killed');
  assert.equal(await podman('inspect', NAME, '--format', '{{.State.ExitCode}}'), '0');
  assert.match(await podman('logs', NAME), /shutting down: flushing layouts/);
  await podman('rm', NAME);

  // A new container on the same volume serves what was pushed.
  await startContainer();
  await waitForRegistry(`${base}/v2/`);
  await exec(oras, ['pull', '--plain-http', '-o', join(work, 'again'), `127.0.0.1:${port}/demo/app:v1`], { cwd: work });
  assert.equal(await readFile(join(work, 'again/hello.txt'), 'utf8'), `hello from ${suffix}\n`);
});
