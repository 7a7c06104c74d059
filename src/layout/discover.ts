// Finds the OCI layouts under a data root: a folder holding `oci-layout` is a repository, and
// folders inside it (other than its own files) may hold nested repositories.
import type { StorageDriver } from '../storage/index.ts';
import { repositoryNameProblem } from '../oci/names.ts';
import { LAYOUT_FILE } from './paths.ts';

/** File calls in flight at once while walking: enough to keep the thread pool busy. */
const WALK_CONCURRENCY = 32;

/** `signal`: stops the walk early (what was found so far is returned). */
export async function findLayouts(driver: StorageDriver, signal?: AbortSignal): Promise<string[]> {
  const found: string[] = [];
  const limit = limitConcurrency(WALK_CONCURRENCY);
  // Folders are walked side by side (one at a time took most of a large registry's start-up), and
  // a folder's own listing says whether it is a layout: no stat per folder.
  const walk = async (name: string): Promise<void> => {
    const entries = await limit(async () => (signal?.aborted ? [] : driver.list(name)));
    if (name && entries.some((e) => !e.dir && e.name === LAYOUT_FILE)) found.push(name);
    await Promise.all(entries.map(async (entry) => {
      if (!entry.dir || entry.name.startsWith('_') || entry.name.startsWith('.') || entry.name === 'blobs') return;
      const child = name ? `${name}/${entry.name}` : entry.name;
      if (repositoryNameProblem(child)) return;
      await walk(child);
    }));
  };
  await walk('');
  return found.sort();
}

/** Wraps async work so that at most `max` calls run at once; the rest wait their turn in order. */
export function limitConcurrency(max: number): <T>(work: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async <T>(work: () => Promise<T>): Promise<T> => {
    if (active >= max) await new Promise<void>((resolve) => waiting.push(resolve));
    else active++;
    try {
      return await work();
    } finally {
      // A waiter takes over this slot directly, so `active` never exceeds `max`.
      const next = waiting.shift();
      if (next) next();
      else active--;
    }
  };
}
