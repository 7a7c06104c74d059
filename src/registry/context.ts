// What every handler receives.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { RepositoryAction } from '../auth/index.ts';
import type { Registry } from '../content/registry.ts';
import type { Uploads } from '../content/uploads.ts';
import type { RateLimiter } from './rate-limit.ts';
import { OciError } from '../oci/errors.ts';

export interface ApiLimits {
  maxManifestBytes: number;
  /** Largest page of tags or repositories in one answer. */
  maxListPage: number;
  /** Referrers (and query results) per page when the client gives no `n`. */
  defaultReferrersPage: number;
  /** Largest referrers answer body in bytes before it is split with a `Link`. */
  maxReferrersBytes: number;
  /** Blob GETs answer 307 to a presigned storage URL valid this long, where storage has one; 0: never. */
  blobRedirectSeconds?: number;
  /** A request body that sends nothing for this long is aborted; 0: never. */
  bodyIdleTimeoutMs: number;
  /** A pusher's `HEAD` of a blob older than this renews its time (half GC's grace period); unset: never. */
  blobRenewAfterMs?: number;
}

/**
 * What the caller may see. Listings, queries and searches drop repositories `canPull` refuses
 * before they paginate, so no page, count or cursor reveals them. Without access control every
 * repository is visible.
 */
export interface AccessView {
  canPull(repository: string): boolean;
  canPush(repository: string): boolean;
  /**
   * Throws the spec's 401 (with a challenge) or 403 unless the caller may take `action` on
   * `repository`; the answer never depends on whether the repository exists.
   */
  authorize(repository: string, action: RepositoryAction, reference?: string): void;
}

export type { RepositoryAction };

export const ALLOW_ALL: AccessView = { canPull: () => true, canPush: () => true, authorize: () => {} };

/**
 * Runs before routing when access control is on: authenticates the caller, applies rate limits,
 * sets `access` and `client`, and authorizes registry-wide endpoints (repository endpoints call
 * `access.authorize`). Returns true when it answered the request itself (the token endpoint).
 */
export interface Gate {
  admit(ctx: ApiContext, repositoryRoute: boolean): Promise<boolean>;
}

export interface ApiContext {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  head: boolean;
  registry: Registry;
  uploads: Uploads;
  limits: ApiLimits;
  log: Logger;
  access: AccessView;
  /** Token buckets per client for the expensive endpoints (queries and searches). */
  rateLimits: { query: RateLimiter };
  /** Who is asking, for rate limits: the authenticated identity, else the client address. */
  client: string;
  /** The request's id (`X-Request-Id`), for log and audit lines. */
  requestId?: string | undefined;
}

export type Handler = (ctx: ApiContext, name: string, arg: string) => Promise<void>;

/**
 * Takes one token of the client's budget for reads whose cost grows with the registry (queries,
 * search, components, the namespace tree, attribute names): one budget for all of them, so no
 * client can keep the index busy by spreading its calls. 429 with Retry-After when it is spent.
 */
export function spendQueryBudget(ctx: ApiContext, what: string): void {
  const wait = ctx.rateLimits.query.take(ctx.client);
  if (wait > 0) throw new OciError(429, 'TOOMANYREQUESTS', `too many ${what} requests; retry in ${wait} s`, undefined, { 'Retry-After': String(wait) });
}
