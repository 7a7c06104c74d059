// S3 driver (any S3-compatible store), on the AWS SDK v3. Object layout under the prefix (see
// docs/deployment.md#object-layout):
//
//   blobs/<alg>/<hex>                   every blob and manifest, stored once for all repositories
//   <repo>/oci-layout, <repo>/index.json  each repository's layout files
//   <repo>/blobs/<alg>/<hex>            empty marker: the repository holds this blob
//   _trellis/refs/<alg>/<hex>/<repo>    empty: who holds a blob (repository name, '/' as '%2F')
//   _trellis/uploads/<id>/...           writers: multipart upload state, the buffered tail
//
// A blob's shared object goes when its last reference does; references and markers are written
// after the shared object and removed before it, so a crash leaves at worst an unreferenced
// object, never a marker without content. Removal and copy of one digest are serialized in
// this process (one replica); across replicas that needs a shared lock (not done here).
import { createHash, randomUUID } from 'node:crypto';
import { PassThrough, Readable, Writable } from 'node:stream';
import {
  S3Client, HeadObjectCommand, GetObjectCommand, PutObjectCommand, DeleteObjectCommand, CopyObjectCommand,
  ListObjectsV2Command, CreateMultipartUploadCommand, UploadPartCommand, UploadPartCopyCommand,
  CompleteMultipartUploadCommand, AbortMultipartUploadCommand, ListMultipartUploadsCommand,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { checkKey, contentAddress, type ByteRange, type ObjectInfo, type ObjectWriter, type StorageDriver, type WriteOptions } from './driver.ts';
import { KeyedLock, type Locks } from './mutex.ts';

const WRITERS = '_trellis/uploads';
const REFS = '_trellis/refs';
const WRITER_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** S3 refuses parts under 5 MiB except the last; 8 MiB parts, growing so 10,000 parts reach 5 TiB. */
const MIN_PART = 8 << 20;
/** The largest object CopyObject copies in one request; larger ones are copied part by part. */
const MAX_SINGLE_COPY = 5 * 1024 ** 3;
const COPY_PART = 512 << 20;
/** Multipart uploads no writer state names, older than this, are aborted at start-up. */
const STALE_MULTIPART_MS = 24 * 3600 * 1000;

export interface S3Location {
  bucket: string;
  /** '' or ending with '/'. */
  prefix: string;
  endpoint?: string;
  region: string;
  forcePathStyle: boolean;
  /** A connection not made within this fails (and is retried): an address that drops packets. */
  connectTimeoutMs: number;
  /**
   * A request whose socket says nothing for this long fails: an endpoint that accepts and never
   * answers (a partition without a reset) would otherwise hold the request, and any lock it holds,
   * for good. Longer than a client's idle cut (bodyIdleTimeoutSeconds), which paces streamed reads.
   */
  idleTimeoutMs: number;
}

const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
const DEFAULT_IDLE_TIMEOUT_MS = 300_000;

function positiveMs(url: URL, name: string, fallback: number): number {
  const text = url.searchParams.get(name);
  if (text === null) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value <= 0 || value > 2 ** 31 - 1) throw new Error(`storage ${name} must be a whole number of milliseconds above 0, not ${JSON.stringify(text)}`);
  return value;
}

/** Parses `s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1[&connectTimeoutMs=…&idleTimeoutMs=…]`. */
export function parseS3Url(text: string): S3Location {
  const url = new URL(text);
  if (url.protocol !== 's3:' || !url.hostname) throw new Error(`storage ${JSON.stringify(text)} is not s3://bucket[/prefix][?endpoint=…&region=…]`);
  const prefix = decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, '');
  if (prefix) checkKey(prefix);
  const endpoint = url.searchParams.get('endpoint') ?? undefined;
  const pathStyle = url.searchParams.get('forcePathStyle');
  return {
    bucket: url.hostname, prefix: prefix ? `${prefix}/` : '', region: url.searchParams.get('region') ?? process.env.AWS_REGION ?? 'us-east-1',
    forcePathStyle: pathStyle !== null ? pathStyle === 'true' : endpoint !== undefined,
    ...(endpoint ? { endpoint } : {}),
    connectTimeoutMs: positiveMs(url, 'connectTimeoutMs', DEFAULT_CONNECT_TIMEOUT_MS),
    idleTimeoutMs: positiveMs(url, 'idleTimeoutMs', DEFAULT_IDLE_TIMEOUT_MS),
  };
}

