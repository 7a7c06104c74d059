// The components API under /v2/_trellis/components: list components, the versions of one, one
// version's detail, and the component versions that ship an artifact. Every answer drops what
// the caller cannot pull before it paginates; every bad parameter is a 400 with an OCI error body.
import { requireDigest } from '../content/registry.ts';
import { OciError } from '../oci/errors.ts';
import { nextLink, pageParams, sendJson, type Headers } from './http.ts';
import { spendQueryBudget, type ApiContext } from './context.ts';
import { COMPONENTS_PATH, compareVersionStrings, matches, parseConstraint, parseQuery, queryError, satisfies, storedText, type Components } from '../components/index.ts';
import type { ComponentVersionRow } from '../metadata/index.ts';

export { COMPONENTS_PATH };

/** Whether a request path belongs to the components API. */
export function isComponentsPath(path: string): boolean {
  return path === COMPONENTS_PATH || path.startsWith(`${COMPONENTS_PATH}/`);
}

export interface ComponentSummary {
  name: string;
  kind: string;
  repository: string;
  provider: string | null;
  labels: Record<string, string>;
  latest: string;
  versionCount: number;
}

const ATTRIBUTES = new Set(['name', 'provider', 'repository', 'kind', 'latest', 'versioncount']);
const isKnownAttribute = (path: string) => ATTRIBUTES.has(path) || /^labels__.+/.test(path);

function attributeValues(c: ComponentSummary, path: string): string[] {
  if (path.startsWith('labels__')) {
    const key = path.slice('labels__'.length);
    return Object.entries(c.labels).filter(([k]) => k.toLowerCase() === key).map(([, v]) => v);
  }
  switch (path) {
    case 'name': return [c.name];
    case 'provider': return c.provider ? [c.provider] : [];
    case 'repository': return [c.repository];
    case 'kind': return [c.kind];
    case 'latest': return [c.latest];
    case 'versioncount': return [String(c.versionCount)];
    default: return [];
  }
}

/** Groups version rows (ordered by name, repository) into one summary per component and repository. */
export function summarize(rows: ComponentVersionRow[]): ComponentSummary[] {
  const out: ComponentSummary[] = [];
  let group: ComponentVersionRow[] = [];
  const flush = () => {
    if (!group.length) return;
    const latest = group.reduce((a, b) => (compareVersionStrings(b.version, a.version) > 0 ? b : a));
    out.push({
      name: latest.name, kind: latest.kind, repository: latest.repository, provider: latest.provider, labels: latest.labels,
      latest: latest.version, versionCount: group.length,
    });
    group = [];
  };
  for (const row of rows) {
    if (group.length && (group[0]!.name !== row.name || group[0]!.repository !== row.repository)) flush();
    group.push(row);
  }
  flush();
  return out;
}

/**
 * The order the component index lists names in (UTF-8 bytes, i.e. code points, on both metadata
 * stores). JavaScript's `<` compares UTF-16 units, which puts `😀` before `\uFFFD`: a cursor
 * compared that way skips names the index lists after it.
 */
function compareText(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** `name@repository` cursors; a bare name skips every entry of that name. */
function afterCursor(cursor: string | undefined, name: string, repository: string): boolean {
  if (!cursor) return true;
  const at = cursor.lastIndexOf('@');
  const [cName, cRepo] = at > 0 ? [cursor.slice(0, at), cursor.slice(at + 1)] : [cursor, undefined];
  if (name !== cName) return compareText(name, cName) > 0;
  return cRepo !== undefined && compareText(repository, cRepo) > 0;
}

function required(params: URLSearchParams, key: string): string {
  const value = params.get(key);
  if (!value) throw queryError(`the ${key} parameter is required`);
  if (value.length > 1000) throw queryError(`the ${key} parameter is too long`);
  // Names and versions are stored with NUL as U+FFFD (PostgreSQL text cannot hold NUL).
  return storedText(value);
}

function withParams(params: URLSearchParams, extra: Record<string, string>): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [key, value] of params) if (key !== 'n' && key !== 'last') (out[key] ??= []).push(value);
  for (const [key, value] of Object.entries(extra)) out[key] = [value];
  return out;
}

