// Parses and validates manifest bodies, and lists every link they make to other content.
import { isValidDigest } from './digest.ts';
import {
  DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_SCHEMA1, INDEX_TYPES, MANIFEST_TYPES, OCI_ARTIFACT_MANIFEST,
  OCI_INDEX, OCI_MANIFEST, isNonDistributable, isValidMediaType,
} from './mediatypes.ts';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  urls?: string[];
  platform?: unknown;
  data?: string;
}

/** How one manifest points at another object; the graph is built from these. */
export type LinkKind = 'config' | 'layer' | 'manifest' | 'blob' | 'subject';

export interface ManifestLink {
  kind: LinkKind;
  digest: string;
  mediaType: string;
  size: number;
  /** Whether the registry must already hold the target before accepting the manifest. */
  required: boolean;
  annotations?: Record<string, string>;
  /** For an index entry living in a descendant repository: that repository's full name. */
  repository?: string;
}

export interface ParsedManifest {
  mediaType: string;
  artifactType?: string;
  configMediaType?: string;
  subject?: string;
  annotations: Record<string, string>;
  links: ManifestLink[];
  /** The parsed JSON, for the attributes queries see. */
  body: Record<string, unknown>;
}

export class ManifestInvalid extends Error {}

/**
 * Deepest JSON nesting a manifest may have. Real manifests nest 4 or 5 levels (annotations,
 * platform); the bound keeps one request from spending seconds building a hostile structure.
 */
export const MAX_MANIFEST_DEPTH = 64;
/** Most descriptors one list (layers, manifests, blobs) may hold. */
export const MAX_MANIFEST_DESCRIPTORS = 50_000;

/**
 * Whether JSON text nests deeper than `max`, read in one pass over the bytes before any parsing
 * (JSON.parse of 2,000,000 nested arrays takes seconds; this scan of 4 MiB, milliseconds).
 */
export function nestsDeeperThan(bytes: Uint8Array, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i];
    if (inString) {
      if (c === 0x5c) i++; // backslash: the next byte is escaped
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return false;
}

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function annotationsOf(value: unknown, where: string): Record<string, string> | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isObject(value)) throw new ManifestInvalid(`${where}.annotations must be an object of strings`);
  for (const [key, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw new ManifestInvalid(`${where}.annotations["${key}"] must be a string`);
  }
  return value as Record<string, string>;
}

