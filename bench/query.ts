// Query benchmark: p95 latency of the query endpoints on a generated registry (bench/corpus.ts),
// the server's peak RSS and the index size.
//
//   node bench/query.ts                                          # small: 200 repos, 20,000 manifests, generated in a temp dir
//   BENCH_QUERY_CORPUS=/work/corpus/full node bench/query.ts     # an existing corpus (bench/corpus.ts --out …)
//   BENCH_QUERY_CORPUS=/work/corpus/full BENCH_QUERY_REINDEX=1 node bench/query.ts   # reindex it first (timed)
//   BENCH_ONLY=queries npm run bench                             # the same, as a section of the harness
//
// Knobs: BENCH_QUERY_SCALE (small | full: 10,000 repos / 1,000,000 manifests, generated when no
// corpus is given), BENCH_QUERY_METADATA (postgres: index and serve from PostgreSQL), BENCH_QUERY_CORPUS, BENCH_QUERY_REINDEX (1 = run `trellis reindex` first;
// default 1 for a generated corpus, which is reindexed as it is generated, 0 otherwise),
// BENCH_QUERY_REQUESTS (200 measured requests per query), BENCH_QUERY_WARMUP (20),
// BENCH_QUERY_CASE_TIME_LIMIT_S (120: a slower query stops early, after at least 5 requests),
// BENCH_QUERY_REQUEST_TIMEOUT_S (30: a request without an answer by then ends its query, and the
// server, still busy with it, is restarted), BENCH_QUERY_SEED, BENCH_TMPDIR. Requests are sequential, one client (Node fetch) on the same
// machine. Results: bench/results/queries.md and queries.json (and a section of `npm run bench`).
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { execFileSync } from 'node:child_process';
import { ROOT, killAll, readCpuSeconds, readMemory, removeOnSignal, startTrellis, tail, type MemoryFigures } from './lib/servers.ts';
import { percentile, round } from './lib/stats.ts';
import { CYCLONEDX, NOTATION_SIG, SPDX, dbSize, generateCorpus, reindex, type CorpusSummary } from './corpus.ts';
import pg from 'pg';
import { createTestDatabase, startPostgresCluster } from '../test/helpers/postgres.ts';

const MiB = 1024 * 1024;
const RSS_GOAL_KIB = 1024 * 1024;

export interface QueryCase {
  name: string;
  /** Path and query string (URL-encoded). */
  path: string;
  goalMs?: number;
  /** Registry-wide search answers {results}, the others an image index {manifests}. */
  shape: 'results' | 'manifests';
}

export interface QueryCaseResult {
  name: string;
  path: string;
  status: number;
  /** Items on one answer, and whether it linked a next page. */
  items: number;
  next: boolean;
  bytes: number;
  requests: number;
  errors: number;
  firstError?: string;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  maxMs: number;
  goalMs?: number;
  met?: boolean;
  /** A request got no answer within BENCH_QUERY_REQUEST_TIMEOUT_S; the server was restarted after it. */
  timedOut?: boolean;
}

