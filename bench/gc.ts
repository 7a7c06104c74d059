// GC over one repository of N manifests (default 100,000; BENCH_GC_MANIFESTS): half tagged, half
// untagged; times the mark (dry run) and the full collection with gcUntagged=delete.
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { DEFAULT_SETTINGS } from '../src/config/settings.ts';
import { registryOptions } from '../src/cli/serve.ts';
import { Registry } from '../src/content/registry.ts';
import { collectGarbage } from '../src/gc/collector.ts';

const COUNT = Number(process.env.BENCH_GC_MANIFESTS ?? 100_000);
const sha256 = (data: string | Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;

export async function gcBenchmark(count = COUNT) {
  const data = await mkdtemp(join(tmpdir(), 'trellis-gc-bench-'));
  const registry = await Registry.open(registryOptions({ ...DEFAULT_SETTINGS, data, indexFlushMaxMs: 60_000 }, pino({ level: 'silent' })));
  try {
    const config = Buffer.from('{"architecture":"amd64","os":"linux"}');
    await registry.storeBlobBytes('bench/gc', sha256(config), config);
    const fillStarted = performance.now();
    for (let i = 0; i < count; i++) {
      const body = Buffer.from(JSON.stringify({
        schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length }, layers: [], annotations: { i: String(i) },
      }));
      await registry.putManifest('bench/gc', i % 2 ? sha256(body) : `t${i}`, body, undefined, []);
    }
    const fillMs = performance.now() - fillStarted;
    await registry.layout.flushAll();
    const policy = { untagged: 'delete', danglingReferrers: 'delete', graceSeconds: 0 } as const;
    const now = Date.now() + 1000;
    const dry = await collectGarbage(registry, policy, { dryRun: true, now });
    const real = await collectGarbage(registry, policy, { dryRun: false, now });
    await registry.layout.flushAll();
    return {
      manifests: count, fillMs, markMs: dry.durationMs, collectMs: real.durationMs, removed: real.removed.length,
      markPerSecond: count / (dry.durationMs / 1000), removedPerSecond: real.removed.length / (real.durationMs / 1000),
    };
  } finally {
    await registry.close();
    await rm(data, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const result = await gcBenchmark();
  console.log(JSON.stringify(result, null, 2));
  console.log(`| GC of ${result.manifests} manifests (half untagged) | mark (dry run) ${(result.markMs / 1000).toFixed(2)} s = ${Math.round(result.markPerSecond)} manifests/s | full collection ${(result.collectMs / 1000).toFixed(2)} s, ${result.removed} removed = ${Math.round(result.removedPerSecond)}/s |`);
}
