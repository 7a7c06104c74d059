// The sections of `npm run bench` that compare Trellis with olareg and distribution. Each runs all
// its registries side by side and measures them round by round (see lib/harness.ts).
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createWriteStream, openSync, readSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  OCI_CONFIG, OCI_EMPTY, OCI_LAYER, OCI_MANIFEST, getManifest, pullBlob, pushBlob, pushBlobChunked, pushBlobFromFile, pushSmallBlob,
  putManifest, runPool, sha256, walkReferrers, type Descriptor, type PoolResult,
} from './lib/client.ts';
import {
  PEAK_RSS_ROW, newMeasure, record, rotate, timed, withServers, startTarget,
  type SectionResult, type Servers, type Target,
} from './lib/harness.ts';
import { readCpuSeconds, readMemory, serverMemory, startSink, type ServerHandle, type StartOptions } from './lib/servers.ts';
import { meanRange, percentile, round } from './lib/stats.ts';

export interface SectionSettings {
  targets: Target[];
  rounds: number;
  concurrency: number;
  blobMiB: number;
  blobChunks: number;
  blobTimeLimitS: number;
  smallBlobs: number;
  smallBlobBytes: number;
  repos: number;
  manifests: number;
  manifestTimeLimitS: number;
  referrers: number;
  referrerWindow: number;
  referrersTimeLimitS: number;
  referrerCheck: number;
  referrerCheckConcurrency: number;
}

export interface SectionContext {
  work: string;
  settings: SectionSettings;
  options: (target: Target, label: string) => StartOptions;
  progress: (message: string) => void;
}

const mb = (bytes: number, ms: number) => bytes / 1e6 / (ms / 1000);

function servers(ctx: SectionContext, label: string, work: (servers: Servers, result: SectionResult) => Promise<void>): Promise<SectionResult> {
  ctx.progress(`${label}: starting ${ctx.settings.targets.join(', ')}`);
  return withServers(ctx.settings.targets, (target) => ctx.options(target, label), work, (m) => ctx.progress(`${label}: ${m}`));
}

function serverOf(all: Servers, target: Target): ServerHandle {
  const server = all.get(target);
  if (!server) throw new Error(`${target} is not running`);
  return server;
}

function poolFailed(target: Target | 'sink', what: string, pool: PoolResult): Error | undefined {
  if (pool.errors === 0 && pool.stoppedBy === 'count') return undefined;
  return new Error(`${target} ${what}: ${pool.errors} errors, stopped by ${pool.stoppedBy}; e.g. ${pool.firstErrors[0] ?? ''}`);
}

// ---- blobs: large pushes and pulls, the hashing limit ------------------------------------------

/** Writes `bytes` of random data to `file` in 1 MiB pieces and returns its sha256 digest. */
async function randomFile(file: string, bytes: number): Promise<string> {
  const hash = createHash('sha256');
  const out = createWriteStream(file);
  for (let written = 0; written < bytes;) {
    const piece = randomBytes(Math.min(1 << 20, bytes - written));
    hash.update(piece);
    written += piece.length;
    if (!out.write(piece)) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
  return `sha256:${hash.digest('hex')}`;
}

/** Times `openssl dgst -sha256 FILE` (one core); checks it agrees with the digest computed while writing. */
function timeOpenssl(file: string, digest: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn('openssl', ['dgst', '-sha256', file], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => {
      const ms = performance.now() - started;
      if (code !== 0) return reject(new Error(`openssl exited with ${code}`));
      if (!out.trim().endsWith(digest.slice('sha256:'.length))) return reject(new Error(`openssl digest ${out.trim()} does not match ${digest}`));
      resolve(ms);
    });
  });
}

