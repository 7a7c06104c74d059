// The whole test suite: strict type check, then every test file under test/ with node's runner,
// then the files that run a registry over its storage (the HTTP suite, conformance, real clients,
// GC, nested namespaces, crashes) a second time with blobs and layouts on S3 (versitygw, started
// by test/helpers/s3.ts; under CI=true a missing server fails that pass).
//
//   npm test                                              # both passes
//   npm test -- test/a.test.ts ...                        # those files, storage on the filesystem
//   TRELLIS_TEST_STORAGE=s3 npm test -- test/a.test.ts    # those files, storage on S3
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { findS3Server } from '../test/helpers/s3.ts';

const root = resolve(import.meta.dirname, '..');
const bin = join(root, 'node_modules/.bin');

/** Test files whose registries run again with storage on S3. */
const S3_PASS = ['test/registry/api.test.ts', 'test/registry/crash.test.ts', 'test/conformance', 'test/interop', 'test/gc', 'test/graph'];

function run(command: string, args: string[], env: NodeJS.ProcessEnv = {}): void {
  const result = spawnSync(command, args, { stdio: 'inherit', cwd: root, env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, ...env } });
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
const files = only.length ? only : testFiles(join(root, 'test')).sort();
const testArgs = ['--test', '--test-concurrency=2', '--test-timeout=600000'];
run(process.execPath, [...testArgs, ...files]);

if (!only.length && !process.env.TRELLIS_TEST_STORAGE) {
  const s3Files = files.filter((file) => S3_PASS.some((entry) => relative(root, file).startsWith(entry)));
  if (findS3Server() || process.env.CI === 'true') {
    console.log(`\n# storage on S3: ${s3Files.length} files again`);
    run(process.execPath, [...testArgs, ...s3Files], { TRELLIS_TEST_STORAGE: 's3' });
  } else {
    console.log('\n# storage on S3 skipped: versitygw is not installed (run .ci/install-peers.sh)');
  }
}
