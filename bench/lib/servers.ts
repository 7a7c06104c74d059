// Starts and stops the registries under test as separate processes, each on a fresh temp data
// directory and a free 127.0.0.1 port, and reads their memory figures from /proc.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync, rmSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '../..');
export const NODE_BIN_DIR = join(ROOT, 'node_modules/.bin');
export const DISTRIBUTION_BIN = process.env.BENCH_DISTRIBUTION ?? join(ROOT, '.peers/docker-registry/usr/bin/docker-registry');
export const OLAREG_BIN = process.env.BENCH_OLAREG ?? join(ROOT, '.peers/bin/olareg');
/** zot, built by hand from its source (docs/benchmarks.md says how); no default. */
export const ZOT_BIN = process.env.BENCH_ZOT ?? '';

export type ServerKind = 'trellis' | 'distribution' | 'olareg' | 'zot' | 'sink';

export interface ServerHandle {
  kind: ServerKind;
  url: string;
  pid: number;
  dataDir: string;
  logFile: string;
  /** Milliseconds from spawning the process to the first 200 on GET /v2/. */
  readyMs: number;
  /**
   * Stops the process (SIGTERM, then SIGKILL after a grace period) and removes its data;
   * `ms` is the time from SIGTERM to exit, not counting the removal.
   */
  stop(): Promise<{ ms: number; code: number | null; signal: string | null }>;
  /** Whether the process is still running. */
  alive(): boolean;
  /** Every process serving (replicas); absent: only `pid`. */
  processes?: number[];
}

/** CPU seconds used so far by every process of a server (all replicas of a replica set). */
export function serverCpuSeconds(server: ServerHandle): number | undefined {
  let total = 0;
  for (const pid of server.processes ?? [server.pid]) {
    const seconds = readCpuSeconds(pid);
    if (seconds === undefined) return undefined;
    total += seconds;
  }
  return total;
}

/** Memory of a server; of a replica set, the sum over its replicas (each one's own peak). */
export function serverMemory(server: ServerHandle): MemoryFigures | undefined {
  const figures = (server.processes ?? [server.pid]).map(readMemory);
  if (figures.some((f) => f === undefined)) return undefined;
  return figures.reduce<MemoryFigures>((sum, f) => ({ peakKiB: sum.peakKiB + f!.peakKiB, rssKiB: sum.rssKiB + f!.rssKiB }), { peakKiB: 0, rssKiB: 0 });
}

export interface MemoryFigures {
  /** Peak resident set size so far (VmHWM), in KiB. */
  peakKiB: number;
  /** Current resident set size (VmRSS), in KiB. */
  rssKiB: number;
}

/** CPU time (user + system) the process has used so far, in seconds; undefined once it is gone. */
export function readCpuSeconds(pid: number | 'self', withReapedChildren = false): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command (which may hold spaces) start at the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    let ticks = Number(fields[11]) + Number(fields[12]);
    if (withReapedChildren) ticks += Number(fields[13]) + Number(fields[14]);
    return ticks / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

const CLOCK_TICKS = 100;

const live = new Set<ChildProcess>();
const scratch = new Set<string>();

/**
 * Whether a server's data directory goes when it stops. The harness keeps them all until the run
 * ends: on an ext4 file system without a journal (this machine's) the kernel will not reuse an
 * inode for 60 s after its file is deleted (360 s while its inode table block is unwritten) and
 * scans past every such inode at each file creation, so a removal between sections taxed whichever
 * registry next created files in that block group: up to 45% of a small-blob push's CPU in a perf
 * profile (docs/benchmarks.md).
 */
let removeDataAtStop = true;
export function keepDataUntilTheEnd(): void {
  removeDataAtStop = false;
}

/** A folder to remove if the harness is interrupted (Ctrl-C, SIGTERM). */
export function removeOnSignal(dir: string): void {
  installExitHooks();
  scratch.add(dir);
}

/** Kills every server still running; safe to call from an exit handler (synchronous). */
export function killAll(): void {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}

let hooksInstalled = false;
function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      killAll();
      for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
      process.exit(130);
    });
  }
}

export function readMemory(pid: number): MemoryFigures | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    return { peakKiB: field('VmHWM'), rssKiB: field('VmRSS') };
  } catch {
    return undefined;
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      probe.close(() => resolvePort(port));
    });
  });
}

async function waitReady(url: string, child: ChildProcess, logFile: string, timeoutMs: number, pollMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError = '';
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`server exited early (code ${child.exitCode}, signal ${child.signalCode}); log: ${tail(logFile)}`);
    }
    try {
      const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
      lastError = `GET /v2/ answered ${res.status}`;
    } catch (err) {
      lastError = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
  throw new Error(`server at ${url} not ready after ${timeoutMs} ms (${lastError}); log: ${tail(logFile)}`);
}

export function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

interface SpawnSpec {
  kind: ServerKind;
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  dataDir: string;
  logFile: string;
  url: string;
  cleanup: string[];
  keepData: boolean;
  readyTimeoutMs?: number | undefined;
  readyPollMs?: number | undefined;
}

