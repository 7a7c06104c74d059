// The shapes every section reports in, and the round-robin machinery: all registries of a
// section run side by side, and each round measures every one of them in turn (the order rotates
// from round to round), so that a burst of load from the rest of the machine hits all of them.
import { readFileSync } from 'node:fs';
import { round } from './stats.ts';
import { createTestDatabase, startPostgresCluster } from '../../test/helpers/postgres.ts';
import { startTrellisReplicas } from './replicas.ts';
import {
  readCpuSeconds, serverCpuSeconds, serverMemory, startDistribution, startOlareg, startTrellis, startZot, tail,
  type MemoryFigures, type ServerHandle, type StartOptions,
} from './servers.ts';

/**
 * `trellis` runs with the default durability (no fsync per write), compared with olareg (never
 * fsyncs); `trellis-fsync` runs with `fsync: true`, compared with distribution (fsyncs every write).
 * `trellis-postgres` (only when BENCH_TARGETS names it) is Trellis in its default durability with
 * its metadata on PostgreSQL instead of SQLite: an extra column, not compared with the peers.
 * `trellis-s3` and `trellis-s3x3` (also only when named) are the HA layout: 1 or 3 replicas on
 * PostgreSQL and a bucket on versitygw, behind nginx (bench/lib/replicas.ts); extra columns too.
 * `zot` (only when named, with BENCH_ZOT pointing at a binary: it is not on the Go module proxy, so
 * neither CI nor .ci/install-peers.sh can build it) is a third peer, in the best-peer comparison.
 */
export type Target = 'trellis' | 'olareg' | 'trellis-fsync' | 'distribution' | 'trellis-postgres' | 'trellis-s3' | 'trellis-s3x3' | 'zot';
/** The targets measured when BENCH_TARGETS is not given. */
export const ALL_TARGETS: readonly Target[] = ['trellis', 'olareg', 'trellis-fsync', 'distribution'];
/** Every target BENCH_TARGETS may name. */
export const KNOWN_TARGETS: readonly Target[] = [...ALL_TARGETS, 'trellis-postgres', 'trellis-s3', 'trellis-s3x3', 'zot'];
/** The peers "Trellis vs best peer" picks from, among those a run measured (zot only when named). */
export const PEERS: readonly Target[] = ['olareg', 'distribution', 'zot'];
export const TARGET_NAMES: Record<Target, string> = {
  trellis: 'Trellis', olareg: 'olareg 0.2.2', 'trellis-fsync': 'Trellis fsync', distribution: 'distribution 2.8', 'trellis-postgres': 'Trellis on PostgreSQL',
  'trellis-s3': 'Trellis S3+PG ×1', 'trellis-s3x3': 'Trellis S3+PG ×3', zot: 'zot',
};

/** One row of a section: a value per round and per registry, and optionally server CPU per operation. */
export interface Measure {
  id: string;
  label: string;
  /** Whether a larger value is better (throughput) or a smaller one (latency, time, CPU). */
  higherIsBetter: boolean;
  digits?: number;
  rounds: Partial<Record<Target, number[]>>;
  /** Server CPU (user + system, from /proc/<pid>/stat) per operation, in ms, per round. */
  cpuMsPerOp?: Partial<Record<Target, number[]>>;
  /** Checked rows: the value a correct registry reaches (e.g. every pushed referrer listed). */
  expected?: number;
  /** Not compared with the peers (Trellis-only figures, derived ratios). */
  noComparison?: boolean;
  /**
   * Node's floor for this row, per round: the same figure from the sink, a node:http server that
   * answers and hashes but stores nothing. A row whose floor is behind the best peer cannot be
   * won by any Node server on this machine.
   */
  floor?: number[];
}

/** The label of every section's peak-memory row in the report (memoryFloor is keyed by labels). */
export const PEAK_RSS_ROW = 'peak RSS, VmHWM (MiB)';

export interface SectionResult {
  measures: Measure[];
  /** Peak and current RSS at the end of the section (or of its named phase). */
  memory: Partial<Record<Target, MemoryFigures | null>>;
  /** Extra memory readings, e.g. after a restart: label → target → figures. */
  memoryAt?: Record<string, Partial<Record<Target, MemoryFigures | null>>>;
  /** Node's floor for a memory row (the sink's RSS, MiB), by the row's label in the report. */
  memoryFloor?: Record<string, number>;
  /** Reference figures measured in the same run (hash limit, bare-HTTP sink), label → per round. */
  references?: Record<string, number[]>;
  /** Machine CPU used by processes other than the harness and its servers, in cores on average. */
  otherCores: number;
  notes: string[];
}

export function newMeasure(id: string, label: string, higherIsBetter: boolean, extra: Partial<Measure> = {}): Measure {
  return { id, label, higherIsBetter, rounds: {}, ...extra };
}