/** Times node:crypto SHA-256 over the file read in 1 MiB pieces into one reused buffer. */
function timeNodeHash(file: string, digest: string): number {
  const started = performance.now();
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(1 << 20);
  const fd = openSync(file, 'r');
  try {
    for (let n; (n = readSync(fd, buffer, 0, buffer.length, null)) > 0;) hash.update(buffer.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  const ms = performance.now() - started;
  if (`sha256:${hash.digest('hex')}` !== digest) throw new Error('node:crypto digest does not match');
  return ms;
}

export async function blobsSection(ctx: SectionContext): Promise<SectionResult> {
  const { settings } = ctx;
  const bytes = settings.blobMiB * 1024 * 1024;
  const file = join(ctx.work, 'blob.bin');
  ctx.progress(`blobs: writing ${settings.blobMiB} MiB of random data`);
  const digest = await randomFile(file, bytes);
  const size = `${settings.blobMiB} MiB`;
  const push = newMeasure('blob-push', `${size} monolithic push (MB/s)`, true);
  const pull = newMeasure('blob-pull', `${size} pull (MB/s)`, true);
  const chunked = newMeasure('blob-chunked', `${size} in ${settings.blobChunks} PATCHes of ${round(settings.blobMiB / settings.blobChunks, 1)} MiB (MB/s)`, true);
  const pushOverHash = newMeasure('push-over-hash', 'monolithic push ÷ one core\'s SHA-256 (`openssl dgst -sha256`, same round), goal ≥ 0.7', true, { digits: 2, noComparison: true });
  const references: Record<string, number[]> = { 'openssl dgst -sha256 (MB/s)': [], 'node:crypto sha256, 1 MiB reads (MB/s)': [], 'node:http sink that only hashes, same client (MB/s)': [] };
  const signal = () => AbortSignal.timeout(settings.blobTimeLimitS * 1000);
  const sink = await startSink(ctx.options('trellis', 'blobs'));
  try {
    const result = await servers(ctx, 'blobs', async (all, result) => {
      result.measures.push(push, pull, chunked, pushOverHash);
      result.references = references;
      for (const [target, server] of all) {
        // One unmeasured round first, so that nothing is timed while cold.
        await pushBlobFromFile(server.url, 'bench/blob-warmup', file, bytes, digest, signal());
        if ((await pullBlob(server.url, 'bench/blob-warmup', digest, signal())) !== bytes) throw new Error(`${target} warm-up pull was short`);
      }
      await pushBlobFromFile(sink.url, 'bench/sink', file, bytes, digest, signal());
      for (let r = 0; r < settings.rounds; r++) {
        const opensslMBps = mb(bytes, await timeOpenssl(file, digest));
        references['openssl dgst -sha256 (MB/s)']!.push(round(opensslMBps));
        references['node:crypto sha256, 1 MiB reads (MB/s)']!.push(round(mb(bytes, timeNodeHash(file, digest))));
        const sinkRun = await timed(sink, () => pushBlobFromFile(sink.url, 'bench/sink', file, bytes, digest, signal()));
        references['node:http sink that only hashes, same client (MB/s)']!.push(round(mb(bytes, sinkRun.ms)));
        (push.floor ??= []).push(round(mb(bytes, sinkRun.ms)));
        for (const target of rotate(settings.targets, r)) {
          const server = serverOf(all, target);
          const repo = `bench/blob-${r}`;
          const up = await timed(server, () => pushBlobFromFile(server.url, repo, file, bytes, digest, signal()));
          record(push, target, mb(bytes, up.ms), up.cpuMs);
          record(pushOverHash, target, mb(bytes, up.ms) / opensslMBps);
          const down = await timed(server, () => pullBlob(server.url, repo, digest, signal()));
          if (down.value !== bytes) throw new Error(`${target} pull returned ${down.value} bytes, expected ${bytes}`);
          record(pull, target, mb(bytes, down.ms), down.cpuMs);
          const patched = await timed(server, () => pushBlobChunked(server.url, `bench/chunked-${r}`, file, bytes, digest, settings.blobChunks, signal()));
          record(chunked, target, mb(bytes, patched.ms), patched.cpuMs);
          ctx.progress(`blobs: round ${r + 1} ${target}: push ${round(mb(bytes, up.ms))}, pull ${round(mb(bytes, down.ms))}, chunked ${round(mb(bytes, patched.ms))} MB/s`);
        }
      }
    });
    return result;
  } finally {
    await sink.stop();
    await rm(file, { force: true });
  }
}

// ---- small blobs ---------------------------------------------------------------------------------

export async function smallBlobsSection(ctx: SectionContext): Promise<SectionResult> {
  const { settings } = ctx;
  const count = settings.smallBlobs;
  const kib = round(settings.smallBlobBytes / 1024, 1);
  const rate = newMeasure('small-blobs', `${count.toLocaleString('en-US')} × ${kib} KiB blobs (POST + PUT ?digest=), ${settings.concurrency} clients (blobs/s)`, true);
  // Node's own floor for this row: the sink answers POST and PUT and hashes, but stores nothing.
  const sinkRate = 'node:http sink (answers POST and PUT, hashes, stores nothing), same client: blobs/s';
  const sinkCpu = 'sink: server CPU per blob (ms)';
  const sinkRss = 'sink: peak RSS (MiB)';
  const references: Record<string, number[]> = { [sinkRate]: [], [sinkCpu]: [], [sinkRss]: [] };
  const sink = await startSink(ctx.options('trellis', 'small-blobs'));
  const pushAll = (url: string, repo: string, blobs: Buffer[], digests: string[]) => runPool({
    count, concurrency: settings.concurrency, timeLimitMs: 300_000,
    task: (i) => pushBlob(url, repo, blobs[i]!, digests[i]!),
  });
  try {
    return await servers(ctx, 'small-blobs', async (all, result) => {
      result.measures.push(rate);
      result.references = references;
      for (const [, server] of [...all, ['sink', sink] as const]) await pushSmallBlob(server.url, 'bench/small-warmup', randomBytes(settings.smallBlobBytes), OCI_LAYER);
      for (let r = 0; r < settings.rounds; r++) {
        // Fresh content every round: nothing is already stored.
        const blobs = Array.from({ length: count }, () => randomBytes(settings.smallBlobBytes));
        const digests = blobs.map((b) => sha256(b));
        const floor = await timed(sink, () => pushAll(sink.url, 'bench/sink', blobs, digests));
        const sinkFailed = poolFailed('sink', 'small blobs', floor.value);
        if (sinkFailed) throw sinkFailed;
        references[sinkRate]!.push(round(count / (floor.ms / 1000)));
        (rate.floor ??= []).push(round(count / (floor.ms / 1000)));
        references[sinkCpu]!.push(round(floor.cpuMs / count, 3));
        references[sinkRss]!.push(round((readMemory(sink.pid)?.peakKiB ?? NaN) / 1024));
        result.memoryFloor = { [PEAK_RSS_ROW]: references[sinkRss]!.at(-1)! };
        for (const target of rotate(settings.targets, r)) {
          const server = serverOf(all, target);
          const run = await timed(server, () => pushAll(server.url, `bench/small-${r}`, blobs, digests));
          const failed = poolFailed(target, 'small blobs', run.value);
          if (failed) throw failed;
          record(rate, target, count / (run.ms / 1000), run.cpuMs / count);
          ctx.progress(`small-blobs: round ${r + 1} ${target}: ${round(count / (run.ms / 1000))} blobs/s, ${round(run.cpuMs / count, 2)} ms CPU per blob`);
        }
      }
    });
  } finally {
    await sink.stop();
  }
}

// ---- repositories: creation, then start-up on the result ------------------------------------------

const AFTER_RESTART = 'after a restart on the repositories (idle, one manifest GET)';

const REPO_CONFIG = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha256('bench layer')] } }));

