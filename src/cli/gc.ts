// `trellis gc`: garbage collection on demand (a running server collects online every
// gcIntervalSeconds instead). Opening the registry takes the data directory's lock, so on a local
// index this refuses while a server (or another command) holds it. On PostgreSQL, replicas may be
// serving the same registry meanwhile: the collection then takes the same shared `gc` lock as
// theirs (one collection at a time), and ends at once if its shared locks are lost, as a replica does.
import { Registry } from '../content/registry.ts';
import { collectGarbage, type GcReport } from '../gc/collector.ts';
import type { Settings } from '../config/settings.ts';
import { createLogger, EXIT_LOCKS_LOST, gcPolicy, registryOptions } from './serve.ts';

export async function runGc(settings: Settings, dryRun: boolean): Promise<GcReport> {
  const logger = createLogger('warn');
  const registry = await Registry.open(registryOptions(settings, logger));
  // Going on without them, this run could remove what a replica's push just started to use; a
  // later run finishes what this one journalled.
  registry.whenLost((reason) => {
    logger.fatal({ reason }, 'garbage collection stopped: what kept other processes out was lost; running it again is safe');
    process.exit(EXIT_LOCKS_LOST);
  });
  try {
    return await registry.locks.run('gc', () => collectGarbage(registry, gcPolicy(settings), { dryRun }));
  } finally {
    await registry.close();
  }
}
