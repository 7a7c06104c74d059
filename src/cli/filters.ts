// `q_<attr>__<nested>__<cmp>=value` filters on the command line: sent to registries that apply
// them (they say so in OCI-Filters-Applied), evaluated here for the others.
import type { Descriptor } from '../oci/manifest.ts';
import { UsageError } from './target.ts';

export interface Filter {
  /** The parameter name, `q_...`. */
  name: string;
  value: string;
}

export function parseFilters(list: string[] = []): Filter[] {
  return list.map((text) => {
    const eq = text.indexOf('=');
    const name = eq < 0 ? text : text.slice(0, eq);
    const value = eq < 0 ? '' : text.slice(eq + 1);
    if (!/^q_[A-Za-z0-9_.-]+$/.test(name)) throw new UsageError(`filter "${text}" must look like q_<attribute>[__<key>]__<cmp>=<value>, e.g. q_annotations__kind__eq=sbom`);
    return { name, value };
  });
}

const COMPARISONS = new Set(['contains', 'notcontains', 'eq', 'ne', 'gt', 'lt', 'gte', 'lte', 'exists']);

function attribute(d: Descriptor, path: string[]): string | undefined {
  let value: unknown = d;
  for (const part of path) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  if (value === undefined || value === null) return undefined;
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function compare(actual: string | undefined, cmp: string, expected: string): boolean {
  if (cmp === 'exists') return (actual !== undefined) === (expected !== 'false');
  if (actual === undefined) return cmp === 'ne' || cmp === 'notcontains';
  const numeric = actual !== '' && expected !== '' && !Number.isNaN(Number(actual)) && !Number.isNaN(Number(expected));
  const order = numeric ? Math.sign(Number(actual) - Number(expected)) : actual < expected ? -1 : actual > expected ? 1 : 0;
  switch (cmp) {
    case 'contains': return actual.includes(expected);
    case 'notcontains': return !actual.includes(expected);
    case 'eq': return actual === expected;
    case 'ne': return actual !== expected;
    case 'gt': return order > 0;
    case 'lt': return order < 0;
    case 'gte': return order >= 0;
    case 'lte': return order <= 0;
    default: return false;
  }
}

/** A predicate over referrer descriptors equivalent to the filters (all must hold). */
export function localMatcher(filters: Filter[]): (d: Descriptor) => boolean {
  const tests = filters.map((f) => {
    const parts = f.name.slice(2).split('__');
    const cmp = parts.length > 1 && COMPARISONS.has(parts.at(-1)!) ? parts.pop()! : 'eq';
    return (d: Descriptor) => compare(attribute(d, parts), cmp, f.value);
  });
  return (d) => tests.every((t) => t(d));
}
