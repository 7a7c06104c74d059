// The one place components meet the q_ query language (src/query/ on main): parse once,
// evaluate in memory against each component's attribute values.
import { OciError } from '../oci/errors.ts';

/** The error for a query or constraint no item can satisfy, or a malformed one. */
export function queryError(message: string): OciError {
  return new OciError(400, 'UNSUPPORTED', message);
}

type Comparison = 'eq' | 'ne' | 'contains' | 'notcontains' | 'gt' | 'lt';
interface Condition {
  path: string;
  comparison: Comparison;
  value: string;
}
export interface Query {
  conditions: Condition[];
}

const COMPARISONS: readonly string[] = ['eq', 'ne', 'contains', 'notcontains', 'gt', 'lt'];

/** Interim reading of `q_<path>__<comparison>=<value>` until the shared module is merged. */
export function parseQuery(params: URLSearchParams, isKnownAttribute: (path: string) => boolean): Query {
  const conditions: Condition[] = [];
  for (const [name, value] of params) {
    const lower = name.toLowerCase();
    if (!lower.startsWith('q_')) continue;
    const segments = lower.slice(2).split('__');
    const comparison = segments.pop() ?? '';
    const path = segments.join('__');
    if (!COMPARISONS.includes(comparison)) throw queryError(`${name}: unknown comparison ${JSON.stringify(comparison)}`);
    if (!path || !isKnownAttribute(path)) throw queryError(`${name}: no item has the attribute ${JSON.stringify(path)}`);
    conditions.push({ path, comparison: comparison as Comparison, value: value.toLowerCase() });
  }
  return { conditions };
}

export function matches(query: Query, values: (path: string) => string[]): boolean {
  return query.conditions.every((c) => {
    const own = values(c.path).map((v) => v.toLowerCase());
    switch (c.comparison) {
      case 'eq': return own.includes(c.value);
      case 'ne': return !own.includes(c.value);
      case 'contains': return own.some((v) => v.includes(c.value));
      case 'notcontains': return !own.some((v) => v.includes(c.value));
      case 'gt': return own.some((v) => v > c.value);
      case 'lt': return own.some((v) => v < c.value);
    }
  });
}
