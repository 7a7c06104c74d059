// Access control over HTTP: who may pull, push and delete, what a refused caller learns (nothing
// about repositories it cannot pull), and every kind of bad credential or token.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import bcrypt from 'bcryptjs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { SignJWT, calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose';
import { RobotStore } from '../../src/auth/robots.ts';
import { OCI_INDEX, makeImage, sha256 } from '../helpers/oci-client.ts';
import { PASSWORD, startAuthRegistry, type AuthRegistry } from './setup.ts';

const AUTH = {
  groups: { team: ['alice'], ci: ['dave'] },
  admins: { users: ['admin'] },
  policies: {
    'public/**': { anonymous: ['pull'], users: { alice: ['pull', 'push'] } },
    team: { groups: { team: ['pull', 'push', 'delete'], ci: ['pull', 'push'] }, users: { bob: ['pull'] } },
    'team/secret': { users: { alice: ['pull'] } },
    'private/**': { users: { carol: ['admin'] } },
  },
  token: { service: 'trellis', issuer: 'trellis-test', expirySeconds: 60 },
};

async function setup(t: import('node:test').TestContext, settings = {}): Promise<AuthRegistry> {
  const r = await startAuthRegistry(t, { users: ['admin', 'alice', 'bob', 'carol', 'dave'], auth: AUTH, settings });
  const admin = r.basic('admin');
  for (const [repo, ref] of [['team/app', 'v1'], ['team/secret', 'v1'], ['public/base', 'v1'], ['private/x', 'v1']] as const) {
    assert.equal((await r.push(repo, ref, admin)).status, 201, `seeding ${repo}`);
  }
  return r;
}

/** Signs a token with the registry's own generated key, with any claims. */
async function ownKeyToken(r: AuthRegistry, claims: Record<string, unknown>, options: { issuer?: string; audience?: string; exp?: number | null; nbf?: number } = {}): Promise<string> {
  const jwk = JSON.parse(await readFile(join(r.reg.dataDir, '_trellis', 'token-key.json'), 'utf8')) as JWK;
  const { d: _d, ...pub } = jwk;
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: await calculateJwkThumbprint(pub) })
    .setIssuer(options.issuer ?? 'trellis-test').setAudience(options.audience ?? 'trellis').setSubject('alice')
    .setIssuedAt(now - 120).setNotBefore(options.nbf ?? now - 120);
  // `exp: null` leaves the claim out.
  if (options.exp !== null) jwt.setExpirationTime(options.exp ?? now + 60);
  return jwt.sign(await importJWK(jwk, 'ES256'));
}

/** A GET with Basic credentials from a chosen loopback address (fetch cannot pick its source). */
function getFrom(r: AuthRegistry, from: string, path: string, auth: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const url = new URL(path, r.base);
    const req = httpRequest({ host: url.hostname, port: url.port, path: url.pathname + url.search, headers: { Authorization: auth }, localAddress: from, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end();
  });
}

const teamAppPush = [{ type: 'repository', name: 'team/app', actions: ['pull', 'push'] }];