export interface QueriesResult {
  scale: string;
  corpusDir: string;
  corpus: CorpusSummary;
  /** Seconds: generating the corpus in this run (when it did), and `trellis reindex` (this run's, else the generator's). */
  generationS: number | null;
  reindexS: number | null;
  reindexedInThisRun: boolean;
  dbBytes: number;
  dbWalBytes: number;
  serverStartS: number;
  requests: number;
  warmup: number;
  requestTimeoutS: number;
  cases: QueryCaseResult[];
  memory: MemoryFigures | null;
  rssGoalMet: boolean | null;
  /** While the queries ran: CPU the rest of the machine used (cores, on average; not the server, not this client). */
  otherCores: number;
  serverCpuS: number;
  /** The plan of the SQL each registry-wide query runs (when the query module can say): SQLite's EXPLAIN QUERY PLAN, PostgreSQL's EXPLAIN ANALYZE. */
  plans: Record<string, string[]>;
  machine: { nproc: number; cpuModel: string; node: string; trellisCommit: string };
  startedAt: string;
  errors: string[];
}

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, not ${JSON.stringify(raw)}`);
  return n;
}

function progress(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

const SCALES: Record<string, { repos: number; manifests: number }> = {
  small: { repos: 200, manifests: 20_000 },
  full: { repos: 10_000, manifests: 1_000_000 },
};

const q = (params: Record<string, string>) => new URLSearchParams(params).toString();

/** The queries measured; values are picked from what the corpus holds. */
export function queryCases(corpus: CorpusSummary): QueryCase[] {
  const common = corpus.topVersions[0]?.[0] ?? '1.0.0';
  const hot = `/v2/${corpus.hot.repository}/referrers/${corpus.hot.subject}`;
  const version = (v: string) => `/v2/_trellis/search?${q({ 'q_annotations__org.opencontainers.image.version__eq': v, n: '100' })}`;
  return [
    { name: 'search: annotation eq (image.version = 1.2.3), n=100', shape: 'results', goalMs: 20, path: version('1.2.3') },
    { name: `search: annotation eq (image.version = ${common}, the most common), n=100`, shape: 'results', goalMs: 20, path: version(common) },
    { name: 'search: artifactType eq (OCI image config: every image), n=100', shape: 'results', goalMs: 20,
      path: `/v2/_trellis/search?${q({ q_artifacttype__eq: 'application/vnd.oci.image.config.v1+json', n: '100' })}` },
    { name: 'search: artifactType eq (notation signature), n=100', shape: 'results', goalMs: 20,
      path: `/v2/_trellis/search?${q({ q_artifacttype__eq: NOTATION_SIG, n: '100' })}` },
    { name: 'references: artifactType eq (SPDX), n=100', shape: 'manifests', goalMs: 20,
      path: `/v2/_oci/references?${q({ q_artifacttype__eq: SPDX, n: '100' })}` },
    { name: 'references: annotation eq (in-toto predicate type = SLSA provenance v1), n=100', shape: 'manifests', goalMs: 20,
      path: `/v2/_oci/references?${q({ 'q_annotations__in-toto.io/predicate-type__eq': 'https://slsa.dev/provenance/v1', n: '100' })}` },
    { name: 'search: annotation contains (image.source contains "acme"), n=100', shape: 'results', goalMs: 250,
      path: `/v2/_trellis/search?${q({ 'q_annotations__org.opencontainers.image.source__contains': 'acme', n: '100' })}` },
    { name: 'search: annotation contains (image.title contains "render"), n=100', shape: 'results', goalMs: 250,
      path: `/v2/_trellis/search?${q({ 'q_annotations__org.opencontainers.image.title__contains': 'render', n: '100' })}` },
    { name: 'search: version gt 2.0.0, n=100', shape: 'results',
      path: `/v2/_trellis/search?${q({ 'q_annotations__org.opencontainers.image.version__gt': '2.0.0', n: '100' })}` },
    { name: 'search: created gt 2025-06-01T00:00:00Z, n=100', shape: 'results',
      path: `/v2/_trellis/search?${q({ 'q_annotations__org.opencontainers.image.created__gt': '2025-06-01T00:00:00Z', n: '100' })}` },
    { name: 'search: version gt 2.0.0, sort=version, n=100', shape: 'results',
      path: `/v2/_trellis/search?${q({ 'q_annotations__org.opencontainers.image.version__gt': '2.0.0', sort: 'version', n: '100' })}` },
    { name: 'search: created gt 2025-06-01T00:00:00Z, sort=created, n=100', shape: 'results',
      path: `/v2/_trellis/search?${q({ 'q_annotations__org.opencontainers.image.created__gt': '2025-06-01T00:00:00Z', sort: 'created', n: '100' })}` },
    { name: 'search: artifactType eq (CycloneDX) and created gt 2025-01-01, n=100', shape: 'results',
      path: `/v2/_trellis/search?${q({ q_artifacttype__eq: CYCLONEDX, 'q_annotations__org.opencontainers.image.created__gt': '2025-01-01T00:00:00Z', n: '100' })}` },
    { name: `referrers of the ${corpus.hot.referrers.toLocaleString('en-US')}-referrer subject, n=100`, shape: 'manifests', goalMs: 10, path: `${hot}?n=100` },
    { name: `referrers of the ${corpus.hot.referrers.toLocaleString('en-US')}-referrer subject, n=250`, shape: 'manifests', goalMs: 10, path: `${hot}?n=250` },
    { name: `referrers of the ${corpus.hot.referrers.toLocaleString('en-US')}-referrer subject, n=1000 (largest page with n)`, shape: 'manifests', path: `${hot}?n=1000` },
    { name: `referrers of the ${corpus.hot.referrers.toLocaleString('en-US')}-referrer subject, no n (one page up to 4 MiB)`, shape: 'manifests', path: hot },
    { name: 'referrers of that subject, artifactType=notation, n=100', shape: 'manifests', path: `${hot}?${q({ artifactType: NOTATION_SIG, n: '100' })}` },
    { name: 'referrers of that subject, q_ created gt 2025-06-01, n=100', shape: 'manifests',
      path: `${hot}?${q({ 'q_annotations__org.opencontainers.image.created__gt': '2025-06-01T00:00:00Z', n: '100' })}` },
  ];
}

class QueryTimeout extends Error {}

async function once(base: string, c: QueryCase, timeoutMs: number): Promise<{ ms: number; status: number; items: number; next: boolean; bytes: number; text: string }> {
  const t0 = performance.now();
  let res: Response;
  try {
    res = await fetch(base + c.path, { headers: { Accept: 'application/vnd.oci.image.index.v1+json, application/json' }, signal: AbortSignal.timeout(timeoutMs) });
  } catch (err) {
    if ((err as Error).name === 'TimeoutError') throw new QueryTimeout(`no answer within ${timeoutMs / 1000} s`);
    throw err;
  }
  const text = await res.text();
  const ms = performance.now() - t0;
  let items = 0;
  if (res.status === 200) {
    const body = JSON.parse(text) as { results?: unknown[]; manifests?: unknown[] };
    items = (c.shape === 'results' ? body.results : body.manifests)?.length ?? 0;
  }
  return { ms, status: res.status, items, next: res.headers.has('link'), bytes: Buffer.byteLength(text), text };
}

/**
 * Measures one query. A request without an answer within `timeoutMs` ends the case (its result
 * says so): SQLite runs on the server's event loop, so the server stays busy with it and has to
 * be restarted before the next case.
 */
async function measure(base: string, c: QueryCase, warmup: number, requests: number, timeLimitMs: number, timeoutMs: number): Promise<QueryCaseResult> {
  try {
    return await measureUntimed(base, c, warmup, requests, timeLimitMs, timeoutMs);
  } catch (err) {
    if (!(err instanceof QueryTimeout)) throw err;
    const result: QueryCaseResult = {
      name: c.name, path: c.path, status: 0, items: 0, next: false, bytes: 0, requests: 0, errors: 1, firstError: err.message,
      p50Ms: NaN, p95Ms: NaN, p99Ms: NaN, maxMs: NaN, timedOut: true,
    };
    if (c.goalMs !== undefined) {
      result.goalMs = c.goalMs;
      result.met = false;
    }
    return result;
  }
}

async function measureUntimed(base: string, c: QueryCase, warmup: number, requests: number, timeLimitMs: number, timeoutMs: number): Promise<QueryCaseResult> {
  const deadline = performance.now() + timeLimitMs;
  const first = await once(base, c, timeoutMs);
  const result: QueryCaseResult = {
    name: c.name, path: c.path, status: first.status, items: first.items, next: first.next, bytes: first.bytes, requests: 0, errors: 0,
    p50Ms: NaN, p95Ms: NaN, p99Ms: NaN, maxMs: NaN,
  };
  if (c.goalMs !== undefined) result.goalMs = c.goalMs;
  if (first.status !== 200) {
    result.errors = 1;
    result.firstError = `HTTP ${first.status}: ${first.text.slice(0, 300)}`;
    result.met = false;
    return result;
  }
  // Warm-up takes at most a quarter of the time limit, so that slow queries still get measured.
  const warmupEnd = performance.now() + timeLimitMs / 4;
  for (let i = 0; i < warmup && performance.now() < warmupEnd; i++) await once(base, c, timeoutMs);
  const latencies = new Float64Array(requests).fill(NaN);
  let done = 0;
  // A slow query stops at the time limit; its percentiles are then over fewer requests.
  for (let i = 0; i < requests && (i < 5 || performance.now() < deadline); i++, done++) {
    const r = await once(base, c, timeoutMs);
    if (r.status === 200) latencies[i] = r.ms;
    else {
      result.errors++;
      result.firstError ??= `HTTP ${r.status}: ${r.text.slice(0, 300)}`;
    }
  }
  result.requests = done;
  result.p50Ms = round(percentile(latencies, 50, 0, done), 2);
  result.p95Ms = round(percentile(latencies, 95, 0, done), 2);
  result.p99Ms = round(percentile(latencies, 99, 0, done), 2);
  result.maxMs = round(percentile(latencies, 100, 0, done), 2);
  if (c.goalMs !== undefined) result.met = result.errors === 0 && result.p95Ms <= c.goalMs;
  return result;
}

type BuiltSql = { text: string; params: unknown[] };
/** A query index's statement builder (an internal: `build`). */
type Builder = (query: unknown, scope: unknown, page: unknown, access: undefined) => BuiltSql | Promise<BuiltSql>;

/**
 * The statement the query index builds for each registry-wide case (and each referrers listing
 * with `q_` filters), handed to `explain`. Uses the query modules' internals (`build`), so it is
 * best effort: any failure leaves the plans out.
 */
async function explainEach(cases: QueryCase[], build: Builder, explain: (sql: BuiltSql) => Promise<string[]>): Promise<Record<string, string[]>> {
  const plans: Record<string, string[]> = {};
  const languageModule = '../src/query/language.ts';
  const { parseQuery } = (await import(languageModule)) as { parseQuery: (p: URLSearchParams, known: (path: string) => boolean) => unknown };
  for (const c of cases) {
    const url = new URL(c.path, 'http://x');
    const params = url.searchParams;
    let scope: unknown;
    if (url.pathname === '/v2/_trellis/search') scope = { kind: 'manifests' };
    else if (url.pathname === '/v2/_oci/references') scope = { kind: 'referrers' };
    else {
      const match = /^\/v2\/(.+)\/referrers\/(.+)$/.exec(url.pathname);
      if (!match || ![...params.keys()].some((k) => k.startsWith('q_'))) continue;
      scope = { kind: 'referrersOf', repository: match[1], subject: match[2], artifactTypes: params.getAll('artifactType'), includeAttestations: false };
    }
    try {
      const sql = await build(parseQuery(params, () => true), scope, { limit: Number(params.get('n') ?? 1000) + 1 }, undefined);
      plans[c.name] = [sql.text.replace(/\s+/g, ' '), ...await explain(sql)];
    } catch (err) {
      plans[c.name] = [`(no plan: ${(err as Error).message})`];
    }
  }
  return plans;
}

/** EXPLAIN QUERY PLAN of each case's SQL, read from the corpus's SQLite database. */
async function explainPlans(dbFile: string, cases: QueryCase[]): Promise<Record<string, string[]>> {
  try {
    const sqliteModule = '../src/metadata/sqlite-query.ts';
    const { SqliteQueryIndex } = (await import(sqliteModule)) as { SqliteQueryIndex: new (db: DatabaseSync) => unknown };
    const db = new DatabaseSync(dbFile, { readOnly: true });
    try {
      const index = new SqliteQueryIndex(db) as { build: Builder };
      return await explainEach(cases, (...args) => index.build(...args), async (sql) => {
        const rows = db.prepare(`EXPLAIN QUERY PLAN ${sql.text}`).all(...(sql.params as never[])) as { id: number; parent: number; detail: string }[];
        const depth = new Map<number, number>([[0, -1]]);
        return rows.map((r) => {
          const d = (depth.get(r.parent) ?? -1) + 1;
          depth.set(r.id, d);
          return `${'  '.repeat(d)}${r.detail}`;
        });
      });
    } finally {
      db.close();
    }
  } catch (err) {
    return { '(all)': [`(no plans: ${(err as Error).message.split('\n')[0]})`] };
  }
}

/**
 * EXPLAIN (ANALYZE, BUFFERS) of each case's SQL on the PostgreSQL database the server used: the
 * plan PostgreSQL chose for those values, with its row estimates beside the actual counts (a
 * wrong estimate is what picks a wrong plan). Runs each statement once more, after the timing.
 */
async function explainPostgresPlans(url: string, cases: QueryCase[]): Promise<Record<string, string[]>> {
  try {
    const postgresModule = '../src/metadata/postgres-query.ts';
    const { PostgresQueryIndex } = (await import(postgresModule)) as { PostgresQueryIndex: new (pool: pg.Pool) => unknown };
    const pool = new pg.Pool({ connectionString: url, max: 1 });
    try {
      const index = new PostgresQueryIndex(pool) as { build: Builder };
      return await explainEach(cases, (...args) => index.build(...args), async (sql) => {
        let n = 0;
        const text = sql.text.replace(/\?/g, () => `$${++n}`); // the index's own placeholders, numbered as it does
        const { rows } = await pool.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS) ${text}`, sql.params);
        return rows.map((r) => r['QUERY PLAN']);
      });
    } finally {
      await pool.end();
    }
  } catch (err) {
    return { '(all)': [`(no plans: ${(err as Error).message.split('\n')[0]})`] };
  }
}