/** A new repository in 5 requests: config POST + PUT, layer POST + PUT, manifest PUT by tag. */
async function createRepository(base: string, repo: string, layerBytes: Buffer): Promise<void> {
  const config = await pushSmallBlob(base, repo, REPO_CONFIG, OCI_CONFIG);
  const layer = await pushSmallBlob(base, repo, layerBytes, OCI_LAYER);
  await putManifest(base, repo, 'v1', Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [layer] })));
}

export async function reposSection(ctx: SectionContext): Promise<SectionResult> {
  const { settings } = ctx;
  const perRound = Math.max(1, Math.floor(settings.repos / settings.rounds));
  const total = perRound * settings.rounds;
  const rate = newMeasure('repos', `new repositories, 5 requests each, ${settings.concurrency} clients, ${total.toLocaleString('en-US')} in all (repos/s)`, true);
  const startup = newMeasure('startup', `start-up to the first 200 on /v2/ with ${total.toLocaleString('en-US')} repositories (ms)`, false, { digits: 0 });
  const keep = (target: Target): StartOptions => ({ ...ctx.options(target, 'repos'), keepData: true });
  const options = ctx.options;
  return withServers(settings.targets, keep, async (all, result) => {
    result.measures.push(rate, startup);
    for (let r = 0; r < settings.rounds; r++) {
      const layers = Array.from({ length: perRound }, () => randomBytes(512));
      for (const target of rotate(settings.targets, r)) {
        const server = serverOf(all, target);
        const run = await timed(server, () => runPool({
          count: perRound, concurrency: settings.concurrency, timeLimitMs: 600_000,
          task: (i) => createRepository(server.url, `bench/repo-${r}-${i}`, layers[i]!),
        }));
        const failed = poolFailed(target, 'repository creation', run.value);
        if (failed) throw failed;
        record(rate, target, perRound / (run.ms / 1000), run.cpuMs / perRound);
        ctx.progress(`repos: round ${r + 1} ${target}: ${round(perRound / (run.ms / 1000))} repos/s, ${round(run.cpuMs / perRound, 2)} ms CPU per repository`);
      }
    }
    for (const [target, server] of all) result.memory[target] = serverMemory(server) ?? null;
    // Restart each registry on its data, round by round, and time the first 200 on /v2/. The sink
    // starts in each round too: no Node server can start sooner or sit smaller than it does.
    const afterRestart: Partial<Record<Target, ReturnType<typeof readMemory> | null>> = {};
    const sinkStart = 'node:http sink (the floor of any Node server): start-up to the first 200 (ms)';
    const sinkIdle = 'sink: peak RSS after one request (MiB)';
    result.references = { [sinkStart]: [], [sinkIdle]: [] };
    for (let r = 0; r < settings.rounds; r++) {
      for (const target of rotate(settings.targets, r)) {
        const old = serverOf(all, target);
        await old.stop();
        const server = await startTarget(target, { ...options(target, `repos-restart-${r}`), dataDir: old.dataDir, readyPollMs: 5, readyTimeoutMs: 300_000 });
        all.set(target, server);
        record(startup, target, server.readyMs, ((readCpuSeconds(server.pid) ?? NaN) * 1000));
        ctx.progress(`repos: restart ${r + 1} ${target}: first 200 on /v2/ after ${Math.round(server.readyMs)} ms`);
      }
      const sink = await startSink({ ...options('trellis', `repos-sink-${r}`), readyPollMs: 5 });
      try {
        result.references[sinkStart]!.push(round(sink.readyMs));
        (startup.floor ??= []).push(round(sink.readyMs));
        if (r === settings.rounds - 1) {
          await new Promise((resolve) => setTimeout(resolve, 1000));
          await getManifest(sink.url, 'bench/sink', 'v1');
          const idle = round((readMemory(sink.pid)?.peakKiB ?? NaN) / 1024, 1);
          result.references[sinkIdle]!.push(idle);
          result.memoryFloor = { [`peak RSS ${AFTER_RESTART} (MiB)`]: idle };
        }
      } finally {
        await sink.stop();
      }
    }
    // Idle RSS after the last restart, once the start-up work has settled.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    for (const [target, server] of all) {
      await getManifest(server.url, `bench/repo-0-0`, 'v1');
      afterRestart[target] = readMemory(server.pid) ?? null;
    }
    result.memoryAt = { [AFTER_RESTART]: afterRestart };
  }, (m) => ctx.progress(`repos: ${m}`));
}

