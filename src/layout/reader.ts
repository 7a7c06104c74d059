// Reads an OCI Image Layout written by anyone: walks everything reachable from `index.json` and
// turns it into a snapshot the metadata index can merge. Never trusts the files: loops, missing
// blobs, oversized or corrupt JSON are reported as problems, not thrown.
import { isDeepStrictEqual } from 'node:util';
import type { ObjectInfo, StorageDriver } from '../storage/driver.ts';
import { isValidDigest } from '../oci/digest.ts';
import { isValidTag } from '../oci/names.ts';
import { MANIFEST_TYPES } from '../oci/mediatypes.ts';
import { ManifestInvalid, parseDescriptor, parseManifest, type Descriptor } from '../oci/manifest.ts';
import { manifestRecord, type LayoutSnapshot, type ManifestRecord } from '../metadata/store.ts';
import { CONTAINERD_SUBJECT, INDEX_FILE, REF_NAME, blobKey, layoutKey } from './paths.ts';
import { resolveNestedLinks } from '../graph/nested.ts';
import { DERIVED_REFERRER_KEYS } from './referrers.ts';

export const MAX_INDEX_BYTES = 256 * 1024 * 1024;
/** Manifests read between two turns of the event loop while a layout is walked. */
const WALK_ENTRIES_PER_TURN = 200;
/** A digest of any algorithm, as the image spec writes them (only sha256 and sha512 are verified). */
const DIGEST_SHAPE = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export interface LayoutReadResult {
  snapshot: LayoutSnapshot;
  problems: string[];
}

export class LayoutCorrupt extends Error {}

/** The `index.json` entry Trellis writes for a manifest: tagged, or untagged (a referrer names its subject). */
export function ownEntry(record: ManifestRecord, tag?: string): Descriptor {
  const d: Descriptor = { mediaType: record.mediaType, digest: record.digest, size: record.size };
  // The config type stands in as artifactType only in referrers answers; in the layout, list the
  // manifest's own artifactType.
  if (record.artifactType && record.artifactType !== record.configMediaType) d.artifactType = record.artifactType;
  const annotations: Record<string, string> = tag !== undefined ? { [REF_NAME]: tag } : record.subject ? { [CONTAINERD_SUBJECT]: record.subject } : {};
  if (Object.keys(annotations).length) d.annotations = annotations;
  return d;
}

/** What identifies one version of `index.json`: the storage's opaque ETag. */
export function stampOf(info: ObjectInfo): string {
  return info.etag;
}

/** The tag a `ref.name` value carries: tools store a bare tag, or a full `name:tag`. */
export function tagFromRefName(value: string): string | undefined {
  if (isValidTag(value)) return value;
  const tag = value.slice(value.lastIndexOf(':') + 1);
  return value.includes(':') && isValidTag(tag) ? tag : undefined;
}