test('access control over HTTP', { timeout: 120_000 }, async (t) => {
  const r = await setup(t);
  const { call, basic } = r;

  await t.test('sign-in: wrong password and unknown user are 401 with a Bearer challenge', async () => {
    for (const auth of [basic('alice', 'wrong'), basic('mallory'), 'Basic !!!']) {
      const answer = await call('/v2/team/app/tags/list', { auth });
      assert.equal(answer.status, 401);
      assert.equal(answer.json().errors[0].code, 'UNAUTHORIZED');
      assert.match(answer.headers.get('www-authenticate') ?? '', /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/v2\/_trellis\/token",service="trellis"/);
    }
    const token = await call('/v2/_trellis/token?scope=repository:team/app:pull', { auth: basic('alice', 'wrong') });
    assert.equal(token.status, 401);
    assert.equal((await call('/v2/team/app/tags/list', { auth: basic('alice') })).status, 200);
  });

  await t.test('pull, push and delete follow the most specific policy', async () => {
    assert.equal((await r.push('team/app', 'alice', basic('alice'))).status, 201);
    assert.equal((await call('/v2/team/app/manifests/v1', { auth: basic('bob') })).status, 200);
    const bobPush = await r.push('team/app', 'bob', basic('bob'));
    assert.equal(bobPush.status, 403);
    assert.equal(JSON.parse(bobPush.body.toString()).errors[0].code, 'DENIED');
    const bobDelete = await call('/v2/team/app/manifests/v1', { method: 'DELETE', auth: basic('bob') });
    assert.equal(bobDelete.status, 403);
    // team/secret overrides team: bob loses pull, alice keeps only pull.
    assert.equal((await call('/v2/team/secret/manifests/v1', { auth: basic('bob') })).status, 403);
    assert.equal((await call('/v2/team/secret/manifests/v1', { auth: basic('alice') })).status, 200);
    assert.equal((await r.push('team/secret', 'x', basic('alice'))).status, 403);
    // Nested namespaces inherit: team/app/sub follows team, team/secret/deeper follows team/secret.
    assert.equal((await r.push('team/app/sub', 'v1', basic('alice'))).status, 201);
    assert.equal((await call('/v2/team/secret/deeper/tags/list', { auth: basic('bob') })).status, 403);
    // admin action: carol may delete in private/**.
    const pushed = await r.push('private/y', 'v1', basic('carol'));
    assert.equal(pushed.status, 201);
    assert.equal((await call(`/v2/private/y/manifests/${pushed.digest}`, { method: 'DELETE', auth: basic('carol') })).status, 202);
    // Anonymous push: 401 with the scope a client should ask for.
    const anonymous = await r.push('team/app', 'anon', undefined);
    assert.equal(anonymous.status, 401);
    const challenge = (await call('/v2/team/app/blobs/uploads/', { method: 'POST' })).headers.get('www-authenticate');
    assert.match(challenge ?? '', /scope="repository:team\/app:pull,push"/);
  });

  await t.test('a forbidden repository and a missing one look the same', async () => {
    const pairs: [string, string, string | undefined][] = [
      ['/v2/team/secret/manifests/v1', '/v2/team/secret/nothing/manifests/v1', basic('bob')],
      ['/v2/private/x/manifests/v1', '/v2/private/nothing/manifests/v1', basic('bob')],
      ['/v2/private/x/tags/list', '/v2/private/nothing/tags/list', undefined],
      ['/v2/private/x/manifests/v1', '/v2/private/nothing/manifests/v1', undefined],
    ];
    for (const [existing, missing, auth] of pairs) {
      const a = await call(existing, { auth });
      const b = await call(missing, { auth });
      assert.ok(a.status === 401 || a.status === 403, `${existing}: ${a.status}`);
      assert.equal(a.status, b.status);
      assert.equal(a.body.toString(), b.body.toString());
      assert.doesNotMatch(a.body.toString(), /private|secret/);
    }
  });

  await t.test('GET /v2/ challenges bare requests in token mode, so logins check credentials', async () => {
    const bare = await call('/v2/');
    assert.equal(bare.status, 401);
    assert.match(bare.headers.get('www-authenticate') ?? '', /^Bearer realm=/);
    assert.equal((await call('/v2/', { auth: `Bearer ${await r.token(undefined, [])}` })).status, 200, 'anonymous may pull somewhere');
    assert.equal((await call('/v2/', { auth: `Bearer ${await r.token('bob', [])}` })).status, 200);
    assert.equal((await call('/v2/', { auth: basic('bob', 'wrong') })).status, 401);
  });

  await t.test('anonymous read where the policy allows it, and nowhere else', async () => {
    assert.equal((await call('/v2/public/base/manifests/v1')).status, 200);
    assert.equal((await call('/v2/public/base/tags/list')).status, 200);
    assert.equal((await call('/v2/team/app/manifests/v1')).status, 401);
    const anonymousToken = await r.token(undefined, ['repository:public/base:pull', 'repository:team/app:pull']);
    assert.deepEqual(decodeJwt(anonymousToken).access, [{ type: 'repository', name: 'public/base', actions: ['pull'] }]);
    assert.equal((await call('/v2/public/base/manifests/v1', { auth: `Bearer ${anonymousToken}` })).status, 200);
    assert.equal((await call('/v2/team/app/manifests/v1', { auth: `Bearer ${anonymousToken}` })).status, 401);
  });

  await t.test('tokens grant only the subset of the requested scopes the user holds', async () => {
    const bob = await r.token('bob', ['repository:team/app:pull,push,delete', 'repository:team/secret:pull', 'repository:private/x:*']);
    assert.deepEqual(decodeJwt(bob).access, [{ type: 'repository', name: 'team/app', actions: ['pull'] }]);
    const carol = await r.token('carol', ['repository:private/x:*']);
    assert.deepEqual((decodeJwt(carol).access as { actions: string[] }[])[0]!.actions.sort(), ['delete', 'pull', 'push']);
    // OAuth2 POST with grant_type=password, then refresh_token.
    const form = new URLSearchParams({ grant_type: 'password', username: 'alice', password: PASSWORD, scope: 'repository:team/app:pull,push', service: 'trellis', client_id: 'test', access_type: 'offline' });
    const posted = await call('/v2/_trellis/token', { method: 'POST', body: form, headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
    assert.equal(posted.status, 200);
    const { access_token: access, refresh_token: refresh } = posted.json() as { access_token: string; refresh_token: string };
    assert.equal((await r.push('team/app', 'oauth', `Bearer ${access}`)).status, 201);
    const refreshed = await call('/v2/_trellis/token', { method: 'POST', body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refresh, scope: 'repository:team/app:pull', service: 'trellis' }) });
    assert.equal(refreshed.status, 200);
    assert.deepEqual(decodeJwt(refreshed.json().access_token).access, [{ type: 'repository', name: 'team/app', actions: ['pull'] }]);
    // A refresh token is not an access token.
    assert.equal((await call('/v2/team/app/tags/list', { auth: `Bearer ${refresh}` })).status, 401);
  });

  await t.test('a token scoped for pull cannot push, nor reach another repository', async () => {
    const pullOnly = await r.token('alice', ['repository:team/app:pull']);
    const push = await call('/v2/team/app/blobs/uploads/', { method: 'POST', auth: `Bearer ${pullOnly}` });
    assert.equal(push.status, 401);
    assert.match(push.headers.get('www-authenticate') ?? '', /scope="repository:team\/app:pull,push",error="insufficient_scope"/);
    assert.equal((await call('/v2/team/app/tags/list', { auth: `Bearer ${pullOnly}` })).status, 200);
    assert.equal((await call('/v2/public/base/tags/list', { auth: `Bearer ${pullOnly}` })).status, 401, 'a token covers only its scopes');
  });

  await t.test('expired, not-yet-valid, forged and foreign tokens are refused', async () => {
    const now = Math.floor(Date.now() / 1000);
    const valid = await ownKeyToken(r, { access: teamAppPush });
    assert.equal((await call('/v2/team/app/tags/list', { auth: `Bearer ${valid}` })).status, 200, 'the hand-signed control token works');
    const other = await generateKeyPair('ES256', { extractable: true });
    const otherJwk = await exportJWK(other.publicKey);
    const ownJwk = JSON.parse(await readFile(join(r.reg.dataDir, '_trellis', 'token-key.json'), 'utf8')) as JWK;
    const { d: _d, ...ownPublic } = ownJwk;
    const forged = await new SignJWT({ access: teamAppPush }).setProtectedHeader({ alg: 'ES256', kid: await calculateJwkThumbprint(ownPublic) })
      .setIssuer('trellis-test').setAudience('trellis').setSubject('alice').setIssuedAt().setExpirationTime('1m').sign(other.privateKey);
    assert.ok(otherJwk.x);
    const bad = {
      expired: await ownKeyToken(r, { access: teamAppPush }, { exp: now - 5 }),
      neverExpires: await ownKeyToken(r, { access: teamAppPush }, { exp: null }),
      notYetValid: await ownKeyToken(r, { access: teamAppPush }, { nbf: now + 60 }),
      wrongAudience: await ownKeyToken(r, { access: teamAppPush }, { audience: 'another-registry' }),
      wrongIssuer: await ownKeyToken(r, { access: teamAppPush }, { issuer: 'someone-else' }),
      forged,
      unsigned: `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'alice', iss: 'trellis-test', aud: 'trellis', exp: now + 60, access: teamAppPush })).toString('base64url')}.`,
      garbage: 'not-a-token',
    };
    for (const [what, token] of Object.entries(bad)) {
      const answer = await call('/v2/team/app/tags/list', { auth: `Bearer ${token}` });
      assert.equal(answer.status, 401, what);
      assert.match(answer.headers.get('www-authenticate') ?? '', /error="invalid_token"/, what);
    }
  });

  await t.test('mount from a repository the caller cannot pull falls back to an upload and reveals nothing', async () => {
    const secret = makeImage();
    assert.equal((await r.push('private/mountsrc', 'v1', basic('admin'), secret)).status, 201);
    const layer = sha256(secret.blobs[1]!);
    const answers = [];
    for (const query of [`mount=${layer}&from=private/mountsrc`, `mount=${layer}&from=private/nothing`, `mount=${layer}`]) {
      const answer = await call(`/v2/public/copy/blobs/uploads/?${query}`, { method: 'POST', auth: basic('alice') });
      assert.equal(answer.status, 202, query);
      answers.push(answer);
    }
    assert.deepEqual(answers.map((a) => a.body.toString()), ['', '', '']);
    assert.equal((await call(`/v2/public/copy/blobs/${layer}`, { auth: basic('alice') })).status, 404);
    // With pull on the source the same mount works.
    const ok = await call(`/v2/private/copy/blobs/uploads/?mount=${layer}&from=private/mountsrc`, { method: 'POST', auth: basic('carol') });
    assert.equal(ok.status, 201);
  });

  await t.test('catalog pages never show, count or point at repositories the caller cannot pull', async () => {
    const all = async (auth: string | undefined, n: number, hidden = /private|secret/) => {
      const names: string[] = [];
      let path: string | undefined = `/v2/_catalog?n=${n}`;
      let pages = 0;
      while (path) {
        const answer = await call(path, { auth });
        assert.equal(answer.status, 200);
        const page = answer.json().repositories as string[];
        assert.ok(page.length <= n);
        const link = answer.headers.get('link');
        if (link) {
          assert.equal(page.length, n, 'a page with a next link is full');
          assert.ok(!hidden.test(decodeURIComponent(link)), `cursor leaks: ${link}`);
        }
        names.push(...page);
        path = link ? /<([^>]+)>/.exec(link)![1] : undefined;
        pages++;
      }
      return { names, pages };
    };
    const bob = await all(basic('bob'), 1);
    assert.deepEqual(bob.names, ['public/base', 'team/app', 'team/app/sub']);
    assert.equal(bob.pages, 3);
    const anonymous = await all(undefined, 2);
    assert.deepEqual(anonymous.names, ['public/base']);
    const admin = await all(basic('admin'), 3, /^$/);
    assert.ok(admin.names.includes('private/x') && admin.names.includes('team/secret'));
    // A bearer token needs the catalog scope.
    const noCatalog = await r.token('bob', ['repository:team/app:pull']);
    const refused = await call('/v2/_catalog', { auth: `Bearer ${noCatalog}` });
    assert.equal(refused.status, 401);
    assert.match(refused.headers.get('www-authenticate') ?? '', /scope="registry:catalog:\*"/);
    const withCatalog = await r.token('bob', ['registry:catalog:*']);
    assert.deepEqual((await call('/v2/_catalog', { auth: `Bearer ${withCatalog}` })).json().repositories, ['public/base', 'team/app', 'team/app/sub']);
  });

  await t.test('a nested child the caller cannot pull is reported forbidden, never named', async () => {
    const child = (await call('/v2/team/secret/manifests/v1', { auth: basic('admin'), headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } }));
    const childDigest = child.headers.get('docker-content-digest')!;
    const index = {
      schemaVersion: 2, mediaType: OCI_INDEX,
      manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: childDigest, size: child.body.length, annotations: { 'dev.trellis.repository': 'secret' } }],
    };
    const put = await call('/v2/team/manifests/all', { method: 'PUT', body: JSON.stringify(index), auth: basic('admin'), headers: { 'Content-Type': OCI_INDEX } });
    assert.equal(put.status, 201, put.body.toString());
    // Alice may pull team/secret: she resolves the child through team and sees it in the graph.
    assert.equal((await call(`/v2/team/manifests/${childDigest}`, { auth: basic('alice') })).status, 200);
    const aliceGraph = await call('/v2/team/_trellis/graph/all?direction=down', { auth: basic('alice') });
    assert.match(aliceGraph.body.toString(), /team\/secret/);
    // Bob may pull team but not team/secret: the child looks absent, the graph says "forbidden".
    assert.equal((await call(`/v2/team/manifests/${childDigest}`, { auth: basic('bob') })).status, 404);
    const bobGraph = await call('/v2/team/_trellis/graph/all?direction=down', { auth: basic('bob') });
    assert.equal(bobGraph.status, 200);
    const body = bobGraph.body.toString();
    assert.doesNotMatch(body, /secret/);
    assert.ok(!body.includes(childDigest), 'the child digest is not revealed');
    assert.deepEqual(bobGraph.json().edges.map((e: { to: unknown }) => e.to), [{ forbidden: true }]);
    const deeper = await call('/v2/team/_trellis/graph/all?direction=down&depth=3', { auth: basic('bob') });
    assert.equal(deeper.json().edges.length, 1, 'the walk stops at a forbidden node');
    assert.equal((await call('/v2/team/_trellis/graph/all?direction=down&depth=3', { auth: basic('alice') })).json().edges.length, 3, 'index → image → config and layer');
    // Dave may push to team but not pull team/secret: an index naming the child cannot probe it.
    const probe = async (digest: string) => {
      const entry = { ...index.manifests[0]!, digest };
      const answer = await call('/v2/team/manifests/probe', { method: 'PUT', body: JSON.stringify({ ...index, manifests: [entry] }), auth: basic('dave'), headers: { 'Content-Type': OCI_INDEX } });
      return { status: answer.status, code: answer.json().errors?.[0]?.code };
    };
    assert.deepEqual(await probe(childDigest), { status: 400, code: 'MANIFEST_BLOB_UNKNOWN' });
    assert.deepEqual(await probe(sha256('nothing here')), { status: 400, code: 'MANIFEST_BLOB_UNKNOWN' });
  });

  await t.test('a revoked robot is refused at once, password and tokens alike', async () => {
    const robots = new RobotStore(join(r.reg.dataDir, '_trellis', 'robots.json'));
    const { username, secret } = await robots.create('builder', { groups: ['ci'] });
    const auth = basic(username, secret);
    assert.equal((await r.push('team/app', 'ci', auth)).status, 201);
    const token = (await call('/v2/_trellis/token?scope=repository:team/app:pull,push', { auth })).json().token as string;
    assert.equal((await call('/v2/team/app/tags/list', { auth: `Bearer ${token}` })).status, 200);
    assert.equal((await call('/v2/team/app/tags/list', { auth: basic(username, `${secret}x`) })).status, 401);
    assert.ok(await robots.revoke('builder'));
    assert.equal((await call('/v2/team/app/tags/list', { auth })).status, 401);
    assert.equal((await call('/v2/team/app/tags/list', { auth: `Bearer ${token}` })).status, 401);
    assert.equal((await call('/v2/_trellis/token?scope=repository:team/app:pull', { auth })).status, 401);
  });

  await t.test('garbage collection over HTTP is for admins only', async () => {
    assert.equal((await call('/v2/_trellis/gc?dryRun=true', { method: 'POST' })).status, 401);
    assert.equal((await call('/v2/_trellis/gc?dryRun=true', { method: 'POST', auth: basic('carol') })).status, 403);
    const answer = await call('/v2/_trellis/gc?dryRun=true', { method: 'POST', auth: basic('admin') });
    assert.equal(answer.status, 200);
    assert.equal(answer.json().dryRun, true);
    const gcToken = await r.token('admin', ['registry:gc:*']);
    assert.equal((await call('/v2/_trellis/gc?dryRun=true', { method: 'POST', auth: `Bearer ${gcToken}` })).status, 200);
    const noGc = await r.token('admin', ['repository:team/app:pull']);
    assert.equal((await call('/v2/_trellis/gc?dryRun=true', { method: 'POST', auth: `Bearer ${noGc}` })).status, 401);
  });
});