export function parseDescriptor(value: unknown, where: string): Descriptor {
  if (!isObject(value)) throw new ManifestInvalid(`${where} must be a descriptor object`);
  const { mediaType, digest, size, artifactType } = value;
  if (!isValidMediaType(mediaType)) throw new ManifestInvalid(`${where}.mediaType is missing or not a valid media type`);
  if (!isValidDigest(digest)) throw new ManifestInvalid(`${where}.digest is missing, malformed or of an unsupported algorithm`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new ManifestInvalid(`${where}.size must be a non-negative integer`);
  if (artifactType !== undefined && !isValidMediaType(artifactType)) throw new ManifestInvalid(`${where}.artifactType is not a valid media type`);
  const descriptor: Descriptor = { mediaType, digest, size };
  if (artifactType !== undefined) descriptor.artifactType = artifactType;
  const annotations = annotationsOf(value.annotations, where);
  if (annotations) descriptor.annotations = annotations;
  if (value.urls !== undefined) {
    if (!Array.isArray(value.urls) || !value.urls.every((u) => typeof u === 'string')) throw new ManifestInvalid(`${where}.urls must be a list of strings`);
    descriptor.urls = value.urls as string[];
  }
  return descriptor;
}

function descriptorList(value: unknown, where: string, required: boolean): Descriptor[] {
  // Go clients serialise an empty list as null (regctl's scratch images do); read it as [].
  if (value === null || (value === undefined && !required)) return [];
  if (!Array.isArray(value)) throw new ManifestInvalid(`${where} must be a list of descriptors`);
  if (value.length > MAX_MANIFEST_DESCRIPTORS) throw new ManifestInvalid(`${where} has ${value.length} descriptors; at most ${MAX_MANIFEST_DESCRIPTORS} are accepted`);
  return value.map((d, i) => parseDescriptor(d, `${where}[${i}]`));
}

/** Picks the manifest's media type: its own field, else the request's Content-Type, else its shape. */
function detectMediaType(body: JsonObject, contentType: string | undefined): string {
  const declared = body.mediaType;
  if (declared !== undefined && typeof declared !== 'string') throw new ManifestInvalid('mediaType must be a string');
  if (declared && DOCKER_SCHEMA1.includes(declared)) throw new ManifestInvalid('Docker schema 1 manifests are not supported; push schema 2 or OCI');
  if (contentType && DOCKER_SCHEMA1.includes(contentType)) throw new ManifestInvalid('Docker schema 1 manifests are not supported; push schema 2 or OCI');
  if (declared) {
    if (contentType && MANIFEST_TYPES.has(contentType) && contentType !== declared) {
      throw new ManifestInvalid(`Content-Type ${contentType} does not match the manifest's mediaType ${declared}`);
    }
    return declared;
  }
  if (contentType && MANIFEST_TYPES.has(contentType)) return contentType;
  if (Array.isArray(body.manifests)) return OCI_INDEX;
  if (isObject(body.config)) return OCI_MANIFEST;
  throw new ManifestInvalid('cannot tell the manifest type: no mediaType field, no manifest Content-Type, no config or manifests');
}

/** Parses a manifest body. Throws ManifestInvalid with a message a user can act on. */
export function parseManifest(bytes: Uint8Array, contentType?: string): ParsedManifest {
  if (nestsDeeperThan(bytes, MAX_MANIFEST_DEPTH)) throw new ManifestInvalid(`manifest JSON nests deeper than ${MAX_MANIFEST_DEPTH} levels`);
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (err) {
    throw new ManifestInvalid(`manifest is not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(body)) throw new ManifestInvalid('manifest must be a JSON object');
  if (body.schemaVersion === 1) throw new ManifestInvalid('Docker schema 1 manifests are not supported; push schema 2 or OCI');
  const mediaType = detectMediaType(body, contentType);
  if (!MANIFEST_TYPES.has(mediaType)) throw new ManifestInvalid(`unsupported manifest media type ${mediaType}`);
  if (mediaType !== OCI_ARTIFACT_MANIFEST && body.schemaVersion !== 2) throw new ManifestInvalid('schemaVersion must be 2');

  const annotations = annotationsOf(body.annotations, 'manifest') ?? {};
  const links: ManifestLink[] = [];
  const link = (kind: LinkKind, d: Descriptor, required: boolean) => {
    const entry: ManifestLink = { kind, digest: d.digest, mediaType: d.mediaType, size: d.size, required };
    if (d.annotations) entry.annotations = d.annotations;
    links.push(entry);
  };
  const result: ParsedManifest = { mediaType, annotations, links, body };

  if (body.artifactType !== undefined) {
    if (!isValidMediaType(body.artifactType)) throw new ManifestInvalid('artifactType is not a valid media type');
    result.artifactType = body.artifactType;
  }
  if (mediaType === OCI_MANIFEST || mediaType === DOCKER_MANIFEST) {
    const config = parseDescriptor(body.config, 'config');
    link('config', config, true);
    result.configMediaType = config.mediaType;
    result.artifactType ??= config.mediaType;
    for (const layer of descriptorList(body.layers, 'layers', true)) {
      link('layer', layer, !isNonDistributable(layer.mediaType) && !layer.urls?.length);
    }
  } else if (INDEX_TYPES.has(mediaType)) {
    for (const child of descriptorList(body.manifests, 'manifests', true)) link('manifest', child, true);
  } else if (mediaType === OCI_ARTIFACT_MANIFEST) {
    if (result.artifactType === undefined) throw new ManifestInvalid('artifact manifests must carry artifactType');
    for (const blob of descriptorList(body.blobs, 'blobs', false)) {
      link(MANIFEST_TYPES.has(blob.mediaType) ? 'manifest' : 'blob', blob, true);
    }
  }
  if (body.subject !== undefined && mediaType !== DOCKER_MANIFEST && mediaType !== DOCKER_MANIFEST_LIST) {
    const subject = parseDescriptor(body.subject, 'subject');
    result.subject = subject.digest;
    link('subject', subject, false);
  }
  return result;
}

/** The descriptor a referrers response (or a layout index) lists for a manifest. */
export function referrerDescriptor(m: { mediaType: string; digest: string; size: number; artifactType?: string | null; annotations?: Record<string, string> | null }): Descriptor {
  const d: Descriptor = { mediaType: m.mediaType, digest: m.digest, size: m.size };
  if (m.artifactType) d.artifactType = m.artifactType;
  if (m.annotations && Object.keys(m.annotations).length > 0) d.annotations = m.annotations;
  return d;
}
