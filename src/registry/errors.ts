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
