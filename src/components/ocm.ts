// How OCM stores component versions in OCI (ocm-spec `oci.md`): media types, the version-to-tag
// mapping, the Component Index anchor, and reading a component descriptor in any of its forms.
import { createRequire } from 'node:module';
import { digestOf } from '../oci/digest.ts';
import type { Reference, Resource } from '../metadata/index.ts';

export const OCM_CONFIG_TYPES: ReadonlySet<string> = new Set([
  'application/vnd.ocm.software.component.config.v1+json',
  // Gardener "cnudie", the types OCM's predecessor wrote; read, never written.
  'application/vnd.gardener.cloud.cnudie.component.config.v1+json',
  'application/vnd.oci.gardener.cloud.cnudie.component-descriptor-metadata.config.v2+json',
]);

export const OCM_DESCRIPTOR_TYPES: ReadonlySet<string> = new Set([
  'application/vnd.ocm.software.component-descriptor.v2+yaml+tar',
  'application/vnd.ocm.software.component-descriptor.v2+json',
  'application/vnd.ocm.software.component-descriptor.v2+yaml',
  'application/vnd.gardener.cloud.cnudie.component-descriptor.v2+yaml+tar',
  'application/vnd.gardener.cloud.cnudie.component-descriptor.v2+json',
  'application/vnd.gardener.cloud.cnudie.component-descriptor.v2+yaml',
  'application/vnd.oci.gardener.cloud.cnudie.component-descriptor.config.v2+yaml+tar',
]);

export const ANNOTATION_COMPONENT_VERSION = 'software.ocm.componentversion';
export const ANNOTATION_COMPONENT_NAME = 'software.ocm.component.name';
export const ANNOTATION_COMPONENT_VERSION_KEY = 'software.ocm.component.version';
export const ANNOTATION_DESCRIPTOR = 'software.ocm.descriptor';
/** artifactType of component-version top-level manifests written by OCM v2. */
export const COMPONENT_DESCRIPTOR_ARTIFACT_TYPE = 'application/vnd.ocm.software.component-descriptor.v2';
export const OWNERSHIP_ARTIFACT_TYPE = 'application/vnd.ocm.software.ownership.v1+json';
export const COMPONENT_INDEX_ARTIFACT_TYPE = 'application/vnd.ocm.software.component-index.v1+json';
export const COMPONENT_DESCRIPTORS_SEGMENT = 'component-descriptors/';

