// Runs test files with node's runner, one child per file, two at a time, each under a wall-clock
// limit. node --test alone waits forever for a file whose process never ends (a CI run once sat
// 85 minutes on one file and timed out the whole job); here such a file is stopped, and before
// it is killed every Node process under it writes a diagnostic report (--report-on-signal), whose
// JavaScript stack and open handles are printed, so a hang seen only on CI can be understood.
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface FileResult {
  file: string;
  ms: number;
  outcome: 'passed' | 'failed' | 'hung';
  /** Set when the file hung once and passed when run again. */
  hungBefore?: boolean;
}

export interface RunOptions {
  root: string;
  env: NodeJS.ProcessEnv;
  concurrency: number;
  /** A file still running after this long is stopped and counts as failed. */
  fileLimitMs: number;
  /** Options for node's runner in each child, e.g. --test-name-pattern=… */
  nodeTestOptions?: string[];
}

const REPORT_SIGNAL = 'SIGUSR2';

/** Every process below `pid` (children first found by /proc's parent links). */
function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc');
  } catch {
    return []; // no /proc (not Linux): only the file's own process is signalled
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(parent, [...(children.get(parent) ?? []), Number(entry)]);
    } catch {
      // the process ended while we looked
    }
  }
  const found: number[] = [];
  const walk = (p: number) => {
    for (const child of children.get(p) ?? []) {
      found.push(child);
      walk(child);
    }
  };
  walk(pid);
  return found;
}

/** Its command line, state and the kernel call it waits in (wchan: pipe_write means a full pipe). */
function describeProcess(pid: number): string {
  const read = (what: string) => {
    try {
      return readFileSync(`/proc/${pid}/${what}`, 'utf8');
    } catch {
      return '?';
    }
  };
  const stat = read('stat');
  const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  return `${read('cmdline').split('\0').join(' ').trim().slice(0, 240)} [state ${state}, waiting in ${read('wchan') || 'nothing'}]`;
}

interface NodeReport {
  header?: { processId?: number; commandLine?: string[] };
  javascriptStack?: { message?: string; stack?: string[] };
  libuv?: { type: string; is_active?: boolean; is_referenced?: boolean; remoteEndpoint?: unknown; localEndpoint?: unknown; details?: string }[];
}

/** What the processes of a hung file were doing: their command lines and each Node report. */
async function describeHang(pid: number, reportDir: string): Promise<string> {
  const processes = [pid, ...descendants(pid)];
  const lines = processes.map((p) => `  pid ${p}: ${describeProcess(p)}`);
  for (const p of processes) {
    try {
      process.kill(p, REPORT_SIGNAL);
    } catch {
      // gone already
    }
  }
  await sleep(3000);
  const reported = new Set<number>();
  for (const name of readdirSync(reportDir)) {
    try {
      const report = JSON.parse(readFileSync(join(reportDir, name), 'utf8')) as NodeReport;
      const handles = (report.libuv ?? []).filter((h) => h.is_active && h.is_referenced);
      reported.add(report.header?.processId ?? 0);
      lines.push(`  report of pid ${report.header?.processId}: ${(report.header?.commandLine ?? []).join(' ').slice(0, 200)}`);
      lines.push(...(report.javascriptStack?.stack ?? []).slice(0, 25).map((s) => `    ${s.trim()}`));
      lines.push(...handles.slice(0, 30).map((h) => `    handle ${h.type} ${JSON.stringify(h.remoteEndpoint ?? h.localEndpoint ?? h.details ?? '')}`));
    } catch {
      lines.push(`  (unreadable report ${name})`);
    }
  }
  const silent = processes.filter((p) => !reported.has(p) && describeProcess(p).includes('node'));
  if (silent.length) lines.push(`  no report from Node processes ${silent.join(', ')}: their JavaScript thread is blocked in synchronous code (or ended)`);
  return lines.join('\n');
}

function killGroup(pid: number): void {
  for (const p of [pid, ...descendants(pid)]) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // gone already
    }
  }
}

async function runFile(file: string, options: RunOptions): Promise<FileResult> {
  const started = performance.now();
  const reportDir = mkdtempSync(join(tmpdir(), 'trellis-test-report-'));
  // Reports only on the signal this runner sends; tests never send it.
  const nodeOptions = `${options.env.NODE_OPTIONS ?? process.env.NODE_OPTIONS ?? ''} --report-on-signal --report-signal=${REPORT_SIGNAL} --report-directory=${reportDir}`.trim();
  const child = spawn(process.execPath, ['--test', '--test-reporter=spec', '--test-timeout=600000', ...(options.nodeTestOptions ?? []), file], {
    cwd: options.root,
    env: { ...process.env, ...options.env, NODE_OPTIONS: nodeOptions, FORCE_COLOR: '0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => output.push(chunk));
  child.stderr.on('data', (chunk: Buffer) => output.push(chunk));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  let hang = '';
  const limit = sleep(options.fileLimitMs, 'limit' as const, { ref: false });
  const first = await Promise.race([exited, limit]);
  if (first === 'limit') {
    hang = await describeHang(child.pid!, reportDir);
    killGroup(child.pid!);
    await exited;
  }
  rmSync(reportDir, { recursive: true, force: true });
  const ms = performance.now() - started;
  const name = relative(options.root, file);
  const outcome = hang ? 'hung' : first === 0 ? 'passed' : 'failed';
  process.stdout.write(`\n## ${name} (${(ms / 1000).toFixed(1)} s, ${outcome})\n${Buffer.concat(output).toString()}`);
  if (hang) process.stdout.write(`\n✖ ${name} was still running after ${options.fileLimitMs / 1000} s and was stopped; its processes:\n${hang}\n`);
  return { file: name, ms, outcome };
}

/** Runs the files; true when every one passed. Prints each file's output whole when it ends. */
export async function runTestFiles(files: string[], options: RunOptions): Promise<boolean> {
  const queue = [...files];
  const results: FileResult[] = [];
  const started = performance.now();
  await Promise.all(Array.from({ length: Math.min(options.concurrency, files.length) }, async () => {
    for (let file = queue.shift(); file; file = queue.shift()) {
      const result = await runFile(file, options);
      // A hang is run once more (its diagnosis is printed above either way); a failed assertion never is.
      if (result.outcome === 'hung') {
        console.log(`\n# ${result.file} hung; running it once more`);
        results.push({ ...(await runFile(file, options)), hungBefore: true });
      } else {
        results.push(result);
      }
    }
  }));
  const failed = results.filter((r) => r.outcome !== 'passed');
  const slowest = [...results].sort((a, b) => b.ms - a.ms).slice(0, 8);
  console.log(`\n# ${results.length} files in ${((performance.now() - started) / 1000).toFixed(0)} s; slowest: ${slowest.map((r) => `${r.file} ${(r.ms / 1000).toFixed(0)} s`).join(', ')}`);
  for (const r of results) if (r.hungBefore) console.log(`⚠ ${r.file} hung on its first run (see its diagnosis above); second run: ${r.outcome}`);
  for (const r of failed) console.log(`✖ ${r.file}: ${r.outcome}`);
  return failed.length === 0;
}
