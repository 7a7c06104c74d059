// Repository names and tags: the grammar of the distribution spec plus the names a layout reserves.
const COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const REPOSITORY_NAME = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;

/** Components that would collide with the files of the enclosing OCI layout. */
const RESERVED_COMPONENTS = new Set(['blobs', 'index.json', 'oci-layout']);
export const MAX_NAME_LENGTH = 255;

export function repositoryNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'repository name is empty';
  if (name.length > MAX_NAME_LENGTH) return `repository name is longer than ${MAX_NAME_LENGTH} characters`;
  if (!REPOSITORY_NAME.test(name)) return 'repository name must match [a-z0-9]+((.|_|__|-+)[a-z0-9]+)*(/...)*';
  const reserved = name.split('/').find((c) => RESERVED_COMPONENTS.has(c));
  if (reserved) return `repository name component "${reserved}" is reserved by the OCI image layout`;
  return undefined;
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}
