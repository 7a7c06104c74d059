// The `_trellis/graph` extension: GET /v2/<name>/_trellis/graph/<reference>?direction=down|up
// &depth=N&artifactType=...&mediaType=...&n=...&last=... (see docs/api.md).
import { OciError } from '../oci/errors.ts';
import { walkGraph, type Direction } from '../graph/walk.ts';
import { nextLink, pageParams, sendJson, type Headers } from './http.ts';
import { spendQueryBudget, type ApiContext } from './context.ts';

const MAX_DEPTH = 16;
const MAX_EDGES = 100_000;

export async function graph(ctx: ApiContext, name: string, reference: string): Promise<void> {
  // A walk reads up to MAX_EDGES edges whatever the page size: it spends the query budget.
  spendQueryBudget(ctx, 'graph');
  const query = ctx.url.searchParams;
  const direction = (query.get('direction') ?? 'down') as Direction;
  if (direction !== 'down' && direction !== 'up') throw new OciError(400, 'UNSUPPORTED', 'direction must be down or up');
  const depthParam = query.get('depth') ?? '1';
  if (!/^\d{1,2}$/.test(depthParam) || Number(depthParam) < 1 || Number(depthParam) > MAX_DEPTH) {
    throw new OciError(400, 'UNSUPPORTED', `depth must be an integer from 1 to ${MAX_DEPTH}`);
  }
  const { record } = await ctx.registry.resolveManifest(name, reference, ctx.access.canPull);
  const { edges, truncated } = await walkGraph(ctx.registry.metadata, { repository: name, digest: record.digest }, {
    direction, maxDepth: Number(depthParam), maxEdges: MAX_EDGES, canPull: ctx.access.canPull,
  });
  const artifactTypes = query.getAll('artifactType');
  const mediaTypes = query.getAll('mediaType');
  const matching = edges.filter((edge) => {
    const far = direction === 'down' ? edge.to : edge.from;
    if ('forbidden' in far) return !artifactTypes.length && !mediaTypes.length;
    return (!artifactTypes.length || artifactTypes.includes(far.artifactType ?? '')) && (!mediaTypes.length || mediaTypes.includes(far.mediaType ?? ''));
  });
  // Pages are slices of one deterministic walk; `last` is the number of edges already seen.
  const page = pageParams(query, ctx.limits.maxListPage);
  const offset = page.after && /^\d+$/.test(page.after) ? Number(page.after) : 0;
  const slice = matching.slice(offset, offset + page.limit);
  const headers: Headers = {};
  if (offset + slice.length < matching.length && slice.length) {
    const params: Record<string, string | string[]> = { direction, depth: depthParam, n: String(page.limit), last: String(offset + slice.length) };
    if (artifactTypes.length) params.artifactType = artifactTypes;
    if (mediaTypes.length) params.mediaType = mediaTypes;
    headers.Link = nextLink(`/v2/${name}/_trellis/graph/${record.digest}`, params);
  }
  sendJson(ctx.res, 200, {
    repository: name,
    root: { digest: record.digest, mediaType: record.mediaType, size: record.size, ...(record.artifactType ? { artifactType: record.artifactType } : {}) },
    direction, depth: Number(depthParam), edges: slice, truncated,
  }, headers, ctx.head);
}