function status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
}

function isNotFound(err: unknown): boolean {
  const name = (err as Error).name;
  return name === 'NoSuchKey' || name === 'NotFound' || name === 'NoSuchUpload' || status(err) === 404;
}

function isPreconditionFailed(err: unknown): boolean {
  return status(err) === 412 || (err as Error).name === 'PreconditionFailed';
}

function partSizeFor(partNumber: number): number {
  return MIN_PART * (1 + Math.floor((partNumber - 1) / 1000));
}

/** The lock a digest's shared object is copied and removed under. */
function blobLockKey(address: { algorithm: string; hex: string }): string {
  return `blob:${address.algorithm}:${address.hex}`;
}

export class S3Driver implements StorageDriver {
  readonly client: S3Client;
  readonly bucket: string;
  readonly prefix: string;
  readonly description: string;
  /** Serializes the copy and removal of one digest's shared object (across replicas when shared). */
  private readonly digestLock: Locks;

  constructor(location: S3Location, locks: Locks = new KeyedLock()) {
    this.digestLock = locks;
    this.bucket = location.bucket;
    this.prefix = location.prefix;
    this.description = `s3://${location.bucket}/${location.prefix}${location.endpoint ? ` at ${location.endpoint}` : ''}`;
    this.client = new S3Client({
      region: location.region,
      forcePathStyle: location.forcePathStyle,
      ...(location.endpoint ? { endpoint: location.endpoint } : {}),
      // Checksums only where S3 requires them: the registry verifies every blob's digest itself.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // The SDK waits for ever by default.
      requestHandler: { connectionTimeout: location.connectTimeoutMs, socketTimeout: location.idleTimeoutMs },
    });
  }

  /** The bucket key of a storage key; content-addressed keys name their marker. */
  private objectKey(key: string): string {
    checkKey(key);
    return this.prefix + key;
  }

  private sharedKey(address: { algorithm: string; hex: string }): string {
    return `${this.prefix}blobs/${address.algorithm}/${address.hex}`;
  }

  private refKey(address: { repository: string; algorithm: string; hex: string }): string {
    return `${this.prefix}${REFS}/${address.algorithm}/${address.hex}/${encodeURIComponent(address.repository)}`;
  }

  /** Where a key's bytes are: the shared object for content-addressed keys. */
  private dataKey(key: string): string {
    const address = contentAddress(key);
    return address ? this.sharedKey(address) : this.objectKey(key);
  }

