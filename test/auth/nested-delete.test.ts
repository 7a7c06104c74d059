// Deleting a nested-namespace member that an ancestor's index lists: refused, and the refusal names
// the ancestor only to a caller who may pull it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeImage, OCI_INDEX } from '../helpers/oci-client.ts';
import { startAuthRegistry } from './setup.ts';

test('a refused delete of a nested member does not name an ancestor the caller cannot pull', { timeout: 60_000 }, async (t) => {
  const r = await startAuthRegistry(t, {
    users: ['admin', 'bob', 'carol'],
    auth: {
      admins: { users: ['admin'] },
      policies: {
        vault: { users: { carol: ['pull'] } },
        'vault/open': { users: { bob: ['pull', 'push', 'delete'], carol: ['pull', 'push', 'delete'] } },
      },
    },
  });
  const admin = r.basic('admin');
  const member = makeImage();
  assert.equal((await r.push('vault/open', 'v1', admin, member)).status, 201);
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_INDEX,
    manifests: [{ ...member.descriptor, annotations: { 'dev.trellis.repository': 'open' } }],
  }));
  const pushed = await r.call('/v2/vault/manifests/bundle', { method: 'PUT', body: index, auth: admin, headers: { 'Content-Type': OCI_INDEX } });
  assert.equal(pushed.status, 201, pushed.body.toString());

  const asBob = await r.call(`/v2/vault/open/manifests/${member.digest}`, { method: 'DELETE', auth: r.basic('bob') });
  assert.equal(asBob.status, 409);
  const bobError = asBob.json().errors[0];
  assert.doesNotMatch(JSON.stringify(bobError), /vault[^/]|"vault"/, 'bob cannot pull vault: not named');
  assert.match(bobError.message, /an index in an ancestor repository/);
  assert.deepEqual(bobError.detail.referencedBy, []);

  const asCarol = await r.call(`/v2/vault/open/manifests/${member.digest}`, { method: 'DELETE', auth: r.basic('carol') });
  assert.equal(asCarol.status, 409);
  assert.match(asCarol.json().errors[0].message, /an index in vault;/);
});
