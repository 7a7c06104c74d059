// The wire exchange the copy client moves blob bodies with: the response head is parsed from the
// socket's first reads and the rest is the body, whole and in order, over plain TCP and TLS, with
// a slow reader and a request body streamed from another exchange.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { drain, exchange } from '../../src/transfer/wire.ts';
import { requirePeer } from '../helpers/peers.ts';

const BODY = randomBytes((3 << 20) + 12_345);
const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** GET answers BODY in uneven writes; PUT answers the digest of what it received. */
function answer(req: IncomingMessage, res: ServerResponse): void {
  if (req.method === 'PUT') {
    const hash = createHash('sha256');
    req.on('data', (chunk: Buffer) => hash.update(chunk)).on('end', () => {
      res.writeHead(201, { 'Docker-Content-Digest': hash.digest('hex'), 'Content-Length': 0 });
      res.end();
    });
    return;
  }
  res.writeHead(200, { 'Content-Length': BODY.length, 'X-Many-Words': 'a: b' });
  for (let offset = 0, step = 1; offset < BODY.length; offset += step, step = step * 7 % 300_001 + 1) res.write(BODY.subarray(offset, offset + step));
  res.end();
}

async function check(base: string): Promise<void> {
  const got = await exchange('GET', new URL('/blob', base), {});
  assert.equal(got.status, 200);
  assert.equal(got.headers['content-length'], String(BODY.length));
  assert.equal(got.headers['x-many-words'], 'a: b');
  // Read slowly at first: the socket must wait for the reader, and lose nothing meanwhile.
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(sha256(await drain(got)), sha256(BODY));
  // A body streamed from one exchange into another, as a copy does.
  const source = await exchange('GET', new URL('/blob', base), {});
  const put = await exchange('PUT', new URL('/blob', base), { 'Content-Length': String(BODY.length) }, source.body);
  assert.equal(put.status, 201);
  assert.equal(put.headers['docker-content-digest'], sha256(BODY));
  put.body.destroy();
}

test('exchange over plain TCP: head, a body split across reads, back-pressure, and a streamed request body', async (t) => {
  const server = createHttpServer(answer);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  await check(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  // Not HTTP at all: a clear error, not a hang.
  const { createServer } = await import('node:net');
  const liar = createServer((socket) => socket.end('SSH-2.0-nope\r\n\r\n'));
  await new Promise<void>((resolve) => liar.listen(0, '127.0.0.1', resolve));
  t.after(() => liar.close());
  await assert.rejects(exchange('GET', new URL(`http://127.0.0.1:${(liar.address() as AddressInfo).port}/x`), {}), /not an HTTP response/);
});

test('exchange over TLS', async (t) => {
  const openssl = requirePeer(t, 'openssl');
  if (!openssl) return;
  const dir = await mkdtemp(join(tmpdir(), 'trellis-wire-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await promisify(execFile)(openssl, ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { timeout: 30_000 });
  const cert = await readFile(join(dir, 'cert.pem'));
  const server = createHttpsServer({ cert, key: await readFile(join(dir, 'key.pem')) }, answer);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  // The client trusts the test certificate the way a user would, through Node's CA options.
  const tls = await import('node:tls');
  const original = tls.rootCertificates;
  const setDefault = (tls as unknown as { setDefaultCACertificates?: (certs: string[]) => void }).setDefaultCACertificates;
  if (!setDefault) return t.skip('this Node cannot add a CA at run time');
  setDefault([...original, cert.toString()]);
  t.after(() => setDefault([...original]));
  await check(`https://127.0.0.1:${(server.address() as AddressInfo).port}`);
});
