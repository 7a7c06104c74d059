// The query extension: q_ filters on one subject's referrers, registry-wide referrers
// (`/v2/_oci/references`) and registry-wide search over every manifest (`/v2/_trellis/search`).
import { requireDigest } from '../content/registry.ts';
import { OCI_INDEX } from '../oci/mediatypes.ts';
import { referrerDescriptor, type Descriptor } from '../oci/manifest.ts';
import { appliedFilters, attributePaths, parseQuery, type Query } from '../query/language.ts';
import type { QueryAccess, QueryMatch, QueryScope } from '../metadata/index.ts';
import { fitPage, indexJson, nextLink, pageParams, send, type Headers } from './http.ts';
import { ALLOW_ALL, spendQueryBudget, type ApiContext } from './context.ts';

/**
 * Whether an attribute is known is decided only over what the caller may see. Without access
 * control that is everything, and a name no manifest ever had is refused as a likely typo. With
 * access control the registry-wide answer would tell which attributes hidden repositories use (200
 * against 400), so every well-formed name is accepted and simply matches nothing if nobody has it.
 */
async function parse(ctx: ApiContext, listedDescriptors: boolean): Promise<Query> {
  const params = ctx.url.searchParams;
  if (ctx.access !== ALLOW_ALL) return parseQuery(params, () => true, { listedDescriptors });
  const known = await ctx.registry.queries.knownAttributes(attributePaths(params, { listedDescriptors }));
  return parseQuery(params, (path) => known.has(path), { listedDescriptors });
}

/**
 * Runs a query and cuts the page by the client's `n` and by the response byte budget, whichever
 * comes first; returns the items and the `Link` to the next page, if any.
 */
async function runPage(ctx: ApiContext, query: Query, scope: QueryScope, render: (match: QueryMatch) => Promise<unknown> | unknown): Promise<{ parts: string[]; next: string | undefined }> {
  const params = ctx.url.searchParams;
  const page = pageParams(params, ctx.limits.maxListPage, ctx.limits.defaultReferrersPage);
  // The caller's grants go into the query as data: the engine drops hidden repositories in the scan.
  const access: QueryAccess | undefined = ctx.access === ALLOW_ALL ? undefined
    : { pullable: await ctx.registry.pullableRepositories((repository) => ctx.access.canPull(repository)) };
  const matches = await ctx.registry.queries.run(query, scope, { after: page.after, limit: page.limit + 1 }, access);
  const rendered = new Map<QueryMatch, unknown>();
  for (const match of matches.slice(0, page.limit)) rendered.set(match, await render(match));
  const { parts, last, more } = fitPage(matches, page.limit, ctx.limits.maxReferrersBytes, (m) => JSON.stringify(rendered.get(m)));
  if (!more || last === undefined) return { parts, next: undefined };
  const forward: Record<string, string[]> = {};
  for (const [key, value] of params) if (key !== 'last' && key !== 'n') (forward[key] ??= []).push(value);
  return { parts, next: nextLink(ctx.url.pathname, { ...forward, n: String(page.requested ?? page.limit), last: last.cursor }) };
}

function sendIndex(ctx: ApiContext, parts: string[], headers: Headers): void {
  const body = indexJson(parts);
  send(ctx.res, 200, { 'Content-Type': OCI_INDEX, ...headers, 'Content-Length': Buffer.byteLength(body) }, ctx.head ? undefined : body);
}

/** `GET /v2/<name>/referrers/<digest>?q_…`: the referrers API with query filters. */
export async function queriedReferrers(ctx: ApiContext, name: string, reference: string): Promise<void> {
  const { digest } = requireDigest(reference);
  spendQueryBudget(ctx, 'query');
  const query = await parse(ctx, true);
  await ctx.registry.repository(name); // picks up edits other tools made to the layout
  const artifactTypes = ctx.url.searchParams.getAll('artifactType').filter(Boolean);
  const scope: QueryScope = { kind: 'referrersOf', repository: name, subject: digest, artifactTypes, includeAttestations: ctx.registry.options.buildkitAttestations };
  const { parts, next } = await runPage(ctx, query, scope, (m): Descriptor => referrerDescriptor(m));
  const applied = [...(artifactTypes.length ? ['artifactType'] : []), ...appliedFilters(query)];
  const headers: Headers = {};
  if (applied.length) headers['OCI-Filters-Applied'] = applied.join(',');
  if (next) headers.Link = next;
  sendIndex(ctx, parts, headers);
}

/** `GET /v2/_oci/references?q_…`: referrers in every repository the caller may pull. */
export async function references(ctx: ApiContext): Promise<void> {
  spendQueryBudget(ctx, 'query');
  const query = await parse(ctx, true);
  const { parts, next } = await runPage(ctx, query, { kind: 'referrers' }, (m) => ({ ...referrerDescriptor(m), repository: m.repository, subjectDigest: m.subject }));
  const headers: Headers = {};
  if (query.conditions.length) headers['OCI-Filters-Applied'] = appliedFilters(query).join(',');
  if (next) headers.Link = next;
  sendIndex(ctx, parts, headers);
}

/** `GET /v2/_trellis/search?q_…`: every manifest and its tags, in every repository the caller may pull. */
export async function search(ctx: ApiContext): Promise<void> {
  spendQueryBudget(ctx, 'query');
  const query = await parse(ctx, false);
  const { parts, next } = await runPage(ctx, query, { kind: 'manifests' }, (m) => {
    const result: Record<string, unknown> = { repository: m.repository, ...referrerDescriptor(m) };
    result.tags = m.tags ?? [];
    if (m.subject) result.subjectDigest = m.subject;
    result.pushedAt = new Date(m.pushedAt).toISOString();
    return result;
  });
  const body = `{"results":[${parts.join(',')}]}`;
  const headers: Headers = { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) };
  if (next) headers.Link = next;
  send(ctx.res, 200, headers, ctx.head ? undefined : body);
}
