// Components: OCM component versions and generic (rule-defined) components, derived from what
// the registry holds, served under /v2/_trellis/components, and published as OCI referrers of a
// fixed anchor in a well-known repository (the portable index). See docs/query.md#components.
import type { Logger } from 'pino';
import type { Registry } from '../content/registry.ts';
import type { Settings } from '../config/settings.ts';
import { ComponentsApi, COMPONENTS_PATH } from './api.ts';
import { Components, type ComponentSettings } from './service.ts';

export { COMPONENTS_PATH, ComponentsApi } from './api.ts';
export { Components, ENTRY_ARTIFACT_TYPE, ANCHOR_TAG, entryManifest } from './service.ts';
export { ANCHOR_BYTES, ANCHOR_DIGEST, ANCHOR_SIZE } from './ocm.ts';
export type { ComponentIndex, ComponentVersionRow } from '../metadata/index.ts';

export function componentSettings(settings: Settings): ComponentSettings {
  return {
    indexRepository: settings.componentIndexRepository,
    repositoryPrefixes: settings.componentRepositoryPrefixes.split(',').map((p) => p.trim()).filter(Boolean),
    annotation: settings.componentAnnotation,
  };
}

/** Attaches components to a registry (deriving them from what it holds) and returns the API. */
export async function openComponents(registry: Registry, settings: Settings, log: Logger): Promise<ComponentsApi> {
  const components = await Components.open(registry, componentSettings(settings), log);
  return new ComponentsApi(components);
}

/** Whether a request path belongs to the components API. */
export function isComponentsPath(path: string): boolean {
  return path === COMPONENTS_PATH || path.startsWith(`${COMPONENTS_PATH}/`);
}