test('a refresh token stops working once the password it was issued under changes', { timeout: 60_000 }, async (t) => {
  const r = await setup(t);
  const signIn = async (password: string) => {
    const form = new URLSearchParams({ grant_type: 'password', username: 'dave', password, scope: 'repository:team/app:pull', service: 'trellis', client_id: 'test', access_type: 'offline' });
    const answer = await r.call('/v2/_trellis/token', { method: 'POST', body: form });
    assert.equal(answer.status, 200);
    return (answer.json() as { refresh_token: string }).refresh_token;
  };
  const refresh = (token: string) => r.call('/v2/_trellis/token', { method: 'POST', body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: token, scope: 'repository:team/app:pull', service: 'trellis' }) });
  const old = await signIn(PASSWORD);
  assert.equal((await refresh(old)).status, 200);
  const file = join(r.dir, 'htpasswd');
  const lines = (await readFile(file, 'utf8')).split('\n').map((line) => (line.startsWith('dave:') ? `dave:${bcrypt.hashSync('a new password', 4)}` : line));
  await writeFile(file, lines.join('\n'));
  const refused = await refresh(old);
  assert.equal(refused.status, 401, 'the stolen or forgotten refresh token dies with the old password');
  assert.match(refused.body.toString(), /sign in again/);
  assert.equal((await refresh(await signIn('a new password'))).status, 200);
});

