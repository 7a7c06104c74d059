// The official distribution-spec conformance suite (1.1 and dev profiles) through nginx in front of
// three replicas on one PostgreSQL database and one bucket: every request may land on another
// replica, so uploads, pushes and reads must all work from shared state.
import { test } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startReplicas, withDiagnostics } from '../helpers/replicas.ts';
import { requirePeer } from '../helpers/peers.ts';
import { assertConformancePasses } from '../helpers/conformance.ts';

for (const profile of ['1.1', 'dev']) {
  test(`conformance suite (OCI_VERSION=${profile}) passes through the balancer`, { timeout: 300_000 }, async (t) => {
    const conformance = requirePeer(t, 'conformance');
    if (!conformance) return;
    const set = await startReplicas(t);
    if (!set) return;
    const work = await mkdtemp(join(tmpdir(), 'trellis-replica-conformance-'));
    t.after(() => rm(work, { recursive: true, force: true }));
    await withDiagnostics(set, () => assertConformancePasses(conformance, { host: set.host, profile, work }));
  });
}
