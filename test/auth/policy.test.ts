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

test('pullersIncluded: everyone who may pull the first repository may pull the second', () => {
  const rules = new Policies({
    '*': { authenticated: ['pull'] },
    'public/**': { anonymous: ['pull'] },
    team: { groups: { devs: ['pull', 'push'] }, users: { lead: ['admin'] } },
    'team/app/secrets': { users: { lead: ['pull'] } },
    'index-admins': { users: {} },
    'index-devs': { groups: { devs: ['pull'] } },
    'index-lead': { users: { lead: ['pull'] } },
    'index-open': { anonymous: ['pull'] },
  }, { users: ['root'] });
  // Read by every signed-in caller: only what every signed-in caller (or anyone) may pull.
  assert.equal(rules.pullersIncluded('component-index', 'other'), true, 'both under *');
  assert.equal(rules.pullersIncluded('component-index', 'public/base'), true);
  assert.equal(rules.pullersIncluded('component-index', 'team'), false, 'not every signed-in caller is in devs');
  assert.equal(rules.pullersIncluded('component-index', 'team/app/secrets'), false);
  // Read by admins only (a rule granting nothing, or no rule at all): everything.
  assert.equal(rules.pullersIncluded('index-admins', 'team/app/secrets'), true);
  assert.equal(new Policies({ team: { users: { lead: ['pull'] } } }).pullersIncluded('component-index', 'team'), true);
  // Named readers: they must be granted there as well, by the same name or group.
  assert.equal(rules.pullersIncluded('index-devs', 'team/app'), true, 'team/app inherits team');
  assert.equal(rules.pullersIncluded('index-devs', 'team/app/secrets'), false);
  assert.equal(rules.pullersIncluded('index-lead', 'team/app/secrets'), true);
  assert.equal(rules.pullersIncluded('index-lead', 'team'), true, 'admin on team includes pull');
  // Anonymous readers: only what anyone may pull.
  assert.equal(rules.pullersIncluded('index-open', 'public/base'), true);
  assert.equal(rules.pullersIncluded('index-open', 'other'), false);
  // A repository no rule covers is for admins: published only where admins alone read the index.
  assert.equal(new Policies({ 'public/**': { anonymous: ['pull'] } }).pullersIncluded('component-index', 'secret'), true);
  assert.equal(new Policies({ 'component-index': { authenticated: ['pull'] } }).pullersIncluded('component-index', 'secret'), false, 'secret: admins only');
});
