// `q_<attribute>__<nested>__<cmp>=value` filters on the command line (docs/query.md): sent to
// registries that apply them (they list them in OCI-Filters-Applied), and evaluated here with the
// same language and the same manifest attributes for registries that do not, so the answer is
// the same set either way.
import type { Descriptor } from '../oci/manifest.ts';
import { QueryInvalid, decodeAppliedFilter } from '../query/language.ts';
import { COMPARISONS, LISTED_TYPE, manifestAttributes, matches, parseQuery, type Query } from '../query/index.ts';
import type { HttpRegistry } from '../transfer/http.ts';
import { UsageError } from './errors.ts';

export interface Filter {
  /** The parameter name, `q_...`, lower-cased as registries report it. */
  name: string;
  value: string;
}

export function parseFilters(list: string[] = []): Filter[] {
  const filters = list.map((text) => {
    const eq = text.indexOf('=');
    if (eq < 0 || !text.toLowerCase().startsWith('q_')) {
      throw new UsageError(`filter "${text}" must look like q_<attribute>[__<key>]__<cmp>=<value>, e.g. q_annotations__kind__eq=sbom`);
    }
    const name = text.slice(0, eq).toLowerCase();
    const parts = name.slice(2).split('__');
    const last = parts.at(-1) ?? '';
    if (parts.length < 2 || !(COMPARISONS as readonly string[]).includes(last)) {
      const example = `q_${parts.join('__')}__eq=${text.slice(eq + 1)}`;
      throw new UsageError(`filter "${text}" has no comparison: the form is q_<attribute>[__<key>]__<cmp>=<value> with <cmp> one of ${COMPARISONS.join(', ')}; e.g. ${example}`);
    }
    return { name, value: text.slice(eq + 1) };
  });
  toQuery(filters); // refuses malformed filters before anything is sent
  return filters;
}

export function filterParams(filters: Filter[]): URLSearchParams {
  return new URLSearchParams(filters.map((f): [string, string] => [f.name, f.value]));
}

function toQuery(filters: Filter[]): Query {
  try {
    // Referrer lists, as the registry's referrers endpoint reads them (Proposal F's spelling too).
    return parseQuery(filterParams(filters), () => true, { listedDescriptors: true });
  } catch (err) {
    if (err instanceof QueryInvalid) throw new UsageError(err.message);
    throw err;
  }
}

/** The filters a registry's OCI-Filters-Applied header did not list. */
export function unapplied(filters: Filter[], applied: string[]): Filter[] {
  const done = new Set(applied.map((a) => decodeAppliedFilter(a).toLowerCase()));
  return filters.filter((f) => !done.has(f.name));
}

/**
 * Keeps the referrers (of one repository) that match: each referrer's manifest is read and its
 * attributes computed as the registry would index them (minus the push time, which only the
 * registry knows).
 */
export async function filterLocally(reg: HttpRegistry, repository: string, list: Descriptor[], filters: Filter[]): Promise<Descriptor[]> {
  if (!filters.length) return list;
  const query = toQuery(filters);
  const kept: Descriptor[] = [];
  for (const d of list) {
    const manifest = await reg.manifest(repository, d.digest);
    if (!manifest) continue;
    let body: unknown;
    try {
      body = JSON.parse(manifest.bytes.toString('utf8'));
    } catch {
      continue;
    }
    const attributes = manifestAttributes(body, { digest: d.digest, size: d.size, pushedAt: 0, artifactType: d.artifactType ?? null })
      .filter((a) => a.path !== 'pushedat');
    attributes.push({ path: 'repository', value: repository.toLowerCase(), order: null });
    const valuesOf = (path: string) => attributes.filter((a) => a.path === path).map((a) => a.value);
    const values = (path: string) => (path === LISTED_TYPE ? [...valuesOf('mediatype'), ...valuesOf('artifacttype')] : valuesOf(path));
    if (matches(query, values)) kept.push(d);
  }
  return kept;
}
