// `trellis query` and `trellis components` against Trellis's extensions: OCM component versions
// pushed the way OCM stores them are listed, their versions filtered by a constraint, one shown;
// a registry without the extension gets a clear refusal.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pushComponentVersion } from '../components/ocm-client.ts';
import { trellisCli, trellisOk } from './run.ts';

const NAME = 'github.com/acme.org/cli-demo';
let reg: TestRegistry;
let shipped = '';

before(async () => {
  reg = await startTestRegistry();
  for (const version of ['1.0.0', '1.2.0', '2.0.0-rc.1', '2.0.0']) {
    const pushed = await pushComponentVersion(reg.url, { name: NAME, version, form: 'json', labels: { team: 'blue' } });
    if (version === '1.2.0') shipped = pushed.digest;
  }
});
after(() => reg.dispose());

const json = async <T>(...args: string[]) => JSON.parse((await trellisOk([...args, '-o', 'json'])).stdout) as T;

test('components list, versions (constraint, latest), show, owners', async () => {
  const listed = await json<{ registry: string; components: { name: string; latest: string; versionCount: number; repository: string }[] }>('components', 'list', reg.host);
  const mine = listed.components.find((c) => c.name === NAME);
  assert.deepEqual([mine?.latest, mine?.versionCount, mine?.repository], ['2.0.0', 4, `component-descriptors/${NAME}`]);
  const filtered = await json<{ components: { name: string }[] }>('components', 'list', reg.host, 'q_labels__team__eq=blue');
  assert.deepEqual(filtered.components.map((c) => c.name), [NAME]);

  const versions = await json<{ component: string; versions: { version: string }[] }>('components', 'versions', reg.host, NAME, '--constraint', '>=1.0.0 <1.5.0');
  assert.deepEqual(versions.versions.map((v) => v.version), ['1.2.0', '1.0.0']);
  const latest = await json<{ versions: { version: string; digest: string }[] }>('components', 'versions', reg.host, NAME, '--latest');
  assert.deepEqual(latest.versions.map((v) => v.version), ['2.0.0']);
  const table = (await trellisOk(['components', 'versions', reg.host, NAME])).stdout;
  assert.match(table, /^VERSION\s+REPOSITORY\s+TAG\s+DIGEST\n2\.0\.0 /);

  const shown = await json<{ name: string; version: string; digest: string }>('components', 'show', reg.host, NAME, '1.2.0');
  assert.deepEqual([shown.name, shown.version, shown.digest], [NAME, '1.2.0', shipped]);
  const owners = await json<{ owners: { name: string; version: string }[] }>('components', 'owners', reg.host, shipped);
  assert.ok(owners.owners.some((o) => o.name === NAME && o.version === '1.2.0'));

  const missing = await trellisCli(['components', 'show', reg.host, NAME, '9.9.9']);
  assert.equal(missing.code, 3, missing.stderr);
});

test('components and registry-wide query refuse a registry without the extensions', async () => {
  // A registry that answers 404 to everything but /v2/: no extensions at all.
  const { createServer } = await import('node:http');
  const bare = createServer((req, res) => {
    res.writeHead(req.url === '/v2/' ? 200 : 404, { 'Content-Type': 'application/json' });
    res.end('{}');
  });
  await new Promise<void>((r) => bare.listen(0, '127.0.0.1', () => r()));
  const { port } = bare.address() as { port: number };
  try {
    const components = await trellisCli(['components', 'list', `127.0.0.1:${port}`]);
    assert.equal(components.code, 2);
    assert.match(components.stderr, /does not offer the components extension/);
    const search = await trellisCli(['query', `127.0.0.1:${port}`, 'q_annotations__kind__eq=sbom']);
    assert.equal(search.code, 2);
    assert.match(search.stderr, /give a subject/);
  } finally {
    bare.close();
  }
});
