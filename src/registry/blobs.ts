// Blob pulls, deletes and the upload protocol (monolithic, single POST, chunked, mount, cancel).
import type { IncomingMessage } from 'node:http';
import { requireDigest, requireRepositoryName } from '../content/registry.ts';
import type { UploadSession } from '../content/uploads.ts';
import { isDigestAlgorithm } from '../oci/digest.ts';
import { OciError } from '../oci/errors.ts';
import { send, type Headers } from './http.ts';
import type { ApiContext } from './context.ts';

type ByteRange = { start: number; end: number };

/** A single `bytes=` range; multi-range and unparsable headers fall back to the whole blob. */
export function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | undefined {
  const match = header ? /^bytes=(\d*)-(\d*)$/.exec(header.trim()) : null;
  if (!match || (match[1] === '' && match[2] === '')) return undefined;
  if (match[1] === '') {
    const suffix = Number(match[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(match[1]);
  const end = match[2] === '' ? size - 1 : Number(match[2]);
  if (start > end || start >= size) return 'unsatisfiable';
  return { start, end: Math.min(end, size - 1) };
}

export async function getBlob(ctx: ApiContext, name: string, reference: string): Promise<void> {
  const { digest } = requireDigest(reference);
  const located = await ctx.registry.locateBlob(name, digest, ctx.access.canPull);
  if (!located) throw new OciError(404, 'BLOB_UNKNOWN', `blob ${digest} is not in ${name}`, { digest });
  const { info, repository } = located;
  const headers: Headers = {
    'Content-Type': 'application/octet-stream', 'Docker-Content-Digest': digest, ETag: `"${digest}"`,
    'Accept-Ranges': 'bytes', 'Cache-Control': 'max-age=31536000',
    // Blobs are anyone's bytes on this origin: never run them as a script or style in the web UI,
    // whose CSP admits 'self' (browsers run an octet-stream script unless told not to sniff).
    'X-Content-Type-Options': 'nosniff',
  };
  if (ctx.req.headers['if-none-match'] === `"${digest}"`) return send(ctx.res, 304, headers);
  const range = parseRange(ctx.req.headers.range, info.size);
  if (range === 'unsatisfiable') {
    throw new OciError(416, 'RANGE_INVALID', `range ${ctx.req.headers.range} is outside the blob's ${info.size} bytes`, undefined, { 'Content-Range': `bytes */${info.size}` });
  }
  if (ctx.head) {
    // A pusher's HEAD is how clients decide to skip an upload: an old blob (unused garbage, maybe)
    // is renewed so that GC's grace period covers the manifest that follows. A puller's is not:
    // it would let anyone who can read keep garbage forever.
    const renewAfterMs = ctx.limits.blobRenewAfterMs;
    if (renewAfterMs !== undefined && repository === name && info.modifiedMs <= Date.now() - renewAfterMs && ctx.access.canPush(name)
      && !(await ctx.registry.renewBlob(name, digest, renewAfterMs))) {
      throw new OciError(404, 'BLOB_UNKNOWN', `blob ${digest} is not in ${name}`, { digest });
    }
    return send(ctx.res, 200, { ...headers, 'Content-Length': info.size });
  }
  // Clients follow the redirect without our Authorization header: the URL itself is the grant,
  // and it is only made after the access check above.
  const redirectSeconds = ctx.limits.blobRedirectSeconds ?? 0;
  const redirect = redirectSeconds > 0 && info.size > 0 ? await ctx.registry.blobRedirect(repository, digest, redirectSeconds) : undefined;
  if (redirect) return send(ctx.res, 307, { Location: redirect, 'Docker-Content-Digest': digest, 'Cache-Control': 'no-store' });
  if (range) {
    ctx.res.writeHead(206, { ...headers, 'Content-Length': range.end - range.start + 1, 'Content-Range': `bytes ${range.start}-${range.end}/${info.size}`, 'Docker-Distribution-API-Version': 'registry/2.0' });
  } else {
    ctx.res.writeHead(200, { ...headers, 'Content-Length': info.size, 'Docker-Distribution-API-Version': 'registry/2.0' });
  }
  if (info.size === 0) return void ctx.res.end();
  // A client that stops reading would hold the connection and the transfer's buffers (2 MiB) for
  // good: when the socket takes nothing for the body idle time, the connection is cut.
  const idleMs = ctx.limits.bodyIdleTimeoutMs;
  if (idleMs > 0) ctx.res.setTimeout(idleMs, () => ctx.res.destroy());
  // The driver's sendTo: reused buffers and the socket's own flow control, no stream pipeline per
  // pull. A failure mid-body propagates to the server, which cuts the connection (never a short 200).
  await ctx.registry.sendBlob(repository, digest, ctx.res, range ?? { start: 0, end: info.size - 1 });
  ctx.res.end();
}

export async function deleteBlob(ctx: ApiContext, name: string, reference: string): Promise<void> {
  const { digest } = requireDigest(reference);
  await ctx.registry.deleteBlob(name, digest);
  send(ctx.res, 202);
}

function uploadHeaders(name: string, session: UploadSession, ctx: ApiContext): Headers {
  return { Location: `/v2/${name}/blobs/uploads/${session.id}`, 'Docker-Upload-UUID': session.id, ...ctx.uploads.rangeHeader(session) };
}

function blobCreated(ctx: ApiContext, name: string, digest: string): void {
  send(ctx.res, 201, { Location: `/v2/${name}/blobs/${digest}`, 'Docker-Content-Digest': digest });
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return length !== undefined ? length !== '0' : req.headers['transfer-encoding'] !== undefined;
}

function declaredLength(req: IncomingMessage): number | undefined {
  const value = req.headers['content-length'];
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw new OciError(400, 'SIZE_INVALID', 'Content-Length is not a number');
  return Number(value);
}

/** Appends a PATCH or final PUT body, honouring `Content-Range` when the client sends one. */
async function appendBody(ctx: ApiContext, name: string, session: UploadSession): Promise<void> {
  const contentRange = ctx.req.headers['content-range'];
  let expected = declaredLength(ctx.req);
  if (contentRange !== undefined) {
    const match = /^(?:bytes[ =])?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(contentRange.trim());
    const start = match ? Number(match[1]) : NaN;
    const end = match ? Number(match[2]) : NaN;
    if (!match || start !== session.size || end < start) {
      throw new OciError(416, 'RANGE_INVALID', `Content-Range ${contentRange} does not continue the upload at offset ${session.size}`,
        { offset: session.size }, uploadHeaders(name, session, ctx) as Record<string, string>);
    }
    if (expected !== undefined && expected !== end - start + 1) {
      throw new OciError(400, 'SIZE_INVALID', `Content-Length ${expected} does not match Content-Range ${contentRange}`);
    }
    expected = end - start + 1;
  }
  await ctx.uploads.append(session, ctx.req, expected);
}

/** Verifies the finished upload against the digest and moves it into the repository; answers the digest. */
async function finishUpload(ctx: ApiContext, name: string, session: UploadSession, digestParam: string | null): Promise<string> {
  const expected = requireDigest(digestParam, 'digest query parameter');
  const actual = await ctx.uploads.digest(session, expected.algorithm);
  if (actual !== expected.digest) {
    await ctx.uploads.end(session);
    throw new OciError(400, 'DIGEST_INVALID', `uploaded content has digest ${actual}, not ${expected.digest}`, { expected: expected.digest, actual });
  }
  await ctx.registry.storeBlob(name, session.writer, expected.digest, session.size);
  await ctx.uploads.end(session, true);
  return expected.digest;
}

export async function startUpload(ctx: ApiContext, name: string): Promise<void> {
  const query = ctx.url.searchParams;
  const mount = query.get('mount');
  if (mount) {
    const { digest } = requireDigest(mount, 'mount');
    const from = query.get('from') ?? undefined;
    if (from !== undefined) requireRepositoryName(from);
    if (await ctx.registry.mountBlob(name, digest, from, ctx.access.canPull)) return blobCreated(ctx, name, digest);
  }
  const digestParam = query.get('digest');
  const algorithmParam = query.get('digest-algorithm') ?? (digestParam ? digestParam.split(':')[0]! : 'sha256');
  if (!isDigestAlgorithm(algorithmParam)) throw new OciError(400, 'DIGEST_INVALID', `digest algorithm ${JSON.stringify(algorithmParam.slice(0, 50))} is not supported; use sha256 or sha512`);
  if (digestParam !== null && !mount) requireDigest(digestParam, 'digest query parameter');
  const single = digestParam !== null && !mount;
  const session = await ctx.uploads.start(name, algorithmParam, ctx.client, single);
  if (single) {
    // Single-request upload: the whole blob is in this POST.
    // The session lives only as long as this request: whatever happens, it is gone after.
    try {
      await ctx.uploads.append(session, ctx.req, declaredLength(ctx.req));
      return blobCreated(ctx, name, await finishUpload(ctx, name, session, digestParam));
    } catch (err) {
      await ctx.uploads.end(session).catch(() => undefined);
      throw err;
    }
  }
  send(ctx.res, 202, uploadHeaders(name, session, ctx));
}

export async function patchUpload(ctx: ApiContext, name: string, id: string): Promise<void> {
  // Answered after the session's lock is let go: the client's next request may reach another replica.
  const headers = await ctx.uploads.using(name, id, async (session) => {
    await appendBody(ctx, name, session);
    await ctx.uploads.persist(session);
    return uploadHeaders(name, session, ctx);
  });
  send(ctx.res, 202, headers);
}

export async function putUpload(ctx: ApiContext, name: string, id: string): Promise<void> {
  const digestParam = ctx.url.searchParams.get('digest');
  // Answered after the session's lock is let go, like a PATCH: with shared locks the release is a
  // round trip, and the client's next request on this URL would find the finished upload busy.
  const digest = await ctx.uploads.using(name, id, async (session) => {
    // Checked before the body is taken: a PUT refused for its digest parameter appends nothing.
    requireDigest(digestParam, 'digest query parameter');
    if (hasBody(ctx.req)) await appendBody(ctx, name, session);
    return finishUpload(ctx, name, session, digestParam);
  });
  blobCreated(ctx, name, digest);
}

export async function uploadStatus(ctx: ApiContext, name: string, id: string): Promise<void> {
  const headers = await ctx.uploads.using(name, id, async (session) => uploadHeaders(name, session, ctx));
  send(ctx.res, 204, headers);
}

export async function cancelUpload(ctx: ApiContext, name: string, id: string): Promise<void> {
  await ctx.uploads.using(name, id, (session) => ctx.uploads.end(session));
  send(ctx.res, 204);
}
