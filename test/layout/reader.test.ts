// Reading a layout another tool wrote: a large one lets other work run while it is walked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStorage } from '../../src/storage/index.ts';
import { readLayout } from '../../src/layout/reader.ts';
import { OCI_INDEX, REF_NAME, descriptorOf, makeImage } from '../helpers/oci-client.ts';

test('walking a layout of 1,000 images gives the event loop turns: other requests are not held for the whole walk', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-reader-'));
  try {
    const blobs = join(dataDir, 'big/blobs/sha256');
    await mkdir(blobs, { recursive: true });
    const entries = [];
    for (let i = 0; i < 1000; i++) {
      const image = makeImage();
      for (const bytes of [...image.blobs, image.bytes]) await writeFile(join(blobs, descriptorOf('x', bytes).digest.slice(7)), bytes);
      entries.push({ ...image.descriptor, annotations: { [REF_NAME]: `v${i}` } });
    }
    await writeFile(join(dataDir, 'big/index.json'), JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: entries }));
    await writeFile(join(dataDir, 'big/oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    const driver = await openStorage('', dataDir, { durable: false });

    let turns = 0;
    let reading = true;
    const count = () => {
      if (!reading) return;
      turns++;
      setImmediate(count);
    };
    setImmediate(count);
    const { snapshot } = await readLayout(driver, 'big', 4 << 20);
    reading = false;
    assert.equal(snapshot.tags.size, 1000);
    assert.ok(turns >= 3, `other work got ${turns} turns while 1,000 manifests were read`);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
