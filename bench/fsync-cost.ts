// What `fsync: true` costs: sequential manifest-push and 1 MiB blob-push latency, fsync off vs on.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { DEFAULT_SETTINGS } from '../src/config/settings.ts';
import { startRegistry } from '../src/cli/serve.ts';

const COUNT = Number(process.env.BENCH_FSYNC_COUNT ?? 300);
const sha256 = (data: Buffer | string) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

async function measure(fsync: boolean) {
  const data = await mkdtemp(join(tmpdir(), 'trellis-fsync-'));
  const reg = await startRegistry({ ...DEFAULT_SETTINGS, listen: '127.0.0.1:0', data, fsync }, pino({ level: 'silent' }));
  try {
    const config = Buffer.from('{}');
    await fetch(`${reg.url}/v2/bench/fsync/blobs/uploads/?digest=${sha256(config)}`, { method: 'POST', body: config });
    let manifestMs = 0;
    for (let i = 0; i < COUNT; i++) {
      const body = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(config), size: 2 }, layers: [], annotations: { i: String(i) } });
      const started = performance.now();
      const res = await fetch(`${reg.url}/v2/bench/fsync/manifests/t${i}`, { method: 'PUT', body, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
      await res.arrayBuffer();
      manifestMs += performance.now() - started;
    }
    let blobMs = 0;
    const blobs = Math.max(10, COUNT / 10);
    for (let i = 0; i < blobs; i++) {
      const blob = randomBytes(1 << 20);
      const started = performance.now();
      const res = await fetch(`${reg.url}/v2/bench/fsync/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob });
      await res.arrayBuffer();
      blobMs += performance.now() - started;
    }
    return { manifestMs: manifestMs / COUNT, blobMs: blobMs / blobs };
  } finally {
    await reg.close();
    await rm(data, { recursive: true, force: true });
  }
}

const off = await measure(false);
const on = await measure(true);
console.log('| | fsync off | fsync on | on / off |\n| --- | --- | --- | --- |');
console.log(`| manifest push, mean ms | ${off.manifestMs.toFixed(2)} | ${on.manifestMs.toFixed(2)} | ${(on.manifestMs / off.manifestMs).toFixed(2)} |`);
console.log(`| 1 MiB blob push, mean ms | ${off.blobMs.toFixed(2)} | ${on.blobMs.toFixed(2)} | ${(on.blobMs / off.blobMs).toFixed(2)} |`);
