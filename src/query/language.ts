// The query language: `q_<attribute>__<nested attribute>...__<comparison>=<value>`, after
// "Proposal F". Parameter names and string comparisons are case-insensitive; several parameters
// must all hold. See docs/query.md.
import { LISTED_TYPE, PATH_SEPARATOR, indexable } from './attributes.ts';
import { kindRange, orderKey } from './order.ts';

export const COMPARISONS = ['eq', 'ne', 'contains', 'notcontains', 'gt', 'gte', 'lt', 'lte', 'exists'] as const;
export type Comparison = (typeof COMPARISONS)[number];

export interface Condition {
  /** The parameter as given, for messages and `OCI-Filters-Applied`. */
  parameter: string;
  path: string;
  comparison: Comparison;
  /** Lower-cased value; for `exists`, 'true' or 'false'. */
  value: string;
  /** For gt/gte/lt/lte: the value's order key and the range of keys it compares with. */
  order?: { key: string; start: string; end: string };
}

export interface Sort {
  path: string;
  descending: boolean;
}

export interface Query {
  conditions: Condition[];
  sort?: Sort;
}

const QUERY_PREFIX = 'q_';
const LISTED = `manifests${PATH_SEPARATOR}`;
const MAX_CONDITIONS = 16;
const MAX_VALUE = 1024;
/** `sort=` shorthands for the attributes people sort by most. */
const SORT_ALIASES: Record<string, string> = {
  created: 'annotations__org.opencontainers.image.created',
  version: 'annotations__org.opencontainers.image.version',
  pushed: 'pushedat',
};

/** A query that is malformed or names what no item has (the API answers 400 QUERY_INVALID). */
export class QueryInvalid extends Error {}

function invalid(message: string): QueryInvalid {
  return new QueryInvalid(message);
}

/** Whether a request carries query parameters at all. */
export function hasQuery(params: URLSearchParams): boolean {
  for (const key of params.keys()) if (key.toLowerCase().startsWith(QUERY_PREFIX) || key.toLowerCase() === 'sort') return true;
  return false;
}

/**
 * The attribute paths a request's `q_…` and `sort` parameters name (malformed ones are left for
 * parseQuery to refuse), so that an index can say which it knows before the query is parsed.
 */
export function attributePaths(params: URLSearchParams, options: { listedDescriptors?: boolean } = {}): string[] {
  const paths = new Set<string>();
  for (const [rawName] of params) {
    const name = indexable(rawName.toLowerCase());
    if (!name.startsWith(QUERY_PREFIX)) continue;
    const segments = name.slice(QUERY_PREFIX.length).split(PATH_SEPARATOR);
    segments.pop();
    let path = segments.join(PATH_SEPARATOR);
    if (options.listedDescriptors && path.startsWith(LISTED) && path.length > LISTED.length) {
      path = path.slice(LISTED.length);
      if (path === 'mediatype') path = LISTED_TYPE;
    }
    if (path) paths.add(path);
  }
  const sortParam = params.get('sort');
  if (sortParam) paths.add(SORT_ALIASES[sortParam.toLowerCase()] ?? indexable(sortParam.toLowerCase()));
  return [...paths].slice(0, 2 * MAX_CONDITIONS + 1);
}

/**
 * Parses the `q_…` and `sort`/`order` parameters. `isKnownAttribute` says whether any item could
 * have an attribute; a query naming one that none has is refused, as is a malformed one. With
 * `listedDescriptors` (endpoints answering an index of referrers) `manifests__size` means the listed
 * descriptor's `size`, as Proposal F writes it, and `manifests__mediatype` its media type or
 * artifact type (LISTED_TYPE).
 */
