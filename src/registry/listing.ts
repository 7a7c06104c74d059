// Listings: tags, the catalog, referrers, and the extension discovery document.
import { requireDigest } from '../content/registry.ts';
import { isValidTag } from '../oci/names.ts';
import { OciError } from '../oci/errors.ts';
import { OCI_INDEX } from '../oci/mediatypes.ts';
import { fitPage, indexJson, nextLink, pageParams, send, sendJson, type Headers } from './http.ts';
import type { ApiContext } from './context.ts';
import { queriedReferrers } from './query.ts';
import { hasQuery } from '../query/language.ts';

/** Lists a page, fetching one extra item to learn whether a `Link` to the next page is due. */
function paged<T>(ctx: ApiContext, path: string, fetch: (page: { after?: string; limit: number }) => T[] | Promise<T[]>, key: (item: T) => string, extra: Record<string, string> = {}) {
  const page = pageParams(ctx.url.searchParams, ctx.limits.maxListPage);
  return (async () => {
    if (page.limit === 0) return { items: [] as T[], headers: {} as Headers };
    const request: { after?: string; limit: number } = { limit: page.limit + 1 };
    if (page.after) request.after = page.after;
    const items = await fetch(request);
    const headers: Headers = {};
    if (items.length > page.limit) {
      items.length = page.limit;
      headers.Link = nextLink(path, { ...extra, n: String(page.limit), last: key(items[items.length - 1]!) });
    }
    return { items, headers };
  })();
}

export async function listTags(ctx: ApiContext, name: string): Promise<void> {
  const { items, headers } = await paged(ctx, `/v2/${name}/tags/list`, (page) => ctx.registry.tags(name, page), (t) => t);
  sendJson(ctx.res, 200, { name, tags: items }, headers, ctx.head);
}

/**
 * The catalog; `?prefix=team/` keeps the repositories under a namespace, `&children=true` only its
 * direct children (Trellis additions; without them this is the spec's catalog).
 */
export async function catalog(ctx: ApiContext): Promise<void> {
  const params = ctx.url.searchParams;
  const rawPrefix = params.get('prefix') ?? '';
  if (rawPrefix && !/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*\/?$/.test(rawPrefix)) {
    throw new OciError(400, 'NAME_INVALID', `prefix must be a repository namespace such as team/ or team/app, not ${JSON.stringify(rawPrefix.slice(0, 100))}`);
  }
  const namespace = rawPrefix && !rawPrefix.endsWith('/') ? `${rawPrefix}/` : rawPrefix;
  const childrenOnly = params.get('children') === 'true';
  const extra: Record<string, string> = {};
  if (rawPrefix) extra.prefix = rawPrefix;
  if (childrenOnly) extra.children = 'true';
  const { items, headers } = await paged(ctx, '/v2/_catalog', (page) => visibleRepositories(ctx, page, { namespace, childrenOnly }), (r) => r, extra);
  sendJson(ctx.res, 200, { repositories: items }, headers, ctx.head);
}

/**
 * A page of the repositories the caller may pull: hidden ones are dropped before the page is cut,
 * so sizes and cursors only involve visible names. Other requests run between batches.
 */