test('brute-force sign-in is limited with 429 and Retry-After, per address and per user at an address', { timeout: 60_000 }, async (t) => {
  const r = await startAuthRegistry(t, { users: ['alice'], auth: AUTH, settings: { authFailureBurst: 3, authFailuresPerMinute: 1 } });
  for (let i = 0; i < 3; i++) assert.equal((await r.call('/v2/team/app/tags/list', { auth: r.basic('alice', `guess${i}`) })).status, 401);
  const limited = await r.call('/v2/team/app/tags/list', { auth: r.basic('alice', 'guess4') });
  assert.equal(limited.status, 429);
  assert.equal(limited.json().errors[0].code, 'TOOMANYREQUESTS');
  assert.ok(Number(limited.headers.get('retry-after')) >= 1);
  // Even the right password waits now, on the registry and on the token endpoint.
  assert.equal((await r.call('/v2/team/app/tags/list', { auth: r.basic('alice') })).status, 429);
  assert.equal((await r.call('/v2/_trellis/token?scope=repository:team/app:pull', { auth: r.basic('alice') })).status, 429);
});

test('guesses sent all at once cannot outrun the failure limit: a check under way counts as a failure', { timeout: 60_000 }, async (t) => {
  const r = await startAuthRegistry(t, { users: ['alice'], auth: AUTH, settings: { authFailureBurst: 2, authFailuresPerMinute: 1 } });
  // A realistic cost, so the guesses are still being checked when the later ones arrive.
  await writeFile(join(r.dir, 'htpasswd'), `alice:${bcrypt.hashSync(PASSWORD, 10)}\n`);
  const guesses = Array.from({ length: 12 }, (_, i) => r.basic('alice', i === 5 ? PASSWORD : `guess${i}`));
  const statuses = await Promise.all(guesses.map((auth) => r.call('/v2/team/app/tags/list', { auth }).then((a) => a.status)));
  assert.ok(statuses.filter((s) => s !== 429).length <= 2, `at most the burst is checked: ${statuses.join(',')}`);
  assert.equal(statuses[5], 429, 'the right password among a flood of guesses is not tried');
  // The same credentials sent at once are checked once: a client's parallel pulls are not failures.
  const r2 = await startAuthRegistry(t, { users: ['alice'], auth: AUTH, settings: { authFailureBurst: 2, authFailuresPerMinute: 1 } });
  const parallel = await Promise.all(Array.from({ length: 8 }, () => r2.call('/v2/team/app/tags/list', { auth: r2.basic('alice') }).then((a) => a.status)));
  assert.deepEqual(parallel, Array(8).fill(404));
});

