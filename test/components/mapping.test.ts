// The OCM-to-OCI mapping and the loose semver rules, without a server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  ANCHOR_BYTES, ANCHOR_DIGEST, componentOfRepository, isDigestTag, parseComponentVersionAnnotation, tagToVersion, tarEntry, versionToTag,
} from '../../src/components/ocm.ts';
import { compareVersionStrings, parseConstraint, satisfies } from '../../src/components/semver.ts';
import { QueryInvalid } from '../../src/query/language.ts';
import { tarOf } from './ocm-client.ts';

test('the anchor has OCM canonical digest and size', () => {
  assert.equal(`sha256:${createHash('sha256').update(ANCHOR_BYTES).digest('hex')}`, ANCHOR_DIGEST);
  assert.equal(ANCHOR_BYTES.length, 837);
});

test('versions and tags round-trip; names come from repositories and annotations', () => {
  for (const version of ['1.2.3+ci.42', '1.0.0', '0.1.0-rc.1+build.5']) assert.equal(tagToVersion(versionToTag(version)), version);
  assert.equal(versionToTag('1.2.3+ci.42'), '1.2.3.build-ci.42');
  assert.ok(isDigestTag(`sha256-${'0'.repeat(64)}`));
  assert.ok(isDigestTag(`sha256-${'0'.repeat(64)}.sig`));
  assert.ok(!isDigestTag('latest'));
  assert.deepEqual(componentOfRepository('a/b/component-descriptors/github.com/acme/x'), { prefix: 'a/b', name: 'github.com/acme/x' });
  assert.deepEqual(componentOfRepository('component-descriptors/x'), { prefix: '', name: 'x' });
  assert.equal(componentOfRepository('a/my-component-descriptors/x'), undefined);
  assert.deepEqual(parseComponentVersionAnnotation('component-descriptors/acme.org/x:1.0.0'), { name: 'acme.org/x', version: '1.0.0' });
  assert.deepEqual(parseComponentVersionAnnotation('acme.org/x:1.0.0'), { name: 'acme.org/x', version: '1.0.0' });
  assert.equal(parseComponentVersionAnnotation('no-version'), undefined);
});

test('tar entries are found by name', () => {
  const archive = tarOf('component-descriptor.yaml', Buffer.from('hello'));
  assert.equal(tarEntry(archive, 'component-descriptor.yaml')?.toString(), 'hello');
  assert.equal(tarEntry(archive, 'other'), undefined);
  assert.equal(tarEntry(Buffer.from('not a tar'), 'x'), undefined);
});

test('loose semver order and Masterminds-style constraints', () => {
  const sorted = ['1.10.0', 'v1.2', '1.2.0-rc.1', '1.2.0-rc.10', '1.2.0-alpha', '0.9.9', 'banana', '2'].sort(compareVersionStrings);
  assert.deepEqual(sorted, ['0.9.9', '1.2.0-alpha', '1.2.0-rc.1', '1.2.0-rc.10', 'v1.2', '1.10.0', '2', 'banana']);
  const cases: [string, string[], string[]][] = [
    ['>=1.0.0 <2.0.0', ['1.0.0', '1.9.9'], ['0.9.0', '2.0.0']],
    ['>=1, <2', ['1.5.0'], ['2.0.0']],
    ['~1.2', ['1.2.0', '1.2.9'], ['1.3.0']],
    ['^0.3.1', ['0.3.1', '0.3.9'], ['0.4.0', '0.3.0']],
    ['^1.2.3', ['1.9.0'], ['2.0.0', '1.2.2']],
    ['1.2.x', ['1.2.0', '1.2.7'], ['1.3.0']],
    ['1.0 - 2.0', ['1.0.0', '2.0.5'], ['2.1.0', '0.9.0']],
    ['<1.0.0 || >=3', ['0.5.0', '3.1.0'], ['2.0.0']],
    ['!=1.0.0', ['1.0.1'], ['1.0.0']],
  ];
  for (const [text, yes, no] of cases) {
    const constraint = parseConstraint(text);
    for (const v of yes) assert.ok(satisfies(v, constraint), `${v} should satisfy ${text}`);
    for (const v of no) assert.ok(!satisfies(v, constraint), `${v} should not satisfy ${text}`);
  }
  for (const bad of ['', '>=banana', '>>1', '1.0 || ']) assert.throws(() => parseConstraint(bad), (err) => err instanceof QueryInvalid, bad);
});
