// Access control: who may pull, push and delete where. `openAccessControl` reads the auth file
// named by the `authFile` setting and returns the gate the HTTP server runs every request through
// (none without an auth file: an open registry). `robotStore` is what `trellis robot` edits.
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Settings } from '../config/settings.ts';
import { TRELLIS_FOLDER } from '../layout/paths.ts';
import { AccessControl } from './access-control.ts';
import { readAuthConfig } from './config.ts';
import { Htpasswd } from './htpasswd.ts';
import { RobotStore } from './robots.ts';
import { ExternalVerifier, TokenIssuer } from './tokens.ts';

export { AccessControl, TOKEN_PATH } from './access-control.ts';
export { AuthConfigError } from './config.ts';
export { RobotStore, ROBOT_PREFIX } from './robots.ts';

/** Where the built-in issuer keeps the signing key it generated. */
export function generatedKeyFile(dataDir: string): string {
  return join(dataDir, TRELLIS_FOLDER, 'token-key.json');
}

export async function openAccessControl(settings: Settings, log: Logger, audit: Logger = log): Promise<AccessControl | undefined> {
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
  return new AccessControl({
    config, htpasswd, robots, issuer, external, log, audit,
    tls: Boolean(settings.tlsCert),
    requests: { perSecond: settings.rateLimitPerSecond, burst: settings.rateLimitBurst },
    failures: { perSecond: settings.authFailuresPerMinute / 60, burst: settings.authFailureBurst },
  });
}

/** The robot accounts of a configuration (for `trellis robot`). */
export async function robotStore(settings: Settings): Promise<RobotStore> {
  if (!settings.authFile) return new RobotStore(join(settings.data, TRELLIS_FOLDER, 'robots.json'));
  return new RobotStore((await readAuthConfig(settings.authFile, settings.data)).robots);
}