export function record(measure: Measure, target: Target, value: number, cpuMs?: number): void {
  (measure.rounds[target] ??= []).push(round(value, 3));
  if (cpuMs !== undefined) (measure.cpuMsPerOp ??= {})[target] = [...(measure.cpuMsPerOp?.[target] ?? []), round(cpuMs, 3)];
}

/** `targets` rotated by `round`, so that no registry always goes first (or right after another). */
export function rotate<T>(targets: readonly T[], roundIndex: number): T[] {
  const k = roundIndex % Math.max(1, targets.length);
  return [...targets.slice(k), ...targets.slice(0, k)];
}

export interface Timed<T> {
  value: T;
  ms: number;
  /** Server CPU used meanwhile, in ms. */
  cpuMs: number;
}

/** Runs `work` and reads the wall time and the server's CPU time around it. */
export async function timed<T>(server: ServerHandle, work: () => Promise<T>): Promise<Timed<T>> {
  const cpuBefore = serverCpuSeconds(server) ?? NaN;
  const started = performance.now();
  const value = await work();
  const ms = performance.now() - started;
  const cpuMs = ((serverCpuSeconds(server) ?? NaN) - cpuBefore) * 1000;
  return { value, ms, cpuMs };
}

/** The database each `trellis-postgres` data directory uses, so that a restart finds its metadata again. */
const postgresDatabases = new Map<string, string>();

/**
 * Trellis with TRELLIS_METADATA on a fresh database of one throw-away cluster for the whole run
 * (test/helpers/postgres.ts, with PostgreSQL's durable defaults; stopped at exit). A restart
 * (options.dataDir given) reuses the database of that data directory.
 */
async function startTrellisOnPostgres(options: StartOptions): Promise<ServerHandle> {
  process.env.TRELLIS_TEST_POSTGRES_URL ??= (await startPostgresCluster({ durable: true })).url;
  const known = options.dataDir === undefined ? undefined : postgresDatabases.get(options.dataDir);
  const url = known ?? (await createTestDatabase()).url;
  const server = await startTrellis({ ...options, label: `postgres-${options.label}`, env: { ...options.env, TRELLIS_METADATA: url } });
  postgresDatabases.set(server.dataDir, url);
  return server;
}

export function startTarget(target: Target, options: StartOptions): Promise<ServerHandle> {
  switch (target) {
    case 'trellis': return startTrellis(options);
    case 'trellis-postgres': return startTrellisOnPostgres(options);
    case 'trellis-s3': return startTrellisReplicas(options, 1);
    case 'trellis-s3x3': return startTrellisReplicas(options, 3);
    case 'trellis-fsync': return startTrellis({ ...options, label: `fsync-${options.label}`, env: { ...options.env, TRELLIS_FSYNC: 'true' } });
    case 'olareg': return startOlareg(options);
    case 'distribution': return startDistribution(options);
    case 'zot': return startZot(options);
  }
}

export function cpuTimes(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const fields = line.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  return { busy: total - idle, total };
}

export type Servers = Map<Target, ServerHandle>;

/**
 * Starts every target, runs `work` with all of them up, reads their memory and the CPU the rest
 * of the machine used, and always stops them.
 */
export async function withServers(
  targets: readonly Target[], options: (target: Target) => StartOptions, work: (servers: Servers, result: SectionResult) => Promise<void>,
  log: (message: string) => void,
): Promise<SectionResult> {
  const result: SectionResult = { measures: [], memory: {}, otherCores: NaN, notes: [] };
  const servers: Servers = new Map();
  const machineBefore = cpuTimes();
  const harnessBefore = readCpuSeconds('self', true) ?? NaN;
  const serverCpuBefore = new Map<Target, { pid: number; cpuS: number }>();
  const started = performance.now();
  try {
    for (const target of targets) {
      const server = await startTarget(target, options(target));
      servers.set(target, server);
      serverCpuBefore.set(target, { pid: server.pid, cpuS: serverCpuSeconds(server) ?? 0 });
    }
    await work(servers, result);
    let serversCpu = 0;
    for (const [target, server] of servers) {
      if (!server.alive()) throw new Error(`${target} died; log: ${tail(server.logFile)}`);
      result.memory[target] ??= serverMemory(server) ?? null;
      // A server restarted by `work` (a new pid) counts from its own start.
      const before = serverCpuBefore.get(target);
      serversCpu += (serverCpuSeconds(server) ?? 0) - (before?.pid === server.pid ? before.cpuS : 0);
    }
    const harness = (readCpuSeconds('self', true) ?? NaN) - harnessBefore;
    const machine = (cpuTimes().busy - machineBefore.busy) / 100;
    result.otherCores = round(Math.max(0, machine - serversCpu - harness) / ((performance.now() - started) / 1000), 2);
    log(`other processes used ${result.otherCores} cores meanwhile`);
  } finally {
    for (const server of servers.values()) await server.stop().catch(() => undefined);
  }
  return result;
}
