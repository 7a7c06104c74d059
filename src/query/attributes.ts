// The attributes of a manifest that queries see: every field of its JSON, flattened into paths of
// lower-cased names joined by `__` (`config__mediatype`, `layers__mediatype`,
// `annotations__org.opencontainers.image.version`), array elements under their array's path.
// Values are kept lower-cased (comparisons are case-insensitive) with their order key.
import { orderKey } from './order.ts';

export const PATH_SEPARATOR = '__';
/**
 * Proposal F's `manifests__mediatype` on endpoints that list referrer descriptors: the proposal's
 * descriptors carried the artifact's flavour in `mediaType`, which OCI 1.1 moved to `artifactType`
 * (a referrer's `mediaType` is the image-manifest type). The path has either value.
 */
export const LISTED_TYPE = 'mediatype|artifacttype';
/** Longer values are cut: contains/eq see their first MAX_VALUE_LENGTH characters. */
export const MAX_VALUE_LENGTH = 4096;
/** A manifest with more distinct (path, value) pairs keeps only the first ones (huge indexes). */
export const MAX_ATTRIBUTES = 2000;
const MAX_DEPTH = 8;

/**
 * The text of an attribute path or value as indexed and queried: NUL (which JSON strings may
 * hold, and PostgreSQL text cannot) as U+FFFD, the same for stored values and query values, so
 * both metadata stores hold the same rows and a query for it is an ordinary query.
 */
export function indexable(text: string): string {
  return text.includes('\u0000') ? text.replaceAll('\u0000', '\uFFFD') : text;
}

export interface Attribute {
  path: string;
  value: string;
  order: string | null;
}

function collect(value: unknown, path: string, depth: number, out: Map<string, Attribute>): void {
  if (out.size >= MAX_ATTRIBUTES || depth > MAX_DEPTH) return;
  if (Array.isArray(value)) {
    for (const element of value) collect(element, path, depth + 1, out);
    return;
  }
  if (typeof value === 'object' && value !== null) {
    for (const [key, child] of Object.entries(value)) {
      const name = indexable(key.toLowerCase());
      collect(child, path ? `${path}${PATH_SEPARATOR}${name}` : name, depth + 1, out);
    }
    return;
  }
  if (!path || value === null || value === undefined) return;
  const text = indexable(String(value).slice(0, MAX_VALUE_LENGTH).toLowerCase());
  const id = `${path}\u0000${text}`;
  if (!out.has(id)) out.set(id, { path, value: text, order: orderKey(text) });
}

/** The registry fact of when a manifest was last pushed (a re-push moves it). */
export const PUSHED_AT_PATH = 'pushedat';

/** The attributes of a manifest's JSON, plus registry facts and the effective artifact type. */
export function manifestAttributes(body: unknown, facts: { digest: string; size: number; pushedAt: number; artifactType: string | null }): Attribute[] {
  const out = new Map<string, Attribute>();
  const extra: Record<string, unknown> = {
    digest: facts.digest,
    size: facts.size,
    [PUSHED_AT_PATH]: new Date(facts.pushedAt).toISOString(),
  };
  // What the referrers API reports as artifactType (the config media type when the field is absent).
  if (facts.artifactType) extra.artifacttype = facts.artifactType;
  collect(extra, '', 0, out);
  const fields = typeof body === 'object' && body !== null && !Array.isArray(body) ? (body as Record<string, unknown>) : {};
  collect(Object.fromEntries(Object.entries(fields).filter(([key]) => key.toLowerCase() !== 'artifacttype')), '', 0, out);
  return [...out.values()];
}
