// Components: OCM component versions and generic (rule-defined) components, derived from what
// the registry holds, served under /v2/_trellis/components, and published as OCI referrers of a
// fixed anchor in a well-known repository (the portable index). See docs/query.md#components.
import type { Logger } from 'pino';
import type { Registry } from '../content/registry.ts';
import type { Settings } from '../config/settings.ts';
import { Components, type ComponentSettings } from './service.ts';

/** Where the components API lives (served by src/registry/components.ts). */
export const COMPONENTS_PATH = '/v2/_trellis/components';
export { matches, parseQuery, queryError, storedText } from './query.ts';
export { compareVersionStrings, parseConstraint, satisfies } from './semver.ts';
export { Components, ENTRY_ARTIFACT_TYPE, ANCHOR_TAG, entryManifest } from './service.ts';
export { ANCHOR_BYTES, ANCHOR_DIGEST, ANCHOR_SIZE } from './ocm.ts';
export type { ComponentIndex, ComponentVersionRow } from '../metadata/index.ts';

export function componentSettings(settings: Settings, publishes?: ComponentSettings['publishes']): ComponentSettings {
  return {
    indexRepository: settings.componentIndexRepository,
    repositoryPrefixes: settings.componentRepositoryPrefixes.split(',').map((p) => p.trim()).filter(Boolean),
    annotation: settings.componentAnnotation,
    publishes,
  };
}

/**
 * Attaches components to a registry and derives them from what it holds. `publishes` says which
 * repositories' versions the portable index may list (see ComponentSettings).
 */
export function openComponents(registry: Registry, settings: Settings, log: Logger, options: { background?: boolean; publishes?: ComponentSettings['publishes'] } = {}): Promise<Components> {
  return Components.open(registry, componentSettings(settings, options.publishes), log, options);
}
