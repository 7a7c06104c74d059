// The two ends of a copy: anything that can list and hand out content (a registry over HTTP, a
// layout opened as a local registry), and anything that can take it.
import type { Readable } from 'node:stream';
import type { Descriptor } from '../oci/manifest.ts';

/** Blob bytes as a Node stream or a web stream (an HTTP body passes through without conversion). */
export type BlobStream = Readable | ReadableStream<Uint8Array>;

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: string;
}

export interface ContentSource {
  tags(repository: string): Promise<string[]>;
  manifest(repository: string, reference: string): Promise<FetchedManifest | undefined>;
  blob(repository: string, digest: string): Promise<{ stream: BlobStream; size: number } | undefined>;
  referrers(repository: string, digest: string): Promise<Descriptor[]>;
}

export interface ContentSink {
  hasBlob(repository: string, digest: string): Promise<boolean>;
  putBlob(repository: string, digest: string, size: number, stream: BlobStream): Promise<void>;
  putManifest(repository: string, reference: string, bytes: Buffer, mediaType: string): Promise<void>;
}

/**
 * A sink refused an index because entries it lists are not in the same repository (registries
 * that do not know nested namespaces). The copy then also puts those entries there and retries.
 */
export class ChildrenMissing extends Error {}