async function launch(spec: SpawnSpec): Promise<ServerHandle> {
  installExitHooks();
  const log = createWriteStream(spec.logFile);
  await new Promise<void>((r) => log.once('open', () => r()));
  const spawnedAt = performance.now();
  const child = spawn(spec.command, spec.args, { cwd: ROOT, env: spec.env ?? process.env, stdio: ['ignore', log, log] });
  live.add(child);
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => {
    child.once('exit', (code, signal) => {
      live.delete(child);
      r({ code, signal });
    });
  });
  const stop = async () => {
    const started = performance.now();
    const running = child.exitCode === null && child.signalCode === null;
    let grace: NodeJS.Timeout | undefined;
    if (running) {
      child.kill('SIGTERM');
      grace = setTimeout(() => child.kill('SIGKILL'), 120_000);
    }
    const result = await exited;
    const ms = running ? performance.now() - started : 0;
    clearTimeout(grace);
    log.end();
    if (!spec.keepData && removeDataAtStop) for (const dir of spec.cleanup) await rm(dir, { recursive: true, force: true });
    return { ms, ...result };
  };
  if (child.pid === undefined) {
    await stop().catch(() => undefined);
    throw new Error(`could not start ${spec.command}`);
  }
  try {
    await waitReady(spec.url, child, spec.logFile, spec.readyTimeoutMs ?? 60_000, spec.readyPollMs ?? 100);
  } catch (err) {
    child.kill('SIGKILL');
    await stop().catch(() => undefined);
    throw err;
  }
  const readyMs = performance.now() - spawnedAt;
  return {
    kind: spec.kind, url: spec.url, pid: child.pid, dataDir: spec.dataDir, logFile: spec.logFile, readyMs, stop,
    alive: () => child.exitCode === null && child.signalCode === null,
  };
}

export interface StartOptions {
  /** Parent folder for the temp data directory. */
  tmpRoot: string;
  /** Folder for the server's log file (kept after the run). */
  logDir: string;
  /** Label used in file names. */
  label: string;
  /** Trellis only: write a V8 CPU profile into this folder when the server exits. */
  cpuProfDir?: string | undefined;
  keepData?: boolean;
  /** Serve this existing data directory (kept) instead of a fresh temp one (a restart). */
  dataDir?: string;
  /** How long to wait for `GET /v2/` to answer (default 60 s; a large data directory takes longer to open). */
  readyTimeoutMs?: number;
  /** How often to poll `GET /v2/` while waiting (default 100 ms; start-up timing uses 10). */
  readyPollMs?: number;
  /** Trellis only: extra environment variables, e.g. `TRELLIS_*` settings. */
  env?: Record<string, string>;
  /** Trellis only: extra arguments for `serve`, e.g. `--config FILE`. */
  extraArgs?: string[];
}

/** `bin/trellis.mjs serve` (the executable: it keeps the compile cache) with Node 24 from node_modules/.bin first on PATH. */
export async function startTrellis(options: StartOptions): Promise<ServerHandle> {
  const port = await freePort();
  const dataDir = options.dataDir ?? await mkdtemp(join(options.tmpRoot, `trellis-${options.label}-`));
  const logFile = join(options.logDir, `trellis-${options.label}.log`);
  const nodeFlags = options.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfDir}`, `--cpu-prof-name=trellis-${options.label}.cpuprofile`] : [];
  // Extra flags for investigations, e.g. BENCH_TRELLIS_NODE_FLAGS=--trace-gc (output goes to the log).
  nodeFlags.push(...(process.env.BENCH_TRELLIS_NODE_FLAGS ?? '').split(' ').filter(Boolean));
  return launch({
    kind: 'trellis',
    command: join(NODE_BIN_DIR, 'node'),
    args: [...nodeFlags, 'bin/trellis.mjs', 'serve', '--listen', `127.0.0.1:${port}`, '--data', dataDir, '--log-level', 'warn', ...(options.extraArgs ?? [])],
    env: { ...process.env, ...options.env, PATH: `${NODE_BIN_DIR}:${process.env.PATH ?? ''}` },
    dataDir, logFile, url: `http://127.0.0.1:${port}`, cleanup: [dataDir], keepData: options.keepData ?? options.dataDir !== undefined,
    readyTimeoutMs: options.readyTimeoutMs, readyPollMs: options.readyPollMs,
  });
}

