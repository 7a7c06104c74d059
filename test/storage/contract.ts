// The storage seam's contract: every StorageDriver runs these same tests (filesystem.test.ts,
// s3.test.ts). A second implementation that passes them is a drop-in for the registry.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import type { StorageDriver } from '../../src/storage/driver.ts';

export interface DriverFixture {
  driver: StorageDriver;
  dispose(): Promise<void>;
}

const sha = (data: string | Buffer) => createHash('sha256').update(data).digest('hex');
const blobKeyOf = (repository: string, data: string | Buffer) => `${repository}/blobs/sha256/${sha(data)}`;

async function collect(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function appendAll(writable: Writable, chunks: Buffer[]): Promise<void> {
  await pipeline(Readable.from(chunks), writable);
}

/** Bytes that differ at every offset, so a misplaced part or range shows. */
function pattern(size: number, seed = 0): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4) out.writeUInt32LE((i * 2654435761 + seed) >>> 0, Math.min(i, size - 4));
  return out;
}

async function refused(action: () => unknown): Promise<boolean> {
  try {
    const result = action();
    if (result instanceof Readable) {
      await collect(result);
      return false;
    }
    await result;
    return false;
  } catch (err) {
    return /outside the storage root/.test((err as Error).message);
  }
}

export function storageContract(name: string, open: () => Promise<DriverFixture>, options: { largeBytes: number }): void {
  const withDriver = (title: string, body: (driver: StorageDriver) => Promise<void>) =>
    test(`${name}: ${title}`, async () => {
      const fixture = await open();
      try {
        await fixture.driver.prepare();
        await body(fixture.driver);
      } finally {
        await fixture.dispose();
      }
    });

  withDriver('writeFile, stat, readFile and an etag that changes on replace', async (driver) => {
    assert.equal(await driver.stat('r/index.json'), undefined);
    assert.equal(await driver.readFile('r/index.json', 100), undefined);
    const first = await driver.writeFile('r/index.json', '{"a":1}');
    assert.ok(first);
    const info = await driver.stat('r/index.json');
    assert.equal(info?.size, 7);
    assert.equal(info?.etag, first.etag, 'the returned identity is what stat reports');
    assert.ok(Math.abs(info!.modifiedMs - Date.now()) < 60_000);
    assert.deepEqual(await driver.readFile('r/index.json', 100), Buffer.from('{"a":1}'));
    await assert.rejects(driver.readFile('r/index.json', 3), /larger than/);
    const second = await driver.writeFile('r/index.json', '{"a":2}');
    assert.notEqual(second!.etag, first.etag, 'a replaced object has another identity, even at the same size');
    assert.equal((await driver.stat('r/index.json'))?.etag, second!.etag);
  });

  withDriver('files of every size are written and read back whole, within the read limit', async (driver) => {
    // Around 256 KiB the filesystem driver switches from synchronous calls to the thread pool.
    for (const [i, size] of [0, 4, 256 << 10, (256 << 10) + 4, 3 << 20].entries()) {
      const body = pattern(size, i);
      const written = await driver.writeFile(`r/sized-${i}`, body);
      assert.equal(written?.size, size);
      assert.equal(sha((await driver.readFile(`r/sized-${i}`, size))!), sha(body), `${size} bytes`);
      if (size) await assert.rejects(driver.readFile(`r/sized-${i}`, size - 1), /larger than/);
    }
  });

  withDriver('beforeCommit sees the identity before the object is visible', async (driver) => {
    await driver.writeFile('r/index.json', 'old');
    let noted: string | undefined;
    let visibleDuring: string | undefined;
    const written = await driver.writeFile('r/index.json', 'new content', {
      beforeCommit: async (info) => {
        noted = info.etag;
        visibleDuring = (await driver.readFile('r/index.json', 100))?.toString();
      },
    });
    assert.equal(visibleDuring, 'old');
    assert.equal(noted, written!.etag);
    assert.equal((await driver.stat('r/index.json'))?.etag, noted);
  });

  withDriver('conditional create: one winner among concurrent creators, losers change nothing', async (driver) => {
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => driver.writeFile('r/oci-layout', `writer ${i}`, { ifAbsent: true })));
    const winners = results.map((r, i) => (r ? i : -1)).filter((i) => i >= 0);
    assert.equal(winners.length, 1, 'exactly one create succeeds');
    assert.equal((await driver.readFile('r/oci-layout', 100))?.toString(), `writer ${winners[0]}`);
    assert.equal(await driver.writeFile('r/oci-layout', 'late', { ifAbsent: true }), undefined);
    assert.equal((await driver.readFile('r/oci-layout', 100))?.toString(), `writer ${winners[0]}`);
  });

  withDriver('atomic replace: readers see an old or a new version, never a mix', async (driver) => {
    const versions = Array.from({ length: 6 }, (_, i) => pattern(256 << 10, i));
    await driver.writeFile('r/index.json', versions[0]!);
    const known = new Set(versions.map((v) => sha(v)));
    const reads: Promise<void>[] = [];
    for (const version of versions.slice(1)) {
      reads.push((async () => {
        const bytes = await driver.readFile('r/index.json', 1 << 20);
        assert.ok(bytes && known.has(sha(bytes)), 'a read saw a torn object');
      })());
      await driver.writeFile('r/index.json', version);
    }
    await Promise.all(reads);
    assert.equal(sha((await driver.readFile('r/index.json', 1 << 20))!), sha(versions.at(-1)!));
  });

  withDriver('writers: appends, commit, cancel, and a failed append leaves the writer as it was', async (driver) => {
    const writer = await driver.createWriter();
    await appendAll(writer.append(), [Buffer.from('hello '), Buffer.from('wor')]);
    await appendAll(writer.append(), [Buffer.from('ld')]);
    assert.equal(writer.size, 11);
    // A failing body: the bytes it got through must not stay.
    const failing = writer.append();
    failing.on('error', () => undefined);
    failing.write(Buffer.from(' and more'));
    await new Promise<void>((resolve) => {
      failing.once('close', () => resolve());
      failing.destroy(new Error('client went away'));
    });
    assert.equal(writer.size, 11);
    await appendAll(writer.append(), [Buffer.from('!')]);
    assert.equal(await driver.stat('r/blobs/sha256/' + sha('hello world!')), undefined, 'invisible before commit');
    assert.equal(await writer.commit(blobKeyOf('r', 'hello world!')), true);
    assert.deepEqual(await driver.readFile(blobKeyOf('r', 'hello world!'), 100), Buffer.from('hello world!'));

    const cancelled = await driver.createWriter();
    await appendAll(cancelled.append(), [Buffer.from('discard me')]);
    await cancelled.checkpoint();
    await cancelled.cancel();
    assert.equal(await driver.resumeWriter(cancelled.id), undefined);
    assert.ok(!(await driver.listWriters()).some((w) => w.id === cancelled.id));

    const empty = await driver.createWriter();
    assert.equal(await empty.commit(blobKeyOf('r', '')), true, 'an empty writer commits an empty object');
    assert.equal((await driver.stat(blobKeyOf('r', '')))?.size, 0);
  });

  withDriver('writers: a body handed over is written whole; a body not handed over stays the caller\'s', async (driver) => {
    // Whole buffers, slices of one buffer and a piece of Node's buffer pool: enough to
    // stream (several MiB), in the shapes a request body arrives in.
    const whole = Array.from({ length: 40 }, (_, i) => Buffer.from(pattern(64 << 10, i)));
    const shared = pattern(300_000, 99);
    const chunks = [...whole.slice(0, 20), shared.subarray(0, 1000), shared.subarray(1000), Buffer.from('tiny'), ...whole.slice(20)];
    const expected = sha(Buffer.concat(chunks));
    const expectedBytes = chunks.reduce((sum, c) => sum + c.length, 0);
    const writer = await driver.createWriter();
    await appendAll(writer.append({ handOver: true }), chunks);
    assert.equal(writer.size, expectedBytes);
    assert.equal(sha(await collect(writer.read())), expected);

    const kept = pattern(3 << 20, 5);
    const before = sha(kept);
    const second = await driver.createWriter();
    await appendAll(second.append(), [kept]);
    assert.equal(sha(kept), before, 'without handOver the caller\'s buffer is untouched');
    assert.equal(sha(await collect(second.read())), before);
  });

  withDriver('writers: a failed append of a large body leaves the writer as it was', async (driver) => {
    const start = pattern(100_000, 1);
    const writer = await driver.createWriter();
    await appendAll(writer.append(), [start]);
    const failing = writer.append({ handOver: true });
    failing.on('error', () => undefined);
    // Past the point where a filesystem writer streams to its write thread.
    for (let i = 0; i < 48; i++) failing.write(pattern(64 << 10, i));
    await new Promise((resolve) => setTimeout(resolve, 50));
    await new Promise<void>((resolve) => {
      failing.once('close', () => resolve());
      failing.destroy(new Error('client went away'));
    });
    assert.equal(writer.size, start.length);
    const end = Buffer.from('end');
    await appendAll(writer.append({ handOver: true }), [Buffer.from(end)]);
    assert.equal(sha(await collect(writer.read())), sha(Buffer.concat([start, end])));
  });

  withDriver('writers: a large body in odd chunks, read back whole and by ranges', async (driver) => {
    const body = pattern(options.largeBytes, 7);
    const writer = await driver.createWriter();
    // Split into uneven batches (as chunked uploads arrive), each in uneven chunks.
    const cuts = [0, 1, 3 << 20, (3 << 20) + 17, Math.floor(body.length / 2), body.length - 5, body.length];
    for (let i = 0; i + 1 < cuts.length; i++) {
      const slice = body.subarray(cuts[i], cuts[i + 1]);
      const chunks: Buffer[] = [];
      for (let at = 0; at < slice.length; at += 700_001) chunks.push(slice.subarray(at, at + 700_001));
      await appendAll(writer.append(), chunks);
      await writer.checkpoint();
    }
    assert.equal(writer.size, body.length);
    assert.equal(sha(await collect(writer.read())), sha(body), 'read() returns every byte in order');
    const key = `r/blobs/sha256/${sha(body)}`;
    assert.equal(await writer.commit(key), true);
    assert.equal((await driver.stat(key))?.size, body.length);
    assert.equal(sha(await collect(driver.readStream(key))), sha(body));
    const range = { start: (5 << 20) + 3, end: (5 << 20) + 1_000_000 };
    assert.deepEqual(await collect(driver.readStream(key, range)), body.subarray(range.start, range.end + 1));
    // sendTo may reuse a buffer once its write calls back (a socket has copied it by then).
    const received: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        received.push(Buffer.from(chunk));
        done();
      },
    });
    await driver.sendTo(key, sink, { start: 10, end: body.length - 1 });
    assert.equal(sha(Buffer.concat(received)), sha(body.subarray(10)));
  });

  withDriver('writers survive a restart after checkpoint and continue', async (driver) => {
    const writer = await driver.createWriter();
    await appendAll(writer.append(), [Buffer.from('part one, ')]);
    await writer.checkpoint();
    assert.ok((await driver.listWriters()).some((w) => w.id === writer.id));
    const resumed = await driver.resumeWriter(writer.id);
    assert.ok(resumed);
    assert.equal(resumed.size, 10);
    await appendAll(resumed.append(), [Buffer.from('part two')]);
    assert.deepEqual(await collect(resumed.read()), Buffer.from('part one, part two'));
    assert.equal(await resumed.commit('r/plain-object'), true);
    assert.deepEqual(await driver.readFile('r/plain-object', 100), Buffer.from('part one, part two'));
    assert.equal(await driver.resumeWriter(writer.id), undefined, 'a committed writer is gone');
  });

  withDriver('writer commit with ifAbsent refuses an existing key and keeps it', async (driver) => {
    await driver.writeFile('r/x', 'first');
    const writer = await driver.createWriter();
    await appendAll(writer.append(), [Buffer.from('second')]);
    assert.equal(await writer.commit('r/x', { ifAbsent: true }), false);
    assert.equal((await driver.readFile('r/x', 100))?.toString(), 'first');
    const other = await driver.createWriter();
    await appendAll(other.append(), [Buffer.from('third')]);
    assert.equal(await other.commit('r/y', { ifAbsent: true }), true);
  });

  withDriver('concurrent writers do not mix their bytes', async (driver) => {
    const bodies = Array.from({ length: 4 }, (_, i) => pattern((1 << 20) + i * 1001, 100 + i));
    await Promise.all(bodies.map(async (body) => {
      const writer = await driver.createWriter();
      for (let at = 0; at < body.length; at += 300_000) await appendAll(writer.append(), [body.subarray(at, at + 300_000)]);
      await writer.commit(`r/blobs/sha256/${sha(body)}`);
    }));
    for (const body of bodies) assert.equal(sha((await driver.readFile(`r/blobs/sha256/${sha(body)}`, 4 << 20))!), sha(body));
    // Many writers into one key: the result is one of them, whole.
    await Promise.all(bodies.map(async (body) => {
      const writer = await driver.createWriter();
      await appendAll(writer.append(), [body]);
      await writer.commit('r/same');
    }));
    const final = sha((await driver.readFile('r/same', 4 << 20))!);
    assert.ok(bodies.some((b) => sha(b) === final));
  });

  withDriver('copy shares content between repositories; removing one holder keeps the other', async (driver) => {
    const content = Buffer.from('shared layer');
    await driver.writeFile(blobKeyOf('a', content), content);
    assert.equal(await driver.copy(blobKeyOf('a', content), blobKeyOf('b', content)), true);
    assert.equal(await driver.copy(blobKeyOf('a', content), blobKeyOf('c/nested', content)), true);
    assert.equal((await driver.stat(blobKeyOf('b', content)))?.size, content.length);
    assert.equal(await driver.remove(blobKeyOf('a', content)), true);
    assert.equal(await driver.stat(blobKeyOf('a', content)), undefined);
    assert.deepEqual(await driver.readFile(blobKeyOf('b', content), 100), content, 'still referenced: never removed');
    assert.equal(await driver.remove(blobKeyOf('b', content)), true);
    assert.deepEqual(await driver.readFile(blobKeyOf('c/nested', content), 100), content);
    assert.equal(await driver.copy(blobKeyOf('a', content), blobKeyOf('d', content)), false, 'an absent source copies nothing');
    // Plain keys copy too, and an existing target is replaced.
    await driver.writeFile('a/index.json', 'index');
    await driver.writeFile('e/index.json', 'old');
    assert.equal(await driver.copy('a/index.json', 'e/index.json'), true);
    assert.equal((await driver.readFile('e/index.json', 100))?.toString(), 'index');
  });

  // GC's grace period for a just-acknowledged upload goes by the copy's modification time: a copy
  // shared from an old holder, or made onto a target that already existed, counts as written now.
  withDriver('a copy is modified when it was made, not when its source or an earlier copy was', async (driver) => {
    const content = Buffer.from('layer shared later');
    await driver.writeFile(blobKeyOf('old', content), content);
    assert.equal(await driver.copy(blobKeyOf('old', content), blobKeyOf('early', content)), true);
    // Above an object store's smallest multipart part: the upload is moved into place, not rewritten.
    const large = Buffer.alloc(9 << 20, 'large layer ');
    const first = await driver.createWriter();
    await appendAll(first.append(), [large]);
    assert.equal(await first.commit(blobKeyOf('placed', large)), true);
    // Object stores keep whole seconds.
    await new Promise((resolve) => setTimeout(resolve, 2100));
    const before = Date.now() - 1000;
    assert.equal(await driver.copy(blobKeyOf('old', content), blobKeyOf('fresh', content)), true);
    assert.ok((await driver.stat(blobKeyOf('fresh', content)))!.modifiedMs >= before, 'a new copy of an old source');
    assert.equal(await driver.copy(blobKeyOf('old', content), blobKeyOf('early', content)), true);
    assert.ok((await driver.stat(blobKeyOf('early', content)))!.modifiedMs >= before, 'a copy onto an existing target');
    assert.deepEqual(await driver.readFile(blobKeyOf('early', content), 100), content);
    const again = await driver.createWriter();
    await appendAll(again.append(), [large]);
    assert.equal(await again.commit(blobKeyOf('placed', large)), true);
    const placed = await driver.stat(blobKeyOf('placed', large));
    assert.ok(placed!.modifiedMs >= before, 'an upload committed onto an existing blob');
    assert.equal(placed!.size, large.length);
  });

  withDriver('remove and list', async (driver) => {
    assert.equal(await driver.remove('r/missing'), false);
    await driver.writeFile('r/index.json', '{}');
    await driver.writeFile('r/oci-layout', '{}');
    await driver.writeFile(blobKeyOf('r', 'x'), 'x');
    await driver.writeFile('r/nested/index.json', '{}');
    const listing = (await driver.list('r')).sort((a, b) => a.name.localeCompare(b.name));
    assert.deepEqual(listing, [
      { name: 'blobs', dir: true }, { name: 'index.json', dir: false }, { name: 'nested', dir: true }, { name: 'oci-layout', dir: false },
    ]);
    assert.deepEqual(await driver.list('r/blobs/sha256'), [{ name: sha('x'), dir: false }]);
    assert.ok((await driver.list('')).some((e) => e.name === 'r' && e.dir));
    assert.deepEqual(await driver.list('absent'), []);
    assert.equal(await driver.remove('r/index.json'), true);
    assert.equal(await driver.stat('r/index.json'), undefined);
    assert.equal(await driver.remove(blobKeyOf('r', 'x')), true);
    assert.deepEqual(await driver.list('r/blobs/sha256'), []);
    await assert.rejects(collect(driver.readStream(blobKeyOf('r', 'x'))), 'a removed object cannot be read');
  });

  withDriver('keys outside the root are refused by every method', async (driver) => {
    for (const key of ['../escape', '/absolute', 'a/../../b', 'a//b', './a', 'a/.', 'nul\0byte', '']) {
      assert.ok(await refused(() => driver.stat(key)), `stat ${JSON.stringify(key)}`);
      assert.ok(await refused(() => driver.readFile(key, 10)), `readFile ${JSON.stringify(key)}`);
      assert.ok(await refused(() => driver.writeFile(key, 'x')), `writeFile ${JSON.stringify(key)}`);
      assert.ok(await refused(() => driver.readStream(key)), `readStream ${JSON.stringify(key)}`);
      assert.ok(await refused(() => driver.remove(key)), `remove ${JSON.stringify(key)}`);
      assert.ok(await refused(() => driver.copy('r/x', key)), `copy to ${JSON.stringify(key)}`);
      if (key) assert.ok(await refused(() => driver.list(key)), `list ${JSON.stringify(key)}`);
      const writer = await driver.createWriter();
      assert.ok(await refused(() => writer.commit(key)), `commit ${JSON.stringify(key)}`);
      await writer.cancel();
    }
  });
}