async function visibleRepositories(ctx: ApiContext, page: { after?: string; limit: number }, scope: { namespace: string; childrenOnly: boolean }): Promise<string[]> {
  const visible: string[] = [];
  const batch = Math.max(page.limit, 100);
  let after = page.after;
  for (;;) {
    const names = await ctx.registry.repositories({ ...scope, after, limit: batch });
    for (const name of names) {
      if (!ctx.access.canPull(name)) continue;
      visible.push(name);
      if (visible.length >= page.limit) return visible;
    }
    if (names.length < batch) return visible;
    after = names[names.length - 1];
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * `GET /v2/<name>/manifests/<tag or digest>/references`: Proposal F's spelling of the referrers API,
 * by tag or digest, with the same q_ filters. A tag must exist; a digest need not (an empty list).
 */
export async function manifestReferences(ctx: ApiContext, name: string, reference: string): Promise<void> {
  const digest = isValidTag(reference)
    ? (await ctx.registry.resolveManifest(name, reference, ctx.access.canPull)).record.digest
    : requireDigest(reference, 'reference').digest;
  return referrers(ctx, name, digest);
}

export async function referrers(ctx: ApiContext, name: string, reference: string): Promise<void> {
  if (hasQuery(ctx.url.searchParams)) return queriedReferrers(ctx, name, reference);
  const { digest } = requireDigest(reference);
  const query = ctx.url.searchParams;
  const artifactTypes = query.getAll('artifactType').filter(Boolean);
  // Without `n` a page is as large as the response budget allows: one round trip for thousands of
  // referrers. The row cap only bounds what is read to fill it (no descriptor is under 100 bytes).
  const page = pageParams(query, ctx.limits.maxListPage, Math.ceil(ctx.limits.maxReferrersBytes / 100), false);
  // A page is built once and sent again until the repository changes: clients (and a registry's
  // own admission checks) list the same subject's referrers over and over.
  const answer = await ctx.registry.derivedAnswer(name, `referrers ${digest}${ctx.url.search}`, async () => {
    const filter: { artifactTypes: string[]; after?: string; limit: number } = { artifactTypes, limit: page.limit + 1 };
    if (page.after) filter.after = page.after;
    const descriptors = page.limit === 0 ? [] : await ctx.registry.referrerDescriptors(name, digest, filter);
    // Split by the client's n and by the byte budget of one response, whichever comes first.
    const { parts, last, more } = fitPage(descriptors, page.limit, ctx.limits.maxReferrersBytes, (d) => d.json);
    const headers: Record<string, string> = { 'Content-Type': OCI_INDEX };
    if (artifactTypes.length) headers['OCI-Filters-Applied'] = 'artifactType';
    if (more && last) {
      // The next page is asked for the way this one was: with the client's `n`, or without one.
      const params: Record<string, string | string[]> = page.requested === undefined ? { last: last.digest } : { n: String(page.requested), last: last.digest };
      if (artifactTypes.length) params.artifactType = artifactTypes;
      headers.Link = nextLink(`/v2/${name}/referrers/${digest}`, params);
    }
    const body = Buffer.from(indexJson(parts));
    return { body, headers, byteLength: body.length };
  });
  send(ctx.res, 200, { ...answer.headers, 'Content-Length': answer.body.length }, ctx.head ? undefined : answer.body);
}

export function discoverExtensions(ctx: ApiContext): void {
  sendJson(ctx.res, 200, {
    extensions: [
      {
        name: '_oci',
        description: 'Extension discovery',
        url: 'https://github.com/opencontainers/distribution-spec/tree/main/extensions',
        endpoints: ['_oci/ext/discover'],
      },
      {
        name: '_trellis',
        description: 'Artifact graph: what a manifest references (down) and what references it (up), across nested namespaces; see docs/api.md',
        url: 'docs/api.md#artifact-graph',
        endpoints: ['_trellis/graph'],
      },
      {
        name: '_oci/references',
        description: 'Registry-wide referrers filtered by q_<attribute>__<comparison>=<value> queries (after Proposal F); the same q_ filters work on /v2/<name>/referrers/<digest> and on Proposal F\'s /v2/<name>/manifests/<tag or digest>/references; see docs/query.md',
        url: 'docs/query.md',
        endpoints: ['_oci/references'],
      },
      {
        name: '_trellis/search',
        description: 'Registry-wide search over every manifest and its tags with the same q_ language, sort and order; see docs/query.md',
        url: 'docs/query.md#search',
        endpoints: ['_trellis/search'],
      },
      {
        name: '_trellis/browse',
        description: 'Browsing: the namespace tree, tags with digest, size, platforms and push time, and the attribute names queries accept; see docs/api.md#browsing',
        url: 'docs/api.md#browsing',
        endpoints: ['_trellis/tree', '_trellis/attributes', '<name>/_trellis/tags'],
      },
      {
        name: '_trellis/components',
        description: 'Components (OCM and rule-defined): list, versions, detail, owners of an artifact; see docs/query.md#components',
        url: 'docs/query.md#components',
        endpoints: ['_trellis/components', '_trellis/components/versions', '_trellis/components/version', '_trellis/components/owners'],
      },
    ],
  }, {}, ctx.head);
}