export function parseQuery(params: URLSearchParams, isKnownAttribute: (path: string) => boolean, options: { listedDescriptors?: boolean } = {}): Query {
  const conditions: Condition[] = [];
  for (const [rawName, rawValue] of params) {
    const name = indexable(rawName.toLowerCase());
    if (!name.startsWith(QUERY_PREFIX)) continue;
    const parameter = name;
    const segments = name.slice(QUERY_PREFIX.length).split(PATH_SEPARATOR);
    const comparison = segments.pop() as Comparison;
    if (segments.length === 0 || segments.some((s) => s === '')) throw invalid(`${parameter}: expected q_<attribute>[__<nested>...]__<comparison>`);
    if (!COMPARISONS.includes(comparison)) throw invalid(`${parameter}: unknown comparison ${JSON.stringify(comparison)}; use one of ${COMPARISONS.join(', ')}`);
    let path = segments.join(PATH_SEPARATOR);
    // Proposal F names the listed descriptors' fields through the answer's `manifests` list; its
    // `mediaType` is what OCI 1.1 calls artifactType, so that one field has either value.
    if (options.listedDescriptors && path.startsWith(LISTED) && path.length > LISTED.length) {
      path = path.slice(LISTED.length);
      if (path === 'mediatype') path = LISTED_TYPE;
    }
    if (!isKnownAttribute(path)) throw invalid(`${parameter}: no item has the attribute ${JSON.stringify(path)}`);
    if (rawValue.length > MAX_VALUE) throw invalid(`${parameter}: value longer than ${MAX_VALUE} characters`);
    const value = indexable(rawValue.toLowerCase());
    const condition: Condition = { parameter, path, comparison, value };
    if (comparison === 'exists') {
      if (value !== 'true' && value !== 'false') throw invalid(`${parameter}: exists takes true or false, not ${JSON.stringify(rawValue)}`);
    } else if (['gt', 'gte', 'lt', 'lte'].includes(comparison)) {
      const key = orderKey(value);
      if (key === null) throw invalid(`${parameter}: ${comparison} needs a number, a version (1.2.3) or an RFC 3339 time, not ${JSON.stringify(rawValue)}`);
      condition.order = { key, ...kindRange(key) };
    } else if (value === '' && (comparison === 'contains' || comparison === 'notcontains')) {
      throw invalid(`${parameter}: ${comparison} needs a non-empty value`);
    }
    conditions.push(condition);
  }
  if (conditions.length > MAX_CONDITIONS) throw invalid(`at most ${MAX_CONDITIONS} q_ parameters are allowed`);
  const query: Query = { conditions };
  const sortParam = params.get('sort');
  if (sortParam !== null) {
    const sortName = indexable(sortParam.toLowerCase());
    const path = SORT_ALIASES[sortName] ?? sortName.split(PATH_SEPARATOR).join(PATH_SEPARATOR);
    if (!path || !isKnownAttribute(path)) throw invalid(`sort: no item has the attribute ${JSON.stringify(sortParam)}`);
    const order = (params.get('order') ?? 'asc').toLowerCase();
    if (order !== 'asc' && order !== 'desc') throw invalid(`order must be asc or desc, not ${JSON.stringify(params.get('order'))}`);
    query.sort = { path, descending: order === 'desc' };
  } else if (params.has('order')) {
    throw invalid('order needs sort');
  }
  return query;
}

function compareOrdered(condition: Condition, key: string): boolean {
  const { key: bound, start, end } = condition.order!;
  if (key < start || key >= end) return false; // another kind: not comparable
  switch (condition.comparison) {
    case 'gt': return key > bound;
    case 'gte': return key >= bound;
    case 'lt': return key < bound;
    default: return key <= bound;
  }
}

/** Whether one condition holds for an item whose attribute has `values` (lower-cased). */
export function conditionHolds(condition: Condition, values: string[]): boolean {
  const { comparison, value } = condition;
  switch (comparison) {
    case 'exists': return (values.length > 0) === (value === 'true');
    case 'eq': return values.includes(value);
    // Negative comparisons hold for items that have the attribute and no value matching.
    case 'ne': return values.length > 0 && !values.includes(value);
    case 'contains': return values.some((v) => v.includes(value));
    case 'notcontains': return values.length > 0 && !values.some((v) => v.includes(value));
    default: return values.some((v) => {
      const key = orderKey(v);
      return key !== null && compareOrdered(condition, key);
    });
  }
}

/**
 * Evaluates a query in memory: for clients filtering a registry's answer themselves, and for
 * small sets such as component listings. `values` gives an item's values of an attribute path;
 * they are compared case-insensitively.
 */
export function matches(query: Query, values: (path: string) => string[]): boolean {
  return query.conditions.every((condition) => conditionHolds(condition, values(condition.path).map((v) => indexable(v.toLowerCase()))));
}

/**
 * A parameter name as an `OCI-Filters-Applied` entry. A header holds visible ASCII only, so other
 * characters (an annotation key's `€`), and the list's own `,` and `%`, are percent-encoded as in
 * the URL; readers decode each entry (decodeAppliedFilter).
 */
export function encodeAppliedFilter(name: string): string {
  return name.replace(/[^\x21-\x7e]|[,%]/gu, (c) => [...new TextEncoder().encode(c)].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''));
}

/** An `OCI-Filters-Applied` entry as the parameter name it stands for. */
export function decodeAppliedFilter(entry: string): string {
  try {
    return decodeURIComponent(entry);
  } catch {
    return entry;
  }
}

/** `OCI-Filters-Applied` entries of the query's parameters (header-safe, see encodeAppliedFilter). */
export function appliedFilters(query: Query): string[] {
  return [...new Set(query.conditions.map((c) => encodeAppliedFilter(c.parameter)))];
}
