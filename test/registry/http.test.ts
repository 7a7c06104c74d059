// Who a request is from, behind a load balancer: X-Forwarded-For is believed only from the
// proxies `trustedProxies` names, and only for the entries those proxies appended.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { clientAddress, trustedProxySet } from '../../src/registry/http.ts';

function request(remoteAddress: string, forwardedFor?: string): IncomingMessage {
  return { socket: { remoteAddress }, headers: forwardedFor === undefined ? {} : { 'x-forwarded-for': forwardedFor } } as unknown as IncomingMessage;
}

test('without trusted proxies the connection decides, whatever the header says', () => {
  const none = trustedProxySet('');
  assert.equal(clientAddress(request('10.0.0.9', '1.2.3.4'), none), '10.0.0.9');
  assert.equal(clientAddress(request('::ffff:10.0.0.9'), none), '10.0.0.9');
});

test('from a trusted proxy, the address it appended; a client\'s own entries are never believed', () => {
  const trusted = trustedProxySet(' 10.0.0.5, ::ffff:10.0.0.6 ');
  assert.equal(clientAddress(request('10.0.0.5', '203.0.113.7'), trusted), '203.0.113.7');
  // The client wrote "1.1.1.1" itself; the proxy appended the address it saw.
  assert.equal(clientAddress(request('10.0.0.5', '1.1.1.1, 203.0.113.7'), trusted), '203.0.113.7');
  // Two trusted proxies in a row: the first address before them.
  assert.equal(clientAddress(request('::ffff:10.0.0.5', '1.1.1.1, 203.0.113.7, 10.0.0.6'), trusted), '203.0.113.7');
  // An untrusted connection's header is ignored, and so is garbage where an address should be.
  assert.equal(clientAddress(request('198.51.100.1', '203.0.113.7'), trusted), '198.51.100.1');
  assert.equal(clientAddress(request('10.0.0.5', 'not-an-address'), trusted), '10.0.0.5');
  assert.equal(clientAddress(request('10.0.0.5'), trusted), '10.0.0.5');
});
