// Read endpoints for browsing (the web UI and any other client): the namespace tree, tags with
// their details, and the attribute names queries accept. See docs/api.md#browsing.
import { OciError } from '../oci/errors.ts';
import { OCI_INDEX } from '../oci/mediatypes.ts';
import type { TaggedManifest } from '../metadata/store.ts';
import { nextLink, pageParams, sendJson, type Headers } from './http.ts';
import { ALLOW_ALL, spendQueryBudget, type ApiContext } from './context.ts';

const NAMESPACE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*\/?$/;
/** Names of a subtree read for one tree answer; beyond it the answer says `truncated`. */
const MAX_TREE_SCAN = 200_000;
const MAX_TAG_DETAILS_PAGE = 250;
const MAX_ATTRIBUTES = 5000;
/** Configs read for a tag's platform are image configs, small; larger ones are skipped. */
const MAX_CONFIG_BYTES = 256 * 1024;
const INDEX_TYPES = new Set([OCI_INDEX, 'application/vnd.docker.distribution.manifest.list.v2+json']);
const IMAGE_CONFIG_TYPES = new Set(['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json']);

interface TreeEntry {
  name: string;
  /** A repository of this name exists (and may be pulled). */
  repository: boolean;
  /** Visible repositories below it. */
  descendants: number;
}

/**
 * `GET /v2/_trellis/tree?prefix=team/`: the direct entries under a namespace, each a repository,
 * a namespace with repositories below it, or both. Only repositories the caller may pull count, so
 * a namespace holding nothing visible does not appear. `n`/`last` page over entry names.
 */
