// The official distribution-spec conformance suite (1.1 and dev profiles) through nginx in front of
// three replicas on one PostgreSQL database and one bucket: every request may land on another
// replica, so uploads, pushes and reads must all work from shared state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startReplicas, withDiagnostics } from '../helpers/replicas.ts';
import { requirePeer } from '../helpers/peers.ts';
import { assertConformancePasses } from '../helpers/conformance.ts';

for (const profile of ['1.1', 'dev']) {
  test(`conformance suite (OCI_VERSION=${profile}) passes through the balancer`, { timeout: 600_000 }, async (t) => {
    const conformance = requirePeer(t, 'conformance');
    if (!conformance) return;
    const set = await startReplicas(t);
    if (!set) return;
    const work = await mkdtemp(join(tmpdir(), 'trellis-replica-conformance-'));
    t.after(() => rm(work, { recursive: true, force: true }));
    await withDiagnostics(set, () => assertConformancePasses(conformance, { host: set.host, profile, work }));
    // What the suite left (pushes, deletes, mounts on every replica) is a consistent store: the
    // layouts in the bucket match the metadata once index.json caught up. On a loaded machine the
    // rewrites after the suite's last pushes can take a few seconds: fsck is asked again until
    // then ("index.json is behind the journal"), any other problem fails at once.
    let fsck = { code: -1, output: '' };
    for (const deadline = Date.now() + 30_000; ;) {
      await sleep(2000);
      fsck = await set.trellis(['fsck']);
      const problems = fsck.output.split('\n').filter((line) => line.startsWith('problem:'));
      if (fsck.code === 0 || Date.now() > deadline || !problems.every((line) => line.includes('behind the journal'))) break;
    }
    assert.equal(fsck.code, 0, `trellis fsck after the ${profile} suite:\n${fsck.output.split('\n').slice(0, 40).join('\n')}`);
  });
}
