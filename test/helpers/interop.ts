// What every interop test needs: a Trellis server, a scratch folder with its own HOME (tools write
// config there), and a way to run an unmodified client that fails with the client's own words.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TestContext } from 'node:test';
import { startTestRegistry, type TestRegistry } from './registry.ts';

const execFileAsync = promisify(execFile);

export interface InteropSession {
  reg: TestRegistry;
  work: string;
  home: string;
  env: NodeJS.ProcessEnv;
  /** Runs a client in the scratch folder (stdin closed, 30 s limit); rejects with its stderr. */
  exec(bin: string, args: string[]): Promise<{ stdout: string; stderr: string }>;
}

export type ClientScratch = Omit<InteropSession, 'reg'>;

/** A scratch folder with its own HOME and a runner for unmodified clients, removed when the test ends. */
export async function clientScratch(t: TestContext, name: string, extraEnv: Record<string, string> = {}): Promise<ClientScratch> {
  const work = await mkdtemp(join(tmpdir(), `trellis-${name}-`));
  t.after(() => rm(work, { recursive: true, force: true }));
  const home = join(work, 'home');
  await mkdir(home);
  const env = { ...process.env, HOME: home, NO_PROXY: '127.0.0.1', no_proxy: '127.0.0.1', ...extraEnv };
  const exec = async (bin: string, args: string[]) => {
    const child = execFileAsync(bin, args, { cwd: work, timeout: 30_000, maxBuffer: 16 << 20, env });
    child.child.stdin?.end();
    try {
      return await child;
    } catch (err) {
      const e = err as { stderr?: string; stdout?: string; message: string };
      throw new Error(`${bin.split('/').pop()} ${args.join(' ')} failed: ${e.stderr || e.stdout || e.message}`);
    }
  };
  return { work, home, env, exec };
}

export async function interopSession(t: TestContext, name: string, extraEnv: Record<string, string> = {}): Promise<InteropSession> {
  const reg = await startTestRegistry();
  t.after(() => reg.dispose());
  return { reg, ...(await clientScratch(t, name, extraEnv)) };
}
