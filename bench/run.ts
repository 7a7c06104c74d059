// Benchmark harness: Trellis against distribution 2.8, side by side, in one run.
//
//   npm run bench                         # everything, 100,000 referrers
//   BENCH_REFERRERS=10000 npm run bench   # quicker
//   BENCH_ONLY=throughput npm run bench   # one section: throughput | manifests | referrers | queries
//
// `queries` (Trellis only: distribution has no query API) generates a registry with
// bench/corpus.ts (200 repositories, 20,000 manifests unless BENCH_QUERY_SCALE or
// BENCH_QUERY_CORPUS say otherwise) and times the query endpoints on it; see bench/query.ts.
//
// BENCH_TARGETS=trellis,trellis-postgres,distribution adds Trellis on PostgreSQL metadata (a
// throw-away cluster from the Debian postgresql package, test/helpers/postgres.ts) as a column.
//
// Other knobs (all optional): BENCH_TARGETS=trellis|trellis-postgres|distribution, BENCH_MANIFESTS (2000),
// BENCH_BLOB_MIB (100), BENCH_BLOB_RUNS (3), BENCH_CONCURRENCY (8), BENCH_REFERRER_WINDOW (1000),
// BENCH_*_TIME_LIMIT_S, BENCH_WAIT_IDLE_S (wait for an idle machine before each section),
// BENCH_CPU_PROF=DIR (Trellis runs under node --cpu-prof; summarize with bench/profile-summary.ts),
// BENCH_TRELLIS_NODE_FLAGS, BENCH_TMPDIR, BENCH_DISTRIBUTION. docs/benchmarks.md lists them all.
//
// Every server is a separate process on a fresh temp data directory and a free 127.0.0.1 port;
// each section starts its own servers, so the peak RSS read at its end belongs to that section.
// Results: a markdown table on stdout and in bench/results/latest.md, then the raw JSON (also in
// bench/results/latest.json). See docs/benchmarks.md.
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DISTRIBUTION_BIN, NODE_BIN_DIR, ROOT, killAll, readCpuSeconds, readMemory, removeOnSignal, startDistribution, startSink, startTrellis, tail,
  type MemoryFigures, type ServerHandle, type StartOptions,
} from './lib/servers.ts';
import {
  OCI_CONFIG, OCI_EMPTY, OCI_LAYER, OCI_MANIFEST, pullBlob, pushBlobFromFile, pushSmallBlob, putManifest, runPool, sha256, walkReferrers,
  type Descriptor, type PoolResult, type ReferrersWalk,
} from './lib/client.ts';
import { meanRange, median, percentile, round, windowMeans } from './lib/stats.ts';
import { renderMarkdown } from './lib/report.ts';
import { runQueryBenchmark, writeQueryResults, type QueriesResult } from './query.ts';
import { createTestDatabase, startPostgresCluster } from '../test/helpers/postgres.ts';

