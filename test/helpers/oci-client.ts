// A tiny OCI Distribution client over fetch for tests: push blobs and manifests, pull them back,
// list tags and referrers, and build small image and referrer manifests with their sha256 digests.
// Every call returns the status instead of asserting, so callers decide what an answer means.
import { createHash, randomBytes } from 'node:crypto';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER = 'application/vnd.oci.image.layer.v1.tar';
export const OCI_EMPTY = 'application/vnd.oci.empty.v1+json';
export const REF_NAME = 'org.opencontainers.image.ref.name';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  urls?: string[];
}

/** A manifest ready to push: its exact bytes, digest, and the blobs it needs first. */
export interface Built {
  bytes: Buffer;
  digest: string;
  mediaType: string;
  descriptor: Descriptor;
  blobs: Buffer[];
}

export function sha256(data: string | Uint8Array): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export function descriptorOf(mediaType: string, bytes: Uint8Array, extra: Partial<Descriptor> = {}): Descriptor {
  return { mediaType, digest: sha256(bytes), size: bytes.length, ...extra };
}

export const EMPTY_BLOB = Buffer.from('{}');
export const EMPTY_DESCRIPTOR: Descriptor = descriptorOf(OCI_EMPTY, EMPTY_BLOB);

function built(manifest: Record<string, unknown>, blobs: Buffer[]): Built {
  const bytes = Buffer.from(JSON.stringify(manifest));
  const mediaType = String(manifest.mediaType);
  return { bytes, digest: sha256(bytes), mediaType, descriptor: descriptorOf(mediaType, bytes), blobs };
}

/** An OCI image manifest with a config and one layer (random unless given). */
export function makeImage(options: { layer?: Uint8Array; config?: Record<string, unknown>; annotations?: Record<string, string> } = {}): Built {
  const config = Buffer.from(JSON.stringify(options.config ?? { architecture: 'amd64', os: 'linux', nonce: randomBytes(8).toString('hex') }));
  const layer = Buffer.from(options.layer ?? randomBytes(64));
  const manifest: Record<string, unknown> = {
    schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: descriptorOf(OCI_CONFIG, config), layers: [descriptorOf(OCI_LAYER, layer)],
  };
  if (options.annotations) manifest.annotations = options.annotations;
  return built(manifest, [config, layer]);
}

/** An artifact manifest (OCI image manifest with artifactType and the empty config) pointing at a subject. */
export function makeReferrer(subject: Descriptor, options: { artifactType: string; annotations?: Record<string, string>; payload?: Uint8Array }): Built {
  const layers = options.payload ? [descriptorOf('application/octet-stream', options.payload)] : [EMPTY_DESCRIPTOR];
  const manifest: Record<string, unknown> = {
    schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: options.artifactType, config: EMPTY_DESCRIPTOR, layers,
    subject: { mediaType: subject.mediaType, digest: subject.digest, size: subject.size },
  };
  if (options.annotations) manifest.annotations = options.annotations;
  return built(manifest, options.payload ? [EMPTY_BLOB, Buffer.from(options.payload)] : [EMPTY_BLOB]);
}

export interface Answer {
  status: number;
  headers: Headers;
  body: Buffer;
}