  async prepare(): Promise<void> {
    // Multipart uploads a crash left behind without writer state cost storage until aborted.
    const cutoff = Date.now() - STALE_MULTIPART_MS;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      const page = await this.client.send(new ListMultipartUploadsCommand({
        Bucket: this.bucket, Prefix: `${this.prefix}${WRITERS}/`, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker,
      }));
      for (const upload of page.Uploads ?? []) {
        if (!upload.Key || !upload.UploadId || (upload.Initiated && upload.Initiated.getTime() > cutoff)) continue;
        const id = upload.Key.slice(`${this.prefix}${WRITERS}/`.length).split('/')[0]!;
        if (await this.stat(`${WRITERS}/${id}/state.json`)) continue;
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: upload.Key, UploadId: upload.UploadId })).catch(() => undefined);
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (keyMarker);
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  async head(bucketKey: string): Promise<{ size: number; etag: string; modifiedMs: number; metadata: Record<string, string> } | undefined> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: bucketKey }));
      return { size: head.ContentLength ?? 0, etag: head.ETag ?? '', modifiedMs: head.LastModified?.getTime() ?? 0, metadata: head.Metadata ?? {} };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async stat(key: string): Promise<ObjectInfo | undefined> {
    const head = await this.head(this.objectKey(key));
    if (!head) return undefined;
    if (!contentAddress(key)) return { size: head.size, etag: head.etag, modifiedMs: head.modifiedMs };
    // A marker carries its blob's size and ETag, so one request answers.
    return { size: Number(head.metadata.size ?? 0), etag: head.metadata.etag ?? head.etag, modifiedMs: head.modifiedMs };
  }

  private async get(key: string, range?: ByteRange): Promise<Readable> {
    if (contentAddress(key) && !(await this.head(this.objectKey(key)))) throw missing(key);
    if (range && range.end < range.start) return Readable.from([]);
    try {
      const result = await this.client.send(new GetObjectCommand({
        Bucket: this.bucket, Key: this.dataKey(key), ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}),
      }));
      return result.Body as Readable;
    } catch (err) {
      if (isNotFound(err)) throw missing(key);
      throw err;
    }
  }

  readStream(key: string, range?: ByteRange): Readable {
    checkKey(key);
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    this.get(key, range).then((body) => {
      body.on('error', (err) => out.destroy(err));
      out.on('close', () => body.destroy());
      body.pipe(out);
    }, (err: Error) => out.destroy(err));
    return out;
  }

  async sendTo(key: string, destination: Writable, range: ByteRange): Promise<void> {
    const body = await this.get(key, range);
    let sent = 0;
    try {
      for await (const chunk of body) {
        if (destination.destroyed) throw Object.assign(new Error('the destination closed before the transfer ended'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
        sent += (chunk as Buffer).length;
        if (!destination.write(chunk)) await drained(destination);
      }
    } finally {
      body.destroy();
    }
    if (sent !== range.end - range.start + 1) throw new Error(`object ${key} ended after ${sent} bytes of the range`);
  }

  async readFile(key: string, maxBytes: number): Promise<Buffer | undefined> {
    let body: Readable;
    try {
      body = await this.get(key);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of body) {
      size += (chunk as Buffer).length;
      if (size > maxBytes) {
        body.destroy();
        throw new Error(`object ${key} is larger than ${maxBytes} bytes`);
      }
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
  }

  /** PutObject; undefined when `ifAbsent` and the key exists. */
  async put(bucketKey: string, body: Uint8Array, ifAbsent: boolean, metadata?: Record<string, string>): Promise<string | undefined> {
    try {
      const result = await this.client.send(new PutObjectCommand({
        Bucket: this.bucket, Key: bucketKey, Body: body, ContentLength: body.length,
        ...(ifAbsent ? { IfNoneMatch: '*' } : {}), ...(metadata ? { Metadata: metadata } : {}),
      }));
      return result.ETag ?? '';
    } catch (err) {
      if (ifAbsent && isPreconditionFailed(err)) return undefined;
      throw err;
    }
  }

  async writeFile(key: string, data: Uint8Array | string, options: WriteOptions = {}): Promise<ObjectInfo | undefined> {
    const body = typeof data === 'string' ? Buffer.from(data) : data;
    const address = contentAddress(key);
    if (address) {
      return this.digestLock.run(blobLockKey(address), async () => {
        if (options.ifAbsent && (await this.head(this.objectKey(key)))) return undefined;
        const shared = this.sharedKey(address);
        // The reference may go up beside the bytes (a reference without bytes is only a leak);
        // the marker only after both.
        const [put] = await Promise.all([this.put(shared, body, true), this.put(this.refKey(address), Buffer.alloc(0), false)]);
        const etag = put ?? (await this.head(shared))!.etag;
        const info = { size: body.length, etag, modifiedMs: Date.now() };
        await options.beforeCommit?.(info);
        await this.put(this.objectKey(key), Buffer.alloc(0), false, { size: String(info.size), etag: info.etag });
        return info;
      });
    }
    // A single PutObject's ETag is the MD5 of its bytes (without KMS encryption), so the
    // identity is known before the write; the returned ETag is the authority afterwards.
    await options.beforeCommit?.({ size: body.length, etag: `"${createHash('md5').update(body).digest('hex')}"`, modifiedMs: Date.now() });
    const etag = await this.put(this.objectKey(key), body, options.ifAbsent ?? false);
    return etag === undefined ? undefined : { size: body.length, etag, modifiedMs: Date.now() };
  }

  /** Records that a repository holds a blob whose shared object exists: reference, then marker. */
  private async link(key: string, blob: { size: number; etag: string }): Promise<void> {
    const address = contentAddress(key)!;
    await this.put(this.refKey(address), Buffer.alloc(0), false);
    await this.put(this.objectKey(key), Buffer.alloc(0), false, { size: String(blob.size), etag: blob.etag });
  }

  async createWriter(id: string = randomUUID()): Promise<ObjectWriter> {
    if (!WRITER_ID.test(id)) throw new Error(`writer id ${JSON.stringify(id)} is not a UUID`);
    return new S3Writer(this, id, { parts: [], tailSize: 0 }, [Buffer.alloc(0)]);
  }

  async resumeWriter(id: string): Promise<ObjectWriter | undefined> {
    if (!WRITER_ID.test(id)) return undefined;
    const bytes = await this.readFile(`${WRITERS}/${id}/state.json`, 1 << 20);
    return bytes && new S3Writer(this, id, JSON.parse(bytes.toString('utf8')) as WriterState, undefined);
  }

  async listWriters(): Promise<{ id: string; modifiedMs: number }[]> {
    const found: { id: string; modifiedMs: number }[] = [];
    for (const entry of await this.list(WRITERS)) {
      if (!entry.dir || !WRITER_ID.test(entry.name)) continue;
      const info = await this.stat(`${WRITERS}/${entry.name}/state.json`);
      if (info) found.push({ id: entry.name, modifiedMs: info.modifiedMs });
    }
    return found;
  }

  /** Server-side copy between bucket keys, part by part above CopyObject's 5 GiB limit. */
  async copyObject(fromBucketKey: string, toBucketKey: string, size: number, ifAbsent = false): Promise<boolean> {
    const source = `${this.bucket}/${encodeURIComponent(fromBucketKey).replace(/%2F/g, '/')}`;
    if (size <= MAX_SINGLE_COPY) {
      try {
        await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: toBucketKey, CopySource: source, ...(ifAbsent ? { IfNoneMatch: '*' } : {}) }));
        return true;
      } catch (err) {
        if (ifAbsent && isPreconditionFailed(err)) return false;
        throw err;
      }
    }
    const { UploadId } = await this.client.send(new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: toBucketKey }));
    try {
      const parts: { PartNumber: number; ETag: string }[] = [];
      for (let start = 0, n = 1; start < size; start += COPY_PART, n++) {
        const end = Math.min(size, start + COPY_PART) - 1;
        const part = await this.client.send(new UploadPartCopyCommand({
          Bucket: this.bucket, Key: toBucketKey, UploadId, PartNumber: n, CopySource: source, CopySourceRange: `bytes=${start}-${end}`,
        }));
        parts.push({ PartNumber: n, ETag: part.CopyPartResult!.ETag! });
      }
      return await this.completeMultipart(toBucketKey, UploadId!, parts, ifAbsent);
    } catch (err) {
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: toBucketKey, UploadId })).catch(() => undefined);
      throw err;
    }
  }

  async completeMultipart(bucketKey: string, uploadId: string, parts: { PartNumber: number; ETag: string }[], ifAbsent = false): Promise<boolean> {
    try {
      await this.client.send(new CompleteMultipartUploadCommand({
        Bucket: this.bucket, Key: bucketKey, UploadId: uploadId, MultipartUpload: { Parts: parts }, ...(ifAbsent ? { IfNoneMatch: '*' } : {}),
      }));
      return true;
    } catch (err) {
      if (ifAbsent && isPreconditionFailed(err)) {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: bucketKey, UploadId: uploadId })).catch(() => undefined);
        return false;
      }
      throw err;
    }
  }

  /**
   * Makes `key` hold the bytes of the bucket object `fromBucketKey` (a writer's finished data).
   * Content-addressed keys copy into the shared object only when it is not there yet.
   */
  async placeObject(fromBucketKey: string, size: number, key: string, ifAbsent: boolean): Promise<boolean> {
    const address = contentAddress(key);
    if (!address) return this.copyObject(fromBucketKey, this.objectKey(key), size, ifAbsent);
    return this.digestLock.run(blobLockKey(address), async () => {
      const stored = await this.stat(key);
      if (stored) {
        if (ifAbsent) return false;
        // Stored again now: the rewritten marker's LastModified says so (GC's grace period).
        await this.link(key, stored);
        return true;
      }
      const shared = this.sharedKey(address);
      let head = await this.head(shared);
      if (!head) {
        await this.copyObject(fromBucketKey, shared, size, true);
        head = (await this.head(shared))!;
      }
      await this.link(key, head);
      return true;
    });
  }

  async copy(fromKey: string, toKey: string): Promise<boolean> {
    checkKey(fromKey);
    checkKey(toKey);
    const from = contentAddress(fromKey);
    const to = contentAddress(toKey);
    if (from && to && from.algorithm === to.algorithm && from.hex === to.hex) {
      // The same content in another repository: only a reference and a marker, no bytes.
      return this.digestLock.run(blobLockKey(to), async () => {
        const source = await this.stat(fromKey);
        if (!source) return false;
        // Written even when the marker exists: its LastModified is the copy's age, by which GC's
        // grace period protects a just-acknowledged upload.
        await this.link(toKey, source);
        return true;
      });
    }
    const source = await this.stat(fromKey);
    if (!source) return false;
    return this.placeObject(this.dataKey(fromKey), source.size, toKey, false);
  }

  async remove(key: string): Promise<boolean> {
    const address = contentAddress(key);
    if (!address) return this.delete(this.objectKey(key));
    return this.digestLock.run(blobLockKey(address), async () => {
      const existed = await this.delete(this.objectKey(key));
      await this.delete(this.refKey(address));
      const refs = await this.client.send(new ListObjectsV2Command({
        Bucket: this.bucket, Prefix: `${this.prefix}${REFS}/${address.algorithm}/${address.hex}/`, MaxKeys: 1,
      }));
      if (!refs.KeyCount) await this.delete(this.sharedKey(address));
      return existed;
    });
  }

  /** DeleteObject; false when the object was not there. */
  async delete(bucketKey: string): Promise<boolean> {
    const existed = (await this.head(bucketKey)) !== undefined;
    if (existed) await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: bucketKey }));
    return existed;
  }

  async createFolder(prefix: string): Promise<void> {
    checkKey(prefix);
  }

  async list(prefix: string): Promise<{ name: string; dir: boolean }[]> {
    const base = prefix === '' ? this.prefix : `${this.objectKey(prefix)}/`;
    const found: { name: string; dir: boolean }[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: base, Delimiter: '/', ContinuationToken: token }));
      for (const p of page.CommonPrefixes ?? []) if (p.Prefix) found.push({ name: p.Prefix.slice(base.length, -1), dir: true });
      for (const o of page.Contents ?? []) if (o.Key && o.Key !== base) found.push({ name: o.Key.slice(base.length), dir: false });
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return found;
  }

  async redirectUrl(key: string, expiresSeconds: number): Promise<string | undefined> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.dataKey(key) }), { expiresIn: expiresSeconds });
  }

  writerKey(id: string, file: string): string {
    return `${this.prefix}${WRITERS}/${id}/${file}`;
  }
}

