// The HTTP server's defences against clients that misbehave: requests node:http cannot parse,
// headers or bodies that stall, paths with dot segments or backslashes, and upload-session caps
// that are per client. Raw sockets and node:http are used where fetch would normalise the request.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { pathProblem } from '../../src/registry/server.ts';
import { fsck } from '../../src/cli/fsck.ts';

const sha256 = (data: string | Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry({ maxUploadSessions: 5, bodyIdleTimeoutSeconds: 0.3, headersTimeoutSeconds: 0.5 });
});
after(async () => {
  // Whatever the misbehaving clients did, the data directory is consistent afterwards.
  await reg.close();
  const report = await fsck(reg.dataDir, { maxManifestBytes: 4 * 1024 * 1024, metadata: reg.metadata });
  await reg.dispose();
  assert.deepEqual(report.problems, [], 'trellis fsck is clean');
});

function port(): number {
  return Number(new URL(reg.url).port);
}

/** Writes `text` on a fresh connection and collects everything until the server closes it. */
function raw(text: string | Buffer, waitMs = 10_000): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: port() });
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ text: Buffer.concat(chunks).toString('utf8'), closed: false });
    }, waitMs);
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ text: Buffer.concat(chunks).toString('utf8'), closed: true });
    });
    socket.on('connect', () => socket.write(text));
    socket.on('timeout', reject);
  });
}

interface Reply { status: number; headers: Record<string, string | string[] | undefined>; body: string }

