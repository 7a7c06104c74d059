// `trellis fsck`: checks every layout (blob digests, index.json, descriptors) and the metadata
// index against them. Prints one line per problem; the caller exits non-zero if there are any.
import { openStorage, type StorageDriver } from '../storage/index.ts';
import { MetadataDamaged, eachRepository, metadataExists, openMetadata, type MetadataStore } from '../metadata/index.ts';
import { findLayouts } from '../layout/discover.ts';
import { LayoutCorrupt, readIndexJson, readLayout } from '../layout/reader.ts';
import { LAYOUT_FILE, blobKey, layoutKey } from '../layout/paths.ts';
import { newHash, parseDigest } from '../oci/digest.ts';
import { parseDescriptor } from '../oci/manifest.ts';

export interface FsckReport {
  repositories: number;
  blobs: number;
  manifests: number;
  problems: string[];
}

export async function fsck(dataDir: string, options: { maxManifestBytes: number; metadata?: string; storage?: string }): Promise<FsckReport> {
  const driver = await openStorage(options.storage ?? '', dataDir, { durable: false });
  const report: FsckReport = { repositories: 0, blobs: 0, manifests: 0, problems: [] };
  const problem = (text: string) => report.problems.push(text);
  const location = { location: options.metadata ?? '', dataDir };
  let metadata: MetadataStore | undefined;
  try {
    metadata = (await metadataExists(location)) ? await openMetadata({ ...location, durable: false, readOnly: true }) : undefined;
    if (!metadata) problem('metadata index is missing: run `trellis reindex`');
  } catch (err) {
    if (!(err instanceof MetadataDamaged)) throw err;
    problem(err.message); // the layouts are still checked
  }
  try {
    const layouts = await findLayouts(driver);
    report.repositories = layouts.length;
    for (const repo of layouts) {
      // Beside a running server a layout changes while it is read (index.json rewritten, then the
      // files it stopped naming removed): a repository with problems is read once more, and only
      // what is still wrong then is reported.
      let found = await checkLayout(driver, repo, options.maxManifestBytes, metadata);
      if (found.problems.length) {
        await new Promise((resolve) => setTimeout(resolve, RECHECK_AFTER_MS));
        found = await checkLayout(driver, repo, options.maxManifestBytes, metadata);
      }
      report.blobs += found.blobs;
      report.manifests += found.manifests;
      report.problems.push(...found.problems);
    }
    if (metadata) {
      const found = new Set(layouts);
      for await (const repo of eachRepository(metadata)) {
        if (!found.has(repo.name) && (await metadata.manifestDigests(repo.id)).length) problem(`${repo.name}: indexed but its layout folder is missing`);
      }
    }
  } finally {
    await metadata?.close();
    await driver.close();
  }
  return report;
}

/** How long fsck waits before reading a layout with problems again. */
const RECHECK_AFTER_MS = 1000;

type LayoutReport = Omit<FsckReport, 'repositories'>;

async function checkLayout(driver: StorageDriver, repo: string, maxManifestBytes: number, metadata: MetadataStore | undefined): Promise<LayoutReport> {
  const report: LayoutReport = { blobs: 0, manifests: 0, problems: [] };
  await checkLayoutInto(driver, repo, maxManifestBytes, metadata, report);
  return report;
}

async function checkLayoutInto(driver: StorageDriver, repo: string, maxManifestBytes: number, metadata: MetadataStore | undefined, report: LayoutReport) {
  const problem = (text: string) => report.problems.push(`${repo}: ${text}`);
  const header = await driver.readFile(layoutKey(repo, LAYOUT_FILE), 4096);
  try {
    if (typeof (JSON.parse(header?.toString('utf8') ?? '') as { imageLayoutVersion?: unknown }).imageLayoutVersion !== 'string') problem('oci-layout has no imageLayoutVersion');
  } catch {
    problem('oci-layout is not valid JSON');
  }

  // Every blob must hash to its name.
  for (const alg of await driver.list(`${repo}/blobs`)) {
    if (!alg.dir) continue;
    for (const file of await driver.list(`${repo}/blobs/${alg.name}`)) {
      const digest = `${alg.name}:${file.name}`;
      const parsed = parseDigest(digest);
      if (typeof parsed !== 'object') {
        problem(`blobs/${alg.name}/${file.name} is not named by a supported digest`);
        continue;
      }
      report.blobs++;
      if (file.dir) {
        problem(`blob ${digest} is a folder, not a file`);
        continue;
      }
      const hash = newHash(parsed.algorithm);
      try {
        for await (const chunk of driver.readStream(blobKey(repo, digest))) hash.update(chunk as Buffer);
      } catch (err) {
        // An unreadable blob is a problem of this layout; the others are still checked.
        problem(`blob ${digest} cannot be read (${(err as { code?: string }).code ?? (err as Error).message})`);
        continue;
      }
      const actual = `${parsed.algorithm}:${hash.digest('hex')}`;
      if (actual !== digest) problem(`blob ${digest} has content with digest ${actual}`);
    }
  }

  let snapshot;
  try {
    const { index } = await readIndexJson(driver, repo);
    for (const [i, entry] of (index.manifests as unknown[]).entries()) {
      try {
        const d = parseDescriptor(entry, `index.json manifests[${i}]`);
        const info = await driver.stat(blobKey(repo, d.digest));
        if (!info) problem(`index.json entry ${d.digest} has no blob`);
        else if (info.size !== d.size) problem(`index.json entry ${d.digest} says size ${d.size}, blob has ${info.size}`);
      } catch (err) {
        problem((err as Error).message);
      }
    }
    const read = await readLayout(driver, repo, Math.max(maxManifestBytes, 8 << 20));
    snapshot = read.snapshot;
    for (const text of read.problems) report.problems.push(text);
  } catch (err) {
    if (!(err instanceof LayoutCorrupt)) throw err;
    report.problems.push(err.message);
    return;
  }

  // Every descriptor a manifest requires must be present with the size it claims.
  for (const { record, links } of snapshot.manifests) {
    report.manifests++;
    for (const link of links) {
      if (!link.required) continue;
      const info = await driver.stat(blobKey(repo, link.digest));
      if (!info) problem(`manifest ${record.digest} needs ${link.kind} ${link.digest}, which is missing`);
      else if (info.size !== link.size) problem(`manifest ${record.digest} says ${link.kind} ${link.digest} has ${link.size} bytes, blob has ${info.size}`);
    }
  }

  // The metadata index must agree with the layout.
  const indexed = await metadata?.repository(repo);
  if (!metadata) return;
  if (!indexed) return problem('layout is not in the metadata index (start the registry or run `trellis reindex`)');
  if (indexed.gen > indexed.flushedGen) return problem('index.json is behind the journal (start the registry once to flush it)');
  const layoutTags = snapshot.tags;
  const indexTags = await metadata.tags(indexed.id, { limit: Number.MAX_SAFE_INTEGER });
  for (const tag of indexTags) {
    const digest = await metadata.resolveTag(indexed.id, tag);
    if (layoutTags.get(tag) !== digest) problem(`tag ${tag} is ${digest} in the index but ${layoutTags.get(tag) ?? 'absent'} in index.json`);
  }
  for (const tag of layoutTags.keys()) if (!indexTags.includes(tag)) problem(`tag ${tag} is in index.json but not in the metadata index`);
  for (const digest of await metadata.manifestDigests(indexed.id)) {
    if (!(await driver.stat(blobKey(repo, digest)))) problem(`indexed manifest ${digest} has no blob`);
  }
}
