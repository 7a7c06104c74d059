// Keeps the component index in step with the registry: every push or delete in a repository that
// may hold components re-derives that repository's component versions (descriptors are read once
// per manifest and cached), then brings the portable index up to date. Start-up derives every
// candidate repository again, so an index dropped by `trellis reindex` comes back whole.
import type { Logger } from 'pino';
import type { ContentChange, Registry } from '../content/registry.ts';
import { eachRepository, type ComponentIndex, type ComponentVersionRow, type ManifestRecord } from '../metadata/index.ts';
import { digestOf } from '../oci/digest.ts';
import { INDEX_TYPES, OCI_MANIFEST } from '../oci/mediatypes.ts';
import { ContentError } from '../content/errors.ts';
import { repositoryNameProblem } from '../oci/names.ts';
import {
  ANCHOR_BYTES, ANCHOR_DIGEST, ANCHOR_SIZE, ANNOTATION_COMPONENT_NAME, ANNOTATION_COMPONENT_VERSION, ANNOTATION_COMPONENT_VERSION_KEY,
  ANNOTATION_DESCRIPTOR, COMPONENT_DESCRIPTOR_ARTIFACT_TYPE, EMPTY_BLOB, EMPTY_DESCRIPTOR, OCM_CONFIG_TYPES, OCM_DESCRIPTOR_TYPES,
  OWNERSHIP_ARTIFACT_TYPE, componentOfRepository, isDigestTag, parseComponentVersionAnnotation, parseDescriptorBlob, shippedDigests,
  versionToTag, type DescriptorInfo,
} from './ocm.ts';
import { isVersionLike } from './semver.ts';
import { storedText } from './query.ts';

export interface ComponentSettings {
  /** Repository of the portable index; '' turns it off. */
  indexRepository: string;
  /** Repositories under these prefixes are generic components named after the repository. */
  repositoryPrefixes: string[];
  /** A manifest carrying this annotation makes its repository a component named by its value; '' turns it off. */
  annotation: string;
  /**
   * Whether a repository's versions may be listed in the portable index: with access control on,
   * only when everyone who may pull the index may pull that repository (an entry names the
   * repository, the component, the version and the manifest). Absent: every repository's are.
   */
  publishes?: ((repository: string) => boolean) | undefined;
}

/** The portable index entry's artifact type and its Trellis annotation keys. */
export const ENTRY_ARTIFACT_TYPE = 'application/vnd.trellis.component-version.v1+json';
export const ENTRY_PROVIDER = 'dev.trellis.component.provider';
export const ENTRY_REPOSITORY = 'dev.trellis.component.repository';
export const ENTRY_KIND = 'dev.trellis.component.kind';
export const ENTRY_DIGEST = 'dev.trellis.component.digest';
/** The tag the anchor carries in the portable index repository. */
export const ANCHOR_TAG = 'index.ocm';
/** Largest component descriptor read (the tar, YAML or JSON layer). */
export const MAX_DESCRIPTOR_BYTES = 16 << 20;
const IMAGE_VERSION = 'org.opencontainers.image.version';
const IMAGE_VENDOR = 'org.opencontainers.image.vendor';

/** The portable index entry of one component version: deterministic bytes, so re-pushes are no-ops. */
export function entryManifest(row: ComponentVersionRow): Buffer {
  const annotations: Record<string, string> = {
    [ENTRY_DIGEST]: row.digest,
    [ENTRY_KIND]: row.kind,
    ...(row.provider ? { [ENTRY_PROVIDER]: row.provider } : {}),
    [ENTRY_REPOSITORY]: row.repository,
    [ANNOTATION_COMPONENT_NAME]: row.name,
    [ANNOTATION_COMPONENT_VERSION_KEY]: row.version,
  };
  return Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_MANIFEST, artifactType: ENTRY_ARTIFACT_TYPE,
    config: EMPTY_DESCRIPTOR, layers: [EMPTY_DESCRIPTOR],
    subject: { mediaType: OCI_MANIFEST, digest: ANCHOR_DIGEST, size: ANCHOR_SIZE },
    annotations,
  }));
}

