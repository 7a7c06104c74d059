// The seam between query endpoints and the index that answers them.
import type { Query } from './language.ts';

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

export interface QueryIndex {
  /** Whether any manifest has (or had) the attribute; registry facts always exist. */
  isKnownAttribute(path: string): boolean;
  /** Matches in a stable order, repositories `canPull` refuses left out before the page is cut. */
  run(query: Query, scope: QueryScope, page: QueryPage, canPull: ((repository: string) => boolean) | undefined): QueryMatch[];
  /** Tags of a manifest (for search results). */
  tagsOf(repository: string, digest: string): string[];
}
