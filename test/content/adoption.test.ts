// Start-up adoption in the background: `serve` answers before its walk of storage has reached
// every layout another tool wrote while it was down. A repository's own requests adopt it first;
// registry-wide answers (catalog, components, GC) wait for the walk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { needsFileStorage, startTestRegistry, testMetadata } from '../helpers/registry.ts';
import { getBlob, getManifest, listTags, makeImage, pushBuilt, type Built } from '../helpers/oci-client.ts';
import { Registry } from '../../src/content/registry.ts';
import { eachRepository } from '../../src/metadata/index.ts';
import { registryOptions } from '../../src/cli/serve.ts';
import { DEFAULT_SETTINGS } from '../../src/config/settings.ts';

async function countRepositories(registry: Registry): Promise<number> {
  let count = 0;
  for await (const _ of eachRepository(registry.metadata)) count++;
  return count;
}

const LAYOUTS = 200;

/** Writes `image` as a plain OCI layout, tagged `v1`, the way another tool would. */
async function writeLayout(root: string, name: string, image: Built): Promise<void> {
  const dir = join(root, name);
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  for (const [digest, bytes] of [[image.digest, image.bytes], ...image.blobs.map((b, i) => [blobDigest(image, i), b] as const)] as const) {
    await writeFile(join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length)), bytes);
  }
  const index = { schemaVersion: 2, manifests: [{ ...image.descriptor, annotations: { 'org.opencontainers.image.ref.name': 'v1' } }] };
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
}

function blobDigest(image: Built, i: number): string {
  const manifest = JSON.parse(image.bytes.toString('utf8')) as { config: { digest: string }; layers: { digest: string }[] };
  return [manifest.config.digest, ...manifest.layers.map((l) => l.digest)][i]!;
}

function names(): string[] {
  return Array.from({ length: LAYOUTS }, (_, i) => `team${i % 7}/app-${String(i).padStart(4, '0')}`);
}

async function dataWithLayouts(images: Map<string, Built>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-adoption-'));
  for (const name of names()) {
    const image = makeImage({ layer: Buffer.from(`layer of ${name}`) });
    images.set(name, image);
    await writeLayout(dir, name, image);
  }
  return dir;
}

test('serve: every request sees the layouts other tools wrote while it was down, whatever the walk has reached', async (t) => {
  if (!needsFileStorage(t)) return;
  const images = new Map<string, Built>();
  const dir = await dataWithLayouts(images);
  const reg = await startTestRegistry({}, dir);
  t.after(async () => {
    await reg.dispose();
    await rm(dir, { recursive: true, force: true });
  });
  const base = `http://${reg.host}`;
  // The last names in the walk's order first: a repository's request adopts it ahead of the walk.
  const last = names().at(-1)!;
  const image = images.get(last)!;
  const pulled = await getManifest(base, last, 'v1');
  assert.equal(pulled.status, 200);
  assert.equal(pulled.digest, image.digest);
  assert.deepEqual((await listTags(base, names().at(-2)!)).tags, ['v1']);
  assert.equal((await getBlob(base, names().at(-3)!, images.get(names().at(-3)!)!.descriptor.digest)).status, 200);
  // A push into a repository the walk has not reached keeps what the other tool wrote there.
  const pushed = await pushBuilt(base, names().at(-4)!, 'v2', makeImage());
  assert.equal(pushed.status, 201);
  assert.deepEqual((await listTags(base, names().at(-4)!)).tags.sort(), ['v1', 'v2']);
  // Registry-wide: the catalog waits for the walk, so it lists every layout.
  const catalog = await (await fetch(`${base}/v2/_catalog?n=10000`)).json() as { repositories: string[] };
  assert.deepEqual(catalog.repositories, names().sort());
  // Readiness follows the walk: a balancer sends traffic here only now.
  assert.equal((await fetch(`${base}/readyz`)).status, 200);
  // GC after the walk: nothing another tool wrote is taken for garbage.
  const gc = await (await fetch(`${base}/v2/_trellis/gc`, { method: 'POST' })).json() as { removed: unknown[] };
  assert.deepEqual(gc.removed, []);
  for (const name of names().slice(0, 20)) assert.equal((await getManifest(base, name, 'v1')).status, 200, name);
});

/** A data directory with LAYOUTS layouts other tools wrote, its index, and options to open it in the background. */
async function backgroundSetup(t: { after(fn: () => Promise<void>): void }) {
  const images = new Map<string, Built>();
  const dir = await dataWithLayouts(images);
  const database = await testMetadata(dir);
  t.after(async () => {
    await rm(dir, { recursive: true, force: true });
    await database?.drop();
  });
  const options = { ...registryOptions({ ...DEFAULT_SETTINGS, data: dir, metadata: database?.url ?? '' }, pino({ level: 'silent' })), adoptInBackground: true };
  return { images, options };
}

test('Registry.open in the background: a request adopts only a layout that exists; close stops the walk, the next open finishes it', async (t) => {
  if (!needsFileStorage(t)) return;
  const { images, options } = await backgroundSetup(t);
  const registry = await Registry.open(options);
  let walked = false;
  void registry.adopted().then(() => { walked = true; });
  await Promise.resolve();
  assert.equal(walked, false, 'open returned before the walk of storage ended');
  await registry.adopted('no/such-repository');
  assert.equal(await registry.metadata.repository('no/such-repository'), undefined, 'asking for a name creates no repository');
  const last = names().at(-1)!;
  await registry.adopted(last);
  const record = await registry.metadata.repository(last);
  assert.ok(record, `${last} is in the index once its adoption resolved`);
  assert.ok(await registry.metadata.manifest(record.id, images.get(last)!.digest));
  // Closed at once, while the walk may still be going: it stops cleanly, and a new open finds all.
  await registry.close();
  const again = await Registry.open({ ...options, adoptInBackground: false });
  try {
    assert.equal(await countRepositories(again), LAYOUTS);
  } finally {
    await again.close();
  }
});

test('Registry.open in the background with catchUpAfter: the walk waits for the signal, requests adopt meanwhile, a close before it does not wait', async (t) => {
  if (!needsFileStorage(t)) return;
  const { options } = await backgroundSetup(t);
  let listening = (): void => undefined;
  const registry = await Registry.open({ ...options, catchUpAfter: new Promise<void>((resolve) => { listening = resolve; }) });
  // Well past what the walk of 200 layouts takes once started: it has not started.
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal(registry.caughtUp, false);
  assert.equal(await countRepositories(registry), 0, 'nothing was adopted before the signal');
  const first = names()[0]!;
  await registry.adopted(first);
  assert.ok(await registry.metadata.repository(first), 'a request still adopts its own repository at once');
  listening();
  await registry.adopted();
  assert.equal(registry.caughtUp, true);
  assert.equal(await countRepositories(registry), LAYOUTS);
  await registry.close();

  // A registry whose signal never comes (the server never listened) still closes.
  const never = await Registry.open({ ...options, catchUpAfter: new Promise<void>(() => undefined) });
  await never.close();
});
