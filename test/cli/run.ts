// Runs the real `trellis` CLI (bin/trellis.mjs) as a child process and hands back its exit code
// and output, so tests can check both what it printed and how it exited.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join, resolve } from 'node:path';
import { cliEnv } from '../helpers/registry.ts';
import { freePort } from '../helpers/replicas.ts';

export const MAIN = resolve(import.meta.dirname, '../../bin/trellis.mjs');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export async function trellisCli(args: string[], options: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  // A command on a test registry's data directory uses that registry's metadata store.
  const data = args.indexOf('--data');
  const env = data >= 0 ? await cliEnv(args[data + 1]!, options.env ?? process.env) : options.env ?? process.env;
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [MAIN, ...args], { env, cwd: options.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.once('error', fail);
    child.once('close', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}

/** Runs it and fails the test (with its stderr) unless it exits 0. */
export async function trellisOk(args: string[], options: Parameters<typeof trellisCli>[1] = {}): Promise<CliResult> {
  const result = await trellisCli(args, options);
  if (result.code !== 0) throw new Error(`trellis ${args.join(' ')} exited ${result.code}: ${result.stderr}${result.stdout}`);
  return result;
}

/** An environment whose Docker, regctl and home configuration live in `work`, so tests never share credentials. */
export function isolatedEnv(work: string): NodeJS.ProcessEnv {
  return { ...process.env, HOME: work, DOCKER_CONFIG: join(work, 'docker'), NO_PROXY: '127.0.0.1', REGCTL_CONFIG: join(work, 'regctl.json') };
}

export interface RunningCli {
  child: ChildProcess;
  exited: Promise<number | null>;
  /** stdout and stderr so far, interleaved. */
  output(): string;
}

/** Starts the CLI in the background: a server, or a command the test interrupts or waits for. */
export function startTrellis(args: string[], env: NodeJS.ProcessEnv = {}): RunningCli {
  const child = spawn(process.execPath, [MAIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (s: string) => { output += s; });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { output += s; });
  const exited = once(child, 'exit').then(([code]) => code as number | null);
  return { child, exited, output: () => output };
}

/** `trellis serve` on `dataDir` (a free port unless given), once it answers `/v2/`; throws with its output if it exits first. */
export async function startServe(dataDir: string, env: NodeJS.ProcessEnv = {}, port?: number): Promise<RunningCli & { url: string }> {
  const listen = `127.0.0.1:${port ?? await freePort()}`;
  const server = startTrellis(['serve', '--listen', listen, '--data', dataDir, '--log-level', 'warn'], env);
  const url = `http://${listen}`;
  let gone = false;
  void server.exited.then(() => { gone = true; });
  for (const deadline = Date.now() + 30_000; !(await fetch(`${url}/v2/`).then((res) => res.ok, () => false));) {
    if (gone || Date.now() > deadline) {
      server.child.kill('SIGKILL');
      throw new Error(`the server did not answer: ${server.output()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { ...server, url };
}

/** What `promise` settles to within `ms`, or 'still running'. */
export function within<T>(promise: Promise<T>, ms: number): Promise<T | 'still running'> {
  return Promise.race([promise, new Promise<'still running'>((r) => setTimeout(() => r('still running'), ms).unref())]);
}
