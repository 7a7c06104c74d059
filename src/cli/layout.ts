// `trellis layout export|import`: copies a repository (tags, everything they reach, referrers,
// nested-namespace children) between a registry and an OCI layout directory or tar, digests
// unchanged. The layout side is opened like any `trellis copy` end (src/cli/target.ts): through a
// scratch Trellis data directory, so exports are written in Trellis's layout encoding (read by
// oras and regctl) and imports read every referrer style.
import { readdir, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { requireRepositoryName } from '../content/registry.ts';
import { HttpRegistry } from '../transfer/http.ts';
import { getCredentials } from '../transfer/auth.ts';
import { copyRepository, type CopyReport } from '../transfer/copy.ts';
import { openEndpoint, type LayoutReference } from './target.ts';
import { LayoutCommandError } from './errors.ts';


const isTar = (path: string) => /\.tar$/i.test(path);

function checkName(repository: string): void {
  try {
    requireRepositoryName(repository);
  } catch (err) {
    throw new LayoutCommandError((err as Error).message);
  }
}

function layoutAt(text: string): LayoutReference {
  const path = resolve(text);
  return { kind: 'layout', path, tar: isTar(path), text };
}

export async function exportLayout(registryUrl: string, repository: string, target: string, options: { referrers: boolean }): Promise<CopyReport> {
  checkName(repository);
  const layout = layoutAt(target);
  const existing = await readdir(layout.path).catch(() => undefined);
  if (existing?.length || (layout.tar && (await stat(layout.path).catch(() => undefined)))) {
    throw new LayoutCommandError(`${target} already exists and is not empty`);
  }
  const to = await openEndpoint(layout, {}, 'destination');
  let report: CopyReport | undefined;
  try {
    report = await copyRepository(new HttpRegistry(registryUrl, { credentials: getCredentials }), to.store, repository, to.repository, options);
  } finally {
    await to.close(report !== undefined);
  }
  return report;
}

export async function importLayout(registryUrl: string, source: string, repository: string, options: { referrers: boolean }): Promise<CopyReport> {
  checkName(repository);
  const from = await openEndpoint(layoutAt(source), {}, 'source');
  try {
    return await copyRepository(from.store, new HttpRegistry(registryUrl, { credentials: getCredentials }), from.repository, repository, options);
  } finally {
    await from.close(false);
  }
}