// ---- settings ---------------------------------------------------------------------------------

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, not ${JSON.stringify(raw)}`);
  return n;
}

const SECTIONS = ['throughput', 'manifests', 'referrers', 'queries'] as const;
type Section = (typeof SECTIONS)[number];

const only = process.env.BENCH_ONLY?.trim();
const targetsEnv = process.env.BENCH_TARGETS?.trim();
if (targetsEnv && !targetsEnv.split(',').every((s) => s === 'trellis' || s === 'trellis-postgres' || s === 'distribution')) {
  console.error(`BENCH_TARGETS must be trellis, trellis-postgres, distribution (comma-separated), not ${JSON.stringify(targetsEnv)}`);
  process.exit(2);
}
if (only && !only.split(',').every((s) => (SECTIONS as readonly string[]).includes(s))) {
  console.error(`BENCH_ONLY must be one of ${SECTIONS.join(', ')} (comma-separated), not ${JSON.stringify(only)}`);
  process.exit(2);
}

export const settings = {
  sections: (only ? only.split(',') : [...SECTIONS]) as Section[],
  blobMiB: intEnv('BENCH_BLOB_MIB', 100),
  blobRuns: intEnv('BENCH_BLOB_RUNS', 3),
  blobTimeLimitS: intEnv('BENCH_BLOB_TIME_LIMIT_S', 300),
  manifests: intEnv('BENCH_MANIFESTS', 2000),
  manifestTimeLimitS: intEnv('BENCH_MANIFEST_TIME_LIMIT_S', 180),
  referrers: intEnv('BENCH_REFERRERS', 100_000),
  referrerWindow: intEnv('BENCH_REFERRER_WINDOW', 1000),
  referrersTimeLimitS: intEnv('BENCH_REFERRERS_TIME_LIMIT_S', 1200),
  concurrency: intEnv('BENCH_CONCURRENCY', 8),
  targets: (process.env.BENCH_TARGETS ? process.env.BENCH_TARGETS.split(',') : ['trellis', 'distribution']) as Target[],
  cpuProfDir: process.env.BENCH_CPU_PROF || undefined,
  /** Before each section, wait up to this long for the machine to be idle (other processes < 10% CPU). */
  waitIdleS: Number(process.env.BENCH_WAIT_IDLE_S ?? 0),
  tmpRoot: process.env.BENCH_TMPDIR || tmpdir(),
};

const RESULTS_DIR = join(ROOT, 'bench/results');
const LOG_DIR = join(RESULTS_DIR, 'logs');

function progress(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

// ---- result shapes ----------------------------------------------------------------------------

export type Target = 'trellis' | 'trellis-postgres' | 'distribution';

export interface BlobRun {
  pushMBps: number;
  pullMBps: number | null;
  pushMs: number;
  pullMs: number | null;
}

export interface ThroughputResult {
  blobBytes: number;
  opensslRunsMBps: number[];
  opensslMBps: number;
  sinkPushMBps: number | null;
  sinkRunsMBps: number[];
  servers: Partial<Record<Target, {
    runs: BlobRun[];
    pushMBps: number;
    pullMBps: number;
    pushOverOpenssl: number;
    memory: MemoryFigures | null;
    cpuS: number;
    otherCores: number;
  }>>;
}

export interface ManifestPhase {
  concurrency: number;
  requested: number;
  completed: number;
  errors: number;
  firstErrors: string[];
  stoppedBy: PoolResult['stoppedBy'];
  wallMs: number;
  perSecond: number;
  meanMs: number;
  p50Ms: number;
  p99Ms: number;
}

export interface ManifestsResult {
  manifestBytes: number;
  servers: Partial<Record<Target, { single: ManifestPhase; concurrent: ManifestPhase; memory: MemoryFigures | null; cpuS: number; cpuMsPerPush: number; otherCores: number }>>;
}

export interface ReferrersServer {
  requested: number;
  completed: number;
  errors: number;
  firstErrors: string[];
  stoppedBy: PoolResult['stoppedBy'];
  wallMs: number;
  perSecond: number;
  window: number;
  firstMeanMs: number;
  lastMeanMs: number;
  lastOverFirst: number;
  firstP99Ms: number;
  lastP99Ms: number;
  maxMs: number;
  /** Mean latency of each consecutive window of `window` pushes, in push order. */
  windowMeansMs: number[];
  ociSubjectHeader: boolean;
  listing: ReferrersWalk;
  memory: MemoryFigures | null;
  /** Server CPU seconds over the whole section, and per pushed referrer in ms. */
  cpuS: number;
  cpuMsPerPush: number;
  otherCores: number;
  /** Server RSS (KiB) after each tenth of the pushes. */
  rssKiBByTenth: number[];
  /** Time from SIGTERM to exit (Trellis flushes index.json on the way out). */
  stopMs: number;
}

export interface ReferrersResult {
  referrerBytes: number;
  servers: Partial<Record<Target, ReferrersServer>>;
}

export interface SectionLoad {
  busyBeforePct: number;
  /** 1-minute load average at the start and end. */
  start: number;
  end: number;
  wallS: number;
  /** CPU seconds used by the harness, its client and every server and tool it ran. */
  benchCpuS: number;
  /** CPU seconds the rest of the machine used meanwhile (from /proc/stat), and as cores on average. */
  otherCpuS: number;
  otherCores: number;
}

export interface BenchResults {
  startedAt: string;
  finishedAt?: string;
  durationS?: number;
  machine: {
    nproc: number;
    cpuModel: string;
    node: string;
    distribution: string;
    openssl: string;
    kernel: string;
    trellisCommit: string;
  };
  settings: typeof settings;
  throughput?: ThroughputResult;
  manifests?: ManifestsResult;
  referrers?: ReferrersResult;
  queries?: QueriesResult;
  errors: string[];
  /**
   * Per section: CPU use of the whole machine (percent of all cores) over 2 s just before it
   * started, when no benchmark process was busy, and the 1-minute load average at its start and
   * end. Other work on the machine skews the figures.
   */
  load: Record<string, SectionLoad>;
  /** Log lines Trellis wrote at warn level or above (the runs use --log-level warn). */
  trellisLogWarnings: string[];
}

// ---- helpers ------------------------------------------------------------------------------------

function run(command: string, args: string[]): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (err) {
    return `unavailable (${(err as Error).message.split('\n')[0]})`;
  }
}

function machineInfo(): BenchResults['machine'] {
  return {
    nproc: availableParallelism(),
    cpuModel: cpus()[0]?.model ?? 'unknown',
    node: run(join(NODE_BIN_DIR, 'node'), ['--version']),
    distribution: run(DISTRIBUTION_BIN, ['--version']),
    openssl: run('openssl', ['version']),
    kernel: run('uname', ['-sr']),
    trellisCommit: `${run('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'])}${run('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src']) ? ' (src/ modified)' : ''}`,
  };
}

const mb = (bytes: number, ms: number) => bytes / 1e6 / (ms / 1000);

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

/** Times `openssl dgst -sha256 FILE`; checks it agrees with the digest computed while writing. */
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

function cpuTimes(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const fields = line.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  return { busy: total - idle, total };
}

/** Machine CPU use over `ms`, in percent of all cores. */
async function busyPercent(ms = 2000): Promise<number> {
  const a = cpuTimes();
  await new Promise((r) => setTimeout(r, ms));
  const b = cpuTimes();
  return round((100 * (b.busy - a.busy)) / Math.max(1, b.total - a.total), 1);
}

/** Waits (up to `maxS` seconds) until other processes use under 10% of the machine; returns the last reading. */
async function waitIdle(maxS: number): Promise<number> {
  const deadline = Date.now() + maxS * 1000;
  let busy = await busyPercent();
  while (busy > 10 && Date.now() < deadline) {
    progress(`waiting for the machine to go idle (${busy}% busy)`);
    busy = await busyPercent(5000);
  }
  return busy;
}

interface Context {
  work: string;
  results: BenchResults;
}

function startOptions(ctx: Context, label: string): StartOptions {
  return { tmpRoot: ctx.work, logDir: LOG_DIR, label, cpuProfDir: settings.cpuProfDir };
}

async function start(ctx: Context, target: Target, label: string): Promise<ServerHandle> {
  const options = startOptions(ctx, label);
  if (target === 'trellis-postgres') {
    // One cluster for the run with PostgreSQL's durable defaults (stopped at exit), a fresh
    // database per server.
    process.env.TRELLIS_TEST_POSTGRES_URL ??= (await startPostgresCluster({ durable: true })).url;
    const database = await createTestDatabase();
    return startTrellis({ ...options, label: `${label}-postgres`, env: { TRELLIS_METADATA: database.url } });
  }
  return target === 'trellis' ? startTrellis(options) : startDistribution(options);
}

interface ServerRun<T> {
  value: T;
  memory: MemoryFigures | null;
  stopMs: number;
  /** Server CPU seconds, start to end of the work. */
  cpuS: number;
  /** CPU used meanwhile by processes other than this server and the harness (client), in cores on average. */
  otherCores: number;
}

/** Runs `work` against a freshly started server, reads its memory at the end, always stops it. */
async function withServer<T>(ctx: Context, target: Target, label: string, work: (server: ServerHandle) => Promise<T>): Promise<ServerRun<T>> {
  progress(`${label}: starting ${target}`);
  const machineBefore = cpuTimes();
  const harnessBefore = readCpuSeconds('self') ?? NaN;
  const started = performance.now();
  const server = await start(ctx, target, label);
  let memory: MemoryFigures | null = null;
  try {
    const value = await work(server);
    if (!server.alive()) throw new Error(`${target} died during ${label}; log: ${tail(server.logFile)}`);
    memory = readMemory(server.pid) ?? null;
    const serverCpu = readCpuSeconds(server.pid) ?? NaN;
    const harnessCpu = (readCpuSeconds('self') ?? NaN) - harnessBefore;
    const machineBusy = (cpuTimes().busy - machineBefore.busy) / 100;
    const otherCores = round(Math.max(0, machineBusy - serverCpu - harnessCpu) / ((performance.now() - started) / 1000), 2);
    const stopped = await server.stop();
    progress(`${label}: ${target} stopped in ${Math.round(stopped.ms)} ms; other processes used ${otherCores} cores meanwhile`);
    if (target !== 'distribution') collectWarnings(ctx, server.logFile, label);
    return { value, memory, stopMs: stopped.ms, cpuS: round(serverCpu), otherCores };
  } finally {
    if (server.alive()) await server.stop().catch(() => undefined);
  }
}

function collectWarnings(ctx: Context, logFile: string, label: string): void {
  const lines = tail(logFile, 1000).split('\n').filter((l) => l.trim() && l !== '(no log)');
  for (const line of lines.slice(0, 20)) ctx.results.trellisLogWarnings.push(`${label}: ${line.slice(0, 500)}`);
  if (lines.length > 20) ctx.results.trellisLogWarnings.push(`${label}: ... ${lines.length - 20} more lines in ${logFile}`);
}

// ---- section 1: blob throughput ---------------------------------------------------------------

async function throughputSection(ctx: Context): Promise<ThroughputResult> {
  const bytes = settings.blobMiB * 1024 * 1024;
  const file = join(ctx.work, 'blob.bin');
  progress(`throughput: writing ${settings.blobMiB} MiB of random data`);
  const digest = await randomFile(file, bytes);
  const opensslRuns: number[] = [];
  for (let i = 0; i < settings.blobRuns; i++) opensslRuns.push(mb(bytes, await timeOpenssl(file, digest)));
  const result: ThroughputResult = {
    blobBytes: bytes, opensslRunsMBps: opensslRuns.map((v) => round(v)), opensslMBps: round(median(opensslRuns)),
    sinkPushMBps: null, sinkRunsMBps: [], servers: {},
  };
  progress(`throughput: openssl dgst -sha256 ${result.opensslMBps} MB/s`);

  const signal = () => AbortSignal.timeout(settings.blobTimeLimitS * 1000);
  for (const target of settings.targets) {
    const { value: runs, memory, cpuS, otherCores } = await withServer(ctx, target, 'throughput', async (server) => {
      // One unmeasured round first, so that neither side is timed while cold.
      await pushBlobFromFile(server.url, 'bench/blob-warmup', file, bytes, digest, signal());
      if ((await pullBlob(server.url, 'bench/blob-warmup', digest, signal())) !== bytes) throw new Error(`${target} warm-up pull was short`);
      const runs: BlobRun[] = [];
      for (let i = 0; i < settings.blobRuns; i++) {
        const repo = `bench/blob-${i}`;
        const t0 = performance.now();
        await pushBlobFromFile(server.url, repo, file, bytes, digest, signal());
        const pushMs = performance.now() - t0;
        const t1 = performance.now();
        const received = await pullBlob(server.url, repo, digest, signal());
        const pullMs = performance.now() - t1;
        if (received !== bytes) throw new Error(`${target} pull returned ${received} bytes, expected ${bytes}`);
        runs.push({ pushMs: round(pushMs), pullMs: round(pullMs), pushMBps: round(mb(bytes, pushMs)), pullMBps: round(mb(bytes, pullMs)) });
        progress(`throughput: ${target} run ${i + 1}: push ${round(mb(bytes, pushMs))} MB/s, pull ${round(mb(bytes, pullMs))} MB/s`);
      }
      return runs;
    });
    const pushMBps = round(median(runs.map((r) => r.pushMBps)));
    result.servers[target] = {
      runs, pushMBps, pullMBps: round(median(runs.map((r) => r.pullMBps ?? NaN))), pushOverOpenssl: round(pushMBps / result.opensslMBps, 3), memory, cpuS, otherCores,
    };
  }

  // Reference: the same client against node:http that only hashes the body.
  progress('throughput: reference sink (node:http + sha256, no storage)');
  const sink = await startSink(startOptions(ctx, 'throughput'));
  try {
    await pushBlobFromFile(sink.url, 'bench/sink', file, bytes, digest, signal());
    for (let i = 0; i < settings.blobRuns; i++) {
      const t0 = performance.now();
      await pushBlobFromFile(sink.url, 'bench/sink', file, bytes, digest, signal());
      result.sinkRunsMBps.push(round(mb(bytes, performance.now() - t0)));
    }
    result.sinkPushMBps = round(median(result.sinkRunsMBps));
  } finally {
    await sink.stop();
  }
  await rm(file, { force: true });
  return result;
}

// ---- section 2: manifest pushes ---------------------------------------------------------------

interface ImageParts {
  config: Descriptor;
  layer: Descriptor;
}

async function pushImageParts(base: string, repo: string): Promise<ImageParts> {
  const config = await pushSmallBlob(base, repo, Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [sha256('bench layer')] },
  })), OCI_CONFIG);
  const layer = await pushSmallBlob(base, repo, randomBytes(1024), OCI_LAYER);
  return { config, layer };
}

const MANIFEST_TARGET_BYTES = 1024;

/** A distinct ~1 KiB image manifest: the same config and layer, a unique annotation, padding. */
function imageManifest(parts: ImageParts, id: string): Buffer {
  const build = (pad: string) => Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST, config: parts.config, layers: [parts.layer],
    annotations: { 'org.opencontainers.image.created': '2025-01-01T00:00:00Z', 'org.example.bench.id': id, 'org.example.bench.pad': pad },
  }));
  const bare = build('');
  return build('x'.repeat(Math.max(0, MANIFEST_TARGET_BYTES - bare.length)));
}

function phaseOf(pool: PoolResult, requested: number, concurrency: number): ManifestPhase {
  return {
    concurrency, requested, completed: pool.completed, errors: pool.errors, firstErrors: pool.firstErrors, stoppedBy: pool.stoppedBy,
    wallMs: round(pool.wallMs), perSecond: round(pool.completed / (pool.wallMs / 1000), 1),
    meanMs: round(meanRange(pool.latencies, 0, pool.started), 3),
    p50Ms: round(percentile(pool.latencies, 50, 0, pool.started), 3), p99Ms: round(percentile(pool.latencies, 99, 0, pool.started), 3),
  };
}

async function manifestsSection(ctx: Context): Promise<ManifestsResult> {
  const result: ManifestsResult = { manifestBytes: 0, servers: {} };
  const repo = 'bench/manifests';
  for (const target of settings.targets) {
    const { value, memory, cpuS, otherCores } = await withServer(ctx, target, 'manifests', async (server) => {
      const parts = await pushImageParts(server.url, repo);
      result.manifestBytes = imageManifest(parts, 'c1-0').length;
      const phase = async (prefix: string, count: number, concurrency: number) => {
        const bodies = Array.from({ length: count }, (_, i) => imageManifest(parts, `${prefix}-${i}`));
        const pool = await runPool({
          count, concurrency, timeLimitMs: settings.manifestTimeLimitS * 1000,
          task: async (i) => void (await putManifest(server.url, repo, `${prefix}-${i}`, bodies[i]!)),
        });
        const out = phaseOf(pool, count, concurrency);
        progress(`manifests: ${target} ${prefix}, ${concurrency} client(s): ${out.perSecond}/s (${out.completed}/${count}, ${out.errors} errors)`);
        return out;
      };
      const warm = await phase('warm', Math.min(200, settings.manifests), settings.concurrency);
      const single = await phase('c1', settings.manifests, 1);
      const concurrent = await phase(`c${settings.concurrency}`, settings.manifests, settings.concurrency);
      return { single, concurrent, pushes: warm.completed + single.completed + concurrent.completed };
    });
    const { single, concurrent, pushes } = value;
    result.servers[target] = { single, concurrent, memory, cpuS, cpuMsPerPush: round((cpuS * 1000) / Math.max(1, pushes), 3), otherCores };
  }
  return result;
}

// ---- section 3: referrers ---------------------------------------------------------------------

const EMPTY_JSON = Buffer.from('{}');

function referrerManifest(empty: Descriptor, subject: Descriptor, i: number): Buffer {
  return Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'application/vnd.example.bench.signature',
    config: empty, layers: [empty], subject,
    annotations: { 'org.opencontainers.image.created': '2025-01-01T00:00:00Z', 'org.example.bench.seq': String(i) },
  }));
}

async function referrersSection(ctx: Context): Promise<ReferrersResult> {
  const result: ReferrersResult = { referrerBytes: 0, servers: {} };
  const repo = 'bench/referrers';
  const count = settings.referrers;
  const window = Math.min(settings.referrerWindow, Math.max(1, Math.floor(count / 2)));
  for (const target of settings.targets) {
    const { value, memory, stopMs, cpuS, otherCores } = await withServer(ctx, target, 'referrers', async (server) => {
      const parts = await pushImageParts(server.url, repo);
      const empty = await pushSmallBlob(server.url, repo, EMPTY_JSON, OCI_EMPTY);
      const subjectBody = imageManifest(parts, 'subject');
      await putManifest(server.url, repo, 'subject', subjectBody);
      const subject: Descriptor = { mediaType: OCI_MANIFEST, digest: sha256(subjectBody), size: subjectBody.length };
      result.referrerBytes = referrerManifest(empty, subject, 0).length;
      let ociSubjectHeader = false;
      const step = Math.max(1, Math.floor(count / 10));
      const rssKiBByTenth: number[] = [];
      const pool = await runPool({
        count, concurrency: settings.concurrency, timeLimitMs: settings.referrersTimeLimitS * 1000, maxErrors: 1000,
        task: async (i) => {
          const body = referrerManifest(empty, subject, i);
          const put = await putManifest(server.url, repo, sha256(body), body);
          if (i === 0) ociSubjectHeader = put.subject === subject.digest;
        },
        onProgress: (done) => {
          if (done % step !== 0) return;
          const rss = readMemory(server.pid)?.rssKiB ?? NaN;
          rssKiBByTenth.push(rss);
          progress(`referrers: ${target} ${done}/${count}, server RSS ${Math.round(rss / 1024)} MiB`);
        },
      });
      const done = pool.started;
      const lastFrom = Math.max(0, done - window);
      const firstMeanMs = meanRange(pool.latencies, 0, window);
      const lastMeanMs = meanRange(pool.latencies, lastFrom, done);
      progress(`referrers: ${target} listing referrers`);
      const listing = await walkReferrers(server.url, repo, subject.digest, 300_000);
      progress(`referrers: ${target} GET referrers: ${listing.status}, ${listing.manifests} in ${listing.pages} pages, ${Math.round(listing.ms)} ms`);
      const out: Omit<ReferrersServer, 'memory' | 'stopMs' | 'cpuS' | 'cpuMsPerPush' | 'otherCores'> = {
        requested: count, completed: pool.completed, errors: pool.errors, firstErrors: pool.firstErrors, stoppedBy: pool.stoppedBy,
        wallMs: round(pool.wallMs), perSecond: round(pool.completed / (pool.wallMs / 1000), 1), window,
        firstMeanMs: round(firstMeanMs, 3), lastMeanMs: round(lastMeanMs, 3), lastOverFirst: round(lastMeanMs / firstMeanMs, 3),
        firstP99Ms: round(percentile(pool.latencies, 99, 0, window), 3), lastP99Ms: round(percentile(pool.latencies, 99, lastFrom, done), 3),
        maxMs: round(percentile(pool.latencies, 100, 0, done), 3),
        windowMeansMs: windowMeans(pool.latencies, done, window), rssKiBByTenth, ociSubjectHeader, listing: { ...listing, ms: round(listing.ms) },
      };
      progress(`referrers: ${target} first ${window}: ${out.firstMeanMs} ms, last ${window}: ${out.lastMeanMs} ms (x${out.lastOverFirst}), ${out.perSecond}/s`);
      return out;
    });
    result.servers[target] = { ...value, memory, cpuS, cpuMsPerPush: round((cpuS * 1000) / Math.max(1, value.completed), 3), otherCores, stopMs: round(stopMs) };
  }
  return result;
}

// ---- main -------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const started = Date.now();
  await mkdir(LOG_DIR, { recursive: true });
  if (settings.cpuProfDir) await mkdir(settings.cpuProfDir, { recursive: true });
  const work = await mkdtemp(join(settings.tmpRoot, 'trellis-bench-'));
  removeOnSignal(work);
  const results: BenchResults = {
    startedAt: new Date(started).toISOString(), machine: machineInfo(), settings, errors: [], load: {}, trellisLogWarnings: [],
  };
  const ctx: Context = { work, results };
  progress(`sections: ${settings.sections.join(', ')}; referrers: ${settings.referrers}; work dir ${work}`);
  try {
    for (const section of settings.sections) {
      const busyBeforePct = await waitIdle(settings.waitIdleS);
      const machineBefore = cpuTimes();
      const benchBefore = readCpuSeconds('self', true) ?? NaN;
      const sectionStart = performance.now();
      const load: SectionLoad = { busyBeforePct, start: round(loadavg()[0] ?? NaN), end: NaN, wallS: NaN, benchCpuS: NaN, otherCpuS: NaN, otherCores: NaN };
      results.load[section] = load;
      if (busyBeforePct > 10) progress(`warning: the machine was ${busyBeforePct}% busy before ${section}; other work skews the figures`);
      try {
        if (section === 'throughput') results.throughput = await throughputSection(ctx);
        if (section === 'manifests') results.manifests = await manifestsSection(ctx);
        if (section === 'referrers') results.referrers = await referrersSection(ctx);
        if (section === 'queries') {
          results.queries = await runQueryBenchmark({ tmpRoot: ctx.work, logDir: LOG_DIR });
          await writeQueryResults(results.queries);
          for (const error of results.queries.errors) results.errors.push(`queries: ${error}`);
          collectWarnings(ctx, join(LOG_DIR, 'trellis-queries.log'), 'queries');
        }
      } catch (err) {
        const message = `${section}: ${(err as Error).stack ?? String(err)}`;
        results.errors.push(message);
        progress(`section failed: ${message}`);
      }
      load.end = round(loadavg()[0] ?? NaN);
      load.wallS = round((performance.now() - sectionStart) / 1000, 1);
      load.benchCpuS = round((readCpuSeconds('self', true) ?? NaN) - benchBefore, 1);
      const machineAfter = cpuTimes();
      load.otherCpuS = round((machineAfter.busy - machineBefore.busy) / 100 - load.benchCpuS, 1);
      load.otherCores = round(load.otherCpuS / load.wallS, 2);
      if (load.otherCores > 0.1) progress(`warning: other processes used ${load.otherCores} cores on average during ${section}`);
    }
  } finally {
    killAll();
    await rm(work, { recursive: true, force: true });
  }
  results.finishedAt = new Date().toISOString();
  results.durationS = Math.round((Date.now() - started) / 1000);
  const markdown = renderMarkdown(results);
  await mkdir(RESULTS_DIR, { recursive: true });
  await writeFile(join(RESULTS_DIR, 'latest.md'), markdown);
  const json = JSON.stringify(results, null, 2);
  await writeFile(join(RESULTS_DIR, 'latest.json'), json + '\n');
  process.stdout.write(`${markdown}\n\`\`\`json\n${json}\n\`\`\`\n`);
  return results.errors.length ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    killAll();
    console.error(err);
    process.exitCode = 1;
  },
);
