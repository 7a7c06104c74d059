// A small LRU of object contents, each entry valid only while the object keeps the identity it was
// read with (the storage driver's etag and size): a rewrite or replacement by anyone, through any
// driver, is a miss, never stale bytes. Also holds answers derived from a repository's index, with
// the repository's change generation and index stamp as their identity.
import type { ObjectInfo } from '../storage/index.ts';

type Identity = Pick<ObjectInfo, 'etag' | 'size'>;

interface Entry<T> {
  identity: Identity;
  bytes: T;
}

export class FileCache<T extends { readonly byteLength: number } = Buffer> {
  private readonly entries = new Map<string, Entry<T>>();
  private readonly maxBytes: number;
  private readonly maxEntryBytes: number;
  private bytes = 0;

  constructor(limits: { maxBytes: number; maxEntryBytes: number }) {
    this.maxBytes = limits.maxBytes;
    this.maxEntryBytes = limits.maxEntryBytes;
  }

  get size(): { entries: number; bytes: number } {
    return { entries: this.entries.size, bytes: this.bytes };
  }

  /** The bytes cached for `key`, if they were read from the object `info` describes. */
  get(key: string, info: Identity): T | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    this.entries.delete(key);
    if (entry.identity.etag !== info.etag || entry.identity.size !== info.size) {
      this.bytes -= entry.bytes.byteLength;
      return undefined;
    }
    this.entries.set(key, entry); // most recently used goes last
    return entry.bytes;
  }

  set(key: string, info: Identity, bytes: T): void {
    if (bytes.byteLength > this.maxEntryBytes) return;
    const old = this.entries.get(key);
    if (old) {
      this.entries.delete(key);
      this.bytes -= old.bytes.byteLength;
    }
    this.entries.set(key, { identity: { etag: info.etag, size: info.size }, bytes });
    this.bytes += bytes.byteLength;
    for (const [oldest, entry] of this.entries) {
      if (this.bytes <= this.maxBytes) break;
      this.entries.delete(oldest);
      this.bytes -= entry.bytes.byteLength;
    }
  }
}
