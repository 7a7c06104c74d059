// Benchmark harness: Trellis against olareg 0.2.2 and distribution 2.8, side by side, in one run.
//
//   npm run bench                         # everything
//   BENCH_QUICK=1 npm run bench           # small sizes, no queries: a couple of minutes
//   BENCH_ONLY=blobs npm run bench        # one section: blobs | small-blobs | repos | manifests | listing | referrers | queries
//
// Every registry section starts Trellis (default durability), olareg, Trellis with fsync: true and
// distribution side by side, each a separate process on a fresh temp data directory and a free
// 127.0.0.1 port, and measures them round by round, the order rotating each round (see
// bench/lib/harness.ts). Trellis in its default mode is compared with olareg (neither fsyncs
// each write), Trellis with fsync: true with distribution (which does). Server CPU per operation
// comes from /proc/<pid>/stat around each measurement; peak RSS (VmHWM) at the end of a section.
//
// BENCH_TARGETS=trellis,olareg,trellis-fsync,distribution,trellis-postgres adds Trellis on
// PostgreSQL metadata (a throw-away cluster from the Debian postgresql package with its durable
// defaults, test/helpers/postgres.ts) as an extra column.
//
// `queries` (Trellis only: the peers have no query API) generates a registry with bench/corpus.ts
// and times the query endpoints on it; see bench/query.ts. All knobs: docs/benchmarks.md.
//
// Results: a markdown table on stdout and in bench/results/latest.md, then the raw JSON (also in
// bench/results/latest.json).
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DISTRIBUTION_BIN, NODE_BIN_DIR, OLAREG_BIN, ROOT, ZOT_BIN, keepDataUntilTheEnd, killAll, readCpuSeconds, removeOnSignal, tail, type StartOptions } from './lib/servers.ts';
import { ALL_TARGETS, KNOWN_TARGETS, cpuTimes, type SectionResult, type Target } from './lib/harness.ts';
import { round } from './lib/stats.ts';
import { renderMarkdown } from './lib/report.ts';
import { blobsSection, listingSection, manifestsSection, referrersSection, reposSection, smallBlobsSection, type SectionContext } from './sections.ts';
import { runQueryBenchmark, writeQueryResults, type QueriesResult } from './query.ts';

// ---- settings ---------------------------------------------------------------------------------

const quick = process.env.BENCH_QUICK === '1' || process.env.BENCH_QUICK === 'true';

