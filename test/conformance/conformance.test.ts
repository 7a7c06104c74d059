// The official distribution-spec conformance suite (pinned in .ci/install-peers.sh), run against a
// real Trellis server with the 1.1 profile and the stricter dev profile. Every group must pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startTestRegistry } from '../helpers/registry.ts';
import { requirePeer } from '../helpers/peers.ts';

const run = promisify(execFile);

for (const profile of ['1.1', 'dev']) {
  test(`conformance suite passes fully with OCI_VERSION=${profile}`, async (t) => {
    const conformance = requirePeer(t, 'conformance');
    if (!conformance) return;
    const reg = await startTestRegistry();
    const work = await mkdtemp(join(tmpdir(), 'trellis-conformance-'));
    try {
      const resultsDir = join(work, 'results');
      const env = {
        ...process.env, OCI_REGISTRY: reg.host, OCI_TLS: 'disabled', OCI_REPO1: 'conformance/repo1', OCI_REPO2: 'conformance/repo2',
        OCI_VERSION: profile, OCI_RESULTS_DIR: resultsDir, OCI_LOG: 'warn',
      };
      const { stdout } = await run(conformance, [], { cwd: work, env, maxBuffer: 64 << 20, timeout: 300_000 }).catch((err: { stdout?: string; stderr?: string }) => {
        assert.fail(`conformance exited non-zero:\n${failures(err.stdout ?? '')}\n${err.stderr ?? ''}`);
      });
      // The runner exits 0 without results when its configuration is wrong, so check both.
      assert.ok(existsSync(join(resultsDir, 'results.yaml')), 'results.yaml was not written');
      assert.match(stdout, /OCI Conformance Result: Pass/, failures(stdout));
      assert.match(stdout, /^\s*FAIL\.+:\s+0$/m);
      assert.match(stdout, /^\s*Error\.+:\s+0$/m);
      assert.match(stdout, /^\s*Skip\.+:\s+0$/m, 'no test may be skipped (a skip means a feature was not detected)');
      const results = await readFile(join(resultsDir, 'results.yaml'), 'utf8');
      assert.doesNotMatch(results, /: (Fail|Error|Skip)\b/);
    } finally {
      await reg.dispose();
      await rm(work, { recursive: true, force: true });
    }
  });
}

function failures(stdout: string): string {
  return stdout.split('\n').filter((line) => /FAIL|Error| - /.test(line)).slice(0, 40).join('\n');
}
