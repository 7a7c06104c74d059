// The storage contract on the filesystem driver, plus what only a filesystem promises: blobs shared
// between repositories are hard links, and every write goes through a temp file + rename.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { test } from 'node:test';
import { FileSystemDriver } from '../../src/storage/filesystem.ts';
import { writeThread } from '../../src/storage/write-thread.ts';
import { storageContract } from './contract.ts';

const execFileAsync = promisify(execFile);

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

test('filesystem: a streaming append hands whole chunks to the write thread and copies slices', async () => {
  const { driver, dispose } = await openFileSystem();
  try {
    await driver.prepare();
    const whole = Array.from({ length: 16 }, () => randomBytes(64 << 10));
    const backing = randomBytes(128 << 10);
    const slices = [backing.subarray(0, 64 << 10), backing.subarray(64 << 10)];
    const expected = createHash('sha256').update(Buffer.concat([...whole, ...slices])).digest('hex');
    const writer = await driver.createWriter();
    await pipeline(Readable.from([...whole, ...slices]), writer.append({ handOver: true }));
    assert.ok(whole.every((chunk) => chunk.length === 0), 'whole chunks were handed over, not copied');
    assert.equal(backing.length, 128 << 10, 'a buffer the chunks only share is left alone');
    const read = createHash('sha256');
    for await (const chunk of writer.read()) read.update(chunk as Buffer);
    assert.equal(read.digest('hex'), expected);
  } finally {
    await dispose();
  }
});

/**
 * Runs `body` (a module's statements, with `driver` on a fresh root and `createHash` in scope) in
 * its own Node process, so that nothing of this test runner keeps its event loop alive; answers
 * what it printed. `fileSizeLimitKiB` caps the size of any file it writes (writes past it fail).
 */
async function inOwnProcess(root: string, body: string, fileSizeLimitKiB?: number): Promise<string> {
  const script = `
    import { createHash } from 'node:crypto';
    import { FileSystemDriver } from ${JSON.stringify(new URL('../../src/storage/filesystem.ts', import.meta.url).href)};
    const driver = new FileSystemDriver(${JSON.stringify(root)});
    await driver.prepare();
    ${body}`;
  const limit = fileSizeLimitKiB === undefined ? '' : `ulimit -f ${fileSizeLimitKiB} && `;
  // --input-type is one of the process's flags a worker must not inherit: it would not start.
  const { stdout } = await execFileAsync('bash', ['-c', `${limit}exec "$0" --input-type=module -e "$1"`, process.execPath, script]);
  return stdout.trim();
}

/**
 * Module statements defining appendEightMiB(): 64 chunks of 128 KiB appended to a new writer,
 * handed over; it answers the writer, the chunks' hash and the append's error code, if any.
 */
const APPEND_8_MIB = `
  async function appendEightMiB() {
    const writer = await driver.createWriter();
    const sink = writer.append({ handOver: true });
    const hash = createHash('sha256');
    let failed;
    sink.on('error', (err) => { failed = err.code; });
    const ended = new Promise((resolve) => sink.on('close', resolve));
    for (let i = 0; i < 64 && !sink.destroyed; i++) {
      const chunk = Buffer.alloc(128 << 10, i);
      hash.update(chunk);
      if (!sink.write(chunk)) await Promise.race([new Promise((resolve) => sink.once('drain', resolve)), ended]);
    }
    sink.end();
    await ended;
    return { writer, hash: hash.digest('hex'), failed };
  }`;

test('filesystem: a process waits for the write thread to finish an append', async () => {
  const { root, dispose } = await openFileSystem();
  try {
    // Twice: the second append starts after the thread went idle once.
    const printed = await inOwnProcess(root, `${APPEND_8_MIB}
      for (let i = 0; i < 2; i++) {
        const { writer, hash } = await appendEightMiB();
        const read = createHash('sha256');
        for await (const chunk of writer.read()) read.update(chunk);
        console.log(writer.size, hash === read.digest('hex'));
      }`);
    assert.deepEqual(printed.split('\n'), [`${64 * (128 << 10)} true`, `${64 * (128 << 10)} true`]);
  } finally {
    await dispose();
  }
});

test('filesystem: a write the write thread cannot make fails the append and takes back its bytes', async () => {
  const { root, dispose } = await openFileSystem();
  try {
    // Files may not grow past 2 MiB: the thread's writes fail with EFBIG part way.
    const printed = await inOwnProcess(root, `${APPEND_8_MIB}
      const { statSync } = await import('node:fs');
      const { writer, failed } = await appendEightMiB();
      const file = ${JSON.stringify(join(root, '_trellis/uploads'))} + '/' + writer.id;
      console.log(failed, writer.size, statSync(file).size);`, 2048);
    assert.equal(printed, 'EFBIG 0 0');
  } finally {
    await dispose();
  }
  const folder = openSync(tmpdir(), 'r'); // a descriptor that takes no writes
  try {
    await assert.rejects(writeThread.write(folder, [Buffer.from('x')], true), (err: NodeJS.ErrnoException) => err.code === 'EBADF' || err.code === 'EISDIR');
  } finally {
    closeSync(folder);
  }
});

test('filesystem: a write cut off by the disk (here a file size limit) leaves no partial temp file behind', async () => {
  const { root, dispose } = await openFileSystem();
  try {
    // A child under `ulimit -f` (KiB): writing past it fails with EFBIG after the temp file took
    // what fit, as ENOSPC does on a full disk. Node ignores SIGXFSZ, so the call just fails.
    const driverUrl = new URL('../../src/storage/filesystem.ts', import.meta.url).href;
    const script = `
      const { FileSystemDriver } = await import(${JSON.stringify(driverUrl)});
      const outcomes = [];
      for (const durable of [false, true]) {
        const driver = new FileSystemDriver(${JSON.stringify(root)}, { durable });
        await driver.prepare();
        // One written in a single synchronous call, one written off the main thread.
        for (const size of [100 << 10, 1 << 20]) {
          outcomes.push(await driver.writeFile('r/index.json', Buffer.alloc(size, 1)).then(() => 'written', (err) => err.code));
        }
      }
      console.log(JSON.stringify(outcomes));
    `;
    const { stdout } = await execFileAsync('bash', ['-c', 'ulimit -f 16 && exec "$0" --input-type=module -e "$1"', process.execPath, script]);
    assert.deepEqual(JSON.parse(stdout), ['EFBIG', 'EFBIG', 'EFBIG', 'EFBIG']);
    assert.deepEqual(await readdir(join(root, '_trellis/tmp')), [], 'partial temp files hold the space they took until the next start');
  } finally {
    await dispose();
  }
});
