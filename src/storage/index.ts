// The storage seam's entry point: the driver interface, and the driver a `storage` setting names.
import { resolve } from 'node:path';
import { FileSystemDriver } from './filesystem.ts';
import type { StorageDriver } from './driver.ts';
import type { Locks } from './mutex.ts';

export type { Locks } from './mutex.ts';
export { KeyedLock } from './mutex.ts';
export type { AppendOptions, ByteRange, ObjectInfo, ObjectWriter, StorageDriver, WriteOptions } from './driver.ts';

/**
 * `storage` is '' (the data directory itself), a path, or `s3://bucket/prefix?endpoint=…&region=…`
 * (credentials from the AWS SDK's usual chain: environment variables, profile, instance role).
 */
export async function openStorage(storage: string, dataDir: string, options: { durable: boolean; locks?: Locks }): Promise<StorageDriver> {
  if (storage.startsWith('s3://')) {
    // Loaded only when named: the AWS SDK is most of what a filesystem registry would load at start.
    const { S3Driver, parseS3Url } = await import('./s3.ts');
    return new S3Driver(parseS3Url(storage), options.locks);
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(storage)) throw new Error(`storage ${JSON.stringify(storage)}: only a path or s3:// is supported`);
  return new FileSystemDriver(storage ? resolve(storage) : dataDir, options);
}

/** Whether blobs of this storage may be served by redirecting clients to it. */
export function canRedirect(driver: StorageDriver): boolean {
  return typeof driver.redirectUrl === 'function';
}
