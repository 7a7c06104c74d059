// Media types the registry understands as manifests.
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_ARTIFACT_MANIFEST = 'application/vnd.oci.artifact.manifest.v1+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const DOCKER_SCHEMA1 = ['application/vnd.docker.distribution.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v1+prettyjws'];
export const OCI_EMPTY = 'application/vnd.oci.empty.v1+json';

export const MANIFEST_TYPES: ReadonlySet<string> = new Set([OCI_MANIFEST, OCI_INDEX, OCI_ARTIFACT_MANIFEST, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST]);
export const INDEX_TYPES: ReadonlySet<string> = new Set([OCI_INDEX, DOCKER_MANIFEST_LIST]);

const MEDIA_TYPE_SYNTAX = /^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}\/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$/;

export function isValidMediaType(value: unknown): value is string {
  return typeof value === 'string' && MEDIA_TYPE_SYNTAX.test(value);
}

/** Strips parameters (`; charset=...`) and lower-cases a Content-Type header. */
export function bareMediaType(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const bare = header.split(';')[0]!.trim().toLowerCase();
  return bare || undefined;
}

/** Layers that are not meant to be pushed (nondistributable / foreign). */
export function isNonDistributable(mediaType: string): boolean {
  return mediaType.includes('nondistributable') || mediaType.includes('foreign');
}
