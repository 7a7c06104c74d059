// What can go wrong in the content model, in its own terms: the kind of problem and the spec's
// error code (the vocabulary clients see). The HTTP status for each kind is chosen in one place,
// src/registry/errors.ts; nothing here knows about HTTP.
import type { ErrorCode, ErrorEntry } from '../oci/errors.ts';

export type ContentProblem =
  | 'invalid' // the request names or carries something malformed
  | 'not-found' // no such repository, blob, manifest, tag or upload
  | 'unsupported' // the operation does not apply to that object
  | 'conflict' // something else still needs the object
  | 'too-large' // over a configured size limit
  | 'busy' // another request is using the object (an upload being written)
  | 'stalled' // the client stopped sending in the middle of a body
  | 'too-many'; // a configured limit on open things is reached

export class ContentError extends Error {
  readonly problem: ContentProblem;
  readonly entries: ErrorEntry[];
  /** When retrying makes sense (too-many). */
  readonly retryAfterSeconds: number | undefined;
  /** Bytes an upload holds so far (busy): where a client resumes. */
  readonly uploadedBytes: number | undefined;

  constructor(problem: ContentProblem, code: ErrorCode, message: string, detail?: unknown, hints: { retryAfterSeconds?: number; uploadedBytes?: number } = {}) {
    super(message);
    this.problem = problem;
    this.entries = [detail === undefined ? { code, message } : { code, message, detail }];
    this.retryAfterSeconds = hints.retryAfterSeconds;
    this.uploadedBytes = hints.uploadedBytes;
  }

  /** Several problems of one kind at once (e.g. every blob a manifest names that is missing). */
  static many(problem: ContentProblem, entries: ErrorEntry[]): ContentError {
    const error = new ContentError(problem, entries[0]!.code, entries[0]!.message, entries[0]!.detail);
    error.entries.splice(0, 1, ...entries);
    return error;
  }
}
