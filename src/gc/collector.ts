// Online mark-and-sweep garbage collection. The mark runs on the metadata index without locks;
// each candidate is checked again under its repository's content lock just before it is removed,
// so a push that needs it (a new tag, a new parent index, a manifest using a blob) keeps it.
// Blob candidates must also be older than the grace period, which covers uploads whose manifest
// has not arrived yet. No file is removed here: manifests and blobs alike are journaled, and their
// files go only after the index.json rewrite that stops listing the manifests that used them, and
// only if nothing needs them in any role by then (Registry.removeUnusedFiles).
import type { Registry } from '../content/registry.ts';
import { blobKey } from '../layout/paths.ts';
import { isDigestAlgorithm, isValidDigest } from '../oci/digest.ts';
import { MANIFEST_TYPES } from '../oci/mediatypes.ts';
import { eachRepository } from '../metadata/index.ts';

export interface GcPolicy {
  untagged: 'keep' | 'delete';
  danglingReferrers: 'keep' | 'delete';
  graceSeconds: number;
}

export interface GcItem {
  repository: string;
  digest: string;
  kind: 'manifest' | 'blob';
  reason: string;
  bytes?: number;
}

export interface GcReport {
  dryRun: boolean;
  repositories: number;
  removed: GcItem[];
  bytes: number;
  durationMs: number;
}

const BATCH = 500;
/** Largest file of an unread manifest read for the descriptors it holds (the reader's manifest limit). */
const UNREAD_READ_BYTES = 8 << 20;

/**
 * The files that manifests Trellis could not read need: another tool's index.json entries, and
 * children of indexes Trellis did read (too large, stricter validation than the tool that wrote
 * them). Each one's own file and every descriptor in it, through manifests and indexes to their
 * configs, layers and children: every reader of the layout still uses what they name. Only
 * manifests (or descriptors of no known type) are opened: a layer is never read.
 */
async function unreadClosure(registry: Registry, repository: { id: number; name: string }, named: DescriptorCache): Promise<Set<string>> {
  const found = new Set<string>();
  const { metadata } = registry;
  const queue = [
    ...((await metadata.repository(repository.name))?.layoutExtras.foreignEntries ?? []).map((d) => d.digest),
    ...await metadata.unindexedChildren(repository.id),
  ];
  while (queue.length > 0) {
    const digest = queue.pop()!;
    if (found.has(digest) || !isValidDigest(digest)) continue;
    found.add(digest);
    let descriptors = named.get(digest);
    if (!descriptors) {
      try {
        const bytes = await registry.driver.readFile(blobKey(repository.name, digest), UNREAD_READ_BYTES);
        if (!bytes) continue; // not there (yet): read again next time
        descriptors = descriptorsIn(bytes);
      } catch {
        descriptors = []; // larger than any manifest: nothing to follow
      }
      // A digest names its bytes for good: each file is read once per collection, not once per batch.
      named.set(digest, descriptors);
    }
    for (const d of descriptors) {
      if (d.mediaType === undefined || MANIFEST_TYPES.has(d.mediaType)) queue.push(d.digest);
      else if (isValidDigest(d.digest)) found.add(d.digest);
    }
  }
  return found;
}

/** Descriptors read from unread manifests' files, by digest, for one repository's collection. */
type DescriptorCache = Map<string, { digest: string; mediaType?: string }[]>;

/** The descriptors (objects with a digest) anywhere in a JSON document; none if it is not JSON. */
function descriptorsIn(bytes: Buffer): { digest: string; mediaType?: string }[] {
  let document: unknown;
  try {
    document = JSON.parse(bytes.toString('utf8'));
  } catch {
    return [];
  }
  const out: { digest: string; mediaType?: string }[] = [];
  // A stack, not recursion: the document is another tool's, nested as deep as it likes.
  const pending: unknown[] = [document];
  while (pending.length > 0) {
    const value = pending.pop();
    // One push at a time: a spread of a very long array would overflow the call's arguments.
    if (Array.isArray(value)) for (const item of value) pending.push(item);
    else if (value !== null && typeof value === 'object') {
      const { digest, mediaType } = value as { digest?: unknown; mediaType?: unknown };
      if (typeof digest === 'string') out.push({ digest, ...(typeof mediaType === 'string' ? { mediaType } : {}) });
      for (const item of Object.values(value)) pending.push(item);
    }
  }
  return out;
}

