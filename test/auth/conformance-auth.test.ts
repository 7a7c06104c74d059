// The official conformance suite (1.1 profile) with access control on: it signs in with
// OCI_USERNAME/OCI_PASSWORD through the Basic → Bearer token flow. Anonymous callers hold no right.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { requirePeer } from '../helpers/peers.ts';
import { PASSWORD, startAuthRegistry } from './setup.ts';

const run = promisify(execFile);

test('conformance suite passes fully with token auth on (OCI_VERSION=1.1)', { timeout: 400_000 }, async (t) => {
  const conformance = requirePeer(t, 'conformance');
  if (!conformance) return;
  const r = await startAuthRegistry(t, {
    users: ['conformance', 'bystander'],
    auth: {
      policies: { 'conformance/**': { users: { conformance: ['admin'] } }, elsewhere: { users: { bystander: ['pull'] } } },
      token: { service: 'trellis-conformance', expirySeconds: 300 },
    },
  });
  // Proof that the registry is closed to anonymous callers while the suite runs.
  assert.equal((await r.call('/v2/')).status, 401);
  assert.equal((await r.call('/v2/conformance/repo1/tags/list')).status, 401);
  const work = join(r.dir, 'work');
  await mkdir(work);
  const resultsDir = join(work, 'results');
  const env = {
    ...process.env, OCI_REGISTRY: r.reg.host, OCI_TLS: 'disabled', OCI_REPO1: 'conformance/repo1', OCI_REPO2: 'conformance/repo2',
    OCI_VERSION: '1.1', OCI_RESULTS_DIR: resultsDir, OCI_LOG: 'warn', OCI_USERNAME: 'conformance', OCI_PASSWORD: PASSWORD,
  };
  const { stdout } = await run(conformance, [], { cwd: work, env, maxBuffer: 64 << 20, timeout: 300_000 }).catch((err: { stdout?: string; stderr?: string }) => {
    assert.fail(`conformance exited non-zero:\n${failures(err.stdout ?? '')}\n${err.stderr ?? ''}`);
  });
  assert.ok(existsSync(join(resultsDir, 'results.yaml')), 'results.yaml was not written');
  assert.match(stdout, /OCI Conformance Result: Pass/, failures(stdout));
  assert.match(stdout, /^\s*FAIL\.+:\s+0$/m);
  assert.match(stdout, /^\s*Error\.+:\s+0$/m);
  assert.match(stdout, /^\s*Skip\.+:\s+0$/m, 'no test may be skipped');
  assert.doesNotMatch(await readFile(join(resultsDir, 'results.yaml'), 'utf8'), /: (Fail|Error|Skip)\b/);
});

function failures(stdout: string): string {
  return stdout.split('\n').filter((line) => /FAIL|Error| - /.test(line)).slice(0, 40).join('\n');
}
