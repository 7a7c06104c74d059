// What an OCM client does against a registry, for tests: import a Common Transport Format
// archive (blobs, then manifests under their mapped tags), and build component versions in each
// storage form OCM has used (descriptor as tar/YAML/JSON, current and legacy config types, index
// form, v1 and v2 annotations, the Component Index subject).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { EMPTY_BLOB, EMPTY_DESCRIPTOR, OCI_INDEX, OCI_MANIFEST, descriptorOf, pushBlob, pushManifest, sha256, type Descriptor } from '../helpers/oci-client.ts';

export const OCM_CONFIG = 'application/vnd.ocm.software.component.config.v1+json';
export const CNUDIE_CONFIG = 'application/vnd.gardener.cloud.cnudie.component.config.v1+json';
export const DESCRIPTOR_TAR = 'application/vnd.ocm.software.component-descriptor.v2+yaml+tar';
export const DESCRIPTOR_JSON = 'application/vnd.ocm.software.component-descriptor.v2+json';
export const DESCRIPTOR_YAML = 'application/vnd.ocm.software.component-descriptor.v2+yaml';
export const CNUDIE_DESCRIPTOR_JSON = 'application/vnd.gardener.cloud.cnudie.component-descriptor.v2+json';
export const ANCHOR_DIGEST = 'sha256:9717cda41c478af11cba7ed29f4aa3e4882bab769d006788169cbccafc0fcd05';
export const FIXTURES = join(import.meta.dirname, '../fixtures/ocm-ctf');

function ok(status: number, what: string): void {
  if (status !== 201) throw new Error(`${what}: ${status}`);
}

/**
 * Imports a CTF directory as `ocm transfer ctf` would: for each artifact of `artifact-index.json`,
 * its blobs, then its manifest under the tag; repositories get `prefix/` in front.
 */
export async function importCtf(base: string, dir: string, prefix = ''): Promise<{ repository: string; tag: string; digest: string }[]> {
  const index = JSON.parse(await readFile(join(dir, 'artifact-index.json'), 'utf8')) as { artifacts: { repository: string; tag?: string; digest: string }[] };
  const blob = (digest: string) => readFile(join(dir, 'blobs', digest.replace(':', '.')));
  const imported = [];
  for (const artifact of index.artifacts) {
    const repository = prefix ? `${prefix}/${artifact.repository}` : artifact.repository;
    const bytes = await blob(artifact.digest);
    const manifest = JSON.parse(bytes.toString()) as { mediaType: string; config?: Descriptor; layers?: Descriptor[]; manifests?: Descriptor[] };
    for (const d of [...(manifest.config ? [manifest.config] : []), ...(manifest.layers ?? [])]) ok((await pushBlob(base, repository, await blob(d.digest))).status, `blob ${d.digest}`);
    const pushed = await pushManifest(base, repository, artifact.tag ?? artifact.digest, bytes, manifest.mediaType);
    ok(pushed.status, `manifest ${artifact.digest}`);
    imported.push({ repository, tag: artifact.tag ?? '', digest: pushed.digest });
  }
  return imported;
}

/** A one-file ustar archive, as OCM writes `component-descriptor.yaml`. */
export function tarOf(name: string, content: Buffer): Buffer {
  const header = Buffer.alloc(512);
  header.write(name, 0, 100);
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(`${content.length.toString(8).padStart(11, '0')}\0`, 124);
  header.write('00000000000\0', 136);
  header.write('        ', 148);
  header.write('0', 156);
  header.write('ustar\0', 257);
  header.write('00', 263);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  const padding = Buffer.alloc((512 - (content.length % 512)) % 512);
  return Buffer.concat([header, content, padding, Buffer.alloc(1024)]);
}

export interface VersionSpec {
  name: string;
  version: string;
  provider?: string;
  labels?: Record<string, string>;
  resources?: Record<string, unknown>[];
  references?: { name: string; componentName: string; version: string }[];
  /** How the descriptor is stored; default tar. */
  form?: 'tar' | 'json' | 'yaml' | 'cnudie-json';
  /** The OCI repository prefix in front of `component-descriptors/`. */
  prefix?: string;
  /** Also set the Component Index as subject and OCM v2's artifactType and annotation. */
  v2?: boolean;
  /** Store as an index whose descriptor child is marked `software.ocm.descriptor`. */
  indexForm?: boolean;
  /** Tag to push under; default the mapped version (`+` → `.build-`). */
  tag?: string;
  /** Push by digest, with no tag. */
  byDigest?: boolean;
  /** Extra blobs for local resources. */
  localBlobs?: Buffer[];
}

export function repositoryOf(spec: { name: string; prefix?: string }): string {
  return `${spec.prefix ? `${spec.prefix}/` : ''}component-descriptors/${spec.name}`;
}

export function descriptorDocument(spec: VersionSpec): Record<string, unknown> {
  return {
    meta: { schemaVersion: 'v2' },
    component: {
      name: spec.name, version: spec.version, provider: spec.provider ?? 'acme.org',
      labels: Object.entries(spec.labels ?? {}).map(([name, value]) => ({ name, value })),
      repositoryContexts: [], sources: [], resources: spec.resources ?? [], componentReferences: spec.references ?? [],
    },
  };
}

