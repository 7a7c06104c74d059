// Copies a graph between two stores: every tag of a repository (or the references asked for), the
// manifests and blobs they reach (nested-namespace children into the matching descendant), and
// referrers recursively. Bytes are copied as they are, so every digest stays the same. Blobs go
// once each, several at a time; what the destination already holds is skipped, which is what
// makes an interrupted copy resumable.
import { Readable, Transform } from 'node:stream';
import { ManifestInvalid, parseManifest } from '../oci/manifest.ts';
import { isNonDistributable } from '../oci/mediatypes.ts';
import { resolveNestedLinks } from '../graph/nested.ts';
import { ChildrenMissing, type BlobStream, type ContentSink, type ContentSource, type FetchedManifest } from './store.ts';
import { CopyFailed, RegistryRequestFailed } from './errors.ts';

export interface CopyReport {
  manifests: number;
  blobs: number;
  tags: number;
  /** Blobs the destination already had (a resumed copy skips them). */
  skippedBlobs: number;
  /** Bytes of the blobs actually sent. */
  bytes: number;
}


/** Hooks for progress display: called as blobs start, move and finish. */
export interface CopyProgress {
  start(id: string, size: number): void;
  advance(id: string, bytes: number): void;
  finish(id: string): void;
}

export interface CopyOptions {
  referrers: boolean;
  /** Blob checks and transfers at once (default 4). */
  concurrency?: number;
  progress?: CopyProgress;
  /** Tags or digests to copy instead of every tag; tags are re-tagged at the destination. */
  references?: string[];
  /** With one reference: the tag to give it at the destination (default: the same tag, none for a digest). */
  destinationTag?: string;
  /** Stop with an error after this many blobs were sent (tests simulate an interruption with it). */
  abortAfterBlobs?: number;
}

/** Tags registries without the referrers API use for it; copied as referrers, never as tags. */
const FALLBACK_TAG = /^(sha256|sha512)-[0-9a-f]{64}$/;

function limiter(limit: number) {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async <T>(work: () => Promise<T>): Promise<T> => {
    if (active >= limit) await new Promise<void>((r) => waiting.push(r));
    active++;
    try {
      return await work();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}

/** The same bytes, reporting each chunk's length on the way. */
function counted(stream: BlobStream, advance: (bytes: number) => void): BlobStream {
  if (!(stream instanceof Readable)) {
    return stream.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        advance(chunk.byteLength);
        controller.enqueue(chunk);
      },
    }));
  }
  const counter = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      advance(chunk.length);
      done(null, chunk);
    },
  });
  stream.once('error', (err) => counter.destroy(err));
  return stream.pipe(counter);
}

