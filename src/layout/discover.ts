// Finds the OCI layouts under a data root: a folder holding `oci-layout` is a repository, and
// folders inside it (other than its own files) may hold nested repositories.
import type { StorageDriver } from '../storage/driver.ts';
import { repositoryNameProblem } from '../oci/names.ts';
import { LAYOUT_FILE, layoutKey } from './paths.ts';

export async function findLayouts(driver: StorageDriver): Promise<string[]> {
  const found: string[] = [];
  const walk = async (prefix: string): Promise<void> => {
    for (const entry of await driver.list(prefix)) {
      if (!entry.dir || entry.name.startsWith('_') || entry.name.startsWith('.') || entry.name === 'blobs') continue;
      const name = prefix ? `${prefix}/${entry.name}` : entry.name;
      if (repositoryNameProblem(name)) continue;
      if (await driver.stat(layoutKey(name, LAYOUT_FILE))) found.push(name);
      await walk(name);
    }
  };
  await walk('');
  return found.sort();
}