interface WriterState {
  uploadId?: string;
  parts: { PartNumber: number; ETag: string; size: number }[];
  /** Bytes after the last part: in memory, and in a tail object after a checkpoint. */
  tailSize: number;
  /**
   * The writer's size when its tail was saved: the tail object is `tail.<tailAt>`, so a checkpoint
   * never overwrites the tail the saved state names (a failed state write leaves both intact).
   * Absent in states written before it: the tail is then `tail`.
   */
  tailAt?: number;
  /** Set once the parts were completed into `data` (a read needs one readable object). */
  sealed?: boolean;
}

/**
 * A writer on S3: full parts go to a multipart upload as they fill; the bytes after the last
 * part (under one part size) stay in memory and go to a `tail` object at a checkpoint, so a
 * chunked upload of any size needs at most one part in memory.
 */
class S3Writer implements ObjectWriter {
  readonly id: string;
  private readonly driver: S3Driver;
  private state: WriterState;
  /** The tail's bytes, or undefined when only the `tail` object holds them. */
  private tail: Buffer[] | undefined;
  private tailDirty = false;
  private wasRead = false;
  /** Whether anything of this writer may be in the bucket (state, tail, parts, data). */
  private inBucket: boolean;
  /** The tail object the saved state names, if any: removed once a checkpoint names another. */
  private savedTail: string | undefined;

