// The storage contract on the S3 driver against a real S3-compatible server (versitygw), plus the
// server features the driver relies on, checked directly: multipart uploads, CopyObject and
// conditional creates (If-None-Match: * answered with 412).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { CopyObjectCommand, CreateMultipartUploadCommand, CompleteMultipartUploadCommand, GetObjectCommand, PutObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { S3Driver, parseS3Url } from '../../src/storage/s3.ts';
import { requireS3Server, startS3Server, useCredentials, type S3Server } from '../helpers/s3.ts';
import { storageContract } from './contract.ts';

const binary = requireS3Server();
let server: S3Server | undefined;

before(async () => {
  if (!binary) return;
  server = await startS3Server(binary);
  useCredentials(server);
});
after(() => server?.stop());

if (!binary) {
  test('S3 storage (versitygw not installed: run .ci/install-peers.sh)', (t) => t.skip('versitygw is not installed'));
} else {
  storageContract('s3', async () => {
    const driver = new S3Driver(parseS3Url(server!.storageUrl()));
    return { driver, dispose: () => driver.close() };
  }, { largeBytes: 20 << 20 });

  test('s3: the server does multipart uploads, CopyObject and If-None-Match: * with 412', async () => {
    const driver = new S3Driver(parseS3Url(server!.storageUrl()));
    const { client, bucket } = driver;
    const key = `${driver.prefix}probe`;
    try {
      const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key }));
      const first = Buffer.alloc(5 << 20, 1);
      const last = Buffer.from('tail');
      const p1 = await client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: 1, Body: first }));
      const p2 = await client.send(new UploadPartCommand({ Bucket: bucket, Key: key, UploadId, PartNumber: 2, Body: last }));
      await client.send(new CompleteMultipartUploadCommand({
        Bucket: bucket, Key: key, UploadId, MultipartUpload: { Parts: [{ PartNumber: 1, ETag: p1.ETag! }, { PartNumber: 2, ETag: p2.ETag! }] },
      }));
      const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=${(5 << 20) - 1}-` }));
      assert.deepEqual(Buffer.from(await got.Body!.transformToByteArray()), Buffer.concat([Buffer.from([1]), last]));
      await client.send(new CopyObjectCommand({ Bucket: bucket, Key: `${key}-copy`, CopySource: `${bucket}/${key}` }));
      assert.equal((await driver.head(`${key}-copy`))?.size, (5 << 20) + 4);
      const refused = await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: 'x', IfNoneMatch: '*' })).then(() => 200, (err) => err.$metadata?.httpStatusCode);
      assert.equal(refused, 412);
      await client.send(new PutObjectCommand({ Bucket: bucket, Key: `${key}-new`, Body: 'x', IfNoneMatch: '*' }));
    } finally {
      await driver.close();
    }
  });

  /** Makes the next `count` PutObject requests for keys ending with `suffix` fail, as a 503 SlowDown would. */
  const failPuts = (driver: S3Driver, suffix: string, count: number) => {
    let left = count;
    driver.client.middlewareStack.add((next, context) => async (args) => {
      const input = args.input as { Key?: string };
      if (left > 0 && context.commandName === 'PutObjectCommand' && input.Key?.endsWith(suffix)) {
        left--;
        throw Object.assign(new Error('SlowDown (injected)'), { name: 'SlowDown', $metadata: { httpStatusCode: 503 } });
      }
      return next(args);
    }, { step: 'initialize', name: `fail-${suffix}-${Math.random()}` });
  };
  const readAll = async (stream: NodeJS.ReadableStream) => {
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  };
  const appendBytes = async (writer: { append(): NodeJS.WritableStream }, bytes: Buffer) => {
    const { pipeline } = await import('node:stream/promises');
    const { Readable } = await import('node:stream');
    await pipeline(Readable.from([bytes]), writer.append() as import('node:stream').Writable);
  };

  test('s3: a checkpoint whose state write fails leaves the writer as it was before that append', async () => {
    const driver = new S3Driver(parseS3Url(server!.storageUrl()));
    try {
      const first = await driver.createWriter();
      await appendBytes(first, Buffer.from('first chunk;'));
      await first.checkpoint();
      // The next PATCH, on another replica: its bytes are appended, but saving the state fails.
      const second = (await driver.resumeWriter(first.id))!;
      await appendBytes(second, Buffer.from('second chunk, never acknowledged;'));
      failPuts(driver, `${first.id}/state.json`, 1);
      await assert.rejects(second.checkpoint(), /SlowDown/);
      // The client retries from the offset it was told: the writer is as the last checkpoint left it.
      const third = (await driver.resumeWriter(first.id))!;
      assert.equal(third.size, 12);
      await appendBytes(third, Buffer.from('retried;'));
      await third.checkpoint();
      const fourth = (await driver.resumeWriter(first.id))!;
      assert.equal((await readAll(fourth.read())).toString(), 'first chunk;retried;');
      await fourth.cancel();
      assert.deepEqual(await driver.list(`_trellis/uploads/${first.id}`), [], 'nothing of the writer is left');
    } finally {
      await driver.close();
    }
  });

  test('s3: a writer whose multipart upload was completed but not noted (a failed state write) still reads and commits', async () => {
    const driver = new S3Driver(parseS3Url(server!.storageUrl()));
    try {
      const bytes = Buffer.alloc((8 << 20) + 100, 7);
      const writer = await driver.createWriter();
      await appendBytes(writer, bytes);
      await writer.checkpoint();
      // The final PUT completes the parts into `data`, then noting that fails (or the replica dies).
      failPuts(driver, `${writer.id}/state.json`, 1);
      await assert.rejects(readAll((await driver.resumeWriter(writer.id))!.read()), /SlowDown/);
      // The client sends its PUT again (to any replica).
      const again = (await driver.resumeWriter(writer.id))!;
      assert.equal((await readAll(again.read())).length, bytes.length);
      const key = `sealed/blobs/sha256/${createHash('sha256').update(bytes).digest('hex')}`;
      assert.equal(await again.commit(key), true);
      assert.equal((await driver.stat(key))?.size, bytes.length);
    } finally {
      await driver.close();
    }
  });

  test('s3: blobs are stored once; presigned redirect URLs serve the bytes', async () => {
    const driver = new S3Driver(parseS3Url(server!.storageUrl()));
    try {
      const hex = 'b'.repeat(64);
      await driver.writeFile(`one/blobs/sha256/${hex}`, 'layer bytes');
      await driver.copy(`one/blobs/sha256/${hex}`, `two/blobs/sha256/${hex}`);
      const shared = await driver.head(`${driver.prefix}blobs/sha256/${hex}`);
      assert.equal(shared?.size, 11, 'one shared object holds the bytes');
      assert.equal((await driver.head(`${driver.prefix}two/blobs/sha256/${hex}`))?.size, 0, 'each repository holds an empty marker');
      const url = await driver.redirectUrl(`two/blobs/sha256/${hex}`, 60);
      const res = await fetch(url!);
      assert.equal(res.status, 200);
      assert.equal(await res.text(), 'layer bytes');
      await driver.remove(`one/blobs/sha256/${hex}`);
      assert.ok(await driver.head(`${driver.prefix}blobs/sha256/${hex}`), 'still referenced by two');
      await driver.remove(`two/blobs/sha256/${hex}`);
      assert.equal(await driver.head(`${driver.prefix}blobs/sha256/${hex}`), undefined, 'the last reference removes the bytes');
    } finally {
      await driver.close();
    }
  });
}

test('s3: an endpoint that accepts connections and never answers fails a request within its idle timeout, not never', async () => {
  const sockets: Socket[] = [];
  const silent = createServer((socket) => void sockets.push(socket)); // takes the connection, says nothing
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const { port } = silent.address() as AddressInfo;
  const previous = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
  process.env.AWS_ACCESS_KEY_ID ??= 'silent';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'silent';
  const driver = new S3Driver(parseS3Url(`s3://bucket/p?endpoint=http://127.0.0.1:${port}&idleTimeoutMs=300`));
  try {
    const started = performance.now();
    const stuck = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('still waiting after 15 s')), 15_000).unref());
    await assert.rejects(Promise.race([driver.stat('repo/index.json'), stuck]), (err: Error) => err.name === 'TimeoutError' || /timed? ?out/i.test(err.message));
    assert.ok(performance.now() - started < 10_000, 'the request waited far past its idle timeout (with retries)');
  } finally {
    await driver.close();
    for (const socket of sockets) socket.destroy();
    silent.close();
    if (previous.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
    if (previous.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
  }
});

test('s3: timeouts in the storage URL are whole milliseconds above 0', () => {
  assert.equal(parseS3Url('s3://b/p').idleTimeoutMs, 300_000);
  assert.equal(parseS3Url('s3://b/p?connectTimeoutMs=2500').connectTimeoutMs, 2500);
  for (const bad of ['0', '-1', '1.5', 'soon']) assert.throws(() => parseS3Url(`s3://b/p?idleTimeoutMs=${bad}`), /whole number of milliseconds/);
});
