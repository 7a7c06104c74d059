// Where things live inside the data root. Every repository is an OCI Image Layout at `<name>/`;
// Trellis's own files sit under `_trellis/`, a name no repository can take.
export const LAYOUT_FILE = 'oci-layout';
export const INDEX_FILE = 'index.json';
export const LAYOUT_HEADER = JSON.stringify({ imageLayoutVersion: '1.0.0' });
export const REF_NAME = 'org.opencontainers.image.ref.name';
/** The subject annotation containerd and oras-go recognise on untagged `index.json` entries. */
export const CONTAINERD_SUBJECT = 'io.containerd.manifest.subject';
export const TRELLIS_FOLDER = '_trellis';
export const UPLOADS_FOLDER = `${TRELLIS_FOLDER}/uploads`;

export function layoutKey(repository: string, file: string): string {
  return `${repository}/${file}`;
}

export function blobKey(repository: string, digest: string): string {
  const colon = digest.indexOf(':');
  return `${repository}/blobs/${digest.slice(0, colon)}/${digest.slice(colon + 1)}`;
}