/**
 * A row's names and versions as the index stores them on either metadata store (a NUL, which a
 * descriptor or an annotation may hold, as U+FFFD), so SQLite and PostgreSQL list the same.
 */
function storable(row: ComponentVersionRow): ComponentVersionRow {
  const references = row.detail.references.map((r) => ({ ...r, name: storedText(r.name), componentName: storedText(r.componentName), version: storedText(r.version) }));
  return {
    ...row, name: storedText(row.name), version: storedText(row.version), provider: row.provider === null ? null : storedText(row.provider),
    detail: { ...row.detail, references },
  };
}

type Json = Record<string, unknown>;
const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value);

export class Components {
  readonly index: ComponentIndex;
  readonly settings: ComponentSettings;
  private readonly registry: Registry;
  private readonly log: Logger;
  /** Settles when the derivation at open is done; answers and changes wait for it. */
  ready: Promise<void> = Promise.resolve();

  private constructor(registry: Registry, index: ComponentIndex, settings: ComponentSettings, log: Logger) {
    this.registry = registry;
    this.index = index;
    this.settings = settings;
    this.log = log;
  }

  /**
   * Attaches the component index to a registry and derives it from what the registry holds;
   * `background`: returns at once and derives meanwhile (`ready` settles when done).
   */
  static async open(registry: Registry, settings: ComponentSettings, log: Logger, options: { background?: boolean } = {}): Promise<Components> {
    if (settings.indexRepository && repositoryNameProblem(settings.indexRepository)) {
      throw new Error(`componentIndexRepository ${JSON.stringify(settings.indexRepository)} is not a valid repository name`);
    }
    const components = new Components(registry, registry.metadata.components, settings, log);
    registry.observe((change) => components.onChange(change));
    // After the registry has caught up with storage (in the background under `serve`).
    const reconciled = registry.adopted().then(() => (registry.isClosing ? undefined : components.reconcile()));
    if (!options.background) {
      await reconciled;
      return components;
    }
    components.ready = reconciled.catch((err: unknown) => {
      // A shutdown during the derivation closes the index under it; the next start derives again.
      if (registry.isClosing) log.debug({ err }, 'deriving the components stopped: the registry is closing');
      else log.error({ err }, 'deriving the components failed; they are derived again as repositories change');
    });
    return components;
  }

  private prefixed(repository: string): boolean {
    return this.settings.repositoryPrefixes.some((prefix) => repository.startsWith(prefix));
  }

  /** Whether a manifest says, by itself, that it may be (part of) a component version. */
  private looksLikeComponent(record: ManifestRecord): boolean {
    if (record.artifactType === OWNERSHIP_ARTIFACT_TYPE) return false;
    return (record.configMediaType !== null && OCM_CONFIG_TYPES.has(record.configMediaType)) || record.subject === ANCHOR_DIGEST
      || record.artifactType === COMPONENT_DESCRIPTOR_ARTIFACT_TYPE || ANNOTATION_COMPONENT_VERSION in record.annotations
      || ANNOTATION_COMPONENT_NAME in record.annotations || (this.settings.annotation !== '' && this.settings.annotation in record.annotations);
  }

  private async onChange(change: ContentChange): Promise<void> {
    const { repository, stored } = change;
    if (repository === this.settings.indexRepository) return;
    // A change during the derivation at open would be overwritten by it. (The derivation's own
    // writes are to the index repository, above: they must not wait for it.)
    await this.ready;
    if (stored?.artifactType === OWNERSHIP_ARTIFACT_TYPE && stored.subject) {
      const name = stored.annotations[ANNOTATION_COMPONENT_NAME];
      const version = stored.annotations[ANNOTATION_COMPONENT_VERSION_KEY];
      if (name && version) await this.index.recordOwnership({ repository, digest: stored.digest, subject: stored.subject, name: storedText(name), version: storedText(version) });
    }
    if (change.removed?.length) await this.index.forgetOwnership(repository, change.removed);
    if (componentOfRepository(repository) || this.prefixed(repository) || (stored && this.looksLikeComponent(stored)) || await this.index.holds(repository)) {
      await this.refresh(repository);
    }
  }