export class ComponentsApi {
  private readonly components: Components;

  constructor(components: Components) {
    this.components = components;
  }

  /** Handles a request under COMPONENTS_PATH. */
  async handle(ctx: ApiContext): Promise<void> {
    const method = ctx.head ? 'HEAD' : ctx.req.method ?? 'GET';
    if (method !== 'GET' && method !== 'HEAD') throw new OciError(405, 'UNSUPPORTED', `${method} is not supported on this endpoint`, undefined, { Allow: 'GET, HEAD' });
    // The same buckets as the query endpoints: one budget per client for every expensive listing.
    spendQueryBudget(ctx, 'component');
    await this.components.ready;
    const sub = ctx.url.pathname.slice(COMPONENTS_PATH.length).replace(/\/$/, '');
    switch (sub) {
      case '': return this.list(ctx);
      case '/versions': return this.versions(ctx);
      case '/version': return this.version(ctx);
      case '/owners': return this.owners(ctx);
      default: throw new OciError(404, 'NAME_UNKNOWN', `no components endpoint at ${ctx.url.pathname.slice(0, 200)}`);
    }
  }

  private async list(ctx: ApiContext): Promise<void> {
    const params = ctx.url.searchParams;
    const page = pageParams(params, ctx.limits.maxListPage);
    const query = parseQuery(params, isKnownAttribute);
    if (query.sort) throw queryError('sort is not supported on the components list: it is always in name order');
    const prefix = (params.get('prefix') ?? '').replace(/\/+$/, '');
    const inPrefix = (repository: string) => !prefix || repository === prefix || repository.startsWith(`${prefix}/`);
    const items: ComponentSummary[] = [];
    let more = false;
    for (const c of summarize(await this.components.index.allVersions())) {
      // Access and filters come before the cursor and the page size, so pages reveal nothing else.
      if (!ctx.access.canPull(c.repository) || !inPrefix(c.repository) || !matches(query, (path) => attributeValues(c, path))) continue;
      if (!afterCursor(page.after, c.name, c.repository)) continue;
      if (items.length === page.limit) {
        more = true;
        break;
      }
      items.push(c);
    }
    const headers: Headers = {};
    const last = items[items.length - 1];
    if (more && last) headers.Link = nextLink(COMPONENTS_PATH, withParams(params, { n: String(page.limit), last: `${last.name}@${last.repository}` }));
    sendJson(ctx.res, 200, { components: items }, headers, ctx.head);
  }

  /** Versions of a component the caller may pull, optionally in one repository. */
  private async visibleVersions(ctx: ApiContext, name: string): Promise<ComponentVersionRow[]> {
    const repository = ctx.url.searchParams.get('repository');
    // Access is checked per repository before any version is read: a hidden component costs
    // exactly what an absent one does, so timing tells nothing.
    const rows = await this.components.index.versionsOf(name, (r) => ctx.access.canPull(r) && (!repository || r === repository));
    if (!rows.length) throw new OciError(404, 'NAME_UNKNOWN', `component ${name.slice(0, 300)} is not known`, { component: name.slice(0, 300) });
    return rows;
  }

