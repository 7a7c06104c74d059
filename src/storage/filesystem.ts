// Filesystem driver: plain files under one root, temp file + rename for every write, hard links
// for content shared between repositories, optional fsync for power-loss durability.
import { createReadStream, createWriteStream, writeFile as writeFileCallback, constants as fsConstants } from 'node:fs';
import { promisify } from 'node:util';
import { mkdir, open, readdir, rename, rm, stat, truncate, unlink, link, copyFile } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import type { FileInfo, StorageDriver } from './driver.ts';

export const TEMP_FOLDER = '_trellis/tmp';

const writeFileAt = promisify(writeFileCallback);
/** Chunk size for streaming blobs: 1 MiB reads take 16× fewer calls than the 64 KiB default. */
const STREAM_CHUNK = 1 << 20;

export class FileSystemDriver implements StorageDriver {
  readonly root: string;
  readonly durable: boolean;

  constructor(root: string, options: { durable?: boolean } = {}) {
    this.root = resolve(root);
    this.durable = options.durable ?? false;
  }

  /** Turns a key into an absolute path, refusing anything that would leave the root. */
  path(key: string): string {
    if (key.includes('\0') || key.startsWith('/') || key.split('/').some((c) => c === '..' || c === '.' || c === '')) {
      throw new Error(`storage key outside the data root: ${JSON.stringify(key)}`);
    }
    const full = join(this.root, key);
    if (!full.startsWith(this.root + sep)) throw new Error(`storage key outside the data root: ${JSON.stringify(key)}`);
    return full;
  }

  async stat(key: string): Promise<FileInfo | undefined> {
    try {
      const s = await stat(this.path(key), { bigint: true });
      if (!s.isFile()) return undefined;
      return { size: Number(s.size), mtimeNs: s.mtimeNs, ino: Number(s.ino) };
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
  }

  readStream(key: string, range?: { start: number; end: number }): Readable {
    return createReadStream(this.path(key), { highWaterMark: STREAM_CHUNK, ...(range ? { start: range.start, end: range.end } : {}) });
  }

  async readFile(key: string, maxBytes: number): Promise<Buffer | undefined> {
    let handle;
    try {
      handle = await open(this.path(key), 'r');
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw err;
    }
    try {
      const { size } = await handle.stat();
      if (size > maxBytes) throw new Error(`file ${key} is larger than ${maxBytes} bytes`);
      return await handle.readFile();
    } finally {
      await handle.close();
    }
  }

  private tempPath(): string {
    return this.path(`${TEMP_FOLDER}/${randomBytes(12).toString('hex')}`);
  }

  async writeAtomic(key: string, data: Uint8Array | string, beforeCommit?: (info: FileInfo) => void | Promise<void>): Promise<void> {
    const target = this.path(key);
    const temp = this.tempPath();
    // fs.writeFile on a path (no FileHandle object) is the cheapest async write for small files.
    const write = () => writeFileAt(temp, data, { flush: this.durable });
    try {
      await write();
    } catch (err) {
      if (!isMissing(err)) throw err;
      await mkdir(dirname(temp), { recursive: true }); // only the first write after start-up
      await write();
    }
    try {
      if (beforeCommit) {
        const info = await stat(temp, { bigint: true });
        await beforeCommit({ size: Number(info.size), mtimeNs: info.mtimeNs, ino: Number(info.ino) });
      }
      await renameCreatingParent(temp, target);
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
    if (this.durable) await fsyncPath(dirname(target));
  }

  appendStream(key: string): Writable {
    // A deep buffer lets the socket keep reading while a write is in flight (queued chunks go out
    // together with writev); the default 16 KiB would stall the upload on every write.
    return createWriteStream(this.path(key), { flags: 'a', highWaterMark: 4 * STREAM_CHUNK });
  }

  async truncate(key: string, size: number): Promise<void> {
    await truncate(this.path(key), size);
  }

  async commit(fromKey: string, toKey: string): Promise<boolean> {
    const from = this.path(fromKey);
    const to = this.path(toKey);
    if (this.durable) await fsyncPath(from);
    if (await exists(to)) {
      await rm(from, { force: true });
      return false;
    }
    await renameCreatingParent(from, to);
    if (this.durable) await fsyncPath(dirname(to));
    return true;
  }

  async share(fromKey: string, toKey: string): Promise<boolean> {
    const from = this.path(fromKey);
    const to = this.path(toKey);
    if (await exists(to)) return true;
    await mkdir(dirname(to), { recursive: true });
    try {
      await link(from, to);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') return true;
      if (code === 'ENOENT') return false;
      // Different filesystems or no hard links: copy through a temp file so the target appears whole.
      const temp = this.tempPath();
      await mkdir(dirname(temp), { recursive: true });
      await copyFile(from, temp, fsConstants.COPYFILE_FICLONE);
      await this.commit(`${TEMP_FOLDER}/${temp.slice(temp.lastIndexOf(sep) + 1)}`, toKey);
    }
    if (this.durable) await fsyncPath(dirname(to));
    return true;
  }

  async remove(key: string): Promise<boolean> {
    try {
      await unlink(this.path(key));
      return true;
    } catch (err) {
      if (isMissing(err)) return false;
      throw err;
    }
  }

  async list(key: string): Promise<{ name: string; dir: boolean }[]> {
    try {
      const entries = await readdir(key === '' ? this.root : this.path(key), { withFileTypes: true });
      return entries.map((e) => ({ name: e.name, dir: e.isDirectory() }));
    } catch (err) {
      if (isMissing(err) || (err as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
      throw err;
    }
  }


  /** Removes temp files left by a crash; called once at start-up before serving. */
  async clearTemp(): Promise<void> {
    await rm(this.path(TEMP_FOLDER), { recursive: true, force: true });
    await mkdir(this.path(TEMP_FOLDER), { recursive: true });
  }
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'ENOENT';
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (isMissing(err)) return false;
    throw err;
  }
}

async function renameCreatingParent(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (err) {
    if (!isMissing(err)) throw err;
    await mkdir(dirname(to), { recursive: true });
    await rename(from, to);
  }
}

/** fsync on a file or a folder (a folder's fsync makes a rename in it durable). */
async function fsyncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
