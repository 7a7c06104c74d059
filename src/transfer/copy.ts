// Copies a repository's whole graph between two stores: every tag, the manifests and blobs they
// reach (nested-namespace children into the matching descendant), and referrers recursively.
// Bytes are copied as they are, so every digest stays the same.
import { ManifestInvalid, parseManifest } from '../oci/manifest.ts';
import { resolveNestedLinks } from '../graph/nested.ts';
import type { ContentSink, ContentSource, FetchedManifest } from './store.ts';

export interface CopyReport {
  manifests: number;
  blobs: number;
  tags: number;
}

export class CopyFailed extends Error {}

export async function copyRepository(source: ContentSource, sink: ContentSink, from: string, to: string, options: { referrers: boolean }): Promise<CopyReport> {
  const report: CopyReport = { manifests: 0, blobs: 0, tags: 0 };
  const copied = new Map<string, FetchedManifest>();

  const copyBlob = async (src: string, dst: string, digest: string) => {
    if (await sink.hasBlob(dst, digest)) return;
    const blob = await source.blob(src, digest);
    if (!blob) throw new CopyFailed(`blob ${digest} is missing from ${src}`);
    await sink.putBlob(dst, digest, blob.size, blob.stream);
    report.blobs++;
  };

  const copyManifest = async (src: string, dst: string, reference: string): Promise<FetchedManifest> => {
    const known = copied.get(`${dst}@${reference}`);
    if (known) return known;
    const manifest = await source.manifest(src, reference);
    if (!manifest) throw new CopyFailed(`manifest ${reference} is missing from ${src}`);
    if (copied.has(`${dst}@${manifest.digest}`)) return manifest;
    copied.set(`${dst}@${manifest.digest}`, manifest);
    let parsed;
    try {
      parsed = parseManifest(manifest.bytes, manifest.mediaType);
    } catch (err) {
      if (err instanceof ManifestInvalid) throw new CopyFailed(`manifest ${src}@${manifest.digest}: ${err.message}`);
      throw err;
    }
    resolveNestedLinks(parsed.links, src);
    for (const link of parsed.links) {
      if (link.kind === 'manifest') {
        // A nested-namespace child goes to the same relative place under the destination.
        if (link.repository) await copyManifest(link.repository, `${dst}/${link.repository.slice(src.length + 1)}`, link.digest);
        else await copyManifest(src, dst, link.digest);
      } else if (link.kind !== 'subject' && link.required) {
        await copyBlob(src, dst, link.digest);
      }
    }
    await sink.putManifest(dst, manifest.digest, manifest.bytes, manifest.mediaType);
    report.manifests++;
    if (options.referrers) {
      for (const referrer of await source.referrers(src, manifest.digest)) await copyManifest(src, dst, referrer.digest);
    }
    return manifest;
  };

  for (const tag of await source.tags(from)) {
    const manifest = await copyManifest(from, to, tag);
    await sink.putManifest(to, tag, manifest.bytes, manifest.mediaType);
    report.tags++;
  }
  return report;
}
