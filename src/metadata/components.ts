// The component index seam: one row per component version, the artifacts each ships and the
// components each references. Everything here is derived from the layouts (through the metadata
// index) and rebuilt per repository, so it can always be dropped and derived again.

/** A resource or source a component descriptor lists (src/components/ocm.ts reads them). */
export interface Resource {
  name: string;
  version: string | null;
  type: string | null;
  relation: string | null;
  extraIdentity: Record<string, string>;
  labels: Record<string, string>;
  access: Record<string, unknown> | null;
  /** The resource's content digest from the descriptor, as an OCI digest when it is one. */
  digest: string | null;
}

/** A component a descriptor references. */
export interface Reference {
  name: string;
  componentName: string;
  version: string;
  labels: Record<string, string>;
}

export type ComponentKind = 'ocm' | 'generic';

export interface VersionDetail {
  resources: Resource[];
  sources: Resource[];
  references: Reference[];
}

export interface ComponentVersionRow {
  repository: string;
  name: string;
  version: string;
  kind: ComponentKind;
  /** The tag that names this version (OCM's `.build-` form), or null when only the anchor does. */
  tag: string | null;
  digest: string;
  provider: string | null;
  labels: Record<string, string>;
  pushedAt: number;
  detail: VersionDetail;
  /** Digests of the artifacts this version ships (from its descriptor). */
  artifacts: string[];
}

export interface VersionKey {
  repository: string;
  name: string;
  version: string;
}

export interface OwnershipReferrer {
  /** The repository holding the ownership referrer (the artifact's repository). */
  repository: string;
  name: string;
  version: string;
}

/** Each method is one transaction; `replaceRepository` callers serialize per repository. */
export interface ComponentIndex {
  /** Replaces everything known about one repository's component versions, in one transaction. */
  replaceRepository(repository: string, rows: ComponentVersionRow[]): Promise<void>;
  /** Every component version, ordered by name, repository, then version text. */
  allVersions(): Promise<ComponentVersionRow[]>;
  /**
   * Versions of a component; with `include`, only those in repositories it accepts, decided before
   * any version is read (a hidden component costs what an absent one does).
   */
  versionsOf(name: string, include?: (repository: string) => boolean): Promise<ComponentVersionRow[]>;
  /** Component versions whose descriptor ships `digest`. */
  shipping(digest: string): Promise<VersionKey[]>;
  /** Component versions whose descriptor references `name` at `version`. */
  referencing(name: string, version: string): Promise<VersionKey[]>;
  /** Repositories that hold component versions now. */
  repositories(): Promise<string[]>;
  /** Whether a repository holds component versions or portable-index entries. */
  holds(repository: string): Promise<boolean>;
  /** Cached descriptor reading of a manifest (null: read before, not a component version). */
  cached(digest: string): Promise<unknown>;
  cache(repository: string, digest: string, value: unknown): Promise<void>;

  /** Records an OCM ownership referrer (`subject` is the artifact it claims). */
  recordOwnership(entry: OwnershipReferrer & { digest: string; subject: string }): Promise<void>;
  forgetOwnership(repository: string, digests: string[]): Promise<void>;
  /** OCM ownership referrers of `digest` whose manifest is still in the metadata index. */
  ownershipReferrers(digest: string): Promise<OwnershipReferrer[]>;
  /** Portable-index entries (their digests) of one repository's component versions. */
  portableEntries(repository: string): Promise<string[]>;
  setPortableEntry(repository: string, digest: string, present: boolean): Promise<void>;
  /** Every repository with portable-index entries. */
  portableRepositories(): Promise<string[]>;
  /** Replaces the portable-index bookkeeping and the ownership table (start-up rebuild). */
  resetDerived(portable: { repository: string; digest: string }[], ownership: (OwnershipReferrer & { digest: string; subject: string })[]): Promise<void>;

  // Read-only scans of the metadata index's manifests (same database), used at start-up only.
  /** Repositories holding something that may make them components. */
  candidateRepositories(configTypes: string[], annotationKeys: string[], anchor: string): Promise<string[]>;
  /** Manifests of an artifact type anywhere: repository, digest, subject and annotations. */
  manifestsOfType(artifactType: string): Promise<{ repository: string; digest: string; subject: string | null; annotations: Record<string, string> }[]>;
}
