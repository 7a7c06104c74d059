// Digest parsing and hashing. Only algorithms the registry can verify are accepted for storage.
import { createHash, type Hash } from 'node:crypto';

export type DigestAlgorithm = 'sha256' | 'sha512';

const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };
// Grammar from the image spec; well-formed but unsupported algorithms are told apart from garbage.
const DIGEST_GRAMMAR = /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

export interface ParsedDigest {
  algorithm: DigestAlgorithm;
  hex: string;
  digest: string;
}

export type DigestProblem = 'malformed' | 'unsupported';

export function isDigestAlgorithm(value: string): value is DigestAlgorithm {
  return value === 'sha256' || value === 'sha512';
}

/** Parses `alg:hex`; returns the reason when it cannot be stored. */
export function parseDigest(value: string): ParsedDigest | DigestProblem {
  if (value.length > 200 || !DIGEST_GRAMMAR.test(value)) return 'malformed';
  const colon = value.indexOf(':');
  const algorithm = value.slice(0, colon);
  const hex = value.slice(colon + 1);
  if (!isDigestAlgorithm(algorithm)) return 'unsupported';
  if (hex.length !== HEX_LENGTH[algorithm] || !/^[a-f0-9]+$/.test(hex)) return 'malformed';
  return { algorithm, hex, digest: value };
}

export function isValidDigest(value: unknown): value is string {
  return typeof value === 'string' && typeof parseDigest(value) === 'object';
}

export function newHash(algorithm: DigestAlgorithm): Hash {
  return createHash(algorithm);
}

export function digestOf(data: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}