test('wrong passwords from one address never lock the user out elsewhere', { timeout: 60_000 }, async (t) => {
  const r = await startAuthRegistry(t, { users: ['alice', 'bob'], auth: AUTH });
  for (let i = 0; i < 10; i++) assert.equal(await getFrom(r, '127.0.0.1', '/v2/', r.basic('alice', `guess${i}`)), 401);
  assert.equal(await getFrom(r, '127.0.0.1', '/v2/', r.basic('alice', 'guess10')), 429, 'the guessing address is throttled');
  // The same user, right password, from another address: signed in.
  assert.equal(await getFrom(r, '127.0.0.2', '/v2/', r.basic('alice')), 200);
  assert.equal(await getFrom(r, '127.0.0.3', '/v2/_trellis/token?scope=repository:team/app:pull', r.basic('alice')), 200);
  // Guessing from a second address is throttled there too, still without touching a third.
  for (let i = 0; i < 10; i++) assert.equal(await getFrom(r, '127.0.0.4', '/v2/', r.basic('alice', `again${i}`)), 401);
  assert.equal(await getFrom(r, '127.0.0.4', '/v2/', r.basic('alice', 'again10')), 429);
  assert.equal(await getFrom(r, '127.0.0.5', '/v2/', r.basic('alice')), 200);
});

