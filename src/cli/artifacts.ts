// push, pull and attach: files as the layers of an OCI image manifest with an artifactType and the
// empty config, the way oras stores them (file names in `org.opencontainers.image.title`).
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, normalize, resolve, sep } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { digestOf } from '../oci/digest.ts';
import { OCI_EMPTY, OCI_MANIFEST, INDEX_TYPES } from '../oci/mediatypes.ts';
import type { Descriptor } from '../oci/manifest.ts';
import type { HttpRegistry } from '../transfer/http.ts';
import { RegistryRequestFailed } from '../transfer/errors.ts';
import type { CopyProgress } from '../transfer/copy.ts';
import { UsageError } from './errors.ts';
import { prepareFolder } from './paths.ts';

export const TITLE = 'org.opencontainers.image.title';
export const DEFAULT_LAYER_TYPE = 'application/vnd.oci.image.layer.v1.tar';
export const DEFAULT_ARTIFACT_TYPE = 'application/vnd.unknown.artifact.v1';
const EMPTY = Buffer.from('{}');

export interface FileSpec {
  path: string;
  mediaType: string;
}

/** `path[:mediaType]`, the oras convention. */
export function parseFileSpec(text: string, defaultType: string): FileSpec {
  const match = /^(.*?):([A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*)$/.exec(text);
  if (match) return { path: match[1]!, mediaType: match[2]! };
  const colon = text.lastIndexOf(':');
  if (colon > 0 && !existsSync(text)) {
    const path = text.slice(0, colon);
    const type = text.slice(colon + 1);
    if (!type) throw new UsageError(`${text}: the media type after ":" is empty; write ${path} (for ${defaultType}) or ${path}:<type>/<subtype>`);
    if (existsSync(path)) throw new UsageError(`${text}: "${type}" is not a media type; write ${path}:<type>/<subtype>, e.g. ${path}:text/plain`);
  }
  return { path: text, mediaType: defaultType };
}

export function parseAnnotations(list: string[] = []): Record<string, string> | undefined {
  if (!list.length) return undefined;
  const out: Record<string, string> = {};
  for (const item of list) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new UsageError(`annotation "${item}" must be key=value`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

async function fileDigest(path: string): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}

export interface PushResult {
  digest: string;
  mediaType: string;
  size: number;
  artifactType: string;
  layers: Descriptor[];
  subject?: string;
}

function counted(id: string, progress: CopyProgress | undefined, path: string) {
  const stream = createReadStream(path);
  if (!progress) return stream;
  const counter = new Transform({
    transform(chunk: Buffer, _e, done) {
      progress.advance(id, chunk.length);
      done(null, chunk);
    },
  });
  stream.once('error', (err) => counter.destroy(err));
  return stream.pipe(counter);
}

/** Uploads the files and the manifest; tags it when `tag` is given. */
export async function pushArtifact(reg: HttpRegistry, repository: string, options: {
  files: FileSpec[]; artifactType: string; annotations?: Record<string, string> | undefined; subject?: Descriptor; tag?: string | undefined; progress?: CopyProgress | undefined;
}): Promise<PushResult> {
  const layers: Descriptor[] = [];
  for (const file of options.files) {
    const info = await stat(file.path).catch(() => undefined);
    if (!info) throw new UsageError(`${file.path} does not exist`);
    if (!info.isFile()) throw new UsageError(`${file.path} is not a regular file (tar a directory first)`);
    const { digest, size } = await fileDigest(file.path);
    layers.push({ mediaType: file.mediaType, digest, size, annotations: { [TITLE]: basename(file.path) } });
  }
  if (!(await reg.hasBlob(repository, digestOf(EMPTY)))) {
    await reg.putBlob(repository, digestOf(EMPTY), EMPTY.length, Readable.from([EMPTY]));
  }
  for (const [i, layer] of layers.entries()) {
    if (await reg.hasBlob(repository, layer.digest)) continue;
    const id = `${repository}@${layer.digest}`;
    options.progress?.start(id, layer.size);
    await reg.putBlob(repository, layer.digest, layer.size, counted(id, options.progress, options.files[i]!.path));
    options.progress?.finish(id);
  }
  if (!layers.length) layers.push({ mediaType: OCI_EMPTY, digest: digestOf(EMPTY), size: EMPTY.length, data: EMPTY.toString('base64') });
  const manifest: Record<string, unknown> = {
    schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: options.artifactType,
    config: { mediaType: OCI_EMPTY, digest: digestOf(EMPTY), size: EMPTY.length, data: EMPTY.toString('base64') },
    layers,
  };
  if (options.subject) manifest.subject = { mediaType: options.subject.mediaType, digest: options.subject.digest, size: options.subject.size };
  if (options.annotations) manifest.annotations = options.annotations;
  const bytes = Buffer.from(JSON.stringify(manifest));
  const digest = digestOf(bytes);
  await reg.putManifest(repository, options.tag ?? digest, bytes, OCI_MANIFEST);
  const result: PushResult = { digest, mediaType: OCI_MANIFEST, size: bytes.length, artifactType: options.artifactType, layers };
  if (options.subject) result.subject = options.subject.digest;
  return result;
}

export interface PulledFile {
  path: string;
  digest: string;
  size: number;
  mediaType: string;
}

/** A title that stays inside the output folder. */
function safeTitle(title: string): string | undefined {
  const clean = normalize(title);
  if (isAbsolute(clean) || clean.split(sep).includes('..') || clean === '.') return undefined;
  return clean;
}

/** Downloads the titled layers of an artifact into `dir`, checking every digest. */
export async function pullArtifact(reg: HttpRegistry, repository: string, reference: string, dir: string, progress?: CopyProgress): Promise<{ digest: string; files: PulledFile[]; skipped: string[] }> {
  const manifest = await reg.manifest(repository, reference);
  if (!manifest) throw new RegistryRequestFailed(`${repository}:${reference}: manifest not found`, 'not-found', 404);
  if (INDEX_TYPES.has(manifest.mediaType)) throw new UsageError(`${repository}:${reference} is an index; pull one of its manifests by digest (see \`trellis inspect\`)`);
  const body = JSON.parse(manifest.bytes.toString('utf8')) as { layers?: Descriptor[]; blobs?: Descriptor[] };
  const files: PulledFile[] = [];
  const skipped: string[] = [];
  await prepareFolder(dir);
  for (const layer of body.layers ?? body.blobs ?? []) {
    const title = layer.annotations?.[TITLE];
    const name = title === undefined ? undefined : safeTitle(title);
    if (!name) {
      skipped.push(layer.digest);
      continue;
    }
    const target = resolve(dir, name);
    const blob = await reg.blob(repository, layer.digest);
    if (!blob) throw new UsageError(`blob ${layer.digest} (${name}) is missing from ${repository}`);
    await mkdir(dirname(target), { recursive: true });
    const temp = `${target}.trellis-partial`;
    const hash = createHash('sha256');
    const id = `${repository}@${layer.digest}`;
    progress?.start(id, layer.size);
    const check = new Transform({
      transform(chunk: Buffer, _e, done) {
        hash.update(chunk);
        progress?.advance(id, chunk.length);
        done(null, chunk);
      },
    });
    try {
      await pipeline(blob.stream, check, createWriteStream(temp));
      const actual = `sha256:${hash.digest('hex')}`;
      if (layer.digest.startsWith('sha256:') && actual !== layer.digest) throw new UsageError(`${name}: downloaded content has digest ${actual}, expected ${layer.digest}`);
      await rename(temp, target);
    } finally {
      await rm(temp, { force: true });
      progress?.finish(id);
    }
    files.push({ path: join(dir, name), digest: layer.digest, size: layer.size, mediaType: layer.mediaType });
  }
  return { digest: manifest.digest, files, skipped };
}
