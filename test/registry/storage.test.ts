// The registry over each storage driver: chunked uploads larger than S3's part size in small
// PATCHes across a restart, blobs shared between repositories, and blob GETs redirected to a
// presigned URL when storageRedirectSeconds is set (S3 only; access is checked first).
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { test } from 'node:test';
import { parseS3Url } from '../../src/storage/s3.ts';
import { openStorage } from '../../src/storage/index.ts';
import { startTestRegistry, testS3Server, type TestRegistry } from '../helpers/registry.ts';
import { requireS3Server } from '../helpers/s3.ts';

const sha256 = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;
const s3Binary = requireS3Server();

async function storages(): Promise<{ name: string; storage: string }[]> {
  const list = [{ name: 'filesystem', storage: '' }];
  if (s3Binary) list.push({ name: 's3', storage: (await testS3Server()).storageUrl() });
  return list;
}

async function chunkedUpload(reg: TestRegistry, repo: string, body: Buffer, chunk: number, restartAfter: number): Promise<TestRegistry> {
  const opened = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  assert.equal(opened.status, 202);
  let location = opened.headers.get('location')!;
  let current = reg;
  for (let at = 0, n = 0; at < body.length; at += chunk, n++) {
    if (n === restartAfter) {
      await current.close();
      current = await startTestRegistry({ storage: current.registry.options.storage ?? '' }, current.dataDir);
    }
    const part = body.subarray(at, at + chunk);
    const res = await fetch(`${current.url}${location}`, {
      method: 'PATCH', body: part, headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${at}-${at + part.length - 1}` },
    });
    assert.equal(res.status, 202, await res.text());
    assert.equal(res.headers.get('range'), `0-${at + part.length - 1}`);
    location = res.headers.get('location')!;
  }
  const done = await fetch(`${current.url}${location}${location.includes('?') ? '&' : '?'}digest=${sha256(body)}`, { method: 'PUT' });
  assert.equal(done.status, 201, await done.text());
  return current;
}

test('chunked uploads in small PATCHes survive a restart and keep every byte, on every storage', async () => {
  for (const { name, storage } of await storages()) {
    let reg = await startTestRegistry({ storage });
    try {
      // 11 MiB in 700 KiB chunks: S3 parts must be 5 MiB or more, so chunks are accumulated.
      const body = randomBytes((11 << 20) + 333);
      reg = await chunkedUpload(reg, 'chunked/app', body, 700 << 10, 9);
      const pulled = Buffer.from(await (await fetch(`${reg.url}/v2/chunked/app/blobs/${sha256(body)}`)).arrayBuffer());
      assert.equal(sha256(pulled), sha256(body), `${name}: the pulled blob is the uploaded one`);
      const range = await fetch(`${reg.url}/v2/chunked/app/blobs/${sha256(body)}`, { headers: { Range: 'bytes=6000000-6000099' } });
      assert.equal(range.status, 206);
      assert.deepEqual(Buffer.from(await range.arrayBuffer()), body.subarray(6_000_000, 6_000_100));
      assert.deepEqual(await reg.registry.driver.listWriters(), [], `${name}: no upload state is left behind`);
    } finally {
      await reg.dispose();
      await rm(reg.dataDir, { recursive: true, force: true });
    }
  }
});

test('s3: a blob held by two repositories is stored once and survives the delete of one', async (t) => {
  if (!s3Binary) return t.skip('versitygw is not installed');
  const reg = await startTestRegistry({ storage: (await testS3Server()).storageUrl() });
  try {
    const body = randomBytes(4096);
    const digest = sha256(body);
    for (const repo of ['one/app', 'two/app']) {
      const res = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/?digest=${digest}`, { method: 'POST', body, headers: { 'Content-Type': 'application/octet-stream' } });
      assert.equal(res.status, 201);
    }
    const driver = await openStorage(reg.registry.options.storage!, reg.dataDir, { durable: false });
    const shared = await driver.list('blobs/sha256');
    await driver.close();
    assert.deepEqual(shared.map((e) => e.name), [digest.slice(7)], 'one object under blobs/ holds the bytes');
    assert.equal((await fetch(`${reg.url}/v2/one/app/blobs/${digest}`, { method: 'DELETE' })).status, 202);
    assert.equal((await fetch(`${reg.url}/v2/one/app/blobs/${digest}`, { method: 'HEAD' })).status, 404);
    const still = await fetch(`${reg.url}/v2/two/app/blobs/${digest}`);
    assert.equal(still.status, 200);
    assert.deepEqual(Buffer.from(await still.arrayBuffer()), body);
  } finally {
    await reg.dispose();
  }
});

test('s3: with storageRedirectSeconds blob GETs answer 307 to a presigned URL; HEAD and the filesystem stay local', async (t) => {
  if (!s3Binary) return t.skip('versitygw is not installed');
  const storage = (await testS3Server()).storageUrl();
  assert.equal(parseS3Url(storage).forcePathStyle, true, 'a custom endpoint uses path-style addressing');
  const reg = await startTestRegistry({ storage, storageRedirectSeconds: 60 });
  const local = await startTestRegistry({ storage: '', storageRedirectSeconds: 60 });
  try {
    const body = randomBytes(2048);
    const digest = sha256(body);
    for (const r of [reg, local]) {
      const res = await fetch(`${r.url}/v2/redirect/app/blobs/uploads/?digest=${digest}`, { method: 'POST', body, headers: { 'Content-Type': 'application/octet-stream' } });
      assert.equal(res.status, 201);
    }
    const get = await fetch(`${reg.url}/v2/redirect/app/blobs/${digest}`, { redirect: 'manual' });
    assert.equal(get.status, 307);
    const location = get.headers.get('location')!;
    assert.match(location, /X-Amz-Signature=/);
    const followed = await fetch(location);
    assert.deepEqual(Buffer.from(await followed.arrayBuffer()), body);
    assert.equal((await fetch(`${reg.url}/v2/redirect/app/blobs/${digest}`, { method: 'HEAD', redirect: 'manual' })).status, 200);
    assert.equal((await fetch(`${reg.url}/v2/redirect/app/blobs/${sha256(randomBytes(8))}`, { redirect: 'manual' })).status, 404, 'no URL for what is not there');
    assert.equal((await fetch(`${local.url}/v2/redirect/app/blobs/${digest}`, { redirect: 'manual' })).status, 200, 'a filesystem has no URL to offer');
  } finally {
    await reg.dispose();
    await local.dispose();
  }
});

test('storage settings: unknown schemes are refused; keys outside the prefix never reach the bucket', async () => {
  await assert.rejects(openStorage('gs://bucket/x', '/tmp', { durable: false }), /only a path or s3:\/\//);
  assert.throws(() => parseS3Url('s3:///nobucket'), /not s3:\/\/bucket/);
  assert.throws(() => parseS3Url('s3://bucket/a%2F%2Fb'), /outside the storage root/);
  const location = parseS3Url('s3://bucket/some/prefix/?region=eu-central-1');
  assert.deepEqual({ ...location }, { bucket: 'bucket', prefix: 'some/prefix/', region: 'eu-central-1', forcePathStyle: false, connectTimeoutMs: 10_000, idleTimeoutMs: 300_000 });
});
