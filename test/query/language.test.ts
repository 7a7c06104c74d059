import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QueryInvalid } from '../../src/query/language.ts';
import { compareVersions, manifestAttributes, matches, orderKey, parseQuery } from '../../src/query/index.ts';

const known = (path: string) => !path.startsWith('nosuch');
const parse = (query: string) => parseQuery(new URLSearchParams(query), known);

test('order keys sort versions as semver, times as time and numbers as numbers', () => {
  const versions = ['1.10.0', '1.2.0', '1.2.0-rc.1', '1.2.0-rc.10', '1.2.0-rc.2', '1.2.0-alpha', 'v2', '0.9', '1.2.0-rc.2.1'];
  const sorted = [...versions].sort(compareVersions);
  assert.deepEqual(sorted, ['0.9', '1.2.0-alpha', '1.2.0-rc.1', '1.2.0-rc.2', '1.2.0-rc.2.1', '1.2.0-rc.10', '1.2.0', '1.10.0', 'v2']);
  assert.ok(orderKey('401')! > orderKey('400')!);
  assert.ok(orderKey('1000')! > orderKey('999')!);
  assert.ok(orderKey('2024-03-01T10:00:00+02:00')! < orderKey('2024-03-01T09:00:00Z')!);
  assert.ok(orderKey('2023-12-31')! < orderKey('2024-01-01T00:00:00Z')!);
  assert.ok(orderKey('-5')! < orderKey('-1.5')!);
  assert.ok(orderKey('-1.5')! < orderKey('1e-3')!);
  // Numbers compare as numbers however written, with each other and with versions.
  const numbers = ['-1e3', '-5', '-1.5', '-0.5', '0', '-0', '1e-3', '.5', '1', '1.5e0', '2', '1e1', '400', '401', '1e4', '12345678901234567890'];
  const byKey = [...numbers].sort((a, b) => (orderKey(a)! < orderKey(b)! ? -1 : orderKey(a)! > orderKey(b)! ? 1 : 0));
  assert.deepEqual(byKey.filter((n) => n !== '-0'), numbers.filter((n) => n !== '-0'));
  assert.equal(orderKey('-0'), orderKey('0'));
  assert.equal(orderKey('1e4'), orderKey('10000'));
  assert.ok(orderKey('1.5e0')! > orderKey('1.0.0')! && orderKey('1.5e0')! < orderKey('1.0.1')!, 'a fraction sits between versions');
  assert.ok(orderKey('2')! > orderKey('1.9.9')! && orderKey('2')! < orderKey('2.0.1')!);
  assert.equal(orderKey('latest'), null);
  assert.equal(orderKey('sha256:abc'), null);
  // different kinds never compare: a time key is not inside the version range
  assert.notEqual(orderKey('2024-01-01')!.charAt(0), orderKey('2.0.0')!.charAt(0));
});

test('parameter names are case-insensitive; comparisons, attributes and values are checked', () => {
  const q = parse('Q_Annotations__Org.OpenContainers.Image.Version__GT=1.4.0&q_size__lt=600');
  assert.deepEqual(q.conditions.map((c) => [c.path, c.comparison, c.value]), [
    ['annotations__org.opencontainers.image.version', 'gt', '1.4.0'], ['size', 'lt', '600']]);
  const bad = (query: string, message: RegExp) => assert.throws(() => parse(query), (err: unknown) => err instanceof QueryInvalid && message.test(err.message));
  bad('q_size__between=1', /unknown comparison "between"/);
  bad('q_size=1', /expected q_<attribute>/);
  bad('q_nosuch__eq=1', /no item has the attribute "nosuch"/);
  bad('q_size__gt=abc', /gt needs a number, a version/);
  bad('q_size__exists=maybe', /exists takes true or false/);
  bad('q_mediatype__contains=', /non-empty value/);
  bad('sort=nosuch', /sort: no item has/);
  bad('sort=size&order=up', /order must be asc or desc/);
  assert.deepEqual(parse('sort=created&order=desc').sort, { path: 'annotations__org.opencontainers.image.created', descending: true });
});

test('in-memory evaluation: any element matches; negations need the attribute; kinds do not mix', () => {
  const item: Record<string, string[]> = {
    layers__mediatype: ['application/vnd.oci.image.layer.v1.tar+gzip', 'application/vnd.cncf.helm.chart.content.v1.tar+gzip'],
    'annotations__org.opencontainers.image.version': ['2.10.1'],
    size: ['512'],
  };
  const values = (path: string) => item[path] ?? [];
  const holds = (query: string) => matches(parse(query), values);
  assert.ok(holds('q_layers__mediatype__contains=HELM'));
  assert.ok(holds('q_layers__mediatype__eq=application/vnd.oci.image.layer.v1.tar%2Bgzip'));
  assert.ok(!holds('q_layers__mediatype__notcontains=helm'));
  assert.ok(holds('q_annotations__org.opencontainers.image.version__gt=2.3'));
  assert.ok(!holds('q_annotations__org.opencontainers.image.version__gt=2024-01-01T00:00:00Z'));
  assert.ok(holds('q_size__gt=400&q_size__lt=600'));
  assert.ok(holds('q_size__gt=-1'), 'a negative bound compares with whole numbers');
  assert.ok(holds('q_size__lt=1e4&q_size__gte=5.12e2'));
  assert.ok(!holds('q_size__lt=-1'));
  assert.ok(holds('q_annotations__org.opencontainers.image.version__gt=-1'));
  assert.ok(!holds('q_size__gt=400&q_size__lt=500'));
  assert.ok(!holds('q_artifacttype__ne=x'), 'ne needs the attribute');
  assert.ok(holds('q_artifacttype__exists=false'));
});

test('manifest attributes flatten every field, keep annotation keys whole and add registry facts', () => {
  const attributes = manifestAttributes({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: 'sha256:aa', size: 10 },
    layers: [{ mediaType: 'A/B', digest: 'sha256:bb', size: 1 }, { mediaType: 'A/B', digest: 'sha256:cc', size: 2 }],
    annotations: { 'io.cncf.notary.x509chain.thumbprint#S256': '["ABC"]' },
  }, { digest: 'sha256:dd', size: 300, pushedAt: 0, artifactType: 'application/vnd.oci.image.config.v1+json' });
  const paths = new Map<string, string[]>();
  for (const a of attributes) paths.set(a.path, [...(paths.get(a.path) ?? []), a.value]);
  assert.deepEqual(paths.get('layers__mediatype'), ['a/b'], 'duplicates are stored once');
  assert.deepEqual(paths.get('annotations__io.cncf.notary.x509chain.thumbprint#s256'), ['["abc"]']);
  assert.deepEqual(paths.get('artifacttype'), ['application/vnd.oci.image.config.v1+json']);
  assert.deepEqual(paths.get('pushedat'), ['1970-01-01t00:00:00.000z']);
  assert.deepEqual(paths.get('size'), ['300']);
  assert.deepEqual(paths.get('config__size'), ['10']);
});

test('OCI-Filters-Applied entries are visible ASCII and decode to the parameter names', async () => {
  const { encodeAppliedFilter, decodeAppliedFilter } = await import('../../src/query/language.ts');
  for (const name of ['q_annotations__preis€__eq', 'q_annotations__a,b%c d__exists', 'q_annotations__😀\u0000__eq', 'q_size__gt']) {
    const entry = encodeAppliedFilter(name);
    assert.match(entry, /^[\x21-\x7e]+$/);
    assert.ok(!entry.includes(','));
    assert.equal(decodeAppliedFilter(entry), name);
  }
  assert.equal(encodeAppliedFilter('q_size__gt'), 'q_size__gt');
});
