// Policy semantics without a server: the most specific pattern wins, nested names inherit from
// their nearest governed ancestor, groups, anonymous and authenticated defaults, admins.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Policies } from '../../src/auth/policy.ts';
import { AuthConfigError, parseAuthConfig } from '../../src/auth/config.ts';

const policies = new Policies({
  '*': { authenticated: ['pull'] },
  'team/**': { groups: { devs: ['pull', 'push'] } },
  team: { users: { lead: ['admin'] } },
  'team/app': { users: { alice: ['pull', 'push', 'delete'] }, anonymous: ['pull'] },
  'team/app/private': { users: { alice: ['pull'] } },
  'tools/*-cache': { authenticated: ['pull', 'push'] },
}, { users: ['root'], groups: ['ops'] });

const rights = (name: string | undefined, groups: string[], repository: string) => [...policies.rights(name === undefined ? { groups } : { name, groups }, repository)].sort().join(',');

test('the most specific pattern wins and nested names inherit', () => {
  assert.equal(policies.patternFor('team/app'), 'team/app');
  assert.equal(policies.patternFor('team/app/sub/deeper'), 'team/app', 'inherits from the nearest governed ancestor');
  assert.equal(policies.patternFor('team/app/private/x'), 'team/app/private');
  assert.equal(policies.patternFor('team/other'), 'team/**');
  assert.equal(policies.patternFor('team'), 'team', 'team/** needs at least one more component; team is literal');
  assert.equal(policies.patternFor('tools/npm-cache'), 'tools/*-cache');
  assert.equal(policies.patternFor('tools/npm'), '*');
  assert.equal(policies.patternFor('anything/else'), '*');
});

test('rights: users, groups, anonymous, authenticated, admin', () => {
  assert.equal(rights('alice', [], 'team/app'), 'delete,pull,push');
  assert.equal(rights('alice', [], 'team/app/private'), 'pull', 'the more specific policy replaces, it does not add');
  assert.equal(rights('bob', ['devs'], 'team/other'), 'pull,push');
  assert.equal(rights('bob', ['devs'], 'team/app'), 'pull', 'team/app overrides team/** for the devs group; anonymous pull still applies');
  assert.equal(rights(undefined, [], 'team/app'), 'pull');
  assert.equal(rights(undefined, [], 'team/other'), '');
  assert.equal(rights('lead', [], 'team'), 'delete,pull,push', 'admin means every repository action');
  assert.equal(rights('carol', [], 'elsewhere'), 'pull');
  assert.equal(rights('root', [], 'team/app/private'), 'delete,pull,push');
  assert.equal(rights('dana', ['ops'], 'x'), 'delete,pull,push');
  assert.ok(policies.isAdmin({ name: 'root', groups: [] }));
  assert.ok(!policies.isAdmin({ groups: ['ops'] }), 'anonymous is never admin');
  assert.ok(policies.anonymousAnywhere);
  assert.ok(!new Policies({ '*': { authenticated: ['pull'] } }).anonymousAnywhere);
  assert.equal([...new Policies({}).rights({ name: 'x', groups: [] }, 'a')].length, 0, 'no policy: no rights');
});

test('the auth file is checked strictly', () => {
  assert.throws(() => parseAuthConfig({ polices: {} }, '/etc/auth.json', '/data'), /unknown key "polices"/);
  assert.throws(() => parseAuthConfig({ policies: { 'Team/App': {} } }, '/etc/auth.json', '/data'), AuthConfigError);
  assert.throws(() => parseAuthConfig({ policies: { a: { users: { x: ['read'] } } } }, '/etc/auth.json', '/data'), /unknown action "read"/);
  assert.throws(() => parseAuthConfig({ token: { external: { issuer: 'i' }, realm: 'r', service: 's' } }, '/etc/auth.json', '/data'), /exactly one of jwks or publicKey/);
  const config = parseAuthConfig({ htpasswd: 'users', token: {} }, '/etc/trellis/auth.json', '/data');
  assert.equal(config.htpasswd, '/etc/trellis/users');
  assert.equal(config.robots, '/data/_trellis/robots.json');
  assert.deepEqual(config.token, { kind: 'builtin', builtin: { service: 'trellis', issuer: 'trellis', expirySeconds: 300, refreshExpirySeconds: 86400, algorithm: 'ES256' } });
});