export async function collectGarbage(registry: Registry, policy: GcPolicy, options: { dryRun: boolean; now?: number }): Promise<GcReport> {
  // A layout not yet adopted after a start would look like files nothing uses.
  await registry.adopted();
  const started = performance.now();
  const cutoff = (options.now ?? Date.now()) - policy.graceSeconds * 1000;
  const report: GcReport = { dryRun: options.dryRun, repositories: 0, removed: [], bytes: 0, durationMs: 0 };
  const { metadata, driver } = registry;
  for await (const repo of eachRepository(metadata)) {
    report.repositories++;
    // Another tool may have edited the layout since a request last looked: what its index.json
    // lists (and the files that needs) is not garbage.
    await registry.syncLayout(repo.name);
    // Another tool's entries under ref names that are no registry tags (skopeo's oci:DIR:team/x)
    // name what they list as a tag would: kept, with everything a tag would keep.
    const namedByRefName = async () => new Set(((await metadata.repository(repo.name))?.layoutExtras.refNameEntries ?? []).map((e) => e.digest));
    const candidates = await metadata.unreachableManifests(repo.id, {
      keepUntagged: policy.untagged === 'keep', keepDanglingReferrers: policy.danglingReferrers === 'keep', pushedBefore: cutoff,
      liveRoots: [...await namedByRefName()],
    });
    const dead = new Set<string>();
    // Under the content lock: a referrer lives as long as its subject does, so one whose subject
    // became reachable since the mark (a new parent index, a new tag of a referrer above it) stays.
    let named = new Set<string>();
    const stillDead = async (digest: string, depth = 0): Promise<boolean> => {
      if (named.has(digest) || !(await metadata.stillUnreachable(repo.id, digest, cutoff))) return false;
      const subject = (await metadata.manifest(repo.id, digest))?.subject;
      const subjectRecord = subject && depth < 64 ? await metadata.manifest(repo.id, subject) : undefined;
      if (!subject || !subjectRecord) return true;
      if (policy.untagged === 'keep' && !subjectRecord.subject) return false;
      return stillDead(subject, depth + 1);
    };
    for (let i = 0; i < candidates.length; i += BATCH) {
      const batch = candidates.slice(i, i + BATCH);
      await registry.exclusive(repo.name, async () => {
        named = await namedByRefName();
        const doomed = [];
        for (const c of batch) if (options.dryRun || (await stillDead(c.digest))) doomed.push(c);
        const sizes: number[] = [];
        for (const c of doomed) sizes.push((await metadata.manifest(repo.id, c.digest))?.size ?? 0);
        // Their files go when index.json stops listing them (see LayoutWriter.flush).
        if (!options.dryRun) await metadata.deleteManifests(repo.id, doomed.map((c) => c.digest));
        doomed.forEach((candidate, i) => {
          dead.add(candidate.digest);
          report.removed.push({ repository: repo.name, digest: candidate.digest, kind: 'manifest', reason: candidate.reason, bytes: sizes[i]! });
          report.bytes += sizes[i]!;
        });
      });
    }
    if (dead.size && !options.dryRun) {
      registry.layout.changed(repo.name);
      await registry.changed({ repository: repo.name, removed: [...dead] });
    }

    // Blobs: every file under blobs/ that no surviving manifest uses and that is old enough.
    const referenced = await metadata.referencedDigests(repo.id, dead);
    // Manifests Trellis does not read (another tool's entries, or children of them) need their files.
    const unreadDescriptors: DescriptorCache = new Map();
    const neededByUnread = () => unreadClosure(registry, repo, unreadDescriptors);
    for (const digest of await neededByUnread()) referenced.add(digest);
    const blobCandidates: { digest: string; size: number }[] = [];
    for (const alg of await driver.list(`${repo.name}/blobs`)) {
      if (!alg.dir || !isDigestAlgorithm(alg.name)) continue;
      for (const file of await driver.list(`${repo.name}/blobs/${alg.name}`)) {
        const digest = `${alg.name}:${file.name}`;
        if (file.dir || referenced.has(digest) || dead.has(digest)) continue;
        const info = await driver.stat(blobKey(repo.name, digest));
        if (info && info.modifiedMs < cutoff) blobCandidates.push({ digest, size: info.size });
      }
    }
    let journaledBlobs = 0;
    for (let i = 0; i < blobCandidates.length; i += BATCH) {
      await registry.exclusive(repo.name, async () => {
        const unread = await neededByUnread();
        for (const blob of blobCandidates.slice(i, i + BATCH)) {
          if (!options.dryRun) {
            if (unread.has(blob.digest) || await metadata.isReferenced(repo.id, blob.digest)) continue;
            const info = await driver.stat(blobKey(repo.name, blob.digest));
            if (!info || info.modifiedMs >= cutoff) continue;
            await metadata.scheduleUnlink(repo.id, blob.digest);
            journaledBlobs++;
          }
          report.removed.push({ repository: repo.name, digest: blob.digest, kind: 'blob', reason: 'no manifest uses it', bytes: blob.size });
          report.bytes += blob.size;
        }
      });
    }
    // Due at once when index.json is up to date; otherwise after the rewrite already scheduled.
    if (!options.dryRun && (dead.size || journaledBlobs)) await registry.removeUnusedFiles(repo.name);
  }
  report.durationMs = performance.now() - started;
  return report;
}
