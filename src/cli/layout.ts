// `trellis layout export|import`: copies a repository (tags, everything they reach, referrers,
// nested-namespace children) between a registry and an OCI layout directory or tar, digests
// unchanged. The layout side goes through a scratch Trellis data directory, so exports are written
// in Trellis's layout encoding (read by oras and regctl) and imports read every referrer style.
import { cp, mkdtemp, readdir, rm, stat, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as tar from 'tar';
import { Registry } from '../content/registry.ts';
import { requireRepositoryName } from '../content/registry.ts';
import { DEFAULT_SETTINGS, type Settings } from '../config/settings.ts';
import { HttpRegistry } from '../transfer/http.ts';
import { LocalRegistry } from '../transfer/local.ts';
import { copyRepository, type CopyReport } from '../transfer/copy.ts';
import { createLogger, registryOptions } from './serve.ts';

export class LayoutCommandError extends Error {}

const isTar = (path: string) => /\.tar$/i.test(path);

async function withScratch<T>(work: (dir: string, registry: () => Promise<Registry>) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-layout-'));
  let opened: Registry | undefined;
  try {
    const settings: Settings = { ...DEFAULT_SETTINGS, data: dir };
    return await work(dir, async () => (opened = await Registry.open(registryOptions(settings, createLogger('warn')))));
  } finally {
    await opened?.close();
    await rm(dir, { recursive: true, force: true });
  }
}

function checkName(repository: string): void {
  try {
    requireRepositoryName(repository);
  } catch (err) {
    throw new LayoutCommandError((err as Error).message);
  }
}

export async function exportLayout(registryUrl: string, repository: string, target: string, options: { referrers: boolean }): Promise<CopyReport> {
  checkName(repository);
  const destination = resolve(target);
  const existing = await readdir(destination).catch(() => undefined);
  if (existing?.length || (isTar(destination) && (await stat(destination).catch(() => undefined)))) {
    throw new LayoutCommandError(`${target} already exists and is not empty`);
  }
  return withScratch(async (dir, open) => {
    const registry = await open();
    const report = await copyRepository(new HttpRegistry(registryUrl), new LocalRegistry(registry), repository, repository, options);
    if (report.tags === 0) throw new LayoutCommandError(`${repository} has no tags at ${registryUrl}`);
    await registry.close(); // writes every index.json
    const layout = join(dir, repository);
    if (isTar(destination)) {
      await tar.create({ cwd: layout, file: destination, portable: true }, await readdir(layout));
    } else {
      await mkdir(destination, { recursive: true });
      await cp(layout, destination, { recursive: true });
    }
    return report;
  });
}

export async function importLayout(registryUrl: string, source: string, repository: string, options: { referrers: boolean }): Promise<CopyReport> {
  checkName(repository);
  const origin = resolve(source);
  if (!(await stat(origin).catch(() => undefined))) throw new LayoutCommandError(`${source} does not exist`);
  return withScratch(async (dir, open) => {
    const layout = join(dir, repository);
    await mkdir(layout, { recursive: true });
    // tar refuses absolute paths and `..` entries by default, so nothing lands outside the folder.
    if (isTar(origin)) await tar.extract({ file: origin, cwd: layout });
    else await cp(origin, layout, { recursive: true });
    if (!(await stat(join(layout, 'oci-layout')).catch(() => undefined))) throw new LayoutCommandError(`${source} is not an OCI layout (no oci-layout file)`);
    const registry = await open();
    return copyRepository(new LocalRegistry(registry), new HttpRegistry(registryUrl), repository, repository, options);
  });
}
