// Manifest pull, push and delete.
import { OciError } from '../oci/errors.ts';
import { bareMediaType } from '../oci/mediatypes.ts';
import { isValidTag } from '../oci/names.ts';
import { readBody, send, type Headers } from './http.ts';
import type { ApiContext } from './context.ts';

/** Whether an `Accept` header admits a media type (absent header and wildcards admit all). */
export function accepts(header: string | undefined, mediaType: string): boolean {
  if (!header || !header.trim()) return true;
  const [type] = mediaType.split('/');
  return header.split(',').some((part) => {
    const value = bareMediaType(part);
    return value === mediaType || value === '*/*' || value === `${type}/*`;
  });
}

export async function getManifest(ctx: ApiContext, name: string, reference: string): Promise<void> {
  const stored = await ctx.registry.resolveManifest(name, reference, ctx.access.canPull);
  const { record } = stored;
  // A pull by digest asks for exact content, so it is served whatever the Accept header says.
  const acceptHeader = ctx.req.headers.accept;
  if (isValidTag(reference) && !accepts(acceptHeader, record.mediaType)) {
    throw new OciError(404, 'MANIFEST_UNKNOWN', `manifest ${reference} is a ${record.mediaType}, which the Accept header does not admit`, { mediaType: record.mediaType });
  }
  const headers: Headers = {
    'Content-Type': record.mediaType, 'Content-Length': record.size, 'Docker-Content-Digest': record.digest, ETag: `"${record.digest}"`,
  };
  if (ctx.req.headers['if-none-match'] === `"${record.digest}"`) return send(ctx.res, 304, headers);
  if (ctx.head) return send(ctx.res, 200, headers);
  // Manifests are small: one read (none from the cache), then the head and body in one write; a
  // manifest gone since the resolve is still a clean 404, not a cut-off 200.
  const bytes = await ctx.registry.manifestBytes(stored);
  if (!bytes) throw new OciError(404, 'MANIFEST_UNKNOWN', `manifest ${reference} is not in ${name}`);
  ctx.res.writeHead(200, { ...headers, 'Docker-Distribution-API-Version': 'registry/2.0' });
  ctx.res.end(bytes);
}

export async function putManifest(ctx: ApiContext, name: string, reference: string): Promise<void> {
  const body = await readBody(ctx.req, ctx.limits.maxManifestBytes, 'manifest', ctx.limits.bodyIdleTimeoutMs);
  const tagParams = ctx.url.searchParams.getAll('tag');
  const result = await ctx.registry.putManifest(name, reference, body, bareMediaType(ctx.req.headers['content-type']), tagParams, ctx.access.canPull);
  const headers: Headers = { Location: `/v2/${name}/manifests/${result.digest}`, 'Docker-Content-Digest': result.digest };
  if (result.subject) headers['OCI-Subject'] = result.subject;
  if (tagParams.length) headers['OCI-Tag'] = result.tags;
  send(ctx.res, 201, headers);
}

export async function deleteManifest(ctx: ApiContext, name: string, reference: string): Promise<void> {
  await ctx.registry.deleteManifest(name, reference, (repository) => ctx.access.canPull(repository));
  send(ctx.res, 202);
}