  private async versions(ctx: ApiContext): Promise<void> {
    const params = ctx.url.searchParams;
    const name = required(params, 'component');
    const page = pageParams(params, ctx.limits.maxListPage);
    const constraintText = params.get('constraint');
    const constraint = constraintText === null ? undefined : parseConstraint(constraintText);
    const order = params.get('order') ?? 'desc';
    if (order !== 'asc' && order !== 'desc') throw queryError(`order must be asc or desc, not ${JSON.stringify(order.slice(0, 50))}`);
    const latestOnly = params.get('latest');
    if (latestOnly !== null && latestOnly !== 'true' && latestOnly !== 'false') throw queryError('latest must be true or false');
    let rows = (await this.visibleVersions(ctx, name)).filter((r) => !constraint || satisfies(r.version, constraint));
    const sign = order === 'asc' ? 1 : -1;
    rows.sort((a, b) => sign * compareVersionStrings(a.version, b.version) || (a.repository < b.repository ? -1 : a.repository > b.repository ? 1 : 0));
    if (latestOnly === 'true') rows = rows.slice(0, 1);
    // The cursor is `version@repository`: its position in this order.
    if (page.after) {
      const at = page.after.lastIndexOf('@');
      const [version, repository] = at > 0 ? [page.after.slice(0, at), page.after.slice(at + 1)] : [page.after, ''];
      rows = rows.filter((r) => {
        const c = sign * compareVersionStrings(r.version, version);
        return c > 0 || (c === 0 && repository !== '' && r.repository > repository);
      });
    }
    const headers: Headers = {};
    if (rows.length > page.limit) {
      rows = rows.slice(0, page.limit);
      const last = rows[rows.length - 1];
      if (last) headers.Link = nextLink(`${COMPONENTS_PATH}/versions`, withParams(params, { n: String(page.limit), last: `${last.version}@${last.repository}` }));
    }
    sendJson(ctx.res, 200, {
      component: name,
      versions: rows.map((r) => ({ version: r.version, tag: r.tag, digest: r.digest, repository: r.repository, kind: r.kind, pushedAt: new Date(r.pushedAt).toISOString() })),
    }, headers, ctx.head);
  }

  private async version(ctx: ApiContext): Promise<void> {
    const params = ctx.url.searchParams;
    const name = required(params, 'component');
    const version = required(params, 'version');
    const rows = (await this.visibleVersions(ctx, name)).filter((r) => r.version === version);
    if (!rows.length) throw new OciError(404, 'MANIFEST_UNKNOWN', `component ${name.slice(0, 300)} has no version ${version.slice(0, 100)}`);
    if (rows.length > 1) {
      throw queryError(`component ${name} version ${version} is in several repositories (${rows.map((r) => r.repository).join(', ')}); add repository=`);
    }
    const row = rows[0]!;
    const referencedBy = (await this.components.index.referencing(name, version)).filter((k) => ctx.access.canPull(k.repository));
    sendJson(ctx.res, 200, {
      name: row.name, version: row.version, kind: row.kind, repository: row.repository, tag: row.tag, digest: row.digest,
      pushedAt: new Date(row.pushedAt).toISOString(), provider: row.provider, labels: row.labels,
      resources: row.detail.resources, sources: row.detail.sources, references: row.detail.references, referencedBy,
    }, {}, ctx.head);
  }

  private async owners(ctx: ApiContext): Promise<void> {
    const { digest } = requireDigest(ctx.url.searchParams.get('digest'));
    const { index } = this.components;
    const owners: { name: string; version: string; repository: string | null; via: string; referrerRepository?: string }[] = [];
    for (const key of await index.shipping(digest)) {
      if (!ctx.access.canPull(key.repository)) continue;
      const row = (await index.versionsOf(key.name, (r) => r === key.repository)).find((r) => r.version === key.version);
      owners.push({ ...key, via: row?.digest === digest ? 'component-version' : 'descriptor' });
    }
    for (const o of await index.ownershipReferrers(digest)) {
      if (!ctx.access.canPull(o.repository)) continue;
      const homes = (await index.versionsOf(o.name, ctx.access.canPull)).filter((r) => r.version === o.version).map((r) => r.repository);
      for (const repository of homes.length ? homes : [null]) {
        owners.push({ name: o.name, version: o.version, repository, via: 'ownership-referrer', referrerRepository: o.repository });
      }
    }
    sendJson(ctx.res, 200, { digest, owners }, {}, ctx.head);
  }
}