/** Pushes one component version the way OCM stores it; returns the top-level manifest's digest. */
export async function pushComponentVersion(base: string, spec: VersionSpec): Promise<{ repository: string; digest: string; tag: string }> {
  const repository = repositoryOf(spec);
  const document = descriptorDocument(spec);
  const form = spec.form ?? 'tar';
  const [descriptor, layerType] = form === 'tar' ? [tarOf('component-descriptor.yaml', Buffer.from(toYaml(document))), DESCRIPTOR_TAR]
    : form === 'yaml' ? [Buffer.from(toYaml(document)), DESCRIPTOR_YAML]
      : [Buffer.from(JSON.stringify(document)), form === 'json' ? DESCRIPTOR_JSON : CNUDIE_DESCRIPTOR_JSON];
  const layer = descriptorOf(layerType, descriptor);
  const config = Buffer.from(JSON.stringify({ componentDescriptorLayer: layer }));
  const configType = form === 'cnudie-json' ? CNUDIE_CONFIG : OCM_CONFIG;
  const locals = spec.localBlobs ?? [];
  for (const b of [config, descriptor, ...locals]) ok((await pushBlob(base, repository, b)).status, 'blob');
  const annotations = { 'software.ocm.componentversion': spec.v2 ? `component-descriptors/${spec.name}:${spec.version}` : `${spec.name}:${spec.version}` };
  const subject = spec.v2 ? { subject: { mediaType: OCI_MANIFEST, digest: ANCHOR_DIGEST, size: 837 } } : {};
  if (spec.v2) await pushAnchor(base, repository);
  const manifest = {
    schemaVersion: 2, mediaType: OCI_MANIFEST, ...(spec.v2 ? { artifactType: 'application/vnd.ocm.software.component-descriptor.v2' } : {}),
    config: descriptorOf(configType, config), layers: [layer, ...locals.map((b) => descriptorOf('application/octet-stream', b))],
    ...(spec.indexForm ? {} : { ...subject, annotations }),
  };
  const tag = spec.tag ?? spec.version.replace('+', '.build-');
  if (!spec.indexForm) {
    const pushed = await pushManifest(base, repository, spec.byDigest ? sha256(JSON.stringify(manifest)) : tag, manifest);
    ok(pushed.status, 'manifest');
    return { repository, digest: pushed.digest, tag };
  }
  const child = await pushManifest(base, repository, sha256(JSON.stringify(manifest)), manifest);
  ok(child.status, 'descriptor manifest');
  const index = {
    schemaVersion: 2, mediaType: OCI_INDEX,
    manifests: [{ mediaType: OCI_MANIFEST, digest: child.digest, size: JSON.stringify(manifest).length, annotations: { 'software.ocm.descriptor': 'true' } }],
    ...subject, annotations,
  };
  const pushed = await pushManifest(base, repository, tag, index, OCI_INDEX);
  ok(pushed.status, 'index');
  return { repository, digest: pushed.digest, tag };
}

/** OCM's Component Index anchor, pushed into a component repository as OCM v2 does. */
export async function pushAnchor(base: string, repository: string): Promise<void> {
  ok((await pushBlob(base, repository, EMPTY_BLOB)).status, 'empty blob');
  const withData = { ...EMPTY_DESCRIPTOR, data: 'e30=' };
  const anchor = {
    schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: 'application/vnd.ocm.software.component-index.v1+json', config: withData, layers: [withData],
    annotations: {
      'org.opencontainers.image.description': 'This is an OCM component index. It is an empty jsonthat can be used as referrer for OCM component descriptors. It is used as a subjectfor all OCM Component Version Top-Level Manifests and can be used to reference back allOCM Component Versions',
      'org.opencontainers.image.title': 'OCM Component Index V1',
    },
  };
  const pushed = await pushManifest(base, repository, ANCHOR_DIGEST, anchor);
  ok(pushed.status, 'anchor');
}

export async function getJson<T = Record<string, unknown>>(url: string): Promise<{ status: number; body: T; headers: Headers }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as T, headers: res.headers };
}

/** Follows `Link` pages of the components list; returns every page's entries. */
export async function allPages<T>(base: string, path: string, key: string): Promise<{ pages: T[][]; all: T[] }> {
  const pages: T[][] = [];
  let url: string | undefined = `${base}${path}`;
  while (url) {
    const answer: { status: number; body: Record<string, T[]>; headers: Headers } = await getJson<Record<string, T[]>>(url);
    if (answer.status !== 200) throw new Error(`${url}: ${answer.status} ${JSON.stringify(answer.body)}`);
    pages.push(answer.body[key]!);
    const link = answer.headers.get('link');
    const match = link ? /<([^>]+)>;\s*rel="next"/.exec(link) : null;
    url = match ? new URL(match[1]!, base).toString() : undefined;
  }
  return { pages, all: pages.flat() };
}