/** One request through node:http (the path is sent as is), optionally from another loopback address. */
function call(method: string, path: string, options: { body?: string | Buffer; headers?: Record<string, string>; from?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: port(), method, path, headers: options.headers, localAddress: options.from ?? '127.0.0.1', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

function errorCode(body: string): string {
  return (JSON.parse(body) as { errors: { code: string }[] }).errors[0]!.code;
}

describe('requests node:http rejects', () => {
  test('a malformed request gets 400 with an OCI error body and Connection: close', async () => {
    for (const text of ['GARBAGE\r\n\r\n', 'GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 'GET /v2/ HTTP/1.1\r\nBad Header\r\n\r\n']) {
      const answer = await raw(text);
      assert.match(answer.text, /^HTTP\/1\.1 400 /, JSON.stringify(text));
      assert.match(answer.text, /\r\nContent-Type: application\/json\r\n/i);
      assert.match(answer.text, /\r\nConnection: close\r\n/i);
      const body = answer.text.slice(answer.text.indexOf('\r\n\r\n') + 4);
      assert.equal(errorCode(body), 'UNSUPPORTED');
      assert.ok(answer.closed);
    }
  });

  test('a request without Host or with an unsupported Expect gets its 4xx with an OCI error body', async () => {
    for (const [text, status] of [['GET /v2/ HTTP/1.1\r\n\r\n', 400], ['GET /v2/ HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n\r\n', 417]] as const) {
      const answer = await raw(text, 3_000);
      assert.match(answer.text, new RegExp(`^HTTP/1\\.1 ${status} `), JSON.stringify(text));
      assert.match(answer.text, /\r\nConnection: close\r\n/i);
      assert.equal(errorCode(answer.text.slice(answer.text.indexOf('\r\n\r\n') + 4)), 'UNSUPPORTED');
      assert.ok(answer.closed);
    }
    assert.match((await raw('GET /v2/ HTTP/1.0\r\n\r\n')).text, /^HTTP\/1\.1 200 /, 'HTTP/1.0 needs no Host');
  });

  test('CONNECT is answered 405 with an OCI error body, not a silently closed connection', async () => {
    const answer = await raw('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', 3_000);
    assert.match(answer.text, /^HTTP\/1\.1 405 /);
    assert.match(answer.text, /\r\nConnection: close\r\n/i);
    assert.equal(errorCode(answer.text.slice(answer.text.indexOf('\r\n\r\n') + 4)), 'UNSUPPORTED');
    assert.ok(answer.closed);
  });

  test('headers that never finish get 408 with an OCI error body', { timeout: 15_000 }, async () => {
    const answer = await raw('GET /v2/ HTTP/1.1\r\nHost: x\r\n', 8_000);
    assert.ok(answer.closed, 'the connection is closed');
    assert.match(answer.text, /^HTTP\/1\.1 408 /);
    assert.equal(errorCode(answer.text.slice(answer.text.indexOf('\r\n\r\n') + 4)), 'UNSUPPORTED');
  });
});

describe('methods', () => {
  test('the catalog and extension discovery answer only GET and HEAD: anything else is 405 with Allow', async () => {
    for (const path of ['/v2/_catalog', '/v2/_oci/ext/discover']) {
      for (const method of ['DELETE', 'POST', 'PUT', 'TRACE', 'OPTIONS']) {
        const reply = await call(method, path, { body: method === 'POST' || method === 'PUT' ? '{}' : undefined });
        assert.equal(reply.status, 405, `${method} ${path}`);
        assert.equal(reply.headers.allow, 'GET, HEAD');
        assert.equal(errorCode(reply.body), 'UNSUPPORTED');
      }
      assert.equal((await call('GET', path)).status, 200);
      assert.equal((await call('HEAD', path)).status, 200);
    }
  });
});

describe('paths are taken as sent', () => {
  test('dot segments, backslashes and empty segments are NAME_INVALID and write nothing', async () => {
    const paths = [
      '/v2/a\\..\\b/blobs/uploads/', '/v2/a%5c..%5cb/blobs/uploads/', '/v2/a/../b/blobs/uploads/', '/v2/a/%2e%2e/b/blobs/uploads/',
      '/v2/a/%2E/b/blobs/uploads/', '/v2/a/./b/blobs/uploads/', '/v2/a//b/blobs/uploads/', '/v2/b/blobs/uploads/..',
      '/v2/a/b/manifests/..%2f..%2fc', '/v2/a\\b/blobs/uploads/',
    ];
    for (const path of paths) {
      const reply = await call('POST', `${path}?digest=${sha256('x')}`, { body: 'x' });
      assert.equal(reply.status, 400, path);
      assert.equal(errorCode(reply.body), 'NAME_INVALID', path);
      assert.equal((await call('PUT', path.replace('blobs/uploads/', 'manifests/v1'), { body: '{}' })).status, 400, path);
    }
    assert.deepEqual((await readdir(reg.dataDir)).filter((f) => f !== '_trellis'), [], 'no repository was created');
    assert.deepEqual(await readdir(join(reg.dataDir, '_trellis/uploads')).catch(() => []), [], 'no upload was started');
    assert.equal(pathProblem('/v2/a/b/blobs/uploads/'), undefined, 'a trailing slash is fine');
    // Absolute-form targets are accepted (RFC 9112 §3.2.2) and their paths checked the same way.
    assert.match((await raw('GET http://x/v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).text, /^HTTP\/1\.1 200 /);
    // `/`: the web UI's redirect when its bundle is built, else 404; never a path error.
    assert.match((await raw('GET http://x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).text, /^HTTP\/1\.1 (302|404) /);
    const smuggled = await raw('POST http://x/v2/a/../b/blobs/uploads/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    assert.match(smuggled.text, /^HTTP\/1\.1 400 /);
    assert.equal(errorCode(smuggled.text.slice(smuggled.text.indexOf('\r\n\r\n') + 4)), 'NAME_INVALID');
    assert.equal(pathProblem('/v2/a/b/blobs/uploads/%2E%2e'), 'request path must not contain ".", ".." or empty segments');
    assert.equal(pathProblem('/v2/a.b/c..d/tags/list?n=..'), undefined, 'dots inside names and in the query are fine');
  });
});

describe('fuzzed paths', () => {
  test('random paths of dot segments, backslashes and encodings never escape, create or 5xx', async () => {
    let seed = 7;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const parts = ['a', 'b', '..', '.', '%2e%2e', '%2E', '\\', '%5c', '%5C..', '', 'blobs', 'uploads', 'manifests', 'tags', 'list', '_trellis', '%2f', 'x%00', '~', 'sha256:' + 'a'.repeat(64)];
    for (let i = 0; i < 150; i++) {
      const path = `/v2/${Array.from({ length: 1 + Math.floor(random() * 6) }, () => parts[Math.floor(random() * parts.length)]).join(random() < 0.2 ? '\\' : '/')}`;
      const method = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'][Math.floor(random() * 5)]!;
      const reply = await call(method, path, method === 'GET' || method === 'DELETE' ? {} : { body: '{}' });
      assert.ok(reply.status < 500, `${method} ${path}: ${reply.status} ${reply.body}`);
    }
    const top = (await readdir(reg.dataDir)).filter((f) => f !== '_trellis');
    assert.ok(top.every((name) => /^[a-z0-9]/.test(name)), `only valid repositories were created: ${top}`);
    // Anything created came from a path without dot segments: `b` and `a` are valid repository names.
    for (const name of top) assert.ok(['a', 'b', 'list', 'tags', 'uploads', 'x', 'manifests'].includes(name), name);
  });
});

describe('stalled bodies', () => {
  async function uploadFiles(): Promise<string[]> {
    return readdir(join(reg.dataDir, '_trellis/uploads')).catch(() => []);
  }

  async function until(check: () => Promise<boolean>, what: string): Promise<void> {
    for (let i = 0; i < 100; i++) {
      if (await check()) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.fail(what);
  }

  test('a PATCH whose body stalls is cut off; the session stays at its last complete offset', { timeout: 20_000 }, async () => {
    const open = await call('POST', '/v2/stall/patch/blobs/uploads/');
    const location = open.headers.location as string;
    assert.equal((await call('PATCH', location, { body: 'done,', headers: { 'Content-Range': '0-4' } })).status, 202);
    const answer = await raw(`PATCH ${location} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n${'y'.repeat(100)}`);
    assert.ok(answer.closed, 'the stalled connection was closed');
    assert.match(answer.text, /^HTTP\/1\.1 408 [^]*\r\nConnection: close\r\n/i);
    assert.equal(errorCode(answer.text.slice(answer.text.indexOf('\r\n\r\n') + 4)), 'BLOB_UPLOAD_INVALID');
    const status = await call('GET', location);
    assert.equal(status.status, 204);
    assert.equal(status.headers.range, '0-4');
    const id = location.split('/').pop()!;
    await until(async () => (await stat(join(reg.dataDir, '_trellis/uploads', id))).size === 5, 'the partial chunk is removed');
    const put = await call('PUT', `${location}?digest=${sha256('done,rest')}`, { body: 'rest' });
    assert.equal(put.status, 201, put.body);
  });

  test('a single-request upload or a manifest whose body stalls leaves nothing behind', { timeout: 20_000 }, async () => {
    const before = await uploadFiles();
    const answer = await raw(`POST /v2/stall/single/blobs/uploads/?digest=${sha256('z'.repeat(1000))} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n${'z'.repeat(10)}`);
    assert.ok(answer.closed);
    await until(async () => (await uploadFiles()).length === before.length, 'the temporary upload is removed');
    const manifest = await raw(`PUT /v2/stall/single/manifests/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 1000\r\n\r\n{"schemaVersion":2`);
    assert.ok(manifest.closed);
    assert.match(manifest.text, /^HTTP\/1\.1 408 /);
    assert.equal((await call('GET', '/v2/stall/single/tags/list')).status, 404);
  });
});

describe('upload-session caps are per client', () => {
  test('a client holding its cap of sessions blocks no other client, and nobody\'s single-request upload', async () => {
    const opened: string[] = [];
    let refused: Reply | undefined;
    for (let i = 0; i < 10 && !refused; i++) {
      const reply = await call('POST', '/v2/cap/hog/blobs/uploads/');
      if (reply.status === 202) opened.push(reply.headers.location as string);
      else refused = reply;
    }
    assert.equal(opened.length, 5);
    assert.equal(refused?.status, 429);
    assert.equal(errorCode(refused!.body), 'TOOMANYREQUESTS');
    assert.ok(refused!.headers['retry-after']);
    // Another address opens sessions as usual.
    const other = await call('POST', '/v2/cap/other/blobs/uploads/', { from: '127.0.0.2' });
    assert.equal(other.status, 202, other.body);
    assert.equal((await call('DELETE', other.headers.location as string, { from: '127.0.0.2' })).status, 204);
    // Single-request uploads are never refused for the caps, not even for the client at its cap.
    for (const from of ['127.0.0.1', '127.0.0.2']) {
      const blob = `single from ${from}`;
      const single = await call('POST', `/v2/cap/other/blobs/uploads/?digest=${sha256(blob)}`, { body: blob, from });
      assert.equal(single.status, 201, single.body);
    }
    for (const location of opened) await call('DELETE', location);
    assert.equal((await call('POST', '/v2/cap/hog/blobs/uploads/')).status, 202, 'cancelled sessions free the cap');
  });

  test('concurrent session starts from one client never overshoot its cap', async () => {
    const replies = await Promise.all(Array.from({ length: 20 }, () => call('POST', '/v2/cap/burst/blobs/uploads/', { from: '127.0.0.3' })));
    const opened = replies.filter((r) => r.status === 202);
    assert.equal(opened.length, 5);
    assert.ok(replies.every((r) => r.status === 202 || r.status === 429));
    for (const reply of opened) await call('DELETE', reply.headers.location as string, { from: '127.0.0.3' });
  });
});

describe('client keys', () => {
  test('IPv4 addresses count alone, IPv6 addresses by their /64', async () => {
    const { clientKey } = await import('../../src/registry/http.ts');
    assert.equal(clientKey('127.0.0.1'), '127.0.0.1');
    assert.equal(clientKey('::ffff:10.1.2.3'), '10.1.2.3');
    assert.equal(clientKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64');
    assert.equal(clientKey('2001:db8:1:2:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64');
    assert.equal(clientKey('2001:0db8:0001:0002::9%eth0'), '2001:db8:1:2::/64');
    assert.equal(clientKey('2001:db8::1'), '2001:db8:0:0::/64');
    assert.equal(clientKey('::1'), '0:0:0:0::/64');
    assert.notEqual(clientKey('2001:db8:1:3::1'), clientKey('2001:db8:1:2::1'));
    assert.equal(clientKey('unknown'), 'unknown');
  });
});

test('a metadata or storage service that is briefly unreachable is answered 503 with Retry-After, not 500', async () => {
  const registry = reg.registry as unknown as { resolveManifest: (...args: unknown[]) => Promise<unknown> };
  const original = registry.resolveManifest;
  // What the database and object-store clients throw when their server restarts or is cut off.
  const outages: Error[] = [
    Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }),
    new Error('Connection terminated unexpectedly'),
    Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }),
    Object.assign(new Error('the database system is starting up'), { code: '57P03' }),
    Object.assign(new Error('Please reduce your request rate.'), { name: 'SlowDown', $metadata: { httpStatusCode: 503 } }),
  ];
  try {
    for (const outage of outages) {
      registry.resolveManifest = async () => {
        throw outage;
      };
      const res = await fetch(`${reg.url}/v2/outage/manifests/latest`);
      const body = await res.json() as { errors: { code: string }[] };
      assert.equal(res.status, 503, outage.message);
      assert.ok(Number(res.headers.get('retry-after')) > 0, 'Retry-After says when to try again');
      assert.equal(body.errors[0]?.code, 'UNAVAILABLE');
    }
    // A fault of the registry itself stays a 500.
    registry.resolveManifest = async () => {
      throw new TypeError('cannot read properties of undefined');
    };
    assert.equal((await fetch(`${reg.url}/v2/outage/manifests/latest`)).status, 500);
  } finally {
    registry.resolveManifest = original;
  }
});
