// The registry client: Node's fetch (undici) with its default keep-alive agent.
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar';
export const OCI_EMPTY = 'application/vnd.oci.empty.v1+json';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export class HttpFailure extends Error {
  readonly status: number;
  constructor(what: string, status: number, body: string) {
    super(`${what}: HTTP ${status} ${body.slice(0, 300)}`);
    this.status = status;
  }
}

export function sha256(bytes: Buffer | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** Starts an upload session; returns the absolute upload URL. */
async function startUpload(base: string, repo: string, signal?: AbortSignal): Promise<URL> {
  const res = await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: { 'Content-Length': '0' }, signal: signal ?? null });
  const text = await res.text();
  if (res.status !== 202) throw new HttpFailure(`POST /v2/${repo}/blobs/uploads/`, res.status, text);
  const location = res.headers.get('location');
  if (!location) throw new Error('upload POST answered 202 without Location');
  return new URL(location, base);
}

/** POST, then PUT ?digest= with the whole body: the monolithic upload of the spec. */
export async function pushBlob(base: string, repo: string, body: Buffer, digest: string): Promise<void> {
  const url = await startUpload(base, repo);
  url.searchParams.set('digest', digest);
  const res = await fetch(url, { method: 'PUT', body, headers: { 'Content-Type': 'application/octet-stream' } });
  const text = await res.text();
  if (res.status !== 201) throw new HttpFailure(`PUT ${url.pathname}`, res.status, text);
}

/**
 * A file as a pull-driven web stream of 1 MiB reads. It is the fastest body undici's fetch takes
 * here: `Readable.toWeb(createReadStream())` costs the client about a third of its throughput.
 */
export async function fileStream(file: string, chunkBytes = 1 << 20): Promise<ReadableStream<Uint8Array>> {
  const handle = await open(file, 'r');
  let closed = false;
  const close = async () => {
    if (!closed) {
      closed = true;
      await handle.close();
    }
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const buffer = Buffer.allocUnsafe(chunkBytes);
      const { bytesRead } = await handle.read(buffer, 0, chunkBytes, null);
      if (bytesRead === 0) {
        await close();
        controller.close();
        return;
      }
      controller.enqueue(buffer.subarray(0, bytesRead));
    },
    cancel: close,
  });
}

/** Monolithic upload with the body streamed from a file (never buffered whole). */
export async function pushBlobFromFile(base: string, repo: string, file: string, size: number, digest: string, signal: AbortSignal): Promise<void> {
  const url = await startUpload(base, repo, signal);
  url.searchParams.set('digest', digest);
  const res = await fetch(url, {
    method: 'PUT', body: await fileStream(file), duplex: 'half', signal,
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) },
  } as RequestInit);
  const text = await res.text();
  if (res.status !== 201) throw new HttpFailure(`PUT ${url.pathname}`, res.status, text);
}

/** GETs a blob and drops the bytes; returns how many arrived. */
export async function pullBlob(base: string, repo: string, digest: string, signal: AbortSignal): Promise<number> {
  const res = await fetch(`${base}/v2/${repo}/blobs/${digest}`, { signal });
  if (res.status !== 200 || !res.body) throw new HttpFailure(`GET /v2/${repo}/blobs/${digest}`, res.status, await res.text());
  let received = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    received += value.byteLength;
  }
  return received;
}

export interface PutResult {
  digest: string | null;
  subject: string | null;
}

export async function putManifest(base: string, repo: string, reference: string, body: Buffer, mediaType = OCI_MANIFEST): Promise<PutResult> {
  const res = await fetch(`${base}/v2/${repo}/manifests/${reference}`, { method: 'PUT', body, headers: { 'Content-Type': mediaType } });
  const text = await res.text();
  if (res.status !== 201) throw new HttpFailure(`PUT /v2/${repo}/manifests/${reference}`, res.status, text);
  return { digest: res.headers.get('docker-content-digest'), subject: res.headers.get('oci-subject') };
}

/** Uploads a small blob and returns its descriptor. */
export async function pushSmallBlob(base: string, repo: string, bytes: Buffer, mediaType: string): Promise<Descriptor> {
  const digest = sha256(bytes);
  await pushBlob(base, repo, bytes, digest);
  return { mediaType, digest, size: bytes.length };
}

export interface ReferrersWalk {
  status: number;
  pages: number;
  manifests: number;
  ms: number;
  bytes: number;
  error?: string;
}

