// A real S3-compatible server for tests: versitygw (pinned in .ci/install-peers.sh) with its posix
// backend over a temp directory, on a free 127.0.0.1 port. Without it a test is skipped, except
// under CI=true, where a missing server is a failure.
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { findPeer } from './peers.ts';

export interface S3Server {
  endpoint: string;
  bucket: string;
  /** AWS_* variables that let the SDK (or a Trellis process) sign in. */
  env: Record<string, string>;
  /** `s3://bucket/prefix?endpoint=…` for the `storage` setting; a fresh prefix per call. */
  storageUrl(prefix?: string): string;
  stop(): Promise<void>;
  /** Lets this process exit while the server runs; it is killed and its files removed at exit. */
  stopAtExit(): void;
}

export function findS3Server(): string | undefined {
  return findPeer('versitygw');
}

/** Throws under CI when versitygw is missing; otherwise returns undefined so the caller skips. */
export function requireS3Server(): string | undefined {
  const binary = findS3Server();
  if (binary) return binary;
  if (process.env.CI === 'true') throw new Error('versitygw is not installed (run .ci/install-peers.sh); CI must test S3 storage');
  return undefined;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

let counter = 0;

export async function startS3Server(binary = requireS3Server()): Promise<S3Server> {
  if (!binary) throw new Error('versitygw is not installed (run .ci/install-peers.sh)');
  const dir = await mkdtemp(join(tmpdir(), 'trellis-s3-'));
  const bucket = 'trellis-test';
  await mkdir(join(dir, 'root', bucket), { recursive: true });
  await mkdir(join(dir, 'sidecar'), { recursive: true });
  const accessKey = 'trellis-test-access';
  const secret = randomBytes(16).toString('hex');
  let lastError = '';
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const endpoint = `http://127.0.0.1:${port}`;
    // Object metadata goes to a sidecar folder, so the temp filesystem needs no extended attributes.
    const child = spawn(binary, ['--port', `127.0.0.1:${port}`, '--access', accessKey, '--secret', secret, '--region', 'us-east-1',
      'posix', '--sidecar', join(dir, 'sidecar'), join(dir, 'root')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-4000);
    });
    if (await ready(endpoint, child)) {
      const env = { AWS_ACCESS_KEY_ID: accessKey, AWS_SECRET_ACCESS_KEY: secret, AWS_REGION: 'us-east-1' };
      return {
        endpoint, bucket, env,
        storageUrl: (prefix = `t${process.pid}-${++counter}-${randomBytes(3).toString('hex')}`) => `s3://${bucket}/${prefix}?endpoint=${encodeURIComponent(endpoint)}&region=us-east-1`,
        async stop() {
          if (child.exitCode === null) {
            const exited = new Promise((resolve) => child.once('exit', resolve));
            child.kill('SIGTERM');
            await exited;
          }
          await rm(dir, { recursive: true, force: true });
        },
        stopAtExit() {
          child.unref();
          (child.stderr as unknown as { unref?: () => void }).unref?.();
          process.once('exit', () => {
            child.kill('SIGKILL');
            rmSync(dir, { recursive: true, force: true });
          });
        },
      };
    }
    lastError = stderr;
    child.kill('SIGKILL');
  }
  await rm(dir, { recursive: true, force: true });
  throw new Error(`versitygw did not start: ${lastError}`);
}

async function ready(endpoint: string, child: ChildProcess): Promise<boolean> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) return false;
    try {
      await fetch(endpoint, { signal: AbortSignal.timeout(1000) });
      return true; // any answer (403 without a signature) means it listens
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  return false;
}

/** Sets the AWS_* variables in this process for the SDK's default credential chain. */
export function useCredentials(server: S3Server): void {
  Object.assign(process.env, server.env);
}