const EMPTY_JSON = { mediaType: 'application/vnd.oci.empty.v1+json', digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', size: 2 };
export const EMPTY_BLOB = Buffer.from('{}');
export const EMPTY_DESCRIPTOR = EMPTY_JSON;

/**
 * OCM's Component Index anchor (ocm-spec oci.md §8.1): fixed bytes whose digest is normative.
 * Built field by field in the order Go's encoder writes them; `ANCHOR_DIGEST` is checked at load.
 */
const ANCHOR_DESCRIPTION = 'This is an OCM component index. It is an empty jsonthat can be used as referrer for OCM component descriptors. '
  + 'It is used as a subjectfor all OCM Component Version Top-Level Manifests and can be used to reference back allOCM Component Versions';
const emptyWithData = { ...EMPTY_JSON, data: 'e30=' };
export const ANCHOR_BYTES = Buffer.from(JSON.stringify({
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  artifactType: COMPONENT_INDEX_ARTIFACT_TYPE,
  config: emptyWithData,
  layers: [emptyWithData],
  annotations: { 'org.opencontainers.image.description': ANCHOR_DESCRIPTION, 'org.opencontainers.image.title': 'OCM Component Index V1' },
}));
export const ANCHOR_DIGEST = 'sha256:9717cda41c478af11cba7ed29f4aa3e4882bab769d006788169cbccafc0fcd05';
export const ANCHOR_SIZE = 837;
if (digestOf(ANCHOR_BYTES, 'sha256') !== ANCHOR_DIGEST || ANCHOR_BYTES.length !== ANCHOR_SIZE) {
  throw new Error('the OCM component index anchor does not have its canonical digest');
}

/** `1.2.3+ci.42` → `1.2.3.build-ci.42` (OCI tags cannot hold `+`). */
export function versionToTag(version: string): string {
  return version.replace('+', '.build-');
}

/** `1.2.3.build-ci.42` → `1.2.3+ci.42`; other tags are their own version. */
export function tagToVersion(tag: string): string {
  return tag.replace('.build-', '+');
}

/** Tags clients use for referrers fallbacks and signatures (`sha256-<hex>…`): never versions. */
export function isDigestTag(tag: string): boolean {
  return /^sha(256|384|512)-[0-9a-f]{32,}/.test(tag);
}

/** `name:version` (OCM v1) or `component-descriptors/name:version` (OCM v2). */
export function parseComponentVersionAnnotation(value: string | undefined): { name: string; version: string } | undefined {
  if (!value) return undefined;
  const text = value.startsWith(COMPONENT_DESCRIPTORS_SEGMENT) ? value.slice(COMPONENT_DESCRIPTORS_SEGMENT.length) : value;
  const colon = text.lastIndexOf(':');
  if (colon <= 0 || colon === text.length - 1) return undefined;
  return { name: text.slice(0, colon), version: text.slice(colon + 1) };
}

/** `<prefix>/component-descriptors/<name>` → the component name (and the OCM repository prefix). */
export function componentOfRepository(repository: string): { prefix: string; name: string } | undefined {
  let at = 0;
  if (!repository.startsWith(COMPONENT_DESCRIPTORS_SEGMENT)) {
    const slash = repository.indexOf(`/${COMPONENT_DESCRIPTORS_SEGMENT}`);
    if (slash < 0) return undefined;
    at = slash + 1;
  }
  const name = repository.slice(at + COMPONENT_DESCRIPTORS_SEGMENT.length);
  return name ? { prefix: at ? repository.slice(0, at - 1) : '', name } : undefined;
}

export type { Reference, Resource } from '../metadata/index.ts';

export interface DescriptorInfo {
  name: string;
  version: string;
  provider: string | null;
  labels: Record<string, string>;
  resources: Resource[];
  sources: Resource[];
  references: Reference[];
}

type Json = Record<string, unknown>;
const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);
const str = (value: unknown): string | null => (typeof value === 'string' ? value : typeof value === 'number' ? String(value) : null);

/** OCM labels are a list of `{name, value}`; values that are not strings are kept as JSON. */
function labelsOf(value: unknown): Record<string, string> {
  const labels: Record<string, string> = {};
  if (!Array.isArray(value)) return labels;
  for (const label of value) {
    if (!isObject(label) || typeof label.name !== 'string') continue;
    labels[label.name] = typeof label.value === 'string' ? label.value : JSON.stringify(label.value ?? null);
  }
  return labels;
}

function stringMap(value: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (isObject(value)) for (const [k, v] of Object.entries(value)) if (typeof v === 'string') out[k] = v;
  return out;
}

function ociDigest(value: unknown): string | null {
  if (!isObject(value)) return null;
  const hex = str(value.value);
  const algorithm = (str(value.hashAlgorithm) ?? '').toLowerCase().replace('-', '');
  if (!hex || !/^[a-f0-9]{64}$|^[a-f0-9]{128}$/.test(hex)) return null;
  return algorithm === 'sha512' || hex.length === 128 ? `sha512:${hex}` : `sha256:${hex}`;
}

function artifactOf(value: unknown): Resource | undefined {
  if (!isObject(value) || typeof value.name !== 'string') return undefined;
  return {
    name: value.name, version: str(value.version), type: str(value.type), relation: str(value.relation),
    extraIdentity: stringMap(value.extraIdentity), labels: labelsOf(value.labels),
    access: isObject(value.access) ? value.access : null, digest: ociDigest(value.digest),
  };
}

