// The transfer client's failures, in a module of their own: the CLI maps them to exit codes, and
// `trellis serve` loads that mapping without loading the client itself.

/** What went wrong, so that the CLI can pick an exit code and a hint. */
export type FailureKind = 'unauthorized' | 'denied' | 'not-found' | 'network' | 'tls' | 'invalid' | 'other';

export class RegistryRequestFailed extends Error {
  readonly kind: FailureKind;
  readonly status: number | undefined;

  constructor(message: string, kind: FailureKind = 'other', status?: number) {
    super(message);
    this.kind = kind;
    this.status = status;
  }
}

/** Credentials could not be read or used (a broken config.json, a failing helper). */
export class CredentialError extends Error {}

/** A copy ended with blobs or manifests it could not move. */
export class CopyFailed extends Error {}
