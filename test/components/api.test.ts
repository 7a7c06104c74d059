// The components API filters by access before it reads: a component in a repository the caller
// cannot pull costs the same work as one that does not exist (no timing oracle), counted in rows
// the index hands out rather than by a clock.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { makeImage, pushBuilt } from '../helpers/oci-client.ts';
import { DEFAULT_SETTINGS } from '../../src/config/settings.ts';
import { Components, componentSettings } from '../../src/components/index.ts';
import type { ComponentIndex } from '../../src/metadata/index.ts';
import { ComponentsApi } from '../../src/registry/components.ts';
import { RateLimiter } from '../../src/registry/rate-limit.ts';
import type { ApiContext } from '../../src/registry/context.ts';
import { OciError } from '../../src/oci/errors.ts';

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry({ componentRepositoryPrefixes: 'apps/', queryRatePerSecond: 0 });
});
after(() => reg.dispose());

test('versions of a hidden component are never read: the same rows as for an absent one', async () => {
  for (const repo of ['apps/hidden', 'apps/shown']) {
    for (const tag of ['1.0.0', '1.1.0', '2.0.0']) assert.equal((await pushBuilt(reg.url, repo, tag, makeImage({ annotations: { repo } }))).status, 201);
  }
  const components = await Components.open(reg.registry, componentSettings({ ...DEFAULT_SETTINGS, componentRepositoryPrefixes: 'apps/' }), pino({ level: 'silent' }));
  // Count every version row the index materialises for the API.
  let loaded = 0;
  const index = components.index;
  const counting: ComponentIndex = Object.create(index);
  counting.versionsOf = async (name, include) => {
    const rows = await index.versionsOf(name, include);
    loaded += rows.length;
    return rows;
  };
  Object.defineProperty(components, 'index', { value: counting });
  const api = new ComponentsApi(components);
  const call = async (path: string) => {
    let status = 0;
    let body: Buffer = Buffer.alloc(0);
    const res = { writeHead(s: number) { status = s; }, end(b?: Buffer) { body = b ?? Buffer.alloc(0); } };
    const ctx = {
      req: { method: 'GET' }, res, url: new URL(path, 'http://registry.invalid'), head: false, registry: reg.registry,
      limits: { maxManifestBytes: 4 << 20, maxListPage: 1000, defaultReferrersPage: 250, maxReferrersBytes: 4 << 20, bodyIdleTimeoutMs: 0 }, log: pino({ level: 'silent' }),
      access: { canPull: (repository: string) => repository !== 'apps/hidden' }, rateLimits: { query: new RateLimiter({ perSecond: 0, burst: 0 }) }, client: 'test',
    } as unknown as ApiContext;
    loaded = 0;
    try {
      await api.handle(ctx);
    } catch (err) {
      if (!(err instanceof OciError)) throw err;
      return { status: err.status, body: err.body().replaceAll('apps/hidden', 'X').replaceAll('apps/absent', 'X'), loaded };
    }
    return { status, body: body.toString(), loaded };
  };
  const shown = await call('/v2/_trellis/components/versions?component=apps/shown');
  assert.equal(shown.status, 200);
  assert.equal(shown.loaded, 3, 'the control: a visible component reads its versions');
  for (const endpoint of ['versions', 'version']) {
    const hidden = await call(`/v2/_trellis/components/${endpoint}?component=apps/hidden&version=1.0.0`);
    const absent = await call(`/v2/_trellis/components/${endpoint}?component=apps/absent&version=1.0.0`);
    assert.equal(hidden.status, 404);
    assert.deepEqual(hidden, absent, `${endpoint}: a hidden component answers and costs what an absent one does`);
    assert.equal(hidden.loaded, 0);
  }
});
