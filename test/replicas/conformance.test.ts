// The official distribution-spec conformance suite (1.1 and dev profiles) through nginx in front of
// three replicas on one PostgreSQL database and one bucket: every request may land on another
// replica, so uploads, pushes and reads must all work from shared state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fsckWhenSettled, startReplicas, withDiagnostics } from '../helpers/replicas.ts';
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
    // layouts in the bucket match the metadata once index.json caught up.
    const fsck = await fsckWhenSettled(set);
    if (fsck.code !== 0) {
      // What happened to each digest fsck names, request by request and replica by replica.
      const digests = [...new Set(fsck.output.match(/sha256:[0-9a-f]{64}/g) ?? [])].slice(0, 3);
      const history = await Promise.all(digests.map(async (d) => `${d}:\n${(await set.requestsMentioning(d.slice(7, 19))).slice(-30).join('\n')}`));
      const repository = /problem: ([^:]+):/.exec(fsck.output)?.[1];
      if (repository) history.push(`the last requests to ${repository}:\n${(await set.requestsMentioning(`/v2/${repository}/`)).slice(-60).join('\n')}`);
      assert.fail(`trellis fsck after the ${profile} suite:\n${fsck.output.split('\n').slice(0, 40).join('\n')}\n${history.join('\n')}\n${await set.diagnostics()}`);
    }
  });
}
