// Copy benchmark: one image of ~1 GiB in several blobs, with two referrers, copied between two
// Trellis instances on loopback by `trellis copy -r`, `oras cp -r` and `regctl image copy
// --referrers`, in the same run, each into a fresh destination server, rounds interleaved.
//
//   node bench/copy.ts                       # 8 blobs of 128 MiB, 2 rounds
//   COPY_BLOBS=4 COPY_BLOB_MIB=64 COPY_ROUNDS=1 node bench/copy.ts
//   COPY_TRELLIS_CONCURRENCY=2,4 node bench/copy.ts   # extra rows: trellis with other --concurrency
//
// Prints a markdown table (median seconds and MiB/s per tool) and writes it to
// bench/results/copy.md. Needs .peers/bin/oras and .peers/bin/regctl.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { NODE_BIN_DIR, ROOT, killAll, readCpuSeconds, removeOnSignal, startTrellis, type ServerHandle } from './lib/servers.ts';
import { OCI_CONFIG, OCI_EMPTY, OCI_LAYER, OCI_MANIFEST, pullBlob, pushBlobFromFile, pushSmallBlob, putManifest, sha256 } from './lib/client.ts';
import { median, round } from './lib/stats.ts';

const run = promisify(execFile);
const BLOBS = Number(process.env.COPY_BLOBS ?? 8);
const BLOB_MIB = Number(process.env.COPY_BLOB_MIB ?? 128);
const ROUNDS = Number(process.env.COPY_ROUNDS ?? 2);
const ORAS = join(ROOT, '.peers/bin/oras');
const REGCTL = join(ROOT, '.peers/bin/regctl');
const RESULTS = join(ROOT, 'bench/results');

async function randomFile(path: string, bytes: number): Promise<string> {
  const hash = createHash('sha256');
  const out = createWriteStream(path);
  for (let left = bytes; left > 0;) {
    const chunk = randomBytes(Math.min(left, 4 << 20));
    hash.update(chunk);
    if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
    left -= chunk.length;
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return `sha256:${hash.digest('hex')}`;
}

async function seed(base: string, work: string): Promise<number> {
  const layers = [];
  for (let i = 0; i < BLOBS; i++) {
    const file = join(work, `layer-${i}`);
    const size = BLOB_MIB << 20;
    const digest = await randomFile(file, size);
    await pushBlobFromFile(base, 'bench/app', file, size, digest, AbortSignal.timeout(600_000));
    await rm(file);
    layers.push({ mediaType: OCI_LAYER, digest, size });
  }
  const config = await pushSmallBlob(base, 'bench/app', Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux' })), OCI_CONFIG);
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers }));
  await putManifest(base, 'bench/app', 'v1', manifest);
  const empty = await pushSmallBlob(base, 'bench/app', Buffer.from('{}'), OCI_EMPTY);
  for (const kind of ['sbom', 'signature']) {
    const payload = await pushSmallBlob(base, 'bench/app', randomBytes(4096), 'application/octet-stream');
    const referrer = Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: `application/vnd.bench.${kind}`, config: empty, layers: [payload],
      subject: { mediaType: OCI_MANIFEST, digest: sha256(manifest), size: manifest.length },
    }));
    await putManifest(base, 'bench/app', sha256(referrer), referrer);
  }
  return layers.reduce((sum, l) => sum + l.size, 0);
}

interface Tool {
  name: string;
  command(src: string, dst: string): [string, string[]];
}

const env = { ...process.env, PATH: `${NODE_BIN_DIR}:${process.env.PATH ?? ''}` };
const TOOLS: Tool[] = [
  { name: 'trellis copy -r', command: (src, dst) => [join(NODE_BIN_DIR, 'node'), [join(ROOT, 'bin/trellis.mjs'), 'copy', '-r', '-q', src, dst]] },
  ...(process.env.COPY_TRELLIS_CONCURRENCY ?? '').split(',').filter(Boolean).map((n): Tool => ({
    name: `trellis copy -r --concurrency ${n}`, command: (src, dst) => [join(NODE_BIN_DIR, 'node'), [join(ROOT, 'bin/trellis.mjs'), 'copy', '-r', '-q', '--concurrency', n, src, dst]],
  })),
  { name: 'oras cp -r', command: (src, dst) => [ORAS, ['cp', '-r', '--from-plain-http', '--to-plain-http', src, dst]] },
  { name: 'regctl image copy --referrers', command: (src, dst) => [REGCTL, ['image', 'copy', '--referrers', src, dst]] },
];