/** GET /v2/<repo>/referrers/<digest>, following `Link: <...>; rel="next"` to the end. */
export async function walkReferrers(base: string, repo: string, subject: string, timeoutMs: number): Promise<ReferrersWalk> {
  const started = performance.now();
  const deadline = started + timeoutMs;
  let next: string | null = `/v2/${repo}/referrers/${subject}`;
  const walk: ReferrersWalk = { status: 0, pages: 0, manifests: 0, ms: 0, bytes: 0 };
  while (next) {
    if (performance.now() > deadline) {
      walk.error = `stopped after ${timeoutMs} ms`;
      break;
    }
    const res: Response = await fetch(new URL(next, base), { headers: { Accept: OCI_INDEX }, signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.text();
    walk.status = res.status;
    walk.bytes += Buffer.byteLength(text);
    if (res.status !== 200) {
      walk.error = `HTTP ${res.status} ${text.slice(0, 200)}`;
      break;
    }
    walk.pages++;
    walk.manifests += (JSON.parse(text) as { manifests: unknown[] }).manifests.length;
    const link = res.headers.get('link');
    next = link ? (/<([^>]+)>\s*;\s*rel="?next"?/.exec(link)?.[1] ?? null) : null;
  }
  walk.ms = performance.now() - started;
  return walk;
}

export interface PoolResult {
  /** Requests started (indices 0..started-1 have a latency or an error). */
  started: number;
  completed: number;
  errors: number;
  firstErrors: string[];
  wallMs: number;
  /** Latency of request i, in ms, by start order; NaN for a failed request. */
  latencies: Float64Array;
  stoppedBy: 'count' | 'time' | 'errors';
}

/**
 * Runs `task(i)` for i = 0..count-1 with `concurrency` workers, each starting the next index as
 * soon as its last request ends. Stops at the count, the time limit or too many errors.
 */
export async function runPool(options: {
  count: number;
  concurrency: number;
  timeLimitMs: number;
  maxErrors?: number;
  task: (i: number) => Promise<void>;
  onProgress?: (done: number) => void;
}): Promise<PoolResult> {
  const latencies = new Float64Array(options.count).fill(NaN);
  const maxErrors = options.maxErrors ?? 100;
  const result: PoolResult = { started: 0, completed: 0, errors: 0, firstErrors: [], wallMs: 0, latencies, stoppedBy: 'count' };
  const started = performance.now();
  const deadline = started + options.timeLimitMs;
  let next = 0;
  const worker = async () => {
    while (next < options.count) {
      if (performance.now() > deadline) {
        result.stoppedBy = 'time';
        return;
      }
      if (result.errors > maxErrors) {
        result.stoppedBy = 'errors';
        return;
      }
      const i = next++;
      result.started = next;
      const t0 = performance.now();
      try {
        await options.task(i);
        latencies[i] = performance.now() - t0;
        result.completed++;
        options.onProgress?.(result.completed);
      } catch (err) {
        result.errors++;
        if (result.firstErrors.length < 10) result.firstErrors.push(`#${i}: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  result.wallMs = performance.now() - started;
  return result;
}

/** A file's byte range as a pull-driven web stream (1 MiB reads), for PATCH bodies. */
async function fileRangeStream(file: string, start: number, length: number, chunkBytes = 1 << 20): Promise<ReadableStream<Uint8Array>> {
  const handle = await open(file, 'r');
  let position = start;
  const end = start + length;
  let closed = false;
  const close = async () => {
    if (!closed) {
      closed = true;
      await handle.close();
    }
  };
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const want = Math.min(chunkBytes, end - position);
      if (want <= 0) {
        await close();
        controller.close();
        return;
      }
      const buffer = Buffer.allocUnsafe(want);
      const { bytesRead } = await handle.read(buffer, 0, want, position);
      if (bytesRead === 0) {
        await close();
        controller.close();
        return;
      }
      position += bytesRead;
      controller.enqueue(buffer.subarray(0, bytesRead));
    },
    cancel: close,
  });
}

/** POST, then `chunks` PATCHes with Content-Range (each streamed from the file), then PUT ?digest=. */
export async function pushBlobChunked(base: string, repo: string, file: string, size: number, digest: string, chunks: number, signal: AbortSignal): Promise<void> {
  let url = await startUpload(base, repo, signal);
  const chunkBytes = Math.ceil(size / chunks);
  for (let start = 0; start < size; start += chunkBytes) {
    const length = Math.min(chunkBytes, size - start);
    const res = await fetch(url, {
      method: 'PATCH', body: await fileRangeStream(file, start, length), duplex: 'half', signal,
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(length), 'Content-Range': `${start}-${start + length - 1}` },
    } as RequestInit);
    const text = await res.text();
    if (res.status !== 202) throw new HttpFailure(`PATCH ${url.pathname}`, res.status, text);
    const location = res.headers.get('location');
    if (!location) throw new Error('PATCH answered 202 without Location');
    url = new URL(location, base);
  }
  url.searchParams.set('digest', digest);
  const res = await fetch(url, { method: 'PUT', headers: { 'Content-Length': '0' }, signal });
  const text = await res.text();
  if (res.status !== 201) throw new HttpFailure(`PUT ${url.pathname}`, res.status, text);
}

/** GETs a manifest and drops it; returns its length. */
export async function getManifest(base: string, repo: string, reference: string): Promise<number> {
  const res = await fetch(`${base}/v2/${repo}/manifests/${reference}`, { headers: { Accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } });
  const body = await res.arrayBuffer();
  if (res.status !== 200) throw new HttpFailure(`GET /v2/${repo}/manifests/${reference}`, res.status, Buffer.from(body).toString());
  return body.byteLength;
}
