// Every example URL of seed 004 ("Proposal F", the query language's origin) answers what the
// proposal promises, on OCI 1.1 data: the proposal's scoop flavours are referrers' artifactType.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { makeImage, makeReferrer, pushBuilt, type Built } from '../helpers/oci-client.ts';
import { fsck } from '../../src/cli/fsck.ts';

const FLAVOURS = ['vanilla', 'chocolate', 'strawberry'] as const;
/** Sizes apart enough for ranges (a referrer with a sha256 subject is at least ~620 bytes). */
const SIZES = { vanilla: 700, chocolate: 900, strawberry: 1500 };
const scoop = (flavour: string) => `icecream/scoops.${flavour}.v1.json`;

let reg: TestRegistry;
let cone: Built;
const scoops: Record<string, Built> = {};
let elsewhere: Built;

/** A referrer of exactly `size` bytes (padded through an annotation). */
function sized(subject: Built, artifactType: string, size: number): Built {
  const base = makeReferrer(subject.descriptor, { artifactType, annotations: { pad: '' } });
  const built = makeReferrer(subject.descriptor, { artifactType, annotations: { pad: 'x'.repeat(size - base.bytes.length) } });
  assert.equal(built.bytes.length, size);
  return built;
}

before(async () => {
  reg = await startTestRegistry({ queryRatePerSecond: 0 });
  cone = makeImage({ annotations: { 'org.opencontainers.image.title': 'neapolitan cone' } });
  assert.equal((await pushBuilt(reg.url, 'products/cones', 'neapolitan', cone)).status, 201);
  for (const flavour of FLAVOURS) {
    scoops[flavour] = sized(cone, scoop(flavour), SIZES[flavour]);
    assert.equal((await pushBuilt(reg.url, 'products/cones', scoops[flavour]!.digest, scoops[flavour]!)).status, 201);
  }
  // Another repository's chocolate scoop, for the registry-wide example.
  const other = makeImage();
  assert.equal((await pushBuilt(reg.url, 'products/cups', 'plain', other)).status, 201);
  elsewhere = sized(other, scoop('chocolate'), 800);
  assert.equal((await pushBuilt(reg.url, 'products/cups', elsewhere.digest, elsewhere)).status, 201);
});
after(async () => {
  // Whatever the misbehaving clients did, the data directory is consistent afterwards.
  await reg.close();
  const report = await fsck(reg.dataDir, { maxManifestBytes: 4 * 1024 * 1024, metadata: reg.metadata });
  await reg.dispose();
  assert.deepEqual(report.problems, [], 'trellis fsck is clean');
});

async function listed(path: string): Promise<string[]> {
  const res = await fetch(`${reg.url}${path}`);
  const body = await res.json() as { manifests: { digest: string; size: number }[] };
  assert.equal(res.status, 200, `${path}: ${JSON.stringify(body)}`);
  return body.manifests.map((m) => m.digest).sort();
}

const digests = (...flavours: string[]) => flavours.map((f) => scoops[f]!.digest).sort();

test('GET /v2/<name>/manifests/<ref>/references by tag and by digest lists the referrers', async () => {
  const all = digests(...FLAVOURS);
  assert.deepEqual(await listed('/v2/products/cones/manifests/neapolitan/references'), all);
  assert.deepEqual(await listed(`/v2/products/cones/manifests/${cone.digest}/references`), all);
  const res = await fetch(`${reg.url}/v2/products/cones/manifests/neapolitan/references`);
  assert.equal(res.headers.get('content-type'), 'application/vnd.oci.image.index.v1+json');
  const unknown = await fetch(`${reg.url}/v2/products/cones/manifests/rocky-road/references`);
  assert.equal(unknown.status, 404);
  assert.equal((await unknown.json() as { errors: { code: string }[] }).errors[0]!.code, 'MANIFEST_UNKNOWN');
});

test('every comparison of the proposal, on one subject, in any letter case', async () => {
  const base = '/v2/products/cones/manifests/neapolitan/references';
  const cases: [string, string[]][] = [
    ['q_manifests__mediatype__contains=vanilla', digests('vanilla')],
    ['Q_MANIFESTS__MEDIATYPE__CONTAINS=VANILLA', digests('vanilla')],
    ['q_manifests__mediatype__notcontains=vanilla', digests('chocolate', 'strawberry')],
    // eq is an exact match: the bare flavour is not the whole type, the whole type (any case) is.
    ['q_manifests__mediatype__eq=chocolate', []],
    [`q_manifests__mediatype__eq=${scoop('CHOCOLATE').toUpperCase()}`, digests('chocolate')],
    ['q_manifests__mediatype__ne=strawberry', digests(...FLAVOURS)],
    [`q_manifests__mediatype__ne=${scoop('strawberry')}`, digests('vanilla', 'chocolate')],
    ['q_manifests__size__gt=400', digests(...FLAVOURS)],
    ['q_manifests__size__lt=600', []],
    ['q_manifests__size__gt=650&q_manifests__size__lt=800', digests('vanilla')],
    ['q_manifests__size__gt=800&Q_MANIFESTS__SIZE__LT=1000', digests('chocolate')],
    // Numbers compare as numbers, however written.
    ['q_size__gt=-1', digests(...FLAVOURS)],
    ['q_size__lt=1e4', digests(...FLAVOURS)],
    ['q_size__lt=1e3', digests('vanilla', 'chocolate')],
    ['q_size__gte=1.5e3', digests('strawberry')],
  ];
  for (const [query, expected] of cases) {
    assert.deepEqual(await listed(`${base}?${query}`), expected, query);
    assert.deepEqual(await listed(`/v2/products/cones/referrers/${cone.digest}?${query}`), expected, `referrers API: ${query}`);
  }
});

test('registry-wide: all references of the type chocolate', async () => {
  assert.deepEqual(await listed('/v2/_oci/references?q_manifests__mediatype__contains=chocolate'), [scoops.chocolate!.digest, elsewhere.digest].sort());
  assert.deepEqual(await listed('/v2/_oci/references?Q_MANIFESTS__MEDIATYPE__CONTAINS=CHOCOLATE&q_manifests__size__lt=850'), [elsewhere.digest]);
  assert.deepEqual(await listed('/v2/_oci/references?q_manifests__mediatype__contains=pistachio'), []);
});

test('a query no item can satisfy is an error with a meaningful message; an empty match is 200', async () => {
  const res = await fetch(`${reg.url}/v2/products/cones/manifests/neapolitan/references?q_manifests__flavour__eq=vanilla`);
  assert.equal(res.status, 400);
  const body = await res.json() as { errors: { code: string; message: string }[] };
  assert.equal(body.errors[0]!.code, 'QUERY_INVALID');
  assert.match(body.errors[0]!.message, /flavour/);
  assert.deepEqual(await listed('/v2/products/cones/manifests/neapolitan/references?q_manifests__mediatype__contains=mint'), []);
});