  /** Derives everything again: ownership and portable bookkeeping, then every candidate repository. */
  async reconcile(): Promise<void> {
    const ownership = (await this.index.manifestsOfType(OWNERSHIP_ARTIFACT_TYPE)).flatMap((m) => {
      const name = m.annotations[ANNOTATION_COMPONENT_NAME];
      const version = m.annotations[ANNOTATION_COMPONENT_VERSION_KEY];
      return m.subject && name && version ? [{ repository: m.repository, digest: m.digest, subject: m.subject, name: storedText(name), version: storedText(version) }] : [];
    });
    const portable = this.settings.indexRepository ? (await this.index.manifestsOfType(ENTRY_ARTIFACT_TYPE)).flatMap((m) => {
      const owner = m.annotations[ENTRY_REPOSITORY];
      return m.repository === this.settings.indexRepository && m.subject === ANCHOR_DIGEST && owner ? [{ repository: owner, digest: m.digest }] : [];
    }) : [];
    await this.index.resetDerived(portable, ownership);
    const keys = [ANNOTATION_COMPONENT_VERSION, ANNOTATION_COMPONENT_NAME, ...(this.settings.annotation ? [this.settings.annotation] : [])];
    const repositories = new Set([
      ...(await this.index.candidateRepositories([...OCM_CONFIG_TYPES], keys, ANCHOR_DIGEST)),
      ...(await this.index.repositories()),
      ...(await this.index.portableRepositories()),
    ]);
    for await (const { name } of eachRepository(this.registry.metadata)) if (componentOfRepository(name) || this.prefixed(name)) repositories.add(name);
    repositories.delete(this.settings.indexRepository);
    for (const repository of [...repositories].sort()) await this.refresh(repository);
  }

  /** Re-derives one repository's component versions and its portable index entries. */
  refresh(repository: string): Promise<void> {
    // Across replicas when they share the metadata store: two derivations of one repository never interleave.
    return this.registry.locks.run(`components:${repository}`, async () => {
      const rows = await this.derive(repository);
      await this.index.replaceRepository(repository, rows);
      if (this.settings.indexRepository) await this.syncPortable(repository, rows);
    });
  }