/** CPU seconds the whole machine has been busy (from /proc/stat). */
function machineBusyS(): number {
  const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  return (total - (fields[3] ?? 0) - (fields[4] ?? 0)) / 100;
}

function gitCommit(): string {
  try {
    const head = execFileSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src'], { encoding: 'utf8' }).trim();
    return dirty ? `${head} (src/ modified)` : head;
  } catch {
    return 'unknown';
  }
}

export async function runQueryBenchmark(options: { tmpRoot?: string; logDir?: string } = {}): Promise<QueriesResult> {
  const scale = process.env.BENCH_QUERY_SCALE?.trim() || 'small';
  const shape = SCALES[scale];
  if (!shape) throw new Error(`BENCH_QUERY_SCALE must be ${Object.keys(SCALES).join(' or ')}, not ${JSON.stringify(scale)}`);
  const requests = intEnv('BENCH_QUERY_REQUESTS', 200);
  const warmup = intEnv('BENCH_QUERY_WARMUP', 20);
  const caseTimeLimitMs = intEnv('BENCH_QUERY_CASE_TIME_LIMIT_S', 120) * 1000;
  const requestTimeoutMs = intEnv('BENCH_QUERY_REQUEST_TIMEOUT_S', 30) * 1000;
  const tmpRoot = options.tmpRoot ?? process.env.BENCH_TMPDIR ?? tmpdir();
  const logDir = options.logDir ?? join(ROOT, 'bench/results/logs');
  await mkdir(logDir, { recursive: true });
  const errors: string[] = [];
  const startedAt = new Date().toISOString();

  const given = process.env.BENCH_QUERY_CORPUS?.trim();
  let corpusDir: string;
  let generated: string | undefined;
  let generationS: number | null = null;
  let reindexS: number | null = null;
  let reindexed = false;
  let corpus: CorpusSummary;
  // BENCH_QUERY_METADATA=postgres: the same corpus, indexed into PostgreSQL (a throw-away cluster
  // with durable defaults, test/helpers/postgres.ts) by `trellis reindex`, served from there.
  const onPostgres = process.env.BENCH_QUERY_METADATA === 'postgres';
  const metadataEnv: Record<string, string> = {};
  if (onPostgres) {
    process.env.TRELLIS_TEST_POSTGRES_URL ??= (await startPostgresCluster({ durable: true })).url;
    metadataEnv.TRELLIS_METADATA = (await createTestDatabase()).url;
  }
  const reindexEnv = { ...process.env, ...metadataEnv };
  if (given) {
    corpusDir = resolve(given);
    corpus = JSON.parse(await readFile(join(corpusDir, 'corpus.json'), 'utf8')) as CorpusSummary;
    reindexS = corpus.reindexS ?? null;
    if (intEnv('BENCH_QUERY_REINDEX', 0) || onPostgres) {
      progress(`queries: trellis reindex ${corpusDir}`);
      reindexS = round(reindex(corpusDir, reindexEnv), 1);
      reindexed = true;
      progress(`queries: reindex took ${reindexS} s`);
    }
  } else {
    generated = await mkdtemp(join(tmpRoot, `trellis-query-corpus-${scale}-`));
    removeOnSignal(generated);
    corpusDir = generated;
    progress(`queries: generating a ${scale} corpus (${shape.repos} repositories, ${shape.manifests} manifests) in ${corpusDir}`);
    corpus = await generateCorpus({
      out: corpusDir, repos: shape.repos, manifests: shape.manifests, seed: process.env.BENCH_QUERY_SEED || 'trellis',
      hotReferrers: Math.min(10_000, Math.floor(shape.manifests / 2)), workers: Math.min(2, availableParallelism()),
    });
    generationS = corpus.generationS;
    progress(`queries: generated in ${generationS} s; trellis reindex`);
    reindexS = round(reindex(corpusDir, reindexEnv), 1);
    reindexed = true;
    progress(`queries: reindex took ${reindexS} s`);
  }
  const size = dbSize(corpusDir);
  // No rate limit for the one benchmark client (the default allows 20 queries per second). An
  // environment variable, not a config file: a Trellis without the setting ignores it.
  const env = { TRELLIS_QUERY_RATE_PER_SECOND: '0', ...metadataEnv };

  const cases = queryCases(corpus);
  const result: QueriesResult = {
    scale: `${given ? `${corpus.options.repos} repositories, ${corpus.manifests} manifests (given corpus)` : scale}${onPostgres ? ', metadata on PostgreSQL' : ''}`, corpusDir, corpus,
    generationS: generationS ?? corpus.generationS, reindexS, reindexedInThisRun: reindexed, dbBytes: size.db, dbWalBytes: size.wal,
    serverStartS: NaN, requests, warmup, requestTimeoutS: requestTimeoutMs / 1000, cases: [], memory: null, rssGoalMet: null, otherCores: NaN, serverCpuS: NaN, plans: {},
    machine: { nproc: availableParallelism(), cpuModel: cpus()[0]?.model ?? 'unknown', node: process.version, trellisCommit: gitCommit() },
    startedAt, errors,
  };
  progress(`queries: metadata.sqlite ${(size.db / MiB).toFixed(1)} MiB; starting Trellis on ${corpusDir}`);
  const start = () => startTrellis({ tmpRoot, logDir, label: 'queries', dataDir: corpusDir, env, readyTimeoutMs: 3_600_000 });
  const t0 = performance.now();
  let server = await start();
  result.serverStartS = round((performance.now() - t0) / 1000, 1);
  progress(`queries: server ready in ${result.serverStartS} s (pid ${server.pid})`);
  const machineBefore = machineBusyS();
  const selfBefore = readCpuSeconds('self') ?? NaN;
  let serverCpu = 0;
  let serverBefore = readCpuSeconds(server.pid) ?? NaN;
  let peakKiB = 0;
  let lastMemory: MemoryFigures | undefined;
  const noteServer = () => {
    const memory = readMemory(server.pid);
    if (memory) {
      peakKiB = Math.max(peakKiB, memory.peakKiB);
      lastMemory = memory;
    }
    serverCpu += (readCpuSeconds(server.pid) ?? NaN) - serverBefore;
  };
  const measureStart = performance.now();
  try {
    for (const c of cases) {
      const r = await measure(server.url, c, warmup, requests, caseTimeLimitMs, requestTimeoutMs);
      result.cases.push(r);
      progress(`queries: ${c.name}: ${r.status === 200 ? `p50 ${r.p50Ms} ms, p95 ${r.p95Ms} ms, ${r.items} items${r.next ? ' (+ next page)' : ''}` : r.firstError}`);
      if (r.errors) errors.push(`${c.name}: ${r.errors} failed requests, e.g. ${r.firstError}`);
      if (r.timedOut) {
        progress(`queries: restarting Trellis (still busy with the query that timed out)`);
        noteServer();
        process.kill(server.pid, 'SIGKILL');
        await server.stop();
        server = await start();
        serverBefore = readCpuSeconds(server.pid) ?? NaN;
      }
    }
    if (!server.alive()) throw new Error(`Trellis died during the queries; log: ${tail(server.logFile)}`);
    noteServer();
    result.memory = lastMemory ? { peakKiB, rssKiB: lastMemory.rssKiB } : null;
    const selfCpu = (readCpuSeconds('self') ?? NaN) - selfBefore;
    result.serverCpuS = round(serverCpu, 1);
    result.otherCores = round(Math.max(0, machineBusyS() - machineBefore - serverCpu - selfCpu) / ((performance.now() - measureStart) / 1000), 2);
    result.rssGoalMet = result.memory ? result.memory.peakKiB <= RSS_GOAL_KIB : null;
  } finally {
    await server.stop();
  }
  const after = dbSize(corpusDir);
  result.dbBytes = after.db;
  result.dbWalBytes = after.wal;
  result.plans = onPostgres ? await explainPostgresPlans(metadataEnv.TRELLIS_METADATA!, cases) : await explainPlans(join(corpusDir, '_trellis/metadata.sqlite'), cases);
  if (generated) await rm(generated, { recursive: true, force: true });
  return result;
}

