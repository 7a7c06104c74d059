// Folders a command writes to, checked before anything is written: a dangling symbolic link, a
// file in the way or a folder that cannot be created is named in one line, and nothing is created
// outside a folder that already exists. (A recursive mkdir under /proc spins forever; creating
// one level at a time fails at once.)
import { lstat, mkdir, readlink, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { UsageError } from './errors.ts';

type FsError = Error & { code?: string };

async function describeExisting(path: string, shown: string): Promise<'directory' | 'missing'> {
  const link = await lstat(path).catch(() => undefined);
  if (!link) return 'missing';
  const info = await stat(path).catch(() => undefined);
  if (!info) {
    const target = await readlink(path).catch(() => '?');
    throw new UsageError(`${shown} is a symbolic link to ${target}, which does not exist; create that folder or choose another`);
  }
  if (!info.isDirectory()) throw new UsageError(`${shown} exists and is not a folder; choose a folder`);
  return 'directory';
}

/** Makes `dir` (and missing parents, one level at a time) for writing into; names what is wrong. */
export async function prepareFolder(dir: string): Promise<void> {
  const missing: string[] = [];
  let current = resolve(dir);
  while ((await describeExisting(current, current === resolve(dir) ? dir : current)) === 'missing') {
    missing.unshift(current);
    const parent = dirname(current);
    if (parent === current) break;
    current = parent;
  }
  for (const level of missing) {
    try {
      await mkdir(level);
    } catch (err) {
      const code = (err as FsError).code;
      if (code === 'EEXIST') continue;
      throw new UsageError(`cannot create the folder ${level} (${code ?? (err as Error).message}); choose a folder you can write to`);
    }
  }
}

/** A destination that must be new or a folder, inside a folder that already exists. */
export async function requireParentFolder(path: string, shown: string): Promise<void> {
  const parent = dirname(resolve(path));
  const info = await stat(parent).catch(() => undefined);
  if (!info) throw new UsageError(`${shown}: the folder ${parent} does not exist; create it first or choose another destination`);
  if (!info.isDirectory()) throw new UsageError(`${shown}: ${parent} is not a folder`);
  await describeExisting(resolve(path), shown).catch((err: unknown) => {
    // A file where a layout tar goes is fine (it is replaced); only dangling links are refused here.
    if (err instanceof UsageError && /symbolic link/.test(err.message)) throw err;
  });
}
