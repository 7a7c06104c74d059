// The official distribution-spec conformance suite (pinned in .ci/install-peers.sh), run against a
// real Trellis server with the 1.1 profile and the stricter dev profile. Every group must pass.
import { test } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestRegistry } from '../helpers/registry.ts';
import { requirePeer } from '../helpers/peers.ts';
import { assertConformancePasses } from '../helpers/conformance.ts';

for (const profile of ['1.1', 'dev']) {
  test(`conformance suite passes fully with OCI_VERSION=${profile}`, async (t) => {
    const conformance = requirePeer(t, 'conformance');
    if (!conformance) return;
    const reg = await startTestRegistry();
    const work = await mkdtemp(join(tmpdir(), 'trellis-conformance-'));
    try {
      await assertConformancePasses(conformance, { host: reg.host, profile, work });
    } finally {
      await reg.dispose();
      await rm(work, { recursive: true, force: true });
    }
  });
}