export async function tree(ctx: ApiContext): Promise<void> {
  spendQueryBudget(ctx, 'tree');
  const params = ctx.url.searchParams;
  const raw = params.get('prefix') ?? '';
  if (raw && !NAMESPACE.test(raw)) throw new OciError(400, 'NAME_INVALID', `prefix must be a namespace such as team/ or team/app, not ${JSON.stringify(raw.slice(0, 100))}`);
  const namespace = raw && !raw.endsWith('/') ? `${raw}/` : raw;
  const page = pageParams(params, ctx.limits.maxListPage);
  const entries = new Map<string, TreeEntry>();
  let after: string | undefined;
  let scanned = 0;
  let truncated = false;
  for (;;) {
    const names = await ctx.registry.repositories({ namespace, after, limit: 1000 });
    for (const name of names) {
      if (!ctx.access.canPull(name)) continue;
      const rest = name.slice(namespace.length);
      const slash = rest.indexOf('/');
      const child = namespace + (slash < 0 ? rest : rest.slice(0, slash));
      const entry = entries.get(child) ?? { name: child, repository: false, descendants: 0 };
      if (slash < 0) entry.repository = true;
      else entry.descendants += 1;
      entries.set(child, entry);
    }
    scanned += names.length;
    if (names.length < 1000) break;
    if (scanned >= MAX_TREE_SCAN) {
      truncated = true;
      break;
    }
    after = names[names.length - 1];
    await new Promise((resolve) => setImmediate(resolve));
  }
  const sorted = [...entries.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const start = page.after ? sorted.findIndex((e) => e.name > page.after!) : 0;
  const slice = start < 0 ? [] : sorted.slice(start, start + page.limit);
  const headers: Headers = {};
  if (start >= 0 && start + slice.length < sorted.length && slice.length) {
    headers.Link = nextLink('/v2/_trellis/tree', { ...(raw ? { prefix: raw } : {}), n: String(page.limit), last: slice[slice.length - 1]!.name });
  }
  sendJson(ctx.res, 200, { prefix: namespace, entries: slice, truncated }, headers, ctx.head);
}

interface TagDetail {
  tag: string;
  digest: string;
  mediaType: string;
  artifactType?: string;
  /** The manifest's own bytes. */
  manifestSize: number;
  /** The manifest, its config and layers (an index: itself and the manifests it lists). */
  size: number;
  pushedAt: string;
  platforms: string[];
}

function platformName(platform: unknown): string | undefined {
  if (!platform || typeof platform !== 'object') return undefined;
  const p = platform as Record<string, unknown>;
  if (typeof p.os !== 'string' || typeof p.architecture !== 'string') return undefined;
  return [p.os, p.architecture, typeof p.variant === 'string' ? p.variant : ''].filter(Boolean).join('/');
}

function sizeOf(descriptor: unknown): number {
  const size = (descriptor as { size?: unknown } | null)?.size;
  return typeof size === 'number' && Number.isSafeInteger(size) && size >= 0 ? size : 0;
}

async function readJson(ctx: ApiContext, repository: string, digest: string, maxBytes: number): Promise<Record<string, unknown> | undefined> {
  const bytes = await ctx.registry.readBlob(repository, digest, maxBytes).catch(() => undefined);
  if (!bytes) return undefined;
  try {
    const value = JSON.parse(bytes.toString('utf8')) as unknown;
    return value && typeof value === 'object' ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

async function tagDetail(ctx: ApiContext, repository: string, entry: TaggedManifest): Promise<TagDetail> {
  const detail: TagDetail = {
    tag: entry.tag, digest: entry.digest, mediaType: entry.mediaType, manifestSize: entry.size, size: entry.size,
    pushedAt: new Date(entry.pushedAt).toISOString(), platforms: [],
  };
  if (entry.artifactType) detail.artifactType = entry.artifactType;
  const manifest = await readJson(ctx, repository, entry.digest, ctx.limits.maxManifestBytes);
  if (!manifest) return detail;
  if (INDEX_TYPES.has(entry.mediaType) || Array.isArray(manifest.manifests)) {
    const children = Array.isArray(manifest.manifests) ? manifest.manifests : [];
    detail.size += children.reduce((sum: number, child) => sum + sizeOf(child), 0);
    detail.platforms = [...new Set(children.map((child) => platformName((child as { platform?: unknown }).platform)).filter((p): p is string => p !== undefined && p !== 'unknown/unknown'))];
    return detail;
  }
  const layers = Array.isArray(manifest.layers) ? manifest.layers : Array.isArray(manifest.blobs) ? manifest.blobs : [];
  detail.size += sizeOf(manifest.config) + layers.reduce((sum: number, layer) => sum + sizeOf(layer), 0);
  const config = manifest.config as { mediaType?: unknown; digest?: unknown; size?: unknown } | undefined;
  if (config && IMAGE_CONFIG_TYPES.has(String(config.mediaType)) && typeof config.digest === 'string' && sizeOf(config) <= MAX_CONFIG_BYTES) {
    const platform = platformName(await readJson(ctx, repository, config.digest, MAX_CONFIG_BYTES));
    if (platform) detail.platforms = [platform];
  }
  return detail;
}

/**
 * `GET /v2/<name>/_trellis/tags?n=&last=`: the tags list with, per tag, its manifest's digest,
 * media and artifact type, size, platforms and when it was pushed. Pull access like the tags list.
 */
export async function tagDetails(ctx: ApiContext, name: string): Promise<void> {
  const page = pageParams(ctx.url.searchParams, MAX_TAG_DETAILS_PAGE, 100);
  const repo = await ctx.registry.repository(name);
  if (!repo) throw new OciError(404, 'NAME_UNKNOWN', `repository ${name} is not known`);
  const entries = page.limit === 0 ? [] : await ctx.registry.metadata.taggedEntries(repo.id, { after: page.after, limit: page.limit + 1 });
  const more = entries.length > page.limit;
  if (more) entries.length = page.limit;
  const tags = await Promise.all(entries.map((entry) => tagDetail(ctx, name, entry)));
  const headers: Headers = {};
  if (more) headers.Link = nextLink(`/v2/${name}/_trellis/tags`, { n: String(page.limit), last: entries[entries.length - 1]!.tag });
  sendJson(ctx.res, 200, { name, tags }, headers, ctx.head);
}

/**
 * `GET /v2/_trellis/attributes[?prefix=annotations__]`: the attribute paths `q_` queries accept,
 * for suggesting them. With access control, only paths of manifests the caller may pull.
 */
export async function attributes(ctx: ApiContext): Promise<void> {
  spendQueryBudget(ctx, 'attribute');
  const prefix = (ctx.url.searchParams.get('prefix') ?? '').toLowerCase();
  const access = ctx.access === ALLOW_ALL ? undefined : { pullable: await ctx.registry.pullableRepositories((repository) => ctx.access.canPull(repository)) };
  const known = await ctx.registry.queries.attributePaths(MAX_ATTRIBUTES, access, prefix);
  const all = [...new Set(['tag', 'pushedat', 'size', ...known])].filter((path) => path.startsWith(prefix)).sort();
  sendJson(ctx.res, 200, { attributes: all }, {}, ctx.head);
}
