// The storage contract on the filesystem driver, plus what only a filesystem promises: blobs shared
// between repositories are hard links, and every write goes through a temp file + rename.
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
