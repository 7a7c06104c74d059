// Finds the real third-party tools the interop tests drive. In CI a missing tool fails the test;
// on a laptop without them the test is skipped with a message saying how to install them.
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import type { TestContext } from 'node:test';

const ROOT = resolve(import.meta.dirname, '../..');
const PEER_DIRS = [join(ROOT, '.peers/bin'), join(ROOT, '.peers/docker-registry/usr/bin')];

export function findPeer(name: string): string | undefined {
  for (const dir of PEER_DIRS) if (existsSync(join(dir, name))) return join(dir, name);
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The tool's path; skips the test (or fails it when CI=true) if it is not installed. */
export function requirePeer(t: TestContext, name: string): string | undefined {
  const path = findPeer(name);
  if (path) return path;
  const message = `${name} is not installed (run .ci/install-peers.sh)`;
  if (process.env.CI === 'true') throw new Error(`${message}; CI must have every peer`);
  t.skip(message);
  return undefined;
}