function intEnv(name: string, fallback: number, quickFallback = fallback): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return quick ? quickFallback : fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, not ${JSON.stringify(raw)}`);
  return n;
}

const SECTIONS = ['blobs', 'small-blobs', 'repos', 'manifests', 'listing', 'referrers', 'queries'] as const;
type Section = (typeof SECTIONS)[number];

const only = process.env.BENCH_ONLY?.trim();
const targetsEnv = process.env.BENCH_TARGETS?.trim();
if (targetsEnv && !targetsEnv.split(',').every((s) => (KNOWN_TARGETS as readonly string[]).includes(s))) {
  console.error(`BENCH_TARGETS must name some of ${KNOWN_TARGETS.join(', ')} (comma-separated), not ${JSON.stringify(targetsEnv)}`);
  process.exit(2);
}
if (only && !only.split(',').every((s) => (SECTIONS as readonly string[]).includes(s))) {
  console.error(`BENCH_ONLY must be one of ${SECTIONS.join(', ')} (comma-separated), not ${JSON.stringify(only)}`);
  process.exit(2);
}

export const settings = {
  quick,
  sections: (only ? only.split(',') : SECTIONS.filter((s) => !quick || s !== 'queries')) as Section[],
  targets: (targetsEnv ? targetsEnv.split(',') : [...ALL_TARGETS]) as Target[],
  rounds: intEnv('BENCH_ROUNDS', 3, 2),
  concurrency: intEnv('BENCH_CONCURRENCY', 8),
  blobMiB: intEnv('BENCH_BLOB_MIB', 100, 32),
  blobChunks: intEnv('BENCH_BLOB_CHUNKS', 20, 8),
  blobTimeLimitS: intEnv('BENCH_BLOB_TIME_LIMIT_S', 300),
  smallBlobs: intEnv('BENCH_SMALL_BLOBS', 1000, 300),
  smallBlobBytes: intEnv('BENCH_SMALL_BLOB_BYTES', 4096),
  repos: intEnv('BENCH_REPOS', 5000, 600),
  manifests: intEnv('BENCH_MANIFESTS', 3000, 450),
  manifestTimeLimitS: intEnv('BENCH_MANIFEST_TIME_LIMIT_S', 180),
  referrers: intEnv('BENCH_REFERRERS', 100_000, 3000),
  referrerWindow: intEnv('BENCH_REFERRER_WINDOW', 1000, 300),
  referrersTimeLimitS: intEnv('BENCH_REFERRERS_TIME_LIMIT_S', 1200, 120),
  referrerCheck: intEnv('BENCH_REFERRER_CHECK', 5000, 2000),
  referrerCheckConcurrency: intEnv('BENCH_REFERRER_CHECK_CONCURRENCY', 32),
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

export type { Target };

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
    olareg: string;
    /** The zot build's version line, when BENCH_ZOT names one. */
    zot?: string;
    openssl: string;
    kernel: string;
    trellisCommit: string;
  };
  settings: typeof settings;
  sections: Partial<Record<Exclude<Section, 'queries'>, SectionResult>>;
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
    olareg: run(OLAREG_BIN, ['version']).split('\n')[0]?.replace(/^VCSTag:\s*/, '') ?? 'unknown',
    ...(ZOT_BIN ? { zot: zotVersion() } : {}),
    openssl: run('openssl', ['version']),
    kernel: run('uname', ['-sr']),
    trellisCommit: `${run('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'])}${run('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src']) ? ' (src/ modified)' : ''}`,
  };
}

/** zot prints its build (release tag, commit, Go) as a JSON log line. */
function zotVersion(): string {
  const line = run(ZOT_BIN, ['--version']).split('\n')[0] ?? '';
  try {
    const info = JSON.parse(line) as { commit?: string; 'binary-type'?: string; 'go version'?: string };
    return `commit ${info.commit || '?'} (${info['binary-type'] || 'full'}, ${info['go version'] || 'go ?'})`;
  } catch {
    return line.slice(0, 100) || 'unknown';
  }
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

function collectWarnings(results: BenchResults, label: string, logName = `trellis-${label}`): void {
  const logFile = join(LOG_DIR, `${logName}.log`);
  const lines = tail(logFile, 1000).split('\n').filter((l) => l.trim() && l !== '(no log)');
  for (const line of lines.slice(0, 20)) results.trellisLogWarnings.push(`${label}: ${line.slice(0, 500)}`);
  if (lines.length > 20) results.trellisLogWarnings.push(`${label}: ... ${lines.length - 20} more lines in ${logFile}`);
}

const SECTION_RUNNERS: Record<Exclude<Section, 'queries'>, (ctx: SectionContext) => Promise<SectionResult>> = {
  blobs: blobsSection, 'small-blobs': smallBlobsSection, repos: reposSection, manifests: manifestsSection, listing: listingSection, referrers: referrersSection,
};

// ---- main -------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const started = Date.now();
  await mkdir(LOG_DIR, { recursive: true });
  if (settings.cpuProfDir) await mkdir(settings.cpuProfDir, { recursive: true });
  const work = await mkdtemp(join(settings.tmpRoot, 'trellis-bench-'));
  removeOnSignal(work);
  keepDataUntilTheEnd(); // removed with `work` at the end (see keepDataUntilTheEnd)
  const results: BenchResults = {
    startedAt: new Date(started).toISOString(), machine: machineInfo(), settings, sections: {}, errors: [], load: {}, trellisLogWarnings: [],
  };
  const options = (target: Target, label: string): StartOptions => ({
    tmpRoot: work, logDir: LOG_DIR, label, cpuProfDir: target.startsWith('trellis') ? settings.cpuProfDir : undefined,
  });
  const ctx: SectionContext = { work, settings, options, progress };
  progress(`sections: ${settings.sections.join(', ')}; targets: ${settings.targets.join(', ')}; ${settings.rounds} rounds; work dir ${work}`);
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
        if (section === 'queries') {
          results.queries = await runQueryBenchmark({ tmpRoot: work, logDir: LOG_DIR });
          await writeQueryResults(results.queries);
          for (const error of results.queries.errors) results.errors.push(`queries: ${error}`);
          collectWarnings(results, 'queries');
        } else {
          results.sections[section] = await SECTION_RUNNERS[section](ctx);
          if (settings.targets.includes('trellis')) collectWarnings(results, section);
          if (settings.targets.includes('trellis-postgres')) collectWarnings(results, `postgres-${section}`, `trellis-postgres-${section}`);
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
