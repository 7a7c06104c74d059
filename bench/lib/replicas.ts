// The HA layout as a benchmark target: 1 or 3 Trellis replicas on one PostgreSQL database (a
// throw-away cluster with its durable defaults, shared with `trellis-postgres`) and one bucket on
// versitygw, behind nginx round-robin — the same set the replica tests start
// (test/helpers/replicas.ts). Server CPU and memory are the replicas' (nginx, PostgreSQL and
// versitygw are not counted: the machine's other cores figure shows what they used).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startPostgresCluster } from '../../test/helpers/postgres.ts';
import { launchReplicas } from '../../test/helpers/replicas.ts';
import type { ServerHandle, StartOptions } from './servers.ts';

export async function startTrellisReplicas(options: StartOptions, count: number): Promise<ServerHandle> {
  if (options.dataDir !== undefined) throw new Error('the replica targets are not restarted on their data (they keep none)');
  process.env.TRELLIS_TEST_POSTGRES_URL ??= (await startPostgresCluster({ durable: true })).url;
  const spawnedAt = performance.now();
  // The defaults of a deployment, not the tests' quick index.json flushes.
  const set = await launchReplicas({ count, env: { TRELLIS_INDEX_FLUSH_MIN_MS: '50', ...options.env } });
  const readyMs = performance.now() - spawnedAt;
  const processes = set.replicas.map((r) => r.child!.pid!);
  const logFile = join(options.logDir, `trellis-replicas-${count}-${options.label}.log`);
  await writeFile(logFile, '');
  return {
    kind: 'trellis', url: set.url, pid: processes[0]!, processes, dataDir: set.replicas[0]!.dataDir, logFile, readyMs,
    alive: () => set.replicas.every((r) => r.child !== undefined && r.child.exitCode === null && r.child.signalCode === null),
    async stop() {
      await writeFile(logFile, await set.diagnostics()).catch(() => undefined);
      const started = performance.now();
      await set.stop();
      return { ms: performance.now() - started, code: 0, signal: null };
    },
  };
}