// ---- manifests ------------------------------------------------------------------------------------

interface ImageParts {
  config: Descriptor;
  layer: Descriptor;
}

async function pushImageParts(base: string, repo: string): Promise<ImageParts> {
  const config = await pushSmallBlob(base, repo, REPO_CONFIG, OCI_CONFIG);
  const layer = await pushSmallBlob(base, repo, randomBytes(1024), OCI_LAYER);
  return { config, layer };
}

const MANIFEST_TARGET_BYTES = 1024;

/** A distinct ~1 KiB image manifest: the same config and layer, a unique annotation, padding. */
export function imageManifest(parts: ImageParts, id: string): Buffer {
  const build = (pad: string) => Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST, config: parts.config, layers: [parts.layer],
    annotations: { 'org.opencontainers.image.created': '2025-01-01T00:00:00Z', 'org.example.bench.id': id, 'org.example.bench.pad': pad },
  }));
  const bare = build('');
  return build('x'.repeat(Math.max(0, MANIFEST_TARGET_BYTES - bare.length)));
}

export async function manifestsSection(ctx: SectionContext): Promise<SectionResult> {
  const { settings } = ctx;
  const repo = 'bench/manifests';
  const perRound = Math.max(1, Math.floor(settings.manifests / settings.rounds));
  const c = settings.concurrency;
  const single = newMeasure('manifest-put-1', `manifest PUT by tag, 1 client, ${perRound} per round (pushes/s)`, true);
  const concurrent = newMeasure('manifest-put-n', `manifest PUT by tag, ${c} clients, ${perRound} per round (pushes/s)`, true);
  const p99 = newMeasure('manifest-put-p99', `manifest PUT p99 latency, ${c} clients (ms)`, false, { digits: 2 });
  const get = newMeasure('manifest-get-n', `manifest GET by tag, ${c} clients, ${perRound} per round (GETs/s)`, true);
  return servers(ctx, 'manifests', async (all, result) => {
    result.measures.push(single, concurrent, p99, get);
    const parts = new Map<Target, ImageParts>();
    for (const [target, server] of all) {
      const p = await pushImageParts(server.url, repo);
      parts.set(target, p);
      const warm = await runPool({ count: Math.min(200, perRound), concurrency: c, timeLimitMs: 60_000, task: async (i) => void await putManifest(server.url, repo, `warm-${i}`, imageManifest(p, `warm-${i}`)) });
      const failed = poolFailed(target, 'manifest warm-up', warm);
      if (failed) throw failed;
    }
    for (let r = 0; r < settings.rounds; r++) {
      for (const target of rotate(settings.targets, r)) {
        const server = serverOf(all, target);
        const p = parts.get(target)!;
        const phase = async (prefix: string, concurrency: number) => {
          const bodies = Array.from({ length: perRound }, (_, i) => imageManifest(p, `${prefix}-${i}`));
          const run = await timed(server, () => runPool({
            count: perRound, concurrency, timeLimitMs: settings.manifestTimeLimitS * 1000,
            task: async (i) => void (await putManifest(server.url, repo, `${prefix}-${i}`, bodies[i]!)),
          }));
          const failed = poolFailed(target, `manifests ${prefix}`, run.value);
          if (failed) throw failed;
          return run;
        };
        const one = await phase(`r${r}-c1`, 1);
        record(single, target, perRound / (one.ms / 1000), one.cpuMs / perRound);
        const many = await phase(`r${r}-c${c}`, c);
        record(concurrent, target, perRound / (many.ms / 1000), many.cpuMs / perRound);
        record(p99, target, percentile(many.value.latencies, 99));
        const gets = await timed(server, () => runPool({
          count: perRound, concurrency: c, timeLimitMs: settings.manifestTimeLimitS * 1000,
          task: async (i) => void (await getManifest(server.url, repo, `r${r}-c1-${i}`)),
        }));
        const failed = poolFailed(target, 'manifest GET', gets.value);
        if (failed) throw failed;
        record(get, target, perRound / (gets.ms / 1000), gets.cpuMs / perRound);
        ctx.progress(`manifests: round ${r + 1} ${target}: PUT ${round(perRound / (one.ms / 1000))}/s (1), ${round(perRound / (many.ms / 1000))}/s (${c}); GET ${round(perRound / (gets.ms / 1000))}/s`);
      }
    }
  });
}

