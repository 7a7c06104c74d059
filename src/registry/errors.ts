// The one place where the content model's problems become HTTP: each kind of ContentError gets
// its status, and hints become headers.
import { ContentError, type ContentProblem } from '../content/errors.ts';
import { OciError } from '../oci/errors.ts';
import { QueryInvalid } from '../query/language.ts';

const STATUS: Record<ContentProblem, number> = {
  'invalid': 400,
  'not-found': 404,
  'unsupported': 405,
  'conflict': 409,
  'too-large': 413,
  'busy': 416,
  'stalled': 408,
  'too-many': 429,
};

export function httpError(err: ContentError): OciError {
  const headers: Record<string, string> = {};
  if (err.retryAfterSeconds !== undefined) headers['Retry-After'] = String(err.retryAfterSeconds);
  // An empty upload has no true inclusive range; "0-0" is what distribution sends and clients parse.
  if (err.uploadedBytes !== undefined) headers.Range = `0-${Math.max(err.uploadedBytes - 1, 0)}`;
  const error = OciError.many(STATUS[err.problem], err.entries);
  Object.assign(error.headers, headers);
  return error;
}

/** Any error a handler threw, as the OciError to answer with (undefined: not a client error). */
export function asOciError(err: unknown): OciError | undefined {
  if (err instanceof OciError) return err;
  if (err instanceof ContentError) return httpError(err);
  if (err instanceof QueryInvalid) return new OciError(400, 'QUERY_INVALID', err.message);
  return undefined;
}

/** Socket errors of a connection to a service (the database, the object store) that is down or cut off. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND']);
/** Database states meaning "not now": a lost connection (class 08), a shutdown or start-up (57P0x), no free connection. */
const UNAVAILABLE_STATES = /^(08[0-9A-Z]{3}|57P0[1-4]|53300)$/;
const UNAVAILABLE_MESSAGES = /Connection terminated|timeout exceeded when trying to connect|not queryable/i;
/** Object-store answers a retry may fix (AWS SDK errors carry the HTTP status in $metadata). */
const UNAVAILABLE_NAMES = new Set(['SlowDown', 'ServiceUnavailable', 'RequestTimeout', 'TimeoutError', 'InternalError']);

/**
 * A 503 with Retry-After when a service the registry depends on failed in a way a retry may fix
 * (the database restarting, a dropped connection, the object store throttling): the client did
 * nothing wrong and should try again, which registry clients do for 503. Undefined otherwise.
 */
export function unavailableError(err: unknown): OciError | undefined {
  const e = err as { code?: unknown; name?: unknown; message?: unknown; $metadata?: { httpStatusCode?: number } } | null;
  if (!e || typeof e !== 'object') return undefined;
  const code = typeof e.code === 'string' ? e.code : '';
  const status = e.$metadata?.httpStatusCode;
  const transient = NETWORK_CODES.has(code) || UNAVAILABLE_STATES.test(code)
    || (typeof e.message === 'string' && UNAVAILABLE_MESSAGES.test(e.message))
    || (typeof e.name === 'string' && UNAVAILABLE_NAMES.has(e.name))
    || (status !== undefined && [500, 502, 503, 504].includes(status));
  if (!transient) return undefined;
  const error = new OciError(503, 'UNAVAILABLE', 'a service the registry depends on is briefly unavailable; retry shortly');
  error.headers['Retry-After'] = '1';
  return error;
}