test('requests are limited per identity', { timeout: 60_000 }, async (t) => {
  const r = await startAuthRegistry(t, { users: ['alice', 'bob'], auth: AUTH, settings: { rateLimitPerSecond: 0.5, rateLimitBurst: 3 } });
  for (let i = 0; i < 3; i++) assert.equal((await r.call('/v2/team/app/tags/list', { auth: r.basic('alice') })).status, 404);
  const limited = await r.call('/v2/team/app/tags/list', { auth: r.basic('alice') });
  assert.equal(limited.status, 429);
  assert.ok(Number(limited.headers.get('retry-after')) >= 1);
  assert.equal((await r.call('/v2/team/app/tags/list', { auth: r.basic('bob') })).status, 404, 'another identity has its own bucket');
});

test('a token is refused once it expires (replay)', { timeout: 60_000 }, async (t) => {
  // exp is in whole seconds: a 1 s token can expire within a few milliseconds of its issue, so 3 s
  // leaves the first use at least 2 s on a loaded machine.
  const r = await startAuthRegistry(t, { users: ['alice'], auth: { ...AUTH, token: { ...AUTH.token, expirySeconds: 3 } } });
  const token = await r.token('alice', ['repository:team/app:pull']);
  assert.equal((await r.call('/v2/team/app/tags/list', { auth: `Bearer ${token}` })).status, 404);
  await new Promise((resolve) => setTimeout(resolve, 4100));
  const replay = await r.call('/v2/team/app/tags/list', { auth: `Bearer ${token}` });
  assert.equal(replay.status, 401);
  assert.match(replay.headers.get('www-authenticate') ?? '', /invalid_token/);
});

