// The seam between query endpoints and the index that answers them. Access control is data: the
// caller's pullable repositories go into the query, and the engine drops other repositories'
// matches inside the scan, before the page is cut, so no page, count or cursor reveals them.
import type { Query } from '../query/language.ts';

/** Which manifests a query runs over. */
export type QueryScope =
  | { kind: 'manifests' }
  | { kind: 'referrers' }
  | { kind: 'referrersOf'; repository: string; subject: string; artifactTypes: string[]; includeAttestations: boolean };

export interface QueryMatch {
  repository: string;
  digest: string;
  mediaType: string;
  size: number;
  artifactType: string | null;
  subject: string | null;
  annotations: Record<string, string>;
  pushedAt: number;
  /** Resume after this match: the `last` of the next page. */
  cursor: string;
}

export interface QueryPage {
  after?: string | undefined;
  limit: number;
}

/** The repositories a caller may pull (exact names); undefined in a QueryIndex call means all. */
export interface QueryAccess {
  pullable: readonly string[];
}

/** Each method is one read transaction (a consistent snapshot). */
export interface QueryIndex {
  /** Which of these paths any manifest has (or had); registry facts always exist. */
  knownAttributes(paths: readonly string[]): Promise<Set<string>>;
  /** Matches in a stable order; repositories outside `access` are left out before the page is cut. */
  run(query: Query, scope: QueryScope, page: QueryPage, access: QueryAccess | undefined): Promise<QueryMatch[]>;
  /** Tags of a manifest (for search results). */
  tagsOf(repository: string, digest: string): Promise<string[]>;
}
