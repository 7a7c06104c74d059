// Nested namespaces: an index in repository R may list a manifest stored in a descendant
// repository R/x by annotating the entry with the descendant's path relative to R. Descriptors
// cannot name repositories, so this annotation is the whole extension; clients that do not know
// it carry it through unchanged (it is an ordinary annotation).
import type { ManifestLink } from '../oci/manifest.ts';
import { repositoryNameProblem } from '../oci/names.ts';

export const NESTED_REPOSITORY_ANNOTATION = 'dev.trellis.repository';

/** The full name of the descendant `relative` names under `parent`, or why it is not one. */
export function descendantRepository(parent: string, relative: string): { name: string } | { problem: string } {
  if (relative === '' || relative.startsWith('/') || relative.includes('://')) {
    return { problem: `${NESTED_REPOSITORY_ANNOTATION} must be a path relative to ${parent}, not ${JSON.stringify(relative)}` };
  }
  if (relative.split('/').some((c) => c === '..' || c === '.' || c === '')) {
    return { problem: `${NESTED_REPOSITORY_ANNOTATION} ${JSON.stringify(relative)} must name a descendant of ${parent} (no "..", ".", or empty parts)` };
  }
  const name = `${parent}/${relative}`;
  const problem = repositoryNameProblem(name);
  return problem ? { problem: `${NESTED_REPOSITORY_ANNOTATION} ${JSON.stringify(relative)}: ${problem}` } : { name };
}

/**
 * Sets `repository` on index entries that carry the annotation. Returns the problems found
 * (a bad path); entries with a bad path are left pointing at the parent repository.
 */
export function resolveNestedLinks(links: ManifestLink[], parent: string): string[] {
  const problems: string[] = [];
  for (const link of links) {
    const relative = link.kind === 'manifest' ? link.annotations?.[NESTED_REPOSITORY_ANNOTATION] : undefined;
    if (relative === undefined) continue;
    const resolved = descendantRepository(parent, relative);
    if ('problem' in resolved) problems.push(`entry ${link.digest}: ${resolved.problem}`);
    else link.repository = resolved.name;
  }
  return problems;
}
