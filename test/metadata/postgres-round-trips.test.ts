// Round trips to PostgreSQL per manifest push: each is a wait on the network and the database, so
// their number bounds a push's latency on a networked store (docs/benchmarks.md, "The metadata
// seam"). Every statement the pg client sends is counted while a real registry on a real
// PostgreSQL serves the PUT; the bounds fail if a change adds statements to the push path.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';
import { OCI_MANIFEST, descriptorOf, makeImage, makeReferrer, pushBlob, pushBuilt, pushManifest, type Built } from '../helpers/oci-client.ts';

const missing = postgresMissing();
if (missing && process.env.CI === 'true') throw new Error(`${missing}; CI must run the PostgreSQL round-trip bounds`);

/** The content lock's statements (src/metadata/postgres-locks.ts), on the lock connection. */
const LOCKING = /pg_try_advisory_lock|pg_advisory_unlock/;

/**
 * Statements sent by every pg client of this process while `work` runs, except the content lock's
 * two (taken and let go on the lock connection, so that replicas exclude each other): their
 * price, counted on their own in the first test.
 */
async function countStatements(work: () => Promise<unknown>, locking: string[] = []): Promise<string[]> {
  const seen: string[] = [];
  const query = pg.Client.prototype.query;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const first = args[0];
    const text = typeof first === 'string' ? first : String((first as { text?: string }).text ?? first);
    (LOCKING.test(text) ? locking : seen).push(text);
    return (query as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof query;
  try {
    await work();
  } finally {
    pg.Client.prototype.query = query;
  }
  return seen;
}

/** An image manifest with `layers` layers, its blobs pushed first (so only the manifest PUT is counted). */
async function pushedBlobsOf(base: string, repo: string, layers: number, seed: string): Promise<Built> {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', seed }));
  const layerBytes = Array.from({ length: layers }, (_, i) => Buffer.from(`${seed} layer ${i}`));
  for (const bytes of [config, ...layerBytes]) assert.equal((await pushBlob(base, repo, bytes)).status, 201);
  const manifest = {
    schemaVersion: 2, mediaType: OCI_MANIFEST, config: descriptorOf('application/vnd.oci.image.config.v1+json', config),
    layers: layerBytes.map((b) => descriptorOf('application/vnd.oci.image.layer.v1.tar', b)),
    annotations: { 'org.opencontainers.image.version': seed },
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  return { bytes, digest: descriptorOf(OCI_MANIFEST, bytes).digest, mediaType: OCI_MANIFEST, descriptor: descriptorOf(OCI_MANIFEST, bytes), blobs: [] };
}

let reg: TestRegistry;
let database: Awaited<ReturnType<typeof createTestDatabase>>;

before(async () => {
  if (missing) return;
  database = await createTestDatabase();
  // index.json is rewritten long after each push here, so the counts are the PUT's own.
  reg = await startTestRegistry({ metadata: database.url, indexFlushMinMs: 60_000 });
});

after(async () => {
  if (missing) return;
  await reg.dispose();
  await database.drop();
});

// Besides the store's own statements, the PUT asks the component index whether the repository
// holds components (src/components/service.ts): one more round trip, counted in every bound.

test('a new image manifest pushed by tag: at most 4 round trips, whatever its number of layers', { skip: missing ?? false }, async () => {
  const repo = 'bounds/image';
  // The repository exists and a first push of the same shape taught the store the attribute paths.
  const warm = await pushedBlobsOf(reg.url, repo, 1, 'warm');
  assert.equal((await pushManifest(reg.url, repo, 'warm', warm.bytes)).status, 201);
  for (const layers of [1, 5, 30]) {
    const image = await pushedBlobsOf(reg.url, repo, layers, `v${layers}`);
    let status = 0;
    const locking: string[] = [];
    const statements = await countStatements(async () => ({ status } = await pushManifest(reg.url, repo, `v${layers}`, image.bytes)), locking);
    assert.equal(status, 201);
    assert.deepEqual(locking.map((s) => s.match(LOCKING)![0]), ['pg_try_advisory_lock', 'pg_advisory_unlock'], 'the content lock: taken once, let go once');
    // one read (repository, manifest, every layer), the journal entry, the push's one statement
    assert.ok(statements.length <= 4, `${layers} layers: ${statements.length} statements:\n${statements.join('\n---\n')}`);
    assert.ok(!statements.some((s) => /^\s*(BEGIN|COMMIT)/i.test(s)), 'no transaction of its own: one statement is one');
  }
});

test('a known manifest under a new tag, and a re-push of the same tag: at most 3 round trips', { skip: missing ?? false }, async () => {
  const repo = 'bounds/retag';
  const image = makeImage();
  assert.equal((await pushBuilt(reg.url, repo, 'v1', image)).status, 201);
  for (const tag of ['v2', 'v2']) {
    const statements = await countStatements(async () => assert.equal((await pushManifest(reg.url, repo, tag, image.bytes)).status, 201));
    assert.ok(statements.length <= 3, `${statements.length} statements:\n${statements.join('\n---\n')}`);
  }
});

test('a referrer push: at most 4 round trips, one more when it brings attribute paths never seen', { skip: missing ?? false }, async () => {
  const repo = 'bounds/referrers';
  const image = makeImage();
  assert.equal((await pushBuilt(reg.url, repo, 'v1', image)).status, 201);
  const first = makeReferrer(image.descriptor, { artifactType: 'application/vnd.example.sbom', annotations: { 'org.example.n': '1' } });
  assert.equal((await pushBuilt(reg.url, repo, first.digest, first)).status, 201);
  for (const [annotations, bound] of [[{ 'org.example.n': '2' }, 4], [{ 'org.example.unseen': '3' }, 5]] as const) {
    const referrer = makeReferrer(image.descriptor, { artifactType: 'application/vnd.example.sbom', annotations });
    for (const blob of referrer.blobs) assert.equal((await pushBlob(reg.url, repo, blob)).status, 201);
    const statements = await countStatements(async () => assert.equal((await pushManifest(reg.url, repo, referrer.digest, referrer.bytes)).status, 201));
    assert.ok(statements.length <= bound, `${statements.length} statements:\n${statements.join('\n---\n')}`);
  }
});
