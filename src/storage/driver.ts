// The seam between the registry and where bytes live. Keys are '/'-separated paths relative to the
// data root, built only from validated names and digests; a driver must refuse anything else.
import type { Readable, Writable } from 'node:stream';

export interface FileInfo {
  size: number;
  mtimeNs: bigint;
  ino: number;
}

export interface StorageDriver {
  stat(key: string): Promise<FileInfo | undefined>;
  /** Streams a file, or an inclusive byte range of it. */
  readStream(key: string, range?: { start: number; end: number }): Readable;
  /** Reads a whole small file; undefined if absent; throws if larger than maxBytes. */
  readFile(key: string, maxBytes: number): Promise<Buffer | undefined>;
  /**
   * Replaces a file so readers see the old or the new content, never a mix. `beforeCommit` sees
   * the new file (identity included: the move keeps it) just before it replaces the old one.
   */
  writeAtomic(key: string, data: Uint8Array | string, beforeCommit?: (info: FileInfo) => void | Promise<void>): Promise<void>;
  /** Opens a file for appending (created if absent). */
  appendStream(key: string): Writable;
  truncate(key: string, size: number): Promise<void>;
  /** Moves a finished file into place; false when the target already existed (source removed). */
  commit(fromKey: string, toKey: string): Promise<boolean>;
  /** Makes `toKey` hold the same content as `fromKey`, sharing storage where it can. */
  share(fromKey: string, toKey: string): Promise<boolean>;
  remove(key: string): Promise<boolean>;
  /** Names directly inside a folder, with whether each is a folder. */
  list(key: string): Promise<{ name: string; dir: boolean }[]>;
}
