// How referrers are written into a layout beyond the untagged `index.json` entries: per subject,
// an index shaped exactly like the referrers API answer, listed under the subject's fallback tag
// (`sha256-<hex>`) so that regctl's default reader (and olareg, optionally) find them too.
import { OCI_INDEX } from '../oci/mediatypes.ts';
import { referrerDescriptor } from '../oci/manifest.ts';
import type { ManifestRecord } from '../metadata/store.ts';

/** Marks the fallback-tag entries Trellis generates, so reading the layout back skips them as tags. */
export const TRELLIS_REFERRERS_SUBJECT = 'dev.trellis.referrers.subject';
/** olareg's key for the same thing (written only when configured). */
export const OLAREG_REFERRERS_SUBJECT = 'org.olareg.referrer.subject';
/** The key of image-spec PR #1171 (unmerged): read, never written. */
export const DRAFT_REFERRERS_SUBJECT = 'org.opencontainers.image.referrer.subject';
export const DERIVED_REFERRER_KEYS = [TRELLIS_REFERRERS_SUBJECT, OLAREG_REFERRERS_SUBJECT, DRAFT_REFERRERS_SUBJECT];

/** The spec's fallback tag for a subject: `<alg>-<hex>`, truncated to 32 and 64 characters. */
export function fallbackTag(subject: string): string {
  const [algorithm, hex] = subject.split(':') as [string, string];
  return `${algorithm.slice(0, 32)}-${hex.slice(0, 64)}`.replace(/[^a-zA-Z0-9._-]/g, '-');
}

/**
 * An image index from descriptors already serialised one by one: big indexes are built a page at
 * a time so that writing them never holds the event loop for long.
 */
export function indexJsonFromParts(parts: string[], annotations?: Record<string, string>): string {
  const tail = annotations ? `,"annotations":${JSON.stringify(annotations)}` : '';
  return `{"schemaVersion":2,"mediaType":"${OCI_INDEX}","manifests":[${parts.join(',')}]${tail}}`;
}

/** A referrers index entry, exactly as the referrers API lists it. */
export function referrerEntryJson(record: ManifestRecord): string {
  return JSON.stringify(referrerDescriptor(record));
}
