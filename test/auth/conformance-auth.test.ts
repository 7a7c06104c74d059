// The official conformance suite (1.1 profile) with access control on: it signs in with
// OCI_USERNAME/OCI_PASSWORD through the Basic → Bearer token flow. Anonymous callers hold no right.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { requirePeer } from '../helpers/peers.ts';
import { assertConformancePasses } from '../helpers/conformance.ts';
import { PASSWORD, startAuthRegistry } from './setup.ts';

test('conformance suite passes fully with token auth on (OCI_VERSION=1.1)', { timeout: 400_000 }, async (t) => {
  const conformance = requirePeer(t, 'conformance');
  if (!conformance) return;
  const r = await startAuthRegistry(t, {
    users: ['conformance', 'bystander'],
    auth: {
      policies: { 'conformance/**': { users: { conformance: ['admin'] } }, elsewhere: { users: { bystander: ['pull'] } } },
      token: { service: 'trellis-conformance', expirySeconds: 300 },
    },
  });
  // Proof that the registry is closed to anonymous callers while the suite runs.
  assert.equal((await r.call('/v2/')).status, 401);
  assert.equal((await r.call('/v2/conformance/repo1/tags/list')).status, 401);
  const work = join(r.dir, 'work');
  await mkdir(work);
  await assertConformancePasses(conformance, { host: r.reg.host, profile: '1.1', work, env: { OCI_USERNAME: 'conformance', OCI_PASSWORD: PASSWORD } });
});