test('without a token section clients get a Basic challenge', { timeout: 60_000 }, async (t) => {
  const { token: _token, ...basicOnly } = AUTH;
  const r = await startAuthRegistry(t, { users: ['alice'], auth: { ...basicOnly, policies: { team: { users: { alice: ['pull', 'push'] } } } } });
  const bare = await r.call('/v2/');
  assert.equal(bare.status, 401);
  assert.equal(bare.headers.get('www-authenticate'), 'Basic realm="trellis", charset="UTF-8"');
  assert.equal((await r.call('/v2/', { auth: r.basic('alice') })).status, 200);
  assert.equal((await r.push('team/app', 'v1', r.basic('alice'))).status, 201);
  assert.equal((await r.call('/v2/team/app/tags/list', { auth: 'Bearer whatever' })).status, 401);
  assert.equal((await r.call('/v2/_trellis/token', { auth: r.basic('alice') })).status, 404);
});

test('htpasswd changes apply without a restart; only bcrypt hashes are accepted', { timeout: 60_000 }, async (t) => {
  const { writeFile } = await import('node:fs/promises');
  const bcrypt = (await import('bcryptjs')).default;
  const r = await startAuthRegistry(t, { users: ['alice'], auth: { ...AUTH, policies: { team: { authenticated: ['pull'] } } } });
  const token = await r.token('alice', ['repository:team/app:pull']);
  assert.equal((await r.call('/v2/team/app/tags/list', { auth: `Bearer ${token}` })).status, 404);
  assert.equal((await r.call('/v2/team/app/tags/list', { auth: r.basic('bob') })).status, 401);
  // bob is added, alice removed, and an MD5 (apr1) entry for carol is refused.
  await writeFile(join(r.dir, 'htpasswd'), `bob:${bcrypt.hashSync(PASSWORD, 4)}\ncarol:$apr1$abcdefgh$0123456789abcdefghijkl\n`);
  assert.equal((await r.call('/v2/team/app/tags/list', { auth: r.basic('bob') })).status, 404);
  assert.equal((await r.call('/v2/team/app/tags/list', { auth: r.basic('alice') })).status, 401);
  assert.equal((await r.call('/v2/team/app/tags/list', { auth: `Bearer ${token}` })).status, 401, 'a removed user\'s token dies with the user');
  assert.equal((await r.call('/v2/team/app/tags/list', { auth: r.basic('carol') })).status, 401);
});

test('an unknown user name costs the same bcrypt work as a wrong password (no timing oracle for names)', { timeout: 60_000 }, async (t) => {
  const bcrypt = (await import('bcryptjs')).default;
  // The users' hashes have cost 4 (setup.ts), as `htpasswd -B` gives cost 5: far cheaper than a
  // default-cost dummy, which made an unknown name ~50 times slower to refuse than a known one.
  const r = await startAuthRegistry(t, { users: ['alice'], auth: AUTH, settings: { authFailureBurst: 100 } });
  const compare = bcrypt.compare;
  const costs: number[] = [];
  bcrypt.compare = ((password: string, hash: string) => {
    costs.push(Number(hash.slice(4, 6)));
    return compare(password, hash);
  }) as typeof bcrypt.compare;
  t.after(() => { bcrypt.compare = compare; });
  const refused = async (user: string) => {
    costs.length = 0;
    assert.equal((await r.call('/v2/team/app/tags/list', { auth: r.basic(user, 'wrong') })).status, 401);
    return [...costs];
  };
  assert.deepEqual(await refused('alice'), [4]);
  assert.deepEqual(await refused('mallory'), [4], 'the dummy hash an unknown name is checked against has the users\' cost');
});
