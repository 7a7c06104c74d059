// Access control: who may pull, push and delete where, and the credentials that say who is
// calling. `openAuth` reads the auth file named by the `authFile` setting (none: an open registry)
// and returns what the HTTP gate (src/registry/access-control.ts) checks every request against.
// `robotStore` is what `trellis robot` edits. Nothing here knows about HTTP.
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Settings } from '../config/settings.ts';
import { TRELLIS_FOLDER } from '../layout/paths.ts';
import { readAuthConfig, type AuthConfig } from './config.ts';
import { Htpasswd } from './htpasswd.ts';
import { RobotStore } from './robots.ts';
import { ExternalVerifier, TokenIssuer, type TokenVerifier } from './tokens.ts';

export { AuthConfigError, type AuthConfig } from './config.ts';
export { Htpasswd } from './htpasswd.ts';
export { Policies, type Principal, type RepositoryAction } from './policy.ts';
export { RobotStore, ROBOT_PREFIX } from './robots.ts';
export { TokenInvalid, formatScope, grantedActions, parseScopes, type Grant, type TokenIssuer, type TokenVerifier } from './tokens.ts';

/** The rules and credentials of one auth file. */
export interface AuthSetup {
  config: AuthConfig;
  htpasswd?: Htpasswd | undefined;
  robots: RobotStore;
  /** The built-in token service's signer (token mode). */
  issuer?: TokenIssuer | undefined;
  /** An external token service's keys (external token mode). */
  external?: TokenVerifier | undefined;
}

/** Where the built-in issuer keeps the signing key it generated. */
export function generatedKeyFile(dataDir: string): string {
  return join(dataDir, TRELLIS_FOLDER, 'token-key.json');
}

export async function openAuth(settings: Settings, log: Logger): Promise<AuthSetup | undefined> {
  if (!settings.authFile) return undefined;
  const config = await readAuthConfig(settings.authFile, settings.data);
  let htpasswd: Htpasswd | undefined;
  if (config.htpasswd) {
    htpasswd = new Htpasswd(config.htpasswd);
    await htpasswd.refresh();
    for (const problem of htpasswd.problems) log.warn({ problem }, 'htpasswd entry refused');
  }
  const robots = new RobotStore(config.robots);
  await robots.refresh();
  const token = config.token;
  const issuer = token?.kind === 'builtin' ? await TokenIssuer.open(token.builtin, generatedKeyFile(settings.data)) : undefined;
  const external = token?.kind === 'external' ? await ExternalVerifier.open(token.external) : undefined;
  log.info({ authFile: settings.authFile, mode: token?.kind === 'builtin' ? 'token' : token?.kind === 'external' ? 'external token' : 'basic', policies: Object.keys(config.policies).length }, 'access control on');
  return { config, htpasswd, robots, issuer, external };
}

/** The robot accounts of a configuration (for `trellis robot`). */
export async function robotStore(settings: Settings): Promise<RobotStore> {
  if (!settings.authFile) return new RobotStore(join(settings.data, TRELLIS_FOLDER, 'robots.json'));
  return new RobotStore((await readAuthConfig(settings.authFile, settings.data)).robots);
}