export async function readIndexJson(driver: StorageDriver, repository: string): Promise<{ index: Record<string, unknown>; stamp: string | null }> {
  const key = layoutKey(repository, INDEX_FILE);
  const info = await driver.stat(key);
  if (!info) throw new LayoutCorrupt(`${repository}: index.json is missing`);
  // Past the limit the driver throws a plain error, which would fail every request (a 5xx) and
  // every rewrite of the repository: it is a layout problem like unparsable JSON.
  if (info.size > MAX_INDEX_BYTES) throw new LayoutCorrupt(`${repository}: index.json is ${info.size} bytes, more than the ${MAX_INDEX_BYTES} read`);
  const bytes = await driver.readFile(key, MAX_INDEX_BYTES);
  if (!bytes) throw new LayoutCorrupt(`${repository}: index.json is missing`);
  let index: unknown;
  try {
    index = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new LayoutCorrupt(`${repository}: index.json is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof index !== 'object' || index === null || Array.isArray(index) || !Array.isArray((index as Record<string, unknown>).manifests)) {
    throw new LayoutCorrupt(`${repository}: index.json is not an image index (no manifests list)`);
  }
  return { index: index as Record<string, unknown>, stamp: stampOf(info) };
}

export async function readLayout(driver: StorageDriver, repository: string, maxManifestBytes: number): Promise<LayoutReadResult> {
  const { index, stamp } = await readIndexJson(driver, repository);
  const problems: string[] = [];
  const snapshot: LayoutSnapshot = { manifests: [], tags: new Map(), entries: [], extras: {}, indexStamp: stamp };
  if (index.annotations && typeof index.annotations === 'object') snapshot.extras.annotations = index.annotations as Record<string, string>;
  const foreign: Descriptor[] = [];
  const visited = new Set<string>();
  const records = new Map<string, ManifestRecord>();
  // Top-level entries carry their tag and the entry as written; children found while walking carry neither.
  const queue: { descriptor: Descriptor; top: boolean; tag?: string | undefined; derived?: boolean; raw?: Record<string, unknown> }[] = [];
  const top: { raw: Record<string, unknown>; digest: string; tag: string | undefined }[] = [];
  // Entries under a ref name that is no registry tag: kept as written, never taken for untagged ones.
  const named: { raw: Record<string, unknown>; digest: string }[] = [];

  (index.manifests as unknown[]).forEach((entry, i) => {
    try {
      const descriptor = parseDescriptor(entry, `index.json manifests[${i}]`);
      // A referrers index (Trellis's, olareg's, or the unmerged image-spec draft's) is derived
      // data: walked for the referrers it lists, but neither a tag nor kept as an entry.
      if (DERIVED_REFERRER_KEYS.some((key) => descriptor.annotations?.[key])) return void queue.push({ descriptor, top: false, derived: true });
      const refName = descriptor.annotations?.[REF_NAME];
      const tag = refName === undefined ? undefined : tagFromRefName(refName);
      const raw = entry as Record<string, unknown>;
      if (refName !== undefined && tag === undefined) named.push({ raw, digest: descriptor.digest });
      else top.push({ raw, digest: descriptor.digest, tag });
      queue.push({ descriptor, top: true, tag, raw });
    } catch (err) {
      problems.push(`${repository}: ${(err as Error).message}`);
      // Not Trellis's to drop (a digest of an algorithm it does not verify, a field it reads more
      // strictly than the tool that wrote it): kept whole, as long as it names a blob file.
      const raw = entry as Record<string, unknown> | null;
      if (typeof raw === 'object' && raw !== null && !Array.isArray(raw) && typeof raw.digest === 'string' && DIGEST_SHAPE.test(raw.digest)) {
        foreign.push(raw as unknown as Descriptor);
      }
    }
  });

  let walked = 0;
  while (queue.length > 0) {
    // Small files are read synchronously: without a turn now and then, a layout of 100,000 entries
    // would hold every other request (and health checks) for the whole walk, seconds long.
    if (++walked % WALK_ENTRIES_PER_TURN === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    const { descriptor, top: isTop, tag, derived, raw } = queue.shift()!;
    if (visited.has(descriptor.digest)) {
      if (tag) snapshot.tags.set(tag, descriptor.digest);
      continue;
    }
    const found = await readManifest(driver, repository, descriptor, maxManifestBytes, problems);
    if (!found) {
      // Kept verbatim (every field, platform and data included) so that rewriting index.json never drops another tool's entry.
      if (isTop) foreign.push((raw ?? descriptor) as Descriptor);
      continue;
    }
    if (tag) snapshot.tags.set(tag, descriptor.digest);
    visited.add(descriptor.digest);
    records.set(descriptor.digest, found.record);
    // A derived referrers index is rewritten from the index whenever its subject's referrers
    // change; indexing it as a manifest would make it show up in listings and searches.
    if (!derived) snapshot.manifests.push(found);
    for (const link of found.links) {
      // Entries living in a descendant repository are walked when that layout is read.
      if (link.kind === 'manifest' && !link.repository && !visited.has(link.digest)) {
        queue.push({ descriptor: { mediaType: link.mediaType, digest: link.digest, size: link.size }, top: false });
      }
    }
  }
  if (foreign.length) snapshot.extras.foreignEntries = foreign;
  // (Those naming no manifest Trellis read are among the foreign entries already.)
  const refNameEntries = named.filter((e) => records.has(e.digest)).map((e) => e.raw as unknown as Descriptor);
  if (refNameEntries.length) snapshot.extras.refNameEntries = refNameEntries;
  // An entry saying more than the one Trellis would write for it (the tool's own annotations, a
  // platform, urls, data, a full `name:tag` ref name…) is kept whole for the next rewrite.
  for (const { raw, digest, tag } of top) {
    const record = records.get(digest);
    if (record && (tag === undefined || snapshot.tags.get(tag) === digest) && !isDeepStrictEqual(raw, { ...ownEntry(record, tag) })) {
      snapshot.entries.push({ tag: tag ?? '', digest, json: JSON.stringify(raw) });
    }
  }
  return { snapshot, problems };
}

async function readManifest(driver: StorageDriver, repository: string, descriptor: Descriptor, maxBytes: number, problems: string[]) {
  if (!isValidDigest(descriptor.digest)) return undefined;
  const known = MANIFEST_TYPES.has(descriptor.mediaType);
  let bytes: Buffer | undefined;
  try {
    bytes = await driver.readFile(blobKey(repository, descriptor.digest), maxBytes);
  } catch (err) {
    problems.push(`${repository}: ${descriptor.digest}: ${(err as Error).message}`);
    return undefined;
  }
  if (!bytes) {
    if (known) problems.push(`${repository}: manifest ${descriptor.digest} is listed but its blob is missing`);
    return undefined;
  }
  try {
    const parsed = parseManifest(bytes, known ? descriptor.mediaType : undefined);
    for (const text of resolveNestedLinks(parsed.links, repository)) problems.push(`${repository}: manifest ${descriptor.digest}: ${text}`);
    // The blob's modification time is the best record of when it was pushed.
    const info = await driver.stat(blobKey(repository, descriptor.digest));
    const pushedAt = info ? info.modifiedMs : Date.now();
    return { record: manifestRecord(descriptor.digest, parsed, bytes.length, pushedAt), links: parsed.links };
  } catch (err) {
    if (!(err instanceof ManifestInvalid)) throw err;
    if (known) problems.push(`${repository}: manifest ${descriptor.digest}: ${err.message}`);
    return undefined;
  }
}
