// The whole test suite: strict type check (server and web UI), then every test file under test/ with node's runner on
// the default metadata store (SQLite), then the files that run a registry (the HTTP suite,
// conformance, real clients, CLI) a second time on PostgreSQL: one throw-away cluster
// (test/helpers/postgres.ts) for the pass, a database per registry.
//
//   npm test                               # both passes
//   npm test -- test/a.test.ts ...         # those files, on SQLite
//   TRELLIS_TEST_METADATA=postgres npm test -- test/a.test.ts   # those files, on PostgreSQL
//   TRELLIS_TEST_METADATA=sqlite npm test  # the SQLite pass only
//
// Under CI=true a machine without PostgreSQL fails the run; elsewhere the pass is skipped with a note.
//
// Then the files that run a registry over its storage (the HTTP suite, conformance, real clients,
// GC, nested namespaces, crashes) run once more with blobs and layouts on S3 (versitygw, started by
// test/helpers/s3.ts; under CI=true a missing server fails that pass):
//   TRELLIS_TEST_STORAGE=s3 npm test -- test/a.test.ts   # those files, storage on S3
//
// The replica tests (test/replicas: three `trellis serve` processes on one PostgreSQL database and
// one versitygw bucket behind nginx) need PostgreSQL whatever the pass, so they run once, in the
// PostgreSQL pass, on its cluster; never in the SQLite or S3 pass. Run alone (`npm test --
// test/replicas/x.test.ts`) they start a cluster of their own.
import { spawnSync } from 'node:child_process';
import { runTestFiles } from './test-runner.ts';
import { readdirSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { postgresMissing, startPostgresCluster } from '../test/helpers/postgres.ts';
import { findS3Server } from '../test/helpers/s3.ts';

const root = resolve(import.meta.dirname, '..');
const bin = join(root, 'node_modules/.bin');

/** Replicas on PostgreSQL and S3 behind nginx: only in the PostgreSQL pass. */
const REPLICAS = 'test/replicas';

/** Test folders whose files start registries: they run again on PostgreSQL. */
const POSTGRES_PASS = ['test/registry', 'test/auth', 'test/conformance', 'test/interop', 'test/graph', 'test/components', 'test/gc', 'test/layout', 'test/cli', 'test/content', 'test/events', 'test/observe', 'test/metadata/query.test.ts', 'test/metadata/directory-lock.test.ts', REPLICAS];

/** Test files whose registries run again with storage on S3. */
const S3_PASS = ['test/registry/api.test.ts', 'test/registry/storage.test.ts', 'test/registry/crash.test.ts', 'test/conformance', 'test/interop', 'test/gc', 'test/graph'];

/** The longest files start first, so that neither of the two workers ends with a long file alone. */
const LONGEST_FIRST = ['test/replicas/conformance.test.ts', 'test/registry/crash.test.ts', 'test/replicas/crash.test.ts', 'test/container/image.test.ts', 'test/registry/api.test.ts', 'test/ui/browse.test.ts', 'test/cli/client.test.ts', 'test/cli/launcher.test.ts'];

function longestFirst(files: string[]): string[] {
  const rank = (file: string) => {
    const i = LONGEST_FIRST.indexOf(relative(root, file));
    return i < 0 ? LONGEST_FIRST.length : i;
  };
  return [...files].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

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

/** A file running longer than this is stopped (the slowest take about 2 minutes here). */
const FILE_LIMIT_MS = Number(process.env.TRELLIS_TEST_FILE_LIMIT_MS ?? 10 * 60_000);

async function runTests(files: string[], env: NodeJS.ProcessEnv = {}): Promise<void> {
  const passed = await runTestFiles(longestFirst(files), { root, env: { PATH: `${bin}:${process.env.PATH}`, ...env }, concurrency: 2, fileLimitMs: FILE_LIMIT_MS, nodeTestOptions });
  if (!passed) process.exit(1);
}

async function onPostgres(files: string[]): Promise<void> {
  const missing = postgresMissing();
  if (missing) {
    if (process.env.CI === 'true') {
      console.error(`${missing}: CI must run the PostgreSQL pass`);
      process.exit(1);
    }
    console.warn(`skipping the PostgreSQL pass: ${missing}`);
    return;
  }
  const cluster = await startPostgresCluster();
  try {
    console.log(`\n# PostgreSQL pass (${files.length} files) on a throw-away cluster`);
    await runTests(files, { TRELLIS_TEST_METADATA: 'postgres', TRELLIS_TEST_POSTGRES_URL: cluster.url });
  } finally {
    cluster.stop();
  }
}

const only = process.argv.slice(2).filter((arg) => !arg.startsWith('--'));
/** Arguments such as --test-name-pattern=… go to node's runner in every file's process. */
const nodeTestOptions = process.argv.slice(2).filter((arg) => arg.startsWith('--'));
const mode = process.env.TRELLIS_TEST_METADATA;
run(join(bin, 'tsc'), ['--noEmit', '-p', '.']);
run(join(bin, 'tsc'), ['--noEmit', '-p', 'ui']);
if (only.length) {
  if (mode === 'postgres') await onPostgres(only);
  else await runTests(only);
} else {
  const all = testFiles(join(root, 'test')).sort();
  if (mode !== 'postgres') await runTests(all.filter((file) => !relative(root, file).startsWith(REPLICAS)), { TRELLIS_TEST_METADATA: 'sqlite' });
  if (mode !== 'sqlite') {
    await onPostgres(all.filter((file) => POSTGRES_PASS.some((prefix) => relative(root, file).startsWith(prefix))));
  }
  if (!process.env.TRELLIS_TEST_STORAGE) {
    const s3Files = all.filter((file) => S3_PASS.some((prefix) => relative(root, file).startsWith(prefix)));
    if (findS3Server() || process.env.CI === 'true') {
      console.log(`\n# S3 storage pass (${s3Files.length} files) on versitygw`);
      await runTests(s3Files, { TRELLIS_TEST_STORAGE: 's3', TRELLIS_TEST_METADATA: 'sqlite' });
    } else {
      console.warn('skipping the S3 storage pass: versitygw is not installed (run .ci/install-peers.sh)');
    }
  }
}
