// `trellis gc`: garbage collection on demand over a data directory no server is serving (a running
// server collects online every gcIntervalSeconds instead). Opening the registry takes the data
// directory's lock, so this refuses while a server (or another command) holds it.
import { Registry } from '../content/registry.ts';
import { collectGarbage, type GcReport } from '../gc/collector.ts';
import type { Settings } from '../config/settings.ts';
import { createLogger, gcPolicy, registryOptions } from './serve.ts';

export async function runGc(settings: Settings, dryRun: boolean): Promise<GcReport> {
  const registry = await Registry.open(registryOptions(settings, createLogger('warn')));
  try {
    return await collectGarbage(registry, gcPolicy(settings), { dryRun });
  } finally {
    await registry.close();
  }
}