/** distribution 2.8 with the recipe of conformance-clients-peers.md §4.3, on loopback only. */
export async function startDistribution(options: StartOptions): Promise<ServerHandle> {
  if (!existsSync(DISTRIBUTION_BIN)) throw new Error(`distribution binary not found at ${DISTRIBUTION_BIN} (run .ci/install-peers.sh or set BENCH_DISTRIBUTION)`);
  const port = await freePort();
  // With options.dataDir (a restart) the folder given is the work folder holding data/ and config.yml.
  const workDir = options.dataDir ?? await mkdtemp(join(options.tmpRoot, `distribution-${options.label}-`));
  const dataDir = join(workDir, 'data');
  const configFile = join(workDir, 'config.yml');
  await writeFile(configFile, [
    'version: 0.1',
    'log:',
    '  level: warn',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${dataDir}`,
    '  delete:',
    '    enabled: true',
    '  cache:',
    '    blobdescriptor: inmemory',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    '  headers:',
    '    X-Content-Type-Options: [nosniff]',
    '',
  ].join('\n'));
  const logFile = join(options.logDir, `distribution-${options.label}.log`);
  // The REGISTRY_* variables would override the file; make sure none leaks in from the caller.
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('REGISTRY_')) env[key] = value;
  return launch({
    kind: 'distribution', command: DISTRIBUTION_BIN, args: ['serve', configFile], env,
    dataDir: workDir, logFile, url: `http://127.0.0.1:${port}`, cleanup: [workDir], keepData: options.keepData ?? options.dataDir !== undefined,
    readyTimeoutMs: options.readyTimeoutMs, readyPollMs: options.readyPollMs,
  });
}

/**
 * olareg 0.2.2 (a small Go registry keeping OCI layouts on disk, no fsync), on loopback only, with
 * delete enabled like the others and its garbage collector off so that it does not run mid-phase.
 */
export async function startOlareg(options: StartOptions): Promise<ServerHandle> {
  if (!existsSync(OLAREG_BIN)) throw new Error(`olareg binary not found at ${OLAREG_BIN} (run .ci/install-peers.sh or set BENCH_OLAREG)`);
  const port = await freePort();
  const dataDir = options.dataDir ?? await mkdtemp(join(options.tmpRoot, `olareg-${options.label}-`));
  const logFile = join(options.logDir, `olareg-${options.label}.log`);
  return launch({
    kind: 'olareg', command: OLAREG_BIN,
    args: ['serve', '--addr', '127.0.0.1', '--port', String(port), '--dir', dataDir, '--api-delete', '--gc-frequency=-1s', '--verbosity', 'warn'],
    dataDir, logFile, url: `http://127.0.0.1:${port}`, cleanup: [dataDir], keepData: options.keepData ?? options.dataDir !== undefined,
    readyTimeoutMs: options.readyTimeoutMs, readyPollMs: options.readyPollMs,
  });
}

/**
 * zot (built from source, BENCH_ZOT) on loopback only, with its defaults for a plain registry:
 * deduplication on (hard links), its garbage collector off so that it does not run mid-phase, no
 * fsync (as olareg and Trellis by default), the OCI 1.1 referrers API.
 */
export async function startZot(options: StartOptions): Promise<ServerHandle> {
  if (!ZOT_BIN || !existsSync(ZOT_BIN)) throw new Error(`zot binary not found (${ZOT_BIN || 'BENCH_ZOT is not set'}): build it from source and set BENCH_ZOT`);
  const port = await freePort();
  // With options.dataDir (a restart) the folder given is the work folder holding data/ and config.json.
  const workDir = options.dataDir ?? await mkdtemp(join(options.tmpRoot, `zot-${options.label}-`));
  const configFile = join(workDir, 'config.json');
  await writeFile(configFile, JSON.stringify({
    distSpecVersion: '1.1.1',
    storage: { rootDirectory: join(workDir, 'data'), gc: false, dedupe: true },
    http: { address: '127.0.0.1', port: String(port) },
    log: { level: 'warn' },
  }));
  const logFile = join(options.logDir, `zot-${options.label}.log`);
  return launch({
    kind: 'zot', command: ZOT_BIN, args: ['serve', configFile],
    dataDir: workDir, logFile, url: `http://127.0.0.1:${port}`, cleanup: [workDir], keepData: options.keepData ?? options.dataDir !== undefined,
    readyTimeoutMs: options.readyTimeoutMs, readyPollMs: options.readyPollMs,
  });
}

/** A node:http server that reads and drops request bodies: the ceiling of the client and loopback. */
export async function startSink(options: StartOptions): Promise<ServerHandle> {
  const port = await freePort();
  const dataDir = await mkdtemp(join(options.tmpRoot, `sink-${options.label}-`));
  const logFile = join(options.logDir, `sink-${options.label}.log`);
  return launch({
    kind: 'sink', command: join(NODE_BIN_DIR, 'node'), args: [join(ROOT, 'bench/lib/sink.ts'), String(port)],
    // The compile cache, as bin/trellis.mjs keeps it: without it every start loads the TypeScript
    // stripper (about 40 ms and 17 MiB), which a registry started from its executable never pays.
    env: { ...process.env, NODE_COMPILE_CACHE: process.env.NODE_COMPILE_CACHE ?? join(tmpdir(), 'node-compile-cache'), PATH: `${NODE_BIN_DIR}:${process.env.PATH ?? ''}` },
    dataDir, logFile, url: `http://127.0.0.1:${port}`, cleanup: [dataDir], keepData: false,
    readyTimeoutMs: options.readyTimeoutMs, readyPollMs: options.readyPollMs,
  });
}
