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
  /**
   * The manifest's tags in name order, read with the match (scope `manifests`, whose results list
   * them; other scopes leave it out): one statement per page, not one per result.
   */
  tags?: string[];
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

/**
 * Attribute rows read when suggesting paths to a caller who may not pull everything. They are rows
 * of that caller's own manifests only, so neither the answer nor the time it takes depends on what
 * the caller cannot see; the bound keeps one call short however much the caller sees.
 */
export const ATTRIBUTE_ROW_SCAN = 100_000;

/** Each method is one read transaction (a consistent snapshot). */
export interface QueryIndex {
  /** Which of these paths any manifest has (or had); registry facts always exist. */
  knownAttributes(paths: readonly string[]): Promise<Set<string>>;
  /** Matches in a stable order; repositories outside `access` are left out before the page is cut. */
  run(query: Query, scope: QueryScope, page: QueryPage, access: QueryAccess | undefined): Promise<QueryMatch[]>;
  /**
   * Attribute paths starting with `prefix` that queries accept, in order (at most `limit`), for
   * suggesting them. With `access`, only paths of the pullable repositories' manifests, read from
   * those manifests alone (at most ATTRIBUTE_ROW_SCAN rows), so hidden repositories show neither
   * in the answer nor in its cost (a path only beyond the bound is left out: queries accept it).
   */
  attributePaths(limit: number, access: QueryAccess | undefined, prefix?: string): Promise<string[]>;
}
