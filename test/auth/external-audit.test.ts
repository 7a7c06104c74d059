// Trusting an external token issuer (its JWK Set), and the audit log: one line for every denied
// request and every push and delete.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey } from 'jose';
import { pino } from 'pino';
import bcrypt from 'bcryptjs';
import { DEFAULT_SETTINGS } from '../../src/config/settings.ts';
import { startRegistry } from '../../src/cli/serve.ts';
import { makeImage, sha256 } from '../helpers/oci-client.ts';
import { startAuthRegistry } from './setup.ts';

test('tokens from a trusted external issuer: its scopes decide, its key, issuer and audience are checked', { timeout: 60_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-external-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const issuerKeys = await generateKeyPair('RS256', { extractable: true });
  await writeFile(join(dir, 'jwks.json'), JSON.stringify({ keys: [{ ...(await exportJWK(issuerKeys.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' }] }));
  const r = await startAuthRegistry(t, {
    users: [],
    auth: { token: { realm: 'https://auth.example.com/token', service: 'registry.example.com', external: { jwks: join(dir, 'jwks.json'), issuer: 'https://auth.example.com' } } },
  });
  const sign = (access: unknown[], options: { key?: CryptoKey; audience?: string; issuer?: string } = {}) =>
    new SignJWT({ access }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setIssuer(options.issuer ?? 'https://auth.example.com')
      .setAudience(options.audience ?? 'registry.example.com').setSubject('ci-bot').setIssuedAt().setExpirationTime('2m')
      .sign(options.key ?? issuerKeys.privateKey);
  const push = await sign([{ type: 'repository', name: 'apps/one', actions: ['pull', 'push'] }, { type: 'registry', name: 'catalog', actions: ['*'] }]);
  assert.equal((await r.push('apps/one', 'v1', `Bearer ${push}`)).status, 201);
  assert.equal((await r.push('apps/two', 'v1', `Bearer ${push}`)).status, 401, 'no scope for apps/two');
  const challenge = (await r.call('/v2/')).headers.get('www-authenticate');
  assert.equal(challenge, 'Bearer realm="https://auth.example.com/token",service="registry.example.com"');
  assert.deepEqual((await r.call('/v2/_catalog', { auth: `Bearer ${push}` })).json().repositories, ['apps/one']);
  const other = await generateKeyPair('RS256');
  for (const bad of [
    await sign([{ type: 'repository', name: 'apps/one', actions: ['pull'] }], { key: other.privateKey }),
    await sign([{ type: 'repository', name: 'apps/one', actions: ['pull'] }], { audience: 'elsewhere' }),
    await sign([{ type: 'repository', name: 'apps/one', actions: ['pull'] }], { issuer: 'https://evil.example.com' }),
  ]) {
    assert.equal((await r.call('/v2/apps/one/tags/list', { auth: `Bearer ${bad}` })).status, 401);
  }
  assert.equal((await r.call('/v2/_trellis/token')).status, 404, 'no built-in token endpoint in external mode');
});

test('every denied request and every push and delete is one audit line', { timeout: 60_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-audit-'));
  await writeFile(join(dir, 'htpasswd'), `alice:${bcrypt.hashSync('pw', 4)}\nbob:${bcrypt.hashSync('pw', 4)}\n`);
  await writeFile(join(dir, 'auth.json'), JSON.stringify({ htpasswd: 'htpasswd', policies: { app: { users: { alice: ['pull', 'push', 'delete'], bob: ['pull'] } } } }));
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({ write(chunk, _enc, done) { for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l)); done(); } });
  const running = await startRegistry({ ...DEFAULT_SETTINGS, listen: '127.0.0.1:0', data: join(dir, 'data'), authFile: join(dir, 'auth.json'), indexFlushMinMs: 5 }, pino({ level: 'info' }, sink));
  // One hook, in order: the server stops (and flushes its layouts) before its folder goes.
  t.after(async () => {
    await running.close();
    await rm(dir, { recursive: true, force: true });
  });
  const auth = (user: string) => ({ Authorization: `Basic ${Buffer.from(`${user}:pw`).toString('base64')}` });
  const image = makeImage();
  for (const blob of image.blobs) {
    const open = await fetch(`${running.url}/v2/app/blobs/uploads/`, { method: 'POST', headers: auth('alice') });
    const url = new URL(open.headers.get('location')!, running.url);
    url.searchParams.set('digest', sha256(blob));
    assert.equal((await fetch(url, { method: 'PUT', body: blob, headers: auth('alice') })).status, 201);
  }
  const put = await fetch(`${running.url}/v2/app/manifests/v1`, { method: 'PUT', body: image.bytes, headers: { ...auth('alice'), 'Content-Type': image.mediaType } });
  assert.equal(put.status, 201);
  assert.equal((await fetch(`${running.url}/v2/app/manifests/v1`, { method: 'DELETE', headers: auth('bob') })).status, 403);
  assert.equal((await fetch(`${running.url}/v2/app/manifests/v1`, { headers: auth('bob') })).status, 200);
  assert.equal((await fetch(`${running.url}/v2/app/manifests/${image.digest}`, { method: 'DELETE', headers: auth('alice') })).status, 202);
  assert.equal((await fetch(`${running.url}/v2/app/tags/list`, { headers: { Authorization: `Basic ${Buffer.from('bob:nope').toString('base64')}` } })).status, 401);
  await new Promise((resolve) => setImmediate(resolve));
  const audit = lines.filter((l) => l.audit === true);
  const manifestPush = audit.find((l) => l.outcome === 'push' && l.reference === 'v1');
  assert.ok(manifestPush, JSON.stringify(audit));
  assert.equal(manifestPush.identity, 'alice');
  assert.equal(manifestPush.status, 201);
  assert.equal(manifestPush.repository, 'app');
  assert.ok(manifestPush.client);
  assert.equal(audit.filter((l) => l.outcome === 'push').length, 5, 'two blob uploads (POST and PUT each) and the manifest');
  assert.ok(audit.some((l) => l.outcome === 'push' && l.digest === sha256(image.blobs[0]!)), 'the blob digest is logged');
  assert.deepEqual(audit.filter((l) => l.outcome === 'denied').map((l) => [l.identity, l.status, l.action ?? l.reason]), [['bob', 403, 'delete'], ['anonymous', 401, 'wrong user name or password']]);
  const deleted = audit.find((l) => l.outcome === 'delete');
  assert.deepEqual([deleted?.identity, deleted?.status, deleted?.reference], ['alice', 202, image.digest]);
  assert.equal(audit.filter((l) => l.method === 'GET' && l.outcome !== 'denied').length, 0, 'allowed pulls are not audited');
});