  constructor(driver: S3Driver, id: string, state: WriterState, tail: Buffer[] | undefined) {
    this.driver = driver;
    this.id = id;
    this.state = state;
    this.tail = tail;
    this.inBucket = tail === undefined;
    this.savedTail = tail === undefined && state.tailSize > 0 ? tailName(state) : undefined;
  }

  get size(): number {
    return this.state.parts.reduce((n, p) => n + p.size, 0) + this.state.tailSize;
  }

  private async loadTail(): Promise<Buffer[]> {
    if (this.tail) return this.tail;
    if (this.state.tailSize === 0) return (this.tail = []);
    const bytes = await this.driver.readFile(`${WRITERS}/${this.id}/${tailName(this.state)}`, this.state.tailSize);
    if (!bytes || bytes.length !== this.state.tailSize) throw new Error(`upload ${this.id} lost its buffered bytes`);
    return (this.tail = [bytes]);
  }

  append(): Writable {
    if (this.wasRead || this.state.sealed) throw new Error(`writer ${this.id} was read and takes no more bytes`);
    const writer = this;
    const { driver } = this;
    const client = driver.client;
    const dataKey = driver.writerKey(this.id, 'data');
    let pending: Buffer[] = [];
    let pendingSize = 0;
    let uploadId = this.state.uploadId;
    let createdUpload = false;
    const newParts: WriterState['parts'] = [];
    let finished = false;
    const uploadPart = async (size: number) => {
      const all = Buffer.concat(pending);
      const body = all.subarray(0, size);
      if (!uploadId) {
        writer.inBucket = true;
        uploadId = (await client.send(new CreateMultipartUploadCommand({ Bucket: driver.bucket, Key: dataKey }))).UploadId!;
        createdUpload = true;
      }
      const PartNumber = writer.state.parts.length + newParts.length + 1;
      const result = await client.send(new UploadPartCommand({ Bucket: driver.bucket, Key: dataKey, UploadId: uploadId, PartNumber, Body: body, ContentLength: body.length }));
      newParts.push({ PartNumber, ETag: result.ETag!, size: body.length });
      pending = all.length > size ? [Buffer.from(all.subarray(size))] : [];
      pendingSize = all.length - size;
    };
    const nextPartSize = () => partSizeFor(writer.state.parts.length + newParts.length + 1);
    return new Writable({
      highWaterMark: 1 << 20,
      construct(callback) {
        writer.loadTail().then((tail) => {
          pending = [...tail];
          pendingSize = writer.state.tailSize;
          callback();
        }, callback);
      },
      write(chunk: Buffer, _encoding, callback) {
        pending.push(chunk);
        pendingSize += chunk.length;
        if (pendingSize < nextPartSize()) return callback();
        (async () => {
          while (pendingSize >= nextPartSize()) await uploadPart(nextPartSize());
        })().then(() => callback(), callback);
      },
      final(callback) {
        finished = true;
        writer.state = { ...writer.state, parts: [...writer.state.parts, ...newParts], tailSize: pendingSize, ...(uploadId ? { uploadId } : {}) };
        writer.tail = pending;
        writer.tailDirty = true;
        callback();
      },
      destroy(error, callback) {
        if (finished || !createdUpload) return callback(error);
        // The parts this append uploaded are unreferenced: its own multipart upload goes.
        client.send(new AbortMultipartUploadCommand({ Bucket: driver.bucket, Key: dataKey, UploadId: uploadId })).then(() => callback(error), () => callback(error));
      },
    });
  }

