// The seam between the registry and where bytes live: a filesystem or an object store. Keys are
// '/'-separated paths relative to the storage root, built only from validated names and digests;
// a driver refuses anything else (empty, '.' or '..' components, a leading '/', NUL).
//
// Keys of the form `<repository>/blobs/<algorithm>/<hex>` are content-addressed: a driver may
// store their bytes once for every repository that holds them (the filesystem hard-links, the
// S3 driver keeps one shared object), and `copy` between two of them with the same digest is
// cheap. Removing such a key never removes the bytes another key still holds.
import type { Readable, Writable } from 'node:stream';

export interface ObjectInfo {
  size: number;
  /**
   * Opaque identity of this version of the object: changes whenever the object is replaced
   * (filesystem: mtime, size and inode; S3: the ETag). Compare it, never parse it.
   */
  etag: string;
  /** When this version was written, in ms since the epoch. */
  modifiedMs: number;
}

/** An inclusive byte range. */
export interface ByteRange {
  start: number;
  end: number;
}

export interface WriteOptions {
  /** Write only if the key does not exist yet (atomically where the backend can). */
  ifAbsent?: boolean;
  /**
   * Called with the identity the object is about to have, just before it becomes visible (e.g.
   * to journal it, so a crash right after the write is not mistaken for someone else's).
   */
  beforeCommit?: (info: ObjectInfo) => void | Promise<void>;
}

export interface AppendOptions {
  /**
   * The caller never touches a chunk again once written (a request body's chunks): the writer may
   * take their memory, e.g. hand it to another thread, instead of copying it.
   */
  handOver?: boolean;
}

/**
 * Bytes on their way into the store, invisible to readers until `commit`. A writer may be filled
 * over many requests (an OCI chunked upload) and, after `checkpoint`, resumed by a later process
 * through `StorageDriver.resumeWriter(id)`.
 */
export interface ObjectWriter {
  readonly id: string;
  /** Bytes appended by appends that completed. */
  readonly size: number;
  /**
   * A stream for one batch of bytes. When it finishes ('close' after 'finish') the bytes are part
   * of the writer; when it fails or is destroyed, the writer is exactly as it was before. One
   * append at a time.
   */
  append(options?: AppendOptions): Writable;
  /** Everything appended so far (e.g. to recompute a digest). No append may follow a read. */
  read(): Readable;
  /** Makes what was appended survive a restart of the process (resumeWriter). */
  checkpoint(): Promise<void>;
  /** Makes the bytes visible at `key` and ends the writer; false when `ifAbsent` found the key taken. */
  commit(key: string, options?: { ifAbsent?: boolean }): Promise<boolean>;
  /** Discards the bytes and ends the writer. */
  cancel(): Promise<void>;
}

export interface StorageDriver {
  /** Where the data lives, for logs and errors (never credentials). */
  readonly description: string;
  /** Called once before serving: clears leftovers of interrupted writes. */
  prepare(): Promise<void>;
  close(): Promise<void>;

  stat(key: string): Promise<ObjectInfo | undefined>;
  /** Streams an object, or an inclusive byte range of it; the stream errors if the key is absent. */
  readStream(key: string, range?: ByteRange): Readable;
  /**
   * Writes an object, or an inclusive byte range of it, into `destination` without ending it;
   * resolves once every byte has been handed on. A chunk's buffer may be reused once its write
   * calls back (a socket has copied it by then). Rejects if the object is shorter than the range
   * or the destination closes first.
   */
  sendTo(key: string, destination: Writable, range: ByteRange): Promise<void>;
  /** Reads a whole small object; undefined if absent; throws if larger than maxBytes. */
  readFile(key: string, maxBytes: number): Promise<Buffer | undefined>;
  /**
   * Replaces an object so readers see the old or the new content, never a mix. Returns the new
   * object's identity, or undefined when `ifAbsent` found the key taken (nothing written).
   */
  writeFile(key: string, data: Uint8Array | string, options?: WriteOptions): Promise<ObjectInfo | undefined>;
  /** A new writer; `id` (a UUID) names it for resumeWriter, a fresh one is made otherwise. */
  createWriter(id?: string): Promise<ObjectWriter>;
  /** A writer checkpointed by an earlier process, or undefined if none has that id. */
  resumeWriter(id: string): Promise<ObjectWriter | undefined>;
  /** Writers not committed or cancelled, with when they were last written (to expire them). */
  listWriters(): Promise<{ id: string; modifiedMs: number }[]>;
  /**
   * Makes `toKey` hold what `fromKey` holds, server-side where the backend can (no bytes through
   * this process). False when `fromKey` is absent. An existing `toKey` is replaced.
   */
  copy(fromKey: string, toKey: string): Promise<boolean>;
  /** False when the key was absent. */
  remove(key: string): Promise<boolean>;
  /**
   * Makes an empty folder exist where the backend has folders (a filesystem: an OCI layout's
   * `blobs/` must exist even when empty); object stores have none and do nothing.
   */
  createFolder(prefix: string): Promise<void>;
  /** Names directly under a prefix ('' for the root), with whether each is a folder. */
  list(prefix: string): Promise<{ name: string; dir: boolean }[]>;
  /**
   * A URL a client may GET the object from directly (e.g. a presigned S3 URL), valid for
   * `expiresSeconds`; undefined when the backend has none.
   */
  redirectUrl?(key: string, expiresSeconds: number): Promise<string | undefined>;
}

/** Throws unless `key` is a relative path of non-empty components that stays inside the root. */
export function checkKey(key: string): void {
  if (key.includes('\0') || key.startsWith('/') || key.includes('\\') || key.split('/').some((c) => c === '..' || c === '.' || c === '')) {
    throw new Error(`storage key outside the storage root: ${JSON.stringify(key)}`);
  }
}

const CONTENT_KEY = /^(.+)\/blobs\/(sha256|sha512)\/([0-9a-f]{64}|[0-9a-f]{128})$/;

/** The repository and digest of a content-addressed key, or undefined for any other key. */
export function contentAddress(key: string): { repository: string; algorithm: string; hex: string } | undefined {
  const match = CONTENT_KEY.exec(key);
  if (!match) return undefined;
  const [, repository, algorithm, hex] = match;
  if ((algorithm === 'sha256') !== (hex!.length === 64)) return undefined;
  return { repository: repository!, algorithm: algorithm!, hex: hex! };
}