// ---- report -----------------------------------------------------------------------------------

const fmt = (v: number | null | undefined, digits = 1) => (v === null || v === undefined || !Number.isFinite(v) ? '—' : v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }));

export function renderQueries(r: QueriesResult): string {
  const c = r.corpus;
  const lines: string[] = [];
  lines.push(`### Queries: ${c.manifests.toLocaleString('en-US')} manifests in ${c.options.repos.toLocaleString('en-US')} repositories`, '');
  lines.push(`${r.machine.nproc} cores, ${r.machine.cpuModel}; Node ${r.machine.node}; Trellis ${r.machine.trellisCommit}; ${r.startedAt.slice(0, 16).replace('T', ' ')} UTC.`, '');
  lines.push('| | |', '| --- | --- |');
  lines.push(`| corpus | ${c.manifests.toLocaleString('en-US')} manifests (${c.referrers.toLocaleString('en-US')} referrers), ${c.tags.toLocaleString('en-US')} tags, ${c.blobs.toLocaleString('en-US')} blob files (${fmt(c.blobBytes / 1e9, 2)} GB); repositories: ${c.repositories.image} image, ${c.repositories.helm} Helm, ${c.repositories.ocm} OCM, 1 hot (\`${c.hot.repository}\`, ${c.hot.referrers.toLocaleString('en-US')} referrers on one subject); largest other: ${c.largestRepository.manifests.toLocaleString('en-US')} manifests |`);
  lines.push(`| generation (\`bench/corpus.ts\`, ${c.options.workers} workers) | ${fmt(r.generationS)} s |`);
  lines.push(`| \`trellis reindex\` | ${fmt(r.reindexS)} s${r.reindexedInThisRun ? '' : ' (when the corpus was generated)'} |`);
  lines.push(`| metadata.sqlite | ${fmt(r.dbBytes / MiB)} MiB${r.dbWalBytes ? ` (+ WAL ${fmt(r.dbWalBytes / MiB)} MiB)` : ''} |`);
  lines.push(`| server start on the corpus | ${fmt(r.serverStartS)} s |`);
  lines.push(`| peak RSS (VmHWM) of the server after all queries (goal ≤ 1 GiB) | ${r.memory ? `${fmt(r.memory.peakKiB / 1024)} MiB` : '—'} ${r.rssGoalMet === null ? '' : r.rssGoalMet ? '(met)' : '(**missed**)'} |`);
  lines.push('');
  lines.push(`p95 of ${r.requests} sequential requests after ${r.warmup} warm-up requests (one Node fetch client on the same machine). `
    + `Other processes used ${fmt(r.otherCores, 2)} of the ${r.machine.nproc} cores on average meanwhile; the server used ${fmt(r.serverCpuS)} s of CPU.`, '');
  lines.push('| query | items on the page | p50 (ms) | p95 (ms) | p99 (ms) | goal p95 | |', '| --- | ---: | ---: | ---: | ---: | ---: | --- |');
  for (const x of r.cases) {
    const verdict = x.met === undefined ? '' : x.met ? 'met' : '**missed**';
    const items = x.timedOut ? `no answer in ${r.requestTimeoutS} s` : x.status === 200 ? `${x.items.toLocaleString('en-US')}${x.next ? ' (+ next)' : ''}${x.requests < r.requests ? ` [${x.requests} requests: time limit]` : ''}` : `HTTP ${x.status}`;
    lines.push(`| ${x.name} | ${items} | ${fmt(x.p50Ms, 2)} | ${fmt(x.p95Ms, 2)} | ${fmt(x.p99Ms, 2)} | ${x.goalMs === undefined ? '—' : `≤ ${x.goalMs} ms`} | ${verdict} |`);
  }
  if (r.errors.length) lines.push('', '**Errors:**', ...r.errors.map((e) => `- ${e.split('\n')[0]}`));
  return lines.join('\n') + '\n';
}