export async function copyRepository(source: ContentSource, sink: ContentSink, from: string, to: string, options: CopyOptions): Promise<CopyReport> {
  const report: CopyReport = { manifests: 0, blobs: 0, tags: 0, skippedBlobs: 0, bytes: 0 };
  const manifests = new Map<string, Promise<FetchedManifest>>();
  const blobs = new Map<string, Promise<void>>();
  const limit = limiter(Math.max(1, options.concurrency ?? 4));

  /** `optional`: a layer that may live elsewhere (it has `urls`), copied when the source holds it. */
  const sendBlob = (src: string, dst: string, digest: string, expectedSize: number, optional: boolean) => limit(async () => {
    if (await sink.hasBlob(dst, digest)) {
      report.skippedBlobs++;
      return;
    }
    if (options.abortAfterBlobs !== undefined && report.blobs >= options.abortAfterBlobs) {
      throw new CopyFailed(`stopped after ${report.blobs} blobs (TRELLIS_COPY_ABORT_AFTER_BLOBS)`);
    }
    const blob = await source.blob(src, digest);
    if (!blob && optional) {
      report.skippedBlobs++;
      return;
    }
    if (!blob) throw new CopyFailed(`blob ${digest} is missing from ${src}`);
    const size = blob.size || expectedSize;
    const id = `${dst}@${digest}`;
    options.progress?.start(id, size);
    await sink.putBlob(dst, digest, size, options.progress ? counted(blob.stream, (n) => options.progress!.advance(id, n)) : blob.stream);
    options.progress?.finish(id);
    report.blobs++;
    report.bytes += size;
  });

  const copyBlob = (src: string, dst: string, digest: string, size: number, optional = false) => {
    // Kept apart: an optional copy that found nothing must not stand for a required one.
    const key = `${dst}@${digest}${optional ? '?' : ''}`;
    let pending = blobs.get(key);
    if (!pending) blobs.set(key, (pending = sendBlob(src, dst, digest, size, optional)));
    return pending;
  };

  const copyManifestOnce = async (src: string, dst: string, reference: string): Promise<FetchedManifest> => {
    const manifest = await source.manifest(src, reference);
    if (!manifest && src === from && asked.has(reference)) {
      // What the command line named is not there: "not found" (exit 3), not a broken source.
      throw new RegistryRequestFailed(`${from}${reference.includes(':') ? '@' : ':'}${reference}: not found in the source`, 'not-found', 404);
    }
    if (!manifest) throw new CopyFailed(`manifest ${reference} is missing from ${src}`);
    // Reached by tag: share one copy with every other path to the same digest.
    const byDigest = `${dst}@${manifest.digest}`;
    if (reference !== manifest.digest) {
      const known = manifests.get(byDigest);
      if (known) return known;
      const pending = copyContent(src, dst, manifest);
      manifests.set(byDigest, pending);
      return pending;
    }
    return copyContent(src, dst, manifest);
  };

  const copyContent = async (src: string, dst: string, manifest: FetchedManifest): Promise<FetchedManifest> => {
    let parsed;
    try {
      parsed = parseManifest(manifest.bytes, manifest.mediaType);
    } catch (err) {
      if (err instanceof ManifestInvalid) throw new CopyFailed(`manifest ${src}@${manifest.digest}: ${err.message}`);
      throw err;
    }
    resolveNestedLinks(parsed.links, src);
    await Promise.all(parsed.links.map(async (link) => {
      if (link.kind === 'manifest') {
        // A nested-namespace child goes to the same relative place under the destination.
        if (link.repository) await copyManifest(link.repository, `${dst}/${link.repository.slice(src.length + 1)}`, link.digest);
        else await copyManifest(src, dst, link.digest);
      } else if (link.kind !== 'subject' && link.required) {
        await copyBlob(src, dst, link.digest, link.size);
      } else if (link.kind === 'layer' && !isNonDistributable(link.mediaType)) {
        // Not required only because it lists `urls`: the source may hold it all the same, and a
        // copy without it would leave the destination short of what the source served.
        await copyBlob(src, dst, link.digest, link.size, true);
      }
    }));
    try {
      await sink.putManifest(dst, manifest.digest, manifest.bytes, manifest.mediaType);
    } catch (err) {
      const nested = parsed.links.filter((l) => l.kind === 'manifest' && l.repository);
      if (!(err instanceof ChildrenMissing) || nested.length === 0) throw err;
      // The destination wants every entry in the index's own repository: put the nested ones there too.
      await Promise.all(nested.map((link) => copyManifest(link.repository!, dst, link.digest)));
      await sink.putManifest(dst, manifest.digest, manifest.bytes, manifest.mediaType);
    }
    report.manifests++;
    if (options.referrers) {
      const referrers = await source.referrers(src, manifest.digest);
      await Promise.all(referrers.map((referrer) => copyManifest(src, dst, referrer.digest)));
    }
    return manifest;
  };

  const copyManifest = (src: string, dst: string, reference: string): Promise<FetchedManifest> => {
    const key = `${dst}@${reference}`;
    let pending = manifests.get(key);
    if (!pending) manifests.set(key, (pending = copyManifestOnce(src, dst, reference)));
    return pending;
  };

  // Fallback tags never travel as tags: with -r their referrers are copied as referrers (and the
  // destination's fallback tags rebuilt where needed); copied as tags they would overwrite the
  // destination's own list of referrers on a registry without the referrers API.
  const references = options.references ?? (await source.tags(from)).filter((tag) => !FALLBACK_TAG.test(tag));
  if (!options.references && references.length === 0) throw new RegistryRequestFailed(`${from}: not found in the source (no repository, or no tags to copy)`, 'not-found', 404);
  const asked = new Set(references);
  for (const reference of references) {
    const manifest = await copyManifest(from, to, reference);
    const tag = options.destinationTag ?? (reference.includes(':') ? undefined : reference);
    if (tag) {
      await sink.putManifest(to, tag, manifest.bytes, manifest.mediaType);
      report.tags++;
    }
  }
  return report;
}
