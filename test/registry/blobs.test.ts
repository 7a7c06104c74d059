// Blob uploads and pulls (src/registry/blobs.ts) against a real server, where requests to one
// session overlap or misbehave: whatever the order, a blob is only ever served with the bytes of
// its digest.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';

const sha256 = (data: string | Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

let reg: TestRegistry;
before(async () => {
  reg = await startTestRegistry();
});
after(() => reg.dispose());

async function call(method: string, path: string, init: { body?: string | Buffer; headers?: Record<string, string> } = {}) {
  const res = await fetch(`${reg.url}${path}`, { method, headers: init.headers ?? {}, ...(init.body !== undefined ? { body: init.body } : {}) });
  const body = Buffer.from(await res.arrayBuffer());
  assert.ok(res.status < 500, `${method} ${path} answered ${res.status}: ${body}`);
  return { status: res.status, headers: res.headers, body };
}

/** A request whose head and first body bytes are sent now; `finish` sends the rest and reads the answer. */
function startRaw(head: string, first: string): { socket: Socket; finish(rest: string): Promise<string> } {
  const socket = connect({ host: '127.0.0.1', port: Number(new URL(reg.url).port) });
  const chunks: Buffer[] = [];
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.on('data', (chunk) => {
    chunks.push(chunk);
    if (/\r\n\r\n/.test(Buffer.concat(chunks).toString())) socket.end();
  });
  socket.on('error', () => undefined);
  socket.write(head + first);
  return {
    socket,
    async finish(rest) {
      socket.write(rest);
      await closed;
      return Buffer.concat(chunks).toString('utf8');
    },
  };
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('overlapping requests on one upload session', () => {
  test('a PUT while a PATCH is still arriving never commits a blob that the PATCH then changes', async () => {
    const open = await call('POST', '/v2/overlap/a/blobs/uploads/');
    const location = open.headers.get('location')!;
    assert.equal((await call('PATCH', location, { body: 'first,', headers: { 'Content-Range': '0-5' } })).status, 202);
    // A second PATCH: its head and half its body are in, the rest is on its way.
    const patch = startRaw(`PATCH ${location} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nContent-Range: 6-15\r\n\r\n`, 'AAAAA');
    await pause(200);
    const digest = sha256('first,');
    const put = await call('PUT', `${location}?digest=${digest}`);
    const answer = await patch.finish('BBBBB');
    assert.match(answer, /^HTTP\/1\.1 \d{3} /);
    if (put.status === 201) {
      // Acknowledged: the blob must hold exactly the bytes of its digest.
      const pulled = await call('GET', `/v2/overlap/a/blobs/${digest}`);
      assert.equal(pulled.status, 200);
      assert.equal(sha256(pulled.body), digest, `blob ${digest} is served as ${JSON.stringify(pulled.body.toString())}`);
    } else {
      assert.equal(put.status, 416, put.body.toString());
      const full = sha256('first,AAAAABBBBB');
      assert.equal((await call('PUT', `${location}?digest=${full}`)).status, 201);
      assert.equal((await call('GET', `/v2/overlap/a/blobs/${full}`)).body.toString(), 'first,AAAAABBBBB');
    }
    // The same bytes pushed to another repository (stored as a link to the first) are intact too.
    assert.equal((await call('POST', `/v2/overlap/b/blobs/uploads/?digest=${digest}`, { body: 'first,' })).status, 201);
    assert.equal((await call('GET', `/v2/overlap/b/blobs/${digest}`)).body.toString(), 'first,');
  });
});

describe('blobs stored as links to another repository\'s copy', () => {
  test('a blob just pushed or mounted is inside the collection grace period even when its bytes are old', async () => {
    const gc = await startTestRegistry({ gcGraceSeconds: 2 });
    try {
      const at = (path: string, init: RequestInit = {}) => fetch(`${gc.url}${path}`, init);
      const content = 'layer shared by many images';
      const digest = sha256(content);
      for (const repo of ['grace/old', 'grace/again']) assert.equal((await at(`/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: content })).status, 201);
      await pause(2500); // the first copy is now older than the grace period
      // Acknowledged now, with no manifest yet (a client pushes layers first): the grace period covers them.
      for (const repo of ['grace/pushed', 'grace/again']) assert.equal((await at(`/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', body: content })).status, 201);
      assert.equal((await at(`/v2/grace/mounted/blobs/uploads/?mount=${digest}&from=grace/old`, { method: 'POST' })).status, 201);
      const report = await (await at('/v2/_trellis/gc', { method: 'POST' })).json() as { removed: { repository: string }[] };
      // (grace/old's copy may go or stay: its bytes are shared with the new ones.)
      assert.deepEqual(report.removed.map((r) => r.repository).filter((name) => name !== 'grace/old'), []);
      for (const repo of ['grace/pushed', 'grace/again', 'grace/mounted']) {
        const blob = await at(`/v2/${repo}/blobs/${digest}`);
        assert.equal(blob.status, 200, `${repo} still holds the blob it acknowledged`);
        assert.equal(await blob.text(), content);
      }
    } finally {
      await gc.dispose();
    }
  });
});

describe('a final PUT refused for its digest parameter', () => {
  test('a PUT without a valid digest leaves its body out of the session', async () => {
    const open = await call('POST', '/v2/put-digest/a/blobs/uploads/');
    const location = open.headers.get('location')!;
    assert.equal((await call('PATCH', location, { body: 'abc', headers: { 'Content-Type': 'application/octet-stream' } })).status, 202);
    for (const query of ['', '?digest=sha256:abc', '?digest=md5:abc']) {
      const put = await call('PUT', `${location}${query}`, { body: 'def', headers: { 'Content-Type': 'application/octet-stream' } });
      assert.equal(put.status, 400, put.body.toString());
      assert.equal(JSON.parse(put.body.toString()).errors[0].code, 'DIGEST_INVALID');
      const status = await call('GET', location);
      assert.equal(status.status, 204);
      assert.equal(status.headers.get('range'), '0-2', `after PUT${query} the session holds more than its PATCH`);
    }
    const digest = sha256('abcdef');
    assert.equal((await call('PUT', `${location}?digest=${digest}`, { body: 'def', headers: { 'Content-Type': 'application/octet-stream' } })).status, 201);
    assert.equal((await call('GET', `/v2/put-digest/a/blobs/${digest}`)).body.toString(), 'abcdef');
  });
});

describe('a client that stops reading a blob', () => {
  let idle: TestRegistry;
  before(async () => {
    idle = await startTestRegistry({ bodyIdleTimeoutSeconds: 0.5 });
  });
  after(() => idle.dispose());

  test('is cut off after the body idle time instead of holding the transfer open', async () => {
    const data = Buffer.alloc(32 << 20, 7);
    const digest = sha256(data);
    const pushed = await fetch(`${idle.url}/v2/stalled/reader/blobs/uploads/?digest=${digest}`, { method: 'POST', body: data, headers: { 'Content-Type': 'application/octet-stream' } });
    assert.equal(pushed.status, 201);
    const socket = connect({ host: '127.0.0.1', port: Number(new URL(idle.url).port) });
    let received = 0;
    socket.on('data', (chunk: Buffer) => { received += chunk.length; });
    socket.on('error', () => undefined);
    const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
    // The client reads nothing; what the server sends piles up in the sockets' buffers.
    socket.pause();
    socket.write(`GET /v2/stalled/reader/blobs/${digest} HTTP/1.1\r\nHost: x\r\n\r\n`);
    // Well past the idle time: the server has given up on this reader.
    await pause(2000);
    socket.resume();
    await Promise.race([closed, pause(5000)]);
    assert.ok(socket.destroyed, 'the connection is still open');
    assert.ok(received < data.length, `all ${received} bytes arrived although the client stopped reading`);
    // Others are served as before.
    assert.equal((await fetch(`${idle.url}/v2/`)).status, 200);
  });
});

describe('the answer to a final PUT', () => {
  test('comes once the session lock is let go: the client\'s next request never finds the upload busy', async () => {
    // Shared locks (replicas on PostgreSQL) are let go with a round trip to the database after the
    // work under them ends; here every release of an upload's lock takes that long, and longer.
    const locks = reg.registry.locks;
    const tryRun = locks.tryRun.bind(locks);
    locks.tryRun = (key, work) => tryRun(key, async () => {
      const value = await work();
      if (key.startsWith('upload:')) await pause(300);
      return value;
    });
    try {
      const open = await call('POST', '/v2/put-answer/a/blobs/uploads/');
      const location = open.headers.get('location')!;
      assert.equal((await call('PATCH', location, { body: 'abc' })).status, 202);
      assert.equal((await call('PUT', `${location}?digest=${sha256('abc')}`)).status, 201);
      // The upload is complete: it is gone, not "being written by another request".
      const after = await call('GET', location);
      assert.equal(after.status, 404, after.body.toString());
      assert.equal(JSON.parse(after.body.toString()).errors[0].code, 'BLOB_UPLOAD_UNKNOWN');
    } finally {
      locks.tryRun = tryRun;
    }
  });
});
