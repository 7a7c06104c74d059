// Runs the official distribution-spec conformance suite against a registry and asserts that every
// group passed: no failure, no error, no skip, and a results file (the runner exits 0 without one
// when its configuration is wrong, so both are checked).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

function failures(stdout: string): string {
  return stdout.split('\n').filter((line) => /FAIL|Error| - /.test(line)).slice(0, 40).join('\n');
}

export async function assertConformancePasses(binary: string, options: { host: string; profile: string; work: string; env?: Record<string, string> }): Promise<void> {
  const resultsDir = join(options.work, 'results');
  const env = {
    ...process.env, OCI_REGISTRY: options.host, OCI_TLS: 'disabled', OCI_REPO1: 'conformance/repo1', OCI_REPO2: 'conformance/repo2',
    OCI_VERSION: options.profile, OCI_RESULTS_DIR: resultsDir, OCI_LOG: 'warn', ...options.env,
  };
  const { stdout } = await run(binary, [], { cwd: options.work, env, maxBuffer: 64 << 20, timeout: 300_000 }).catch((err: { stdout?: string; stderr?: string }) => {
    assert.fail(`conformance exited non-zero:\n${failures(err.stdout ?? '')}\n${err.stderr ?? ''}`);
  });
  assert.ok(existsSync(join(resultsDir, 'results.yaml')), 'results.yaml was not written');
  assert.match(stdout, /OCI Conformance Result: Pass/, failures(stdout));
  assert.match(stdout, /^\s*FAIL\.+:\s+0$/m);
  assert.match(stdout, /^\s*Error\.+:\s+0$/m);
  assert.match(stdout, /^\s*Skip\.+:\s+0$/m, 'no test may be skipped (a skip means a feature was not detected)');
  assert.doesNotMatch(await readFile(join(resultsDir, 'results.yaml'), 'utf8'), /: (Fail|Error|Skip)\b/);
}
