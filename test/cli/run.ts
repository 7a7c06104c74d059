// Runs the real `trellis` CLI (bin/trellis.mjs) as a child process and hands back its exit code
// and output, so tests can check both what it printed and how it exited.
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { cliEnv } from '../helpers/registry.ts';

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