async function main(): Promise<void> {
  const work = await mkdtemp(join(process.env.BENCH_TMPDIR || tmpdir(), 'trellis-copy-bench-'));
  removeOnSignal(work);
  await mkdir(RESULTS, { recursive: true });
  const logDir = join(RESULTS, 'logs');
  await mkdir(logDir, { recursive: true });
  const regctlEnv = { ...env, HOME: work, REGCTL_CONFIG: join(work, 'regctl.json') };
  const source = await startTrellis({ tmpRoot: work, logDir, label: 'copy-src' });
  const servers: ServerHandle[] = [source];
  try {
    const bytes = await seed(source.url, work);
    // Read every blob once so that no tool pays for a cold page cache on the source.
    const manifest = (await (await fetch(`${source.url}/v2/bench/app/manifests/v1`, { headers: { Accept: OCI_MANIFEST } })).json()) as { layers: { digest: string }[] };
    for (const layer of manifest.layers) await pullBlob(source.url, 'bench/app', layer.digest, AbortSignal.timeout(600_000));
    const srcHost = source.url.replace('http://', '');
    await run(REGCTL, ['registry', 'set', srcHost, '--tls', 'disabled'], { env: regctlEnv });
    const times = new Map<string, number[]>(TOOLS.map((t) => [t.name, []]));
    // CPU time of the client process (user + system), read from this process's reaped children.
    const cpu = new Map<string, number[]>(TOOLS.map((t) => [t.name, []]));
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 ? [...TOOLS].reverse() : TOOLS;
      for (const tool of order) {
        const destination = await startTrellis({ tmpRoot: work, logDir, label: 'copy-dst' });
        servers.push(destination);
        const dstHost = destination.url.replace('http://', '');
        await run(REGCTL, ['registry', 'set', dstHost, '--tls', 'disabled'], { env: regctlEnv });
        const [bin, args] = tool.command(`${srcHost}/bench/app:v1`, `${dstHost}/bench/app:v1`);
        const started = performance.now();
        const cpuBefore = readCpuSeconds('self', true)! - readCpuSeconds('self')!;
        await run(bin, args, { env: regctlEnv, maxBuffer: 64 << 20, timeout: 1_800_000 });
        const seconds = (performance.now() - started) / 1000;
        cpu.get(tool.name)!.push(readCpuSeconds('self', true)! - readCpuSeconds('self')! - cpuBefore);
        // Check the copy: the manifest and both referrers arrived.
        const referrers = (await (await fetch(`${destination.url}/v2/bench/app/referrers/${(await fetch(`${destination.url}/v2/bench/app/manifests/v1`, { method: 'HEAD', headers: { Accept: OCI_MANIFEST } })).headers.get('docker-content-digest')}`)).json()) as { manifests: unknown[] };
        if (referrers.manifests.length !== 2) throw new Error(`${tool.name}: ${referrers.manifests.length} referrers arrived, expected 2`);
        times.get(tool.name)!.push(seconds);
        console.error(`round ${round + 1}: ${tool.name}: ${seconds.toFixed(2)} s`);
        await destination.stop();
        servers.pop();
      }
    }
    const mib = bytes / (1 << 20);
    const lines = [
      `Copy of one image, ${BLOBS} layers of ${BLOB_MIB} MiB (${round(mib / 1024, 2)} GiB) plus two referrers, Trellis -> Trellis on 127.0.0.1, ${ROUNDS} rounds (median):`,
      '',
      '| tool | seconds (median) | MiB/s | runs (s) | client CPU s (median) |',
      '| --- | ---: | ---: | --- | ---: |',
      ...TOOLS.map((t) => {
        const list = times.get(t.name)!;
        const m = median(list);
        return `| \`${t.name}\` | ${round(m, 2)} | ${round(mib / m, 0)} | ${list.map((s) => s.toFixed(2)).join(', ')} | ${round(median(cpu.get(t.name)!), 2)} |`;
      }),
    ];
    const table = lines.join('\n');
    console.log(table);
    await writeFile(join(RESULTS, 'copy.md'), `${table}\n`);
  } finally {
    for (const s of servers) await s.stop().catch(() => undefined);
    killAll();
    await rm(work, { recursive: true, force: true });
  }
}

await main();