/** Reads a parsed component descriptor (schema v2, or v3alpha1's metadata/spec layout). */
export function readDescriptor(document: unknown): DescriptorInfo | undefined {
  if (!isObject(document)) return undefined;
  let component: Json;
  let spec: Json;
  if (isObject(document.component)) {
    component = document.component;
    spec = document.component;
  } else if (isObject(document.metadata) && isObject(document.spec)) {
    component = document.metadata;
    spec = document.spec;
  } else {
    return undefined;
  }
  const name = str(component.name);
  const version = str(component.version);
  if (!name || !version) return undefined;
  const provider = isObject(component.provider) ? str(component.provider.name) : str(component.provider);
  const list = (value: unknown) => (Array.isArray(value) ? value : []);
  const references = list(spec.componentReferences ?? spec.references).flatMap((r): Reference[] => {
    if (!isObject(r)) return [];
    const componentName = str(r.componentName);
    const refVersion = str(r.version);
    return componentName && refVersion ? [{ name: str(r.name) ?? componentName, componentName, version: refVersion, labels: labelsOf(r.labels) }] : [];
  });
  return {
    name, version, provider, labels: labelsOf(component.labels),
    resources: list(spec.resources).flatMap((r) => artifactOf(r) ?? []),
    sources: list(spec.sources).flatMap((s) => artifactOf(s) ?? []),
    references,
  };
}

/** The digests a component version ships: local blobs, pinned image references, resource digests. */
export function shippedDigests(info: DescriptorInfo): string[] {
  const found = new Set<string>();
  for (const artifact of [...info.resources, ...info.sources]) {
    if (artifact.digest) found.add(artifact.digest);
    const access = artifact.access ?? {};
    for (const key of ['localReference', 'imageReference', 'reference', 'digest']) {
      const value = access[key];
      const m = typeof value === 'string' ? /(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/.exec(value) : null;
      if (m) found.add(m[1]!);
    }
  }
  return [...found].sort();
}

/** Finds `name` in a tar archive (ustar, GNU and pax long names); undefined when absent. */
export function tarEntry(archive: Buffer, name: string): Buffer | undefined {
  let offset = 0;
  let longName: string | undefined;
  while (offset + 512 <= archive.length) {
    const header = archive.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) return undefined;
    const field = (start: number, length: number) => header.subarray(start, start + length).toString('utf8').replace(/\0.*$/s, '');
    const size = parseInt(field(124, 12).trim() || '0', 8);
    if (!Number.isFinite(size) || size < 0) return undefined;
    const type = String.fromCharCode(header[156]!);
    const body = archive.subarray(offset + 512, offset + 512 + size);
    const prefix = field(345, 155);
    const entryName = longName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
    longName = undefined;
    if (type === 'L') {
      longName = body.toString('utf8').replace(/\0.*$/s, '');
    } else if (type === 'x') {
      const path = /(?:^|\n)\d+ path=([^\n]*)\n/.exec(body.toString('utf8'));
      if (path) longName = path[1];
    } else if ((type === '0' || type === '\0') && entryName.replace(/^\.\//, '') === name) {
      return body;
    }
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  return undefined;
}

// The YAML parser loads on the first YAML descriptor, not with the server (about 40 ms of start-up).
let yaml: typeof import('yaml') | undefined;
const parseYaml = (text: string) => (yaml ??= createRequire(import.meta.url)('yaml') as typeof import('yaml')).parse(text, { maxAliasCount: 100 }) as unknown;

/** Parses a descriptor layer of any OCM descriptor media type. */
export function parseDescriptorBlob(bytes: Buffer, mediaType: string): DescriptorInfo | undefined {
  let text: string;
  if (mediaType.endsWith('+tar')) {
    const entry = tarEntry(bytes, 'component-descriptor.yaml');
    if (!entry) return undefined;
    text = entry.toString('utf8');
  } else {
    text = bytes.toString('utf8');
  }
  try {
    // JSON is YAML; the parser is bounded by the blob size the caller read.
    return readDescriptor(mediaType.endsWith('+json') ? JSON.parse(text) : parseYaml(text));
  } catch {
    return undefined;
  }
}
