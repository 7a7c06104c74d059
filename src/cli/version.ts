// `trellis --version`: the package version and the commit it was built from. The commit comes
// from build-info.json (written by scripts/build-info.mjs when a package, binary or image is
// built) or, in a git checkout, from git itself (with `-dirty` when tracked files are changed).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

export interface VersionInfo {
  version: string;
  commit: string;
  node: string;
}

const ROOT = resolve(import.meta.dirname, '../..');

function readJson(path: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

function gitCommit(): string | undefined {
  if (!existsSync(join(ROOT, '.git'))) return undefined;
  const git = (...args: string[]) => execFileSync('git', ['-C', ROOT, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).trim();
  try {
    const commit = git('rev-parse', 'HEAD');
    return git('status', '--porcelain', '--untracked-files=no') ? `${commit}-dirty` : commit;
  } catch {
    return undefined; // git missing, or not a repository after all
  }
}

export function versionInfo(): VersionInfo {
  const version = String(readJson(join(ROOT, 'package.json'))?.version ?? 'unknown');
  const recorded = readJson(join(ROOT, 'build-info.json'))?.commit;
  const commit = gitCommit() ?? (typeof recorded === 'string' ? recorded : 'unknown');
  return { version, commit, node: process.version };
}

export function versionText(info = versionInfo()): string {
  return `trellis ${info.version} (commit ${info.commit}, Node.js ${info.node})`;
}
