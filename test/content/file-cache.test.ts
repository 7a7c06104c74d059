// The manifest body cache: bounded, least recently used first out, and never stale.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FileCache } from '../../src/content/file-cache.ts';

const info = (etag: string, size: number) => ({ etag, size });

test('an entry is returned only while the object keeps its etag and size', () => {
  const cache = new FileCache({ maxBytes: 1000, maxEntryBytes: 100 });
  const bytes = Buffer.from('{"schemaVersion":2}');
  cache.set('a', info('v1', bytes.length), bytes);
  assert.equal(cache.get('a', info('v1', bytes.length)), bytes);
  assert.equal(cache.get('a', info('v2', bytes.length)), undefined, 'replaced: another etag');
  assert.equal(cache.size.entries, 0, 'a stale entry is dropped');
  assert.equal(cache.size.bytes, 0);
  cache.set('a', info('v1', bytes.length), bytes);
  assert.equal(cache.get('a', info('v1', bytes.length + 1)), undefined, 'grown under the same etag');
  assert.equal(cache.get('b', info('v1', bytes.length)), undefined, 'another key');
});

test('the cache holds at most maxBytes, dropping the least recently used, and skips large entries', () => {
  const cache = new FileCache({ maxBytes: 250, maxEntryBytes: 100 });
  const piece = (c: string) => Buffer.alloc(100, c);
  cache.set('a', info('1', 100), piece('a'));
  cache.set('b', info('2', 100), piece('b'));
  assert.ok(cache.get('a', info('1', 100)), 'a is now the most recently used');
  cache.set('c', info('3', 100), piece('c'));
  assert.equal(cache.size.bytes, 200);
  assert.equal(cache.get('b', info('2', 100)), undefined, 'b was the least recently used');
  assert.ok(cache.get('a', info('1', 100)));
  assert.ok(cache.get('c', info('3', 100)));
  cache.set('big', info('4', 101), Buffer.alloc(101));
  assert.equal(cache.get('big', info('4', 101)), undefined);
  assert.equal(cache.size.bytes, 200);
});