  async checkpoint(): Promise<void> {
    if (!this.tailDirty && (await this.driver.head(this.driver.writerKey(this.id, 'state.json')))) return;
    const tail = await this.loadTail();
    this.inBucket = true;
    // The new tail goes under a name of its own, then the state that names it: until that state is
    // written, the saved state and its tail still describe the writer before this append.
    const state: WriterState = { ...this.state, tailAt: this.size };
    if (state.tailSize > 0) await this.driver.put(this.driver.writerKey(this.id, tailName(state)), Buffer.concat(tail), false);
    await this.driver.put(this.driver.writerKey(this.id, 'state.json'), Buffer.from(JSON.stringify(state)), false);
    this.state = state;
    this.tailDirty = false;
    const previous = this.savedTail;
    this.savedTail = state.tailSize > 0 ? tailName(state) : undefined;
    if (previous && previous !== this.savedTail) await this.driver.delete(this.driver.writerKey(this.id, previous)).catch(() => undefined);
    this.tail = undefined; // an idle session holds no memory; the next append reads the tail back
  }

  /** Completes the multipart upload (the tail as its last part) into `data`. */
  private async seal(): Promise<void> {
    if (this.state.sealed || !this.state.uploadId) return;
    const { driver } = this;
    const dataKey = driver.writerKey(this.id, 'data');
    const parts = this.state.parts.map(({ PartNumber, ETag }) => ({ PartNumber, ETag }));
    const size = this.size;
    try {
      if (this.state.tailSize > 0) {
        const body = Buffer.concat(await this.loadTail());
        const PartNumber = parts.length + 1;
        const result = await driver.client.send(new UploadPartCommand({ Bucket: driver.bucket, Key: dataKey, UploadId: this.state.uploadId, PartNumber, Body: body, ContentLength: body.length }));
        parts.push({ PartNumber, ETag: result.ETag! });
      }
      await driver.completeMultipart(dataKey, this.state.uploadId, parts);
    } catch (err) {
      // Completed by an earlier attempt that could not note it (a failed state write, a replica
      // killed after the completion): `data` is this writer's, and only it writes that key.
      if (!isNotFound(err) || (await driver.head(dataKey))?.size !== size) throw err;
    }
    this.state = { parts: [{ PartNumber: 0, ETag: '', size }], tailSize: 0, sealed: true };
    this.tail = [];
    // Noted, so a writer resumed after a restart finds its data.
    await driver.put(driver.writerKey(this.id, 'state.json'), Buffer.from(JSON.stringify(this.state)), false);
  }

