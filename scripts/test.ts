// The whole test suite: strict type check (server and web UI), then every test file under test/ with node's runner.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const bin = join(root, 'node_modules/.bin');

function run(command: string, args: string[]): void {
  const result = spawnSync(command, args, { stdio: 'inherit', cwd: root, env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
  if (result.status !== 0) process.exit(result.status ?? 1);
}

function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return testFiles(path);
    return e.name.endsWith('.test.ts') ? [path] : [];
  });
}

const only = process.argv.slice(2);
run(join(bin, 'tsc'), ['--noEmit', '-p', '.']);
run(join(bin, 'tsc'), ['--noEmit', '-p', 'ui']);
const files = only.length ? only : testFiles(join(root, 'test')).sort();
run(process.execPath, ['--test', '--test-concurrency=2', '--test-timeout=600000', ...files]);
