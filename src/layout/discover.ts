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
  // Folders to list, shared by up to WALK_CONCURRENCY listings in flight. A folder's children
  // only join the queue: a call (and promise) per child, made at once, held the event loop for
  // 30–50 ms on a folder of 5,000 repositories. A folder's own listing says whether it is a
  // layout: no stat per folder.
  const queue: string[] = [''];
  let listing = 0;
  let failed = false;
  await new Promise<void>((resolve, reject) => {
    const listMore = (): void => {
      while (!failed && !signal?.aborted && listing < WALK_CONCURRENCY && queue.length > 0) {
        const name = queue.pop()!;
        listing++;
        driver.list(name).then((entries) => {
          listing--;
          if (name && entries.some((e) => !e.dir && e.name === LAYOUT_FILE)) found.push(name);
          for (const entry of entries) {
            if (!entry.dir || entry.name.startsWith('_') || entry.name.startsWith('.') || entry.name === 'blobs') continue;
            const child = name ? `${name}/${entry.name}` : entry.name;
            if (!repositoryNameProblem(child)) queue.push(child);
          }
          listMore();
        }, (err: unknown) => {
          listing--;
          failed = true;
          reject(err);
        });
      }
      if (listing === 0 && !failed) resolve();
    };
    listMore();
  });
  return found.sort();
}

/**
 * Runs `work` on every item, at most `concurrency` at once, in order of the items: a few workers
 * take the next item in turn (no call or promise per item made up front). Work that finishes in
 * promises alone never gives the event loop a turn, so once the workers together have run for
 * `slice.ms` they all wait for one turn (a pause per worker would not do: each resumed worker
 * would start a slice of its own).
 */
export async function forEachConcurrently<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<void>,
  slice: { ms: number; now?: () => number } = { ms: Infinity }): Promise<void> {
  const now = slice.now ?? (() => performance.now());
  let next = 0;
  let sliceStarted = now();
  let pause: Promise<void> | undefined;
  const turn = () => new Promise<void>((resolve) => setImmediate(() => {
    pause = undefined;
    sliceStarted = now();
    resolve();
  }));
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      await work(items[next++]!);
      if (pause || now() - sliceStarted >= slice.ms) await (pause ??= turn());
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}