// ---- referrers: listing and correctness under concurrency -----------------------------------------

const EMPTY_JSON = Buffer.from('{}');

function referrerManifest(empty: Descriptor, subject: Descriptor, i: number): Buffer {
  return Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'application/vnd.example.bench.signature',
    config: empty, layers: [empty], subject,
    annotations: { 'org.opencontainers.image.created': '2025-01-01T00:00:00Z', 'org.example.bench.seq': String(i) },
  }));
}

async function pushSubject(base: string, repo: string): Promise<{ empty: Descriptor; subject: Descriptor }> {
  const parts = await pushImageParts(base, repo);
  const empty = await pushSmallBlob(base, repo, EMPTY_JSON, OCI_EMPTY);
  const body = imageManifest(parts, 'subject');
  await putManifest(base, repo, 'subject', body);
  return { empty, subject: { mediaType: OCI_MANIFEST, digest: sha256(body), size: body.length } };
}

/** N referrers pushed at once by many clients, then the whole listing read back, timed per round. */
export async function listingSection(ctx: SectionContext): Promise<SectionResult> {
  const { settings } = ctx;
  const n = settings.referrerCheck;
  const label = n.toLocaleString('en-US');
  const listed = newMeasure('referrers-listed', `referrers listed after ${label} concurrent pushes (${settings.referrerCheckConcurrency} clients, all answered 201)`, true, { expected: n, digits: 0 });
  const walk = newMeasure('referrers-walk', `full referrers listing of ${label}, following Link (ms)`, false, { digits: 1 });
  // A registry that lost most of the referrers lists fewer: per referrer listed, the work compares.
  const perThousand = newMeasure('referrers-walk-per-1000', 'that listing per 1,000 referrers listed (ms)', false, { digits: 2 });
  const pages = newMeasure('referrers-pages', `pages in that listing`, false, { digits: 0, noComparison: true });
  return servers(ctx, 'listing', async (all, result) => {
    result.measures.push(listed, walk, perThousand, pages);
    const subjects = new Map<Target, Descriptor>();
    for (const target of settings.targets) {
      const server = serverOf(all, target);
      const repo = 'bench/check';
      const { empty, subject } = await pushSubject(server.url, repo);
      subjects.set(target, subject);
      const pool = await runPool({
        count: n, concurrency: settings.referrerCheckConcurrency, timeLimitMs: settings.referrersTimeLimitS * 1000,
        task: async (i) => {
          const body = referrerManifest(empty, subject, i);
          await putManifest(server.url, repo, sha256(body), body);
        },
      });
      const failed = poolFailed(target, 'concurrent referrer pushes', pool);
      if (failed) throw failed;
      ctx.progress(`listing: ${target} took ${n} referrer pushes in ${Math.round(pool.wallMs)} ms`);
    }
    for (let r = 0; r < settings.rounds; r++) {
      for (const target of rotate(settings.targets, r)) {
        const server = serverOf(all, target);
        const run = await timed(server, () => walkReferrers(server.url, 'bench/check', subjects.get(target)!.digest, 120_000));
        if (run.value.status === 404 && target === 'distribution') {
          if (r === 0) result.notes.push('distribution 2.8 has no referrers API (404); its row is empty.');
          continue;
        }
        if (run.value.status !== 200) throw new Error(`${target} referrers listing: ${run.value.error ?? run.value.status}`);
        record(listed, target, run.value.manifests);
        record(walk, target, run.ms, run.cpuMs);
        const thousands = Math.max(1, run.value.manifests) / 1000;
        record(perThousand, target, run.ms / thousands, run.cpuMs / thousands);
        record(pages, target, run.value.pages);
        ctx.progress(`listing: round ${r + 1} ${target}: ${run.value.manifests} of ${n} listed in ${run.value.pages} pages, ${Math.round(run.ms)} ms`);
      }
    }
  });
}

