// `trellis gc`: garbage collection on demand over a data directory no server is serving (a running
// server collects online every gcIntervalSeconds instead).
import { readFile } from 'node:fs/promises';
import { Registry } from '../content/registry.ts';
import { collectGarbage, type GcReport } from '../gc/collector.ts';
import type { Settings } from '../config/settings.ts';
import { createLogger, gcPolicy, pidFile, registryOptions } from './serve.ts';

export class DataDirectoryBusy extends Error {}

async function servingPid(dataDir: string): Promise<number | undefined> {
  const pid = Number(await readFile(pidFile(dataDir), 'utf8').catch(() => ''));
  if (!pid) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined; // a stale file from a crashed server
  }
}

export async function runGc(settings: Settings, dryRun: boolean): Promise<GcReport> {
  const pid = await servingPid(settings.data);
  if (pid) throw new DataDirectoryBusy(`a server (pid ${pid}) is serving ${settings.data}; it collects online when gcIntervalSeconds is set, or stop it first`);
  const registry = await Registry.open(registryOptions(settings, createLogger('warn')));
  try {
    return await collectGarbage(registry, gcPolicy(settings), { dryRun });
  } finally {
    await registry.close();
  }
}
