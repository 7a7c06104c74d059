// A Trellis data directory opened in-process (no HTTP) as a copy source and sink: how layouts on
// disk are read (every referrer style) and written (Trellis's layout encoding).
import { pipeline } from 'node:stream/promises';
import { Readable, Transform } from 'node:stream';
import { requireDigest, type Registry } from '../content/registry.ts';
import { newHash } from '../oci/digest.ts';
import { referrerDescriptor, type Descriptor } from '../oci/manifest.ts';
import type { BlobStream, ContentSink, ContentSource, FetchedManifest } from './store.ts';

export class LocalRegistry implements ContentSource, ContentSink {
  readonly registry: Registry;

  constructor(registry: Registry) {
    this.registry = registry;
  }

  async tags(repository: string): Promise<string[]> {
    return await this.registry.metadata.repository(repository) ? this.registry.tags(repository, { limit: Number.MAX_SAFE_INTEGER }) : [];
  }

  async manifest(repository: string, reference: string): Promise<FetchedManifest | undefined> {
    try {
      const stored = await this.registry.resolveManifest(repository, reference);
      const bytes = await this.registry.manifestBytes(stored);
      return bytes && { bytes, mediaType: stored.record.mediaType, digest: stored.record.digest };
    } catch {
      return undefined;
    }
  }

  async blob(repository: string, digest: string): Promise<{ stream: Readable; size: number } | undefined> {
    const located = await this.registry.locateBlob(repository, digest);
    return located && { stream: this.registry.blobStream(located.repository, digest), size: located.info.size };
  }

  async referrers(repository: string, digest: string): Promise<Descriptor[]> {
    return (await this.registry.referrers(repository, digest, { limit: Number.MAX_SAFE_INTEGER })).map(referrerDescriptor);
  }

  async hasBlob(repository: string, digest: string): Promise<boolean> {
    return (await this.registry.blobInfo(repository, digest)) !== undefined;
  }

  async putBlob(repository: string, digest: string, size: number, body: BlobStream): Promise<void> {
    const stream = body instanceof Readable ? body : Readable.fromWeb(body as import('node:stream/web').ReadableStream<Uint8Array>);
    const { algorithm } = requireDigest(digest);
    const writer = await this.registry.newBlobWriter();
    const hash = newHash(algorithm);
    let received = 0;
    const hashing = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        hash.update(chunk);
        received += chunk.length;
        done(null, chunk);
      },
    });
    try {
      await pipeline(stream, hashing, writer.append());
      const actual = `${algorithm}:${hash.digest('hex')}`;
      // Content from a layout on disk is checked like any upload: a corrupt blob is not copied.
      if (actual !== digest || received !== size) throw new Error(`blob ${digest} has ${received} bytes with digest ${actual}; expected ${size} bytes`);
    } catch (err) {
      await writer.cancel();
      throw err;
    }
    await this.registry.storeBlob(repository, writer, digest, size);
  }

  async putManifest(repository: string, reference: string, bytes: Buffer, mediaType: string): Promise<void> {
    await this.registry.putManifest(repository, reference, bytes, mediaType, []);
  }
}