// ---- referrers: flat push cost up to a large count ------------------------------------------------

/** Pushes `referrers` into one repository in tenths, interleaved between the registries. */
export async function referrersSection(ctx: SectionContext): Promise<SectionResult> {
  const { settings } = ctx;
  const count = settings.referrers;
  const window = Math.min(settings.referrerWindow, Math.max(1, Math.floor(count / 2)));
  const tenth = Math.max(1, Math.floor(count / 10));
  const perTenth = newMeasure('referrers-rate', `referrer pushes/s, ${settings.concurrency} clients, by tenth of ${count.toLocaleString('en-US')}`, true);
  const first = newMeasure('referrers-first', `referrer push mean latency, first ${window} (ms)`, false, { digits: 2 });
  const last = newMeasure('referrers-last', `referrer push mean latency, last ${window} (ms)`, false, { digits: 2 });
  const growth = newMeasure('referrers-growth', 'last ÷ first (goal ≤ 2)', false, { digits: 2, noComparison: true });
  const pushed = newMeasure('referrers-pushed', `referrers pushed within ${settings.referrersTimeLimitS} s`, true, { expected: count, digits: 0 });
  return servers(ctx, 'referrers', async (all, result) => {
    result.measures.push(perTenth, first, last, growth, pushed);
    const state = new Map<Target, { empty: Descriptor; subject: Descriptor; latencies: Float64Array; done: number; spentMs: number; stopped: boolean }>();
    for (const [target, server] of all) {
      const { empty, subject } = await pushSubject(server.url, 'bench/referrers');
      state.set(target, { empty, subject, latencies: new Float64Array(count).fill(NaN), done: 0, spentMs: 0, stopped: false });
    }
    for (let part = 0; part * tenth < count; part++) {
      for (const target of rotate(settings.targets, part)) {
        const s = state.get(target)!;
        if (s.stopped) continue;
        const server = serverOf(all, target);
        const from = part * tenth;
        const size = Math.min(tenth, count - from);
        const run = await timed(server, () => runPool({
          count: size, concurrency: settings.concurrency, timeLimitMs: Math.max(1, settings.referrersTimeLimitS * 1000 - s.spentMs), maxErrors: 1000,
          task: async (i) => {
            const body = referrerManifest(s.empty, s.subject, from + i);
            await putManifest(server.url, 'bench/referrers', sha256(body), body);
          },
        }));
        run.value.latencies.forEach((v, i) => (s.latencies[from + i] = v));
        s.done += run.value.completed;
        s.spentMs += run.ms;
        if (run.value.stoppedBy !== 'count') s.stopped = true;
        record(perTenth, target, run.value.completed / (run.ms / 1000), run.cpuMs / Math.max(1, run.value.completed));
        ctx.progress(`referrers: ${target} ${s.done}/${count}, ${round(run.value.completed / (run.ms / 1000))}/s, RSS ${Math.round((readMemory(server.pid)?.rssKiB ?? NaN) / 1024)} MiB`);
      }
    }
    for (const [target, s] of state) {
      const done = s.done;
      const f = meanRange(s.latencies, 0, window);
      const l = meanRange(s.latencies, Math.max(0, done - window), done);
      record(first, target, f);
      record(last, target, l);
      record(growth, target, l / f);
      record(pushed, target, done);
    }
  });
}
