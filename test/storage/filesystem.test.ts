// The storage contract on the filesystem driver, plus what only a filesystem promises: blobs shared
// between repositories are hard links, and every write goes through a temp file + rename.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { FileSystemDriver } from '../../src/storage/filesystem.ts';
import { storageContract } from './contract.ts';

async function openFileSystem() {
  const root = await mkdtemp(join(tmpdir(), 'trellis-fs-contract-'));
  return { driver: new FileSystemDriver(root), root, dispose: () => rm(root, { recursive: true, force: true }) };
}

storageContract('filesystem', openFileSystem, { largeBytes: 20 << 20 });

test('filesystem: a copied blob is a hard link (stored once)', async () => {
  const { driver, root, dispose } = await openFileSystem();
  try {
    await driver.prepare();
    const key = (repo: string) => `${repo}/blobs/sha256/${'a'.repeat(64)}`;
    await driver.writeFile(key('one'), 'content');
    assert.equal(await driver.copy(key('one'), key('two')), true);
    const [a, b] = await Promise.all([stat(join(root, key('one'))), stat(join(root, key('two')))]);
    assert.equal(a.ino, b.ino);
    await driver.createFolder('empty/blobs');
    assert.ok((await stat(join(root, 'empty/blobs'))).isDirectory(), 'an empty layout still has its blobs folder');
  } finally {
    await dispose();
  }
});

/** A destination that keeps copies of what it is given and calls back after a tick, like a socket. */
function collector(): { stream: Writable; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _encoding, done) {
      chunks.push(Buffer.from(chunk)); // a copy: the driver reuses its buffers once we call back
      setImmediate(done);
    },
  });
  return { stream, bytes: () => Buffer.concat(chunks) };
}

test('filesystem: sendTo delivers a file of several buffers and byte ranges exactly; a short file is an error', async () => {
  const { driver, root, dispose } = await openFileSystem();
  try {
    const data = randomBytes(3 * 1024 * 1024 + 12345);
    await mkdir(join(root, 'r'), { recursive: true });
    await writeFile(join(root, 'r/blob'), data);
    const whole = collector();
    await driver.sendTo('r/blob', whole.stream, { start: 0, end: data.length - 1 });
    assert.ok(whole.bytes().equals(data));
    for (const [start, end] of [[0, 0], [5, 1048580], [1048576, 2 * 1048576], [data.length - 10, data.length - 1]] as const) {
      const part = collector();
      await driver.sendTo('r/blob', part.stream, { start, end });
      assert.ok(part.bytes().equals(data.subarray(start, end + 1)), `range ${start}-${end}`);
    }
    // A file shorter than the range asked for is an error, not a short answer that looks whole.
    await assert.rejects(driver.sendTo('r/blob', collector().stream, { start: 0, end: data.length }), /ended at/);
    // The same for a range small enough to be read in one piece (up to 256 KiB).
    await writeFile(join(root, 'r/small'), data.subarray(0, 100));
    await assert.rejects(driver.sendTo('r/small', collector().stream, { start: 0, end: 100 }), /ended at/);
    const small = collector();
    await driver.sendTo('r/small', small.stream, { start: 1, end: 99 });
    assert.ok(small.bytes().equals(data.subarray(1, 100)));
  } finally {
    await dispose();
  }
});

test('filesystem: sendTo stops when the destination closes mid-transfer', async () => {
  const { driver, root, dispose } = await openFileSystem();
  try {
    await writeFile(join(root, 'blob'), randomBytes(8 * 1024 * 1024));
    let writes = 0;
    // Like a response whose socket is gone: it never calls back, then closes.
    const stalled = new Writable({
      write() {
        if (++writes === 1) setTimeout(() => stalled.destroy(), 10);
      },
    });
    await assert.rejects(driver.sendTo('blob', stalled, { start: 0, end: 8 * 1024 * 1024 - 1 }), /closed before the transfer ended/);
    assert.equal(writes, 1, 'nothing more reaches the destination once it stalls');
  } finally {
    await dispose();
  }
});