  read(): Readable {
    const writer = this;
    this.wasRead = true;
    return Readable.from((async function* () {
      if (!writer.state.uploadId && !writer.state.sealed) {
        yield* await writer.loadTail();
        return;
      }
      await writer.seal();
      yield* writer.driver.readStream(`${WRITERS}/${writer.id}/data`);
    })());
  }

  async commit(key: string, options: { ifAbsent?: boolean } = {}): Promise<boolean> {
    const ifAbsent = options.ifAbsent ?? false;
    let placed: boolean;
    if (!this.state.uploadId && !this.state.sealed) {
      placed = (await this.driver.writeFile(key, Buffer.concat(await this.loadTail()), { ifAbsent })) !== undefined;
    } else {
      await this.seal();
      placed = await this.driver.placeObject(this.driver.writerKey(this.id, 'data'), this.size, key, ifAbsent);
    }
    await this.cleanUp();
    return placed;
  }

  async cancel(): Promise<void> {
    if (this.state.uploadId && !this.state.sealed) {
      await this.driver.client.send(new AbortMultipartUploadCommand({
        Bucket: this.driver.bucket, Key: this.driver.writerKey(this.id, 'data'), UploadId: this.state.uploadId,
      })).catch((err) => {
        if (!isNotFound(err)) throw err;
      });
    }
    await this.cleanUp();
  }

  private async cleanUp(): Promise<void> {
    // A writer that never left memory (a small monolithic upload) has nothing to delete.
    if (this.inBucket) {
      // Tails a failed checkpoint left under other names go too; the state last, so a writer
      // cleaned up half way is still found and cleaned up again.
      const files = (await this.driver.list(`${WRITERS}/${this.id}`)).filter((e) => !e.dir && e.name !== 'state.json').map((e) => e.name);
      await Promise.all([...new Set(['data', ...files])].map((file) => this.driver.delete(this.driver.writerKey(this.id, file))));
      await this.driver.delete(this.driver.writerKey(this.id, 'state.json'));
    }
    this.inBucket = false;
    this.tail = [];
    this.state = { parts: [], tailSize: 0 };
  }
}

/** The object a state's tail is saved in. */
function tailName(state: WriterState): string {
  return state.tailAt === undefined ? 'tail' : `tail.${state.tailAt}`;
}

function missing(key: string): Error {
  return Object.assign(new Error(`object ${key} does not exist`), { code: 'ENOENT' });
}

function drained(stream: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      stream.off('drain', onDrain);
      stream.off('close', onClose);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onClose = () => {
      cleanup();
      reject(Object.assign(new Error('the destination closed before the transfer ended'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }));
    };
    stream.on('drain', onDrain);
    stream.on('close', onClose);
  });
}