export function renderPlans(r: QueriesResult): string {
  const lines: string[] = [];
  for (const [name, plan] of Object.entries(r.plans)) {
    const x = r.cases.find((c) => c.name === name);
    lines.push(`#### ${name}${x ? ` (p95 ${fmt(x.p95Ms, 2)} ms)` : ''}`, '', '```', ...plan, '```', '');
  }
  return lines.join('\n');
}

/** Writes bench/results/queries.md (table and plans) and queries.json; returns both texts. */
export async function writeQueryResults(result: QueriesResult): Promise<{ markdown: string; json: string }> {
  const markdown = `${renderQueries(result)}\n${renderPlans(result)}`;
  const dir = join(ROOT, 'bench/results');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'queries.md'), markdown);
  const json = JSON.stringify(result, null, 2);
  await writeFile(join(dir, 'queries.json'), json + '\n');
  return { markdown, json };
}

async function main(): Promise<number> {
  const result = await runQueryBenchmark();
  const { markdown, json } = await writeQueryResults(result);
  process.stdout.write(`${markdown}\n\`\`\`json\n${json}\n\`\`\`\n`);
  return result.errors.length || result.cases.some((c) => c.status !== 200) ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(import.meta.filename)) {
  main().then((code) => (process.exitCode = code), (err: unknown) => {
    killAll();
    console.error(err);
    process.exitCode = 1;
  });
}
