// Errors as the distribution spec defines them: an HTTP status and one or more coded entries.
export type ErrorCode =
  | 'BLOB_UNKNOWN' | 'BLOB_UPLOAD_INVALID' | 'BLOB_UPLOAD_UNKNOWN' | 'DIGEST_INVALID' | 'MANIFEST_BLOB_UNKNOWN'
  | 'MANIFEST_INVALID' | 'MANIFEST_UNKNOWN' | 'NAME_INVALID' | 'NAME_UNKNOWN' | 'SIZE_INVALID' | 'UNAUTHORIZED'
  | 'DENIED' | 'UNSUPPORTED' | 'TOOMANYREQUESTS' | 'RANGE_INVALID' | 'PAGINATION_NUMBER_INVALID' | 'TAG_INVALID'
  | 'UNKNOWN' | 'UNAVAILABLE'
  // Trellis's query extension: a q_ parameter no item can satisfy or that is malformed.
  | 'QUERY_INVALID';

export interface ErrorEntry {
  code: ErrorCode;
  message: string;
  detail?: unknown;
}

export class OciError extends Error {
  readonly status: number;
  readonly entries: ErrorEntry[];
  readonly headers: Record<string, string>;

  constructor(status: number, code: ErrorCode, message: string, detail?: unknown, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.entries = [detail === undefined ? { code, message } : { code, message, detail }];
    this.headers = headers;
  }

  static many(status: number, entries: ErrorEntry[]): OciError {
    const error = new OciError(status, entries[0]!.code, entries[0]!.message, entries[0]!.detail);
    error.entries.splice(0, 1, ...entries);
    return error;
  }

  body(): string {
    return JSON.stringify({ errors: this.entries.map((e) => ({ code: e.code, message: e.message, detail: e.detail ?? {} })) });
  }
}
