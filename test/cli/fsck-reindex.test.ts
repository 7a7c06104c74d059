// `trellis fsck` finds damage; `trellis reindex` rebuilds the index from the layouts alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { cliEnv, needsFileStorage, startTestRegistry } from '../helpers/registry.ts';
import { makeImage, pushBuilt, type Built } from '../helpers/oci-client.ts';
import { fsck } from '../../src/cli/fsck.ts';
import { testsUsePostgres } from '../helpers/postgres.ts';

/** The digest of an image's i-th blob (0: config, 1: first layer). */
function descriptorDigest(image: Built, i: number): string {
  const manifest = JSON.parse(image.bytes.toString('utf8')) as { config: { digest: string }; layers: { digest: string }[] };
  return [manifest.config.digest, ...manifest.layers.map((l) => l.digest)][i]!;
}

const run = promisify(execFile);
const MAIN = resolve(import.meta.dirname, '../../src/main.ts');
const sha256 = (data: string) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

async function trellis(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    // The CLI must find the registry's metadata store (PostgreSQL in that test pass).
    const env = await cliEnv(args[args.indexOf('--data') + 1]!);
    const { stdout, stderr } = await run(process.execPath, [MAIN, ...args], { env });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

test('fsck is clean on a healthy data directory and reports a corrupted blob', async () => {
  const reg = await startTestRegistry();
  const body = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] });
  const blob = 'some layer';
  await fetch(`${reg.url}/v2/fsck/repo/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob });
  await fetch(`${reg.url}/v2/fsck/repo/manifests/v1`, { method: 'PUT', body, headers: { 'Content-Type': 'application/vnd.oci.image.index.v1+json' } });
  await reg.close();
  const clean = await trellis('fsck', '--data', reg.dataDir);
  assert.equal(clean.code, 0, clean.stdout);
  assert.match(clean.stdout, /0 problems/);

  await writeFile(join(reg.dataDir, 'fsck/repo/blobs/sha256', sha256(blob).slice(7)), 'tampered');
  const damaged = await trellis('fsck', '--data', reg.dataDir);
  assert.equal(damaged.code, 1);
  assert.match(damaged.stdout, /has content with digest/);

  // A folder removed behind the index's back: found by the walk of every indexed repository.
  await rm(join(reg.dataDir, 'fsck/repo'), { recursive: true });
  const missing = await trellis('fsck', '--data', reg.dataDir);
  assert.equal(missing.code, 1);
  assert.match(missing.stdout, /fsck\/repo: indexed but its layout folder is missing/);
  await rm(reg.dataDir, { recursive: true, force: true });
});

test('reindex rebuilds tags and referrers from the layouts after the index is lost', async () => {
  const reg = await startTestRegistry();
  const index = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] });
  await fetch(`${reg.url}/v2/re/idx/manifests/v1`, { method: 'PUT', body: index, headers: { 'Content-Type': 'application/vnd.oci.image.index.v1+json' } });
  const referrer = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', artifactType: 'application/vnd.example', manifests: [], subject: { mediaType: 'application/vnd.oci.image.index.v1+json', digest: sha256(index), size: index.length } });
  await fetch(`${reg.url}/v2/re/idx/manifests/${sha256(referrer)}`, { method: 'PUT', body: referrer, headers: { 'Content-Type': 'application/vnd.oci.image.index.v1+json' } });
  await reg.close();
  for (const f of await readdir(join(reg.dataDir, '_trellis'))) if (f.startsWith('metadata')) await rm(join(reg.dataDir, '_trellis', f));
  const result = await trellis('reindex', '--data', reg.dataDir);
  assert.equal(result.code, 0, result.stdout);
  assert.equal((await trellis('fsck', '--data', reg.dataDir)).code, 0);

  const again = await startTestRegistry({}, reg.dataDir);
  const tags = (await (await fetch(`${again.url}/v2/re/idx/tags/list`)).json()) as { tags: string[] };
  assert.deepEqual(tags.tags, ['v1']);
  const refs = (await (await fetch(`${again.url}/v2/re/idx/referrers/${sha256(index)}`)).json()) as { manifests: { digest: string; artifactType: string }[] };
  assert.deepEqual(refs.manifests.map((m) => [m.digest, m.artifactType]), [[sha256(referrer), 'application/vnd.example']]);
  await again.close();
  await rm(reg.dataDir, { recursive: true, force: true });
});

test('reindex --deep adopts referrers nothing in index.json reaches (a lost fallback tag)', async () => {
  const { makeImage, makeReferrer, descriptorOf } = await import('../helpers/oci-client.ts');
  const { mkdtemp, mkdir } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const data = await mkdtemp(join(tmpdir(), 'trellis-deep-'));
  const layout = join(data, 'orphans/app');
  const image = makeImage();
  const referrer = makeReferrer(image.descriptor, { artifactType: 'application/vnd.example.sig' });
  await mkdir(join(layout, 'blobs/sha256'), { recursive: true });
  for (const blob of [image.bytes, ...image.blobs, referrer.bytes, ...referrer.blobs]) {
    await writeFile(join(layout, 'blobs/sha256', descriptorOf('x/y', blob).digest.slice(7)), blob);
  }
  await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ ...image.descriptor, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }] }));
  const referrersOf = async () => {
    const reg = await startTestRegistry({}, data);
    const res = (await (await fetch(`${reg.url}/v2/orphans/app/referrers/${image.digest}`)).json()) as { manifests: { digest: string }[] };
    await reg.close();
    return res.manifests.map((m) => m.digest);
  };
  assert.deepEqual(await referrersOf(), []);
  const result = await trellis('reindex', '--deep', '--data', data);
  assert.match(result.stdout, /adopted 1 orphan referrers/);
  assert.deepEqual(await referrersOf(), [referrer.digest]);
  assert.equal((await trellis('fsck', '--data', data)).code, 0);
  await rm(data, { recursive: true, force: true });
});

test('fsck beside a server: a problem gone a moment later (a rewrite under way) is not reported, one that stays is', async (t) => {
  if (!needsFileStorage(t)) return;
  const reg = await startTestRegistry();
  t.after(() => reg.dispose());
  const image = makeImage();
  assert.equal((await pushBuilt(reg.url, 'fsck/live', 'v1', image)).status, 201);
  await reg.registry.layout.flushAll();
  const layer = join(reg.dataDir, 'fsck/live/blobs/sha256', descriptorDigest(image, 1).slice(7));
  const bytes = await readFile(layer);
  const options = { maxManifestBytes: 4 << 20, metadata: reg.metadata, storage: '' };
  // Missing while fsck first reads the layout, back before its second look.
  await rm(layer);
  const checking = fsck(reg.dataDir, options);
  await sleep(300);
  await writeFile(layer, bytes);
  assert.deepEqual((await checking).problems, []);
  // Missing for good: reported.
  await rm(layer);
  const problems = (await fsck(reg.dataDir, options)).problems;
  assert.equal(problems.length, 1, problems.join('\n'));
  assert.match(problems[0]!, /fsck\/live: manifest sha256:[0-9a-f]{64} needs layer sha256:[0-9a-f]{64}, which is missing/);
  await writeFile(layer, bytes);
});

test('fsck reports a folder where a blob should be, and checks the rest', async (t) => {
  if (!needsFileStorage(t)) return;
  const reg = await startTestRegistry();
  const image = makeImage();
  assert.equal((await pushBuilt(reg.url, 'dir/app', 'v1', image)).status, 201);
  assert.equal((await pushBuilt(reg.url, 'dir/other', 'v1', makeImage())).status, 201);
  await reg.close();
  const layer = join(reg.dataDir, 'dir/app/blobs/sha256', descriptorDigest(image, 1).slice(7));
  await rm(layer);
  await mkdir(layer);
  const result = await trellis('fsck', '--data', reg.dataDir);
  assert.equal(result.code, 1, `${result.stdout}${result.stderr}`);
  assert.match(result.stdout, new RegExp(`dir/app: blob ${descriptorDigest(image, 1)} is a folder, not a file`));
  assert.match(result.stdout, /checked 2 repositories/);
  await rm(reg.dataDir, { recursive: true, force: true });
});

test('a damaged SQLite index: fsck reports it, reindex rebuilds it, serve says to run reindex', { timeout: 60_000 }, async (t) => {
  if (testsUsePostgres()) return t.skip('the SQLite file');
  const reg = await startTestRegistry();
  const image = makeImage();
  assert.equal((await pushBuilt(reg.url, 'damaged/app', 'v1', image)).status, 201);
  await reg.close();
  for (const f of await readdir(join(reg.dataDir, '_trellis'))) if (f.startsWith('metadata')) await rm(join(reg.dataDir, '_trellis', f));
  await writeFile(join(reg.dataDir, '_trellis/metadata.sqlite'), 'not a database '.repeat(500));
  const checked = await trellis('fsck', '--data', reg.dataDir);
  assert.equal(checked.code, 1, checked.stderr);
  assert.doesNotMatch(checked.stderr, /unexpected error/);
  assert.match(checked.stdout, /metadata index .* is damaged .*run `trellis reindex`/);
  const served = await trellis('serve', '--data', reg.dataDir, '--listen', '127.0.0.1:0');
  assert.equal(served.code, 1);
  assert.match(served.stderr, /metadata index .* is damaged .*run `trellis reindex`/);
  assert.doesNotMatch(served.stderr, /unexpected error/);
  const rebuilt = await trellis('reindex', '--data', reg.dataDir);
  assert.equal(rebuilt.code, 0, rebuilt.stderr);
  assert.equal((await trellis('fsck', '--data', reg.dataDir)).code, 0);
  const again = await startTestRegistry({}, reg.dataDir);
  t.after(() => again.close());
  const tags = (await (await fetch(`${again.url}/v2/damaged/app/tags/list`)).json()) as { tags: string[] };
  assert.deepEqual(tags.tags, ['v1']);
});