  private async derive(repository: string): Promise<ComponentVersionRow[]> {
    const { metadata } = this.registry;
    const repo = await metadata.repository(repository);
    if (!repo || repository === this.settings.indexRepository) return [];
    // Tagged manifests, and OCM's untagged component versions found through the anchor.
    const tagsOf = new Map<string, string[]>();
    for (let after = ''; ;) {
      const page = await metadata.taggedEntries(repo.id, { after, limit: 1000 });
      for (const entry of page) tagsOf.set(entry.digest, [...(tagsOf.get(entry.digest) ?? []), entry.tag]);
      if (page.length < 1000) break;
      after = page[page.length - 1]!.tag;
    }
    const records = new Map<string, ManifestRecord>();
    for (let after = ''; ;) {
      const page = await metadata.referrers(repo.id, ANCHOR_DIGEST, { after, limit: 1000 });
      for (const record of page) records.set(record.digest, record);
      if (page.length < 1000) break;
      after = page[page.length - 1]!.digest;
    }
    for (const digest of tagsOf.keys()) {
      const record = records.get(digest) ?? await metadata.manifest(repo.id, digest);
      if (record) records.set(digest, record);
    }

    const rows: ComponentVersionRow[] = [];
    const ocmRepository = componentOfRepository(repository);
    for (const record of records.values()) {
      const tags = (tagsOf.get(record.digest) ?? []).filter((t) => !isDigestTag(t));
      const info = await this.readOcm(repository, record, ocmRepository !== undefined);
      if (info) {
        const tag = versionToTag(info.version);
        // Alias tags (`latest`, `stable`) are not versions: a version needs its own tag or the anchor.
        if (!tags.includes(tag) && record.subject !== ANCHOR_DIGEST) continue;
        rows.push({
          repository, name: info.name, version: info.version, kind: 'ocm', tag: tags.includes(tag) ? tag : null, digest: record.digest,
          provider: info.provider, labels: info.labels, pushedAt: record.pushedAt,
          detail: { resources: info.resources, sources: info.sources, references: info.references }, artifacts: shippedDigests(info),
        });
        continue;
      }
      const named = this.settings.annotation ? record.annotations[this.settings.annotation] : undefined;
      if (!named && !this.prefixed(repository)) continue;
      for (const tag of tags) {
        const annotated = record.annotations[IMAGE_VERSION];
        const version = isVersionLike(tag) ? tag : annotated && isVersionLike(annotated) ? annotated : undefined;
        if (!version) continue;
        rows.push({
          repository, name: named || repository, version, kind: 'generic', tag, digest: record.digest,
          provider: record.annotations[IMAGE_VENDOR] ?? null, labels: record.annotations, pushedAt: record.pushedAt,
          detail: { resources: [], sources: [], references: [] }, artifacts: [],
        });
      }
    }
    // One row per name and version: the one its own tag names, else the newest push.
    const best = new Map<string, ComponentVersionRow>();
    const rank = (r: ComponentVersionRow) => [r.tag === versionToTag(r.version) ? 1 : 0, r.pushedAt, r.digest] as const;
    for (const row of rows.map(storable)) {
      const key = `${row.name}\n${row.version}`;
      const held = best.get(key);
      if (!held) {
        best.set(key, row);
        continue;
      }
      const [a, b] = [rank(row), rank(held)];
      if (a[0] - b[0] > 0 || (a[0] === b[0] && (a[1] > b[1] || (a[1] === b[1] && a[2] > b[2])))) best.set(key, row);
    }
    return [...best.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.version < b.version ? -1 : a.version > b.version ? 1 : 0));
  }

  /** Reads an OCM component version's descriptor (cached by manifest digest); undefined when it is none. */
  private async readOcm(repository: string, record: ManifestRecord, ocmRepository: boolean): Promise<DescriptorInfo | undefined> {
    const candidate = this.looksLikeComponent(record) || (ocmRepository && INDEX_TYPES.has(record.mediaType));
    if (!candidate || (this.settings.annotation && this.settings.annotation in record.annotations && !this.looksLikeOcm(record))) return undefined;
    const cached = await this.index.cached(record.digest);
    if (cached !== undefined) return (cached as DescriptorInfo | null) ?? undefined;
    let info: DescriptorInfo | undefined;
    try {
      info = await this.readDescriptorOf(repository, record.digest, record.mediaType);
    } catch (err) {
      this.log.warn({ err, repository, digest: record.digest }, 'cannot read the component descriptor');
    }
    // A manifest whose descriptor cannot be read still names its version in its annotations.
    const named = parseComponentVersionAnnotation(record.annotations[ANNOTATION_COMPONENT_VERSION])
      ?? (record.annotations[ANNOTATION_COMPONENT_NAME] && record.annotations[ANNOTATION_COMPONENT_VERSION_KEY]
        ? { name: record.annotations[ANNOTATION_COMPONENT_NAME], version: record.annotations[ANNOTATION_COMPONENT_VERSION_KEY] } : undefined);
    if (!info && named) info = { ...named, provider: null, labels: {}, resources: [], sources: [], references: [] };
    await this.index.cache(repository, record.digest, info ?? null);
    return info;
  }

  private looksLikeOcm(record: ManifestRecord): boolean {
    return (record.configMediaType !== null && OCM_CONFIG_TYPES.has(record.configMediaType)) || record.subject === ANCHOR_DIGEST
      || record.artifactType === COMPONENT_DESCRIPTOR_ARTIFACT_TYPE || ANNOTATION_COMPONENT_VERSION in record.annotations;
  }

  private async readJson(repository: string, digest: string, maxBytes: number): Promise<Json | undefined> {
    const bytes = await this.registry.readBlob(repository, digest, maxBytes);
    if (!bytes) return undefined;
    const value = JSON.parse(bytes.toString('utf8')) as unknown;
    return isObject(value) ? value : undefined;
  }

  /** Manifest form: the descriptor layer. Index form: the child marked `software.ocm.descriptor`. */
  private async readDescriptorOf(repository: string, digest: string, mediaType: string, depth = 0): Promise<DescriptorInfo | undefined> {
    const manifest = await this.readJson(repository, digest, this.registry.options.maxManifestBytes);
    if (!manifest) return undefined;
    if (INDEX_TYPES.has(mediaType) || Array.isArray(manifest.manifests)) {
      if (depth > 0 || !Array.isArray(manifest.manifests)) return undefined;
      const children = manifest.manifests.filter(isObject);
      const child = children.find((c) => isObject(c.annotations) && c.annotations[ANNOTATION_DESCRIPTOR] === 'true') ?? children[0];
      return child && typeof child.digest === 'string' ? this.readDescriptorOf(repository, child.digest, String(child.mediaType ?? ''), depth + 1) : undefined;
    }
    const layers = Array.isArray(manifest.layers) ? manifest.layers.filter(isObject) : [];
    let layer = layers.find((l) => typeof l.mediaType === 'string' && OCM_DESCRIPTOR_TYPES.has(l.mediaType));
    if (!layer && isObject(manifest.config) && typeof manifest.config.digest === 'string') {
      const config = await this.readJson(repository, manifest.config.digest, 1 << 20).catch(() => undefined);
      if (isObject(config?.componentDescriptorLayer)) layer = config.componentDescriptorLayer;
    }
    if (!layer || typeof layer.digest !== 'string' || typeof layer.mediaType !== 'string') return undefined;
    const blob = await this.registry.readBlob(repository, layer.digest, MAX_DESCRIPTOR_BYTES);
    return blob ? parseDescriptorBlob(blob, layer.mediaType) : undefined;
  }

  // ---- the portable index -------------------------------------------------------------------

  /**
   * Makes sure the index repository holds the empty blob and OCM's anchor (byte-identical, never
   * rewritten); it is created with the first component version, so a registry without components
   * has no such repository.
   */
  private async ensureAnchor(): Promise<void> {
    const name = this.settings.indexRepository;
    const repo = await this.registry.createRepository(name);
    if (!(await this.registry.blobInfo(name, EMPTY_DESCRIPTOR.digest))) {
      await this.registry.storeBlobBytes(name, EMPTY_DESCRIPTOR.digest, EMPTY_BLOB);
    }
    if ((await this.registry.metadata.resolveTag(repo.id, ANCHOR_TAG)) !== ANCHOR_DIGEST || !await this.registry.metadata.manifest(repo.id, ANCHOR_DIGEST)) {
      await this.registry.putManifest(name, ANCHOR_TAG, ANCHOR_BYTES, OCI_MANIFEST, []);
    }
  }

  private async syncPortable(repository: string, rows: ComponentVersionRow[]): Promise<void> {
    const name = this.settings.indexRepository;
    // Entries of a repository not to be published are removed like those of a deleted version,
    // which is also how a start-up after a policy change withdraws them.
    const published = this.settings.publishes?.(repository) === false ? [] : rows;
    const desired = new Map(published.map((row) => {
      const bytes = entryManifest(row);
      return [digestOf(bytes, 'sha256'), bytes] as const;
    }));
    const held = await this.index.portableEntries(repository);
    if (!desired.size && !held.length) return;
    await this.ensureAnchor();
    const repo = (await this.registry.metadata.repository(name))!;
    for (const [digest, bytes] of desired) {
      if (!await this.registry.metadata.manifest(repo.id, digest)) await this.registry.putManifest(name, digest, bytes, OCI_MANIFEST, []);
      await this.index.setPortableEntry(repository, digest, true);
    }
    for (const digest of held) {
      if (desired.has(digest)) continue;
      try {
        await this.registry.deleteManifest(name, digest);
      } catch (err) {
        if (!(err instanceof ContentError && err.problem === 'not-found')) throw err;
      }
      await this.index.setPortableEntry(repository, digest, false);
    }
  }
}
