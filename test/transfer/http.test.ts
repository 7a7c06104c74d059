// HttpRegistry against small fake registries: where credentials go when a registry points
// elsewhere (an upload location on another origin), and how far a manifest's digest is trusted.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { HttpRegistry } from '../../src/transfer/http.ts';
import { RegistryRequestFailed } from '../../src/transfer/errors.ts';
import { OCI_MANIFEST, sha256 } from '../helpers/oci-client.ts';

async function serve(t: TestContext, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const LOGIN = { username: 'alice', password: 'hunter2-secret' };
const BASIC = `Basic ${Buffer.from(`${LOGIN.username}:${LOGIN.password}`).toString('base64')}`;

test('an upload location on another origin gets the blob but never the credentials', async (t) => {
  const seen: (string | undefined)[] = [];
  let received = Buffer.alloc(0);
  const storage = await serve(t, (req, res) => {
    seen.push(req.headers.authorization);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c)).on('end', () => {
      received = Buffer.concat(chunks);
      res.writeHead(201, { 'Content-Length': 0 }).end();
    });
  });
  const registry = await serve(t, (req, res) => {
    if (req.headers.authorization !== BASIC) return res.writeHead(401, { 'WWW-Authenticate': 'Basic realm="fake"', 'Content-Length': 0 }).end();
    if (req.method === 'POST') return res.writeHead(202, { Location: `${storage}/upload/123?state=abc`, 'Content-Length': 0 }).end();
    res.writeHead(404, { 'Content-Length': 0 }).end();
  });
  const client = new HttpRegistry(registry, { login: LOGIN });
  const blob = Buffer.from('a blob that lives in storage');
  await client.putBlob('app', sha256(blob), blob.length, Readable.from([blob]));
  assert.deepEqual(received, blob);
  assert.deepEqual(seen, [undefined], 'the storage origin got no Authorization header');
});

test('a manifest fetched by a sha512 digest is checked against it, and keeps that digest without Docker-Content-Digest', async (t) => {
  const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256('{}'), size: 2 }, layers: [] }));
  const digest = `sha512:${createHash('sha512').update(bytes).digest('hex')}`;
  const other = `sha512:${'1'.repeat(128)}`;
  // A registry that sends no Docker-Content-Digest (the header is optional), and wrong bytes for `other`.
  const registry = await serve(t, (req, res) => {
    const wanted = req.url!.split('/').pop();
    if (wanted !== digest && wanted !== other) return res.writeHead(404, { 'Content-Length': 0 }).end();
    res.writeHead(200, { 'Content-Type': OCI_MANIFEST, 'Content-Length': bytes.length }).end(bytes);
  });
  const client = new HttpRegistry(registry);
  const fetched = await client.manifest('app', digest);
  assert.equal(fetched?.digest, digest);
  await assert.rejects(client.manifest('app', other), (err) => err instanceof RegistryRequestFailed && /came back with digest/.test(err.message));
});