async function call(url: string | URL, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(url, init);
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

/** POST then PUT `?digest=`: the two-step monolithic upload. Status 201 means stored. */
export async function pushBlob(base: string, repo: string, bytes: Uint8Array): Promise<{ status: number; digest: string; body: Buffer }> {
  const digest = sha256(bytes);
  const open = await call(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  const location = open.headers.get('location');
  if (open.status !== 202 || !location) return { status: open.status, digest, body: open.body };
  const url = new URL(location, base);
  url.searchParams.set('digest', digest);
  const put = await call(url, { method: 'PUT', body: bytes, headers: { 'Content-Type': 'application/octet-stream' } });
  return { status: put.status, digest, body: put.body };
}

/** PUT a manifest by tag or digest. `digest` is the digest of the exact bytes sent. */
export async function pushManifest(base: string, repo: string, ref: string, manifest: Record<string, unknown> | Uint8Array, mediaType = OCI_MANIFEST): Promise<{ status: number; digest: string; headers: Headers; body: Buffer }> {
  const bytes = manifest instanceof Uint8Array ? Buffer.from(manifest) : Buffer.from(JSON.stringify(manifest));
  const answer = await call(`${base}/v2/${repo}/manifests/${ref}`, { method: 'PUT', body: bytes, headers: { 'Content-Type': mediaType } });
  return { status: answer.status, digest: sha256(bytes), headers: answer.headers, body: answer.body };
}

/** Pushes a built manifest's blobs, then the manifest; stops at the first answer that is not 201. */
export async function pushBuilt(base: string, repo: string, ref: string, item: Built): Promise<{ status: number; digest: string; body: Buffer }> {
  for (const blob of item.blobs) {
    const pushed = await pushBlob(base, repo, blob);
    if (pushed.status !== 201) return pushed;
  }
  return pushManifest(base, repo, ref, item.bytes, item.mediaType);
}

export async function getManifest(base: string, repo: string, ref: string): Promise<{ status: number; digest: string | null; bytes: Buffer }> {
  const answer = await call(`${base}/v2/${repo}/manifests/${ref}`, { headers: { Accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } });
  return { status: answer.status, digest: answer.headers.get('docker-content-digest'), bytes: answer.body };
}

export async function getBlob(base: string, repo: string, digest: string): Promise<{ status: number; bytes: Buffer }> {
  const answer = await call(`${base}/v2/${repo}/blobs/${digest}`);
  return { status: answer.status, bytes: answer.body };
}

function nextPage(base: string, headers: Headers): string | undefined {
  const link = headers.get('link');
  const match = link ? /<([^>]+)>;\s*rel="next"/.exec(link) : null;
  return match ? new URL(match[1]!, base).toString() : undefined;
}

/** Every tag, following `Link` pages. */
export async function listTags(base: string, repo: string): Promise<{ status: number; tags: string[] }> {
  const tags: string[] = [];
  let url: string | undefined = `${base}/v2/${repo}/tags/list`;
  while (url) {
    const answer = await call(url);
    if (answer.status !== 200) return { status: answer.status, tags };
    tags.push(...((JSON.parse(answer.body.toString()) as { tags: string[] | null }).tags ?? []));
    url = nextPage(base, answer.headers);
  }
  return { status: 200, tags };
}

/** Every referrer of a subject, following `Link` pages. */
export async function listReferrers(base: string, repo: string, subject: string): Promise<{ status: number; manifests: Descriptor[] }> {
  const manifests: Descriptor[] = [];
  let url: string | undefined = `${base}/v2/${repo}/referrers/${subject}`;
  while (url) {
    const answer = await call(url);
    if (answer.status !== 200) return { status: answer.status, manifests };
    manifests.push(...(JSON.parse(answer.body.toString()) as { manifests: Descriptor[] }).manifests);
    url = nextPage(base, answer.headers);
  }
  return { status: 200, manifests };
}

/** A one-file ustar archive (a layer for clients that take a tar), built without a tar binary. */
export function ustar(name: string, content: Buffer): Buffer {
  const header = Buffer.alloc(512);
  const field = (value: string, offset: number, length: number) => header.write(value, offset, length, 'ascii');
  field(name, 0, 100);
  field('0000644\0', 100, 8);
  field('0000000\0', 108, 8);
  field('0000000\0', 116, 8);
  field(`${content.length.toString(8).padStart(11, '0')}\0`, 124, 12);
  field('00000000000\0', 136, 12);
  field('        ', 148, 8);
  field('0', 156, 1);
  field('ustar\0', 257, 6);
  field('00', 263, 2);
  let sum = 0;
  for (const byte of header) sum += byte;
  field(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8);
  return Buffer.concat([header, content, Buffer.alloc((512 - (content.length % 512)) % 512), Buffer.alloc(1024)]);
}
