// Credentials the way Docker keeps them: `$DOCKER_CONFIG/config.json` (default ~/.docker), with
// `auths` entries (base64 user:password), a default `credsStore` and per-host `credHelpers`, both
// run as `docker-credential-<name> get|store|erase` with JSON on stdin/stdout.
import { execFile } from 'node:child_process';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { CredentialError } from './errors.ts';

export interface Credentials {
  username: string;
  password: string;
}

export interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
  [key: string]: unknown;
}


export function dockerConfigPath(): string {
  return join(process.env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json');
}

export async function readDockerConfig(path = dockerConfigPath()): Promise<DockerConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return {};
  }
  try {
    return JSON.parse(text) as DockerConfig;
  } catch (err) {
    throw new CredentialError(`${path} is not valid JSON: ${(err as Error).message}`);
  }
}

async function writeDockerConfig(config: DockerConfig, path = dockerConfigPath()): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const temp = `${path}.${process.pid}.tmp`;
  await writeFile(temp, `${JSON.stringify(config, null, '\t')}\n`, { mode: 0o600 });
  await rename(temp, path);
}

/** Docker Hub's credentials live under its historical key. */
function configKey(host: string): string {
  return host === 'docker.io' || host === 'registry-1.docker.io' ? 'https://index.docker.io/v1/' : host;
}

function helperFor(config: DockerConfig, host: string): string | undefined {
  return config.credHelpers?.[configKey(host)] ?? config.credsStore;
}

function runHelper(helper: string, action: 'get' | 'store' | 'erase', input: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(`docker-credential-${helper}`, [action], { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) {
        const text = `${stdout}${stderr}`.trim();
        // The helper protocol's "not found" answer is not a failure for get and erase.
        if (action !== 'store' && /credentials not found/i.test(text)) return resolve('');
        return reject(new CredentialError(`docker-credential-${helper} ${action} failed: ${text || err.message}`));
      }
      resolve(stdout);
    });
    child.stdin?.end(input);
  });
}

export async function getCredentials(host: string): Promise<Credentials | undefined> {
  const config = await readDockerConfig();
  const key = configKey(host);
  const helper = helperFor(config, host);
  if (helper) {
    const out = (await runHelper(helper, 'get', key)).trim();
    if (out) {
      const parsed = JSON.parse(out) as { Username?: string; Secret?: string };
      if (parsed.Secret) return { username: parsed.Username ?? '', password: parsed.Secret };
    }
  }
  const entry = config.auths?.[key] ?? config.auths?.[`https://${key}`] ?? config.auths?.[`http://${key}`];
  if (!entry) return undefined;
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon >= 0) return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (entry.username && entry.password) return { username: entry.username, password: entry.password };
  return undefined;
}

/** Stores credentials; returns where they went (a helper's name or the config file). */
export async function storeCredentials(host: string, credentials: Credentials): Promise<string> {
  const config = await readDockerConfig();
  const key = configKey(host);
  const helper = helperFor(config, host);
  if (helper) {
    await runHelper(helper, 'store', JSON.stringify({ ServerURL: key, Username: credentials.username, Secret: credentials.password }));
    // An `auths` entry without `auth` tells Docker the host is logged in through the store.
    config.auths = { ...config.auths, [key]: {} };
    await writeDockerConfig(config);
    return `docker-credential-${helper}`;
  }
  config.auths = { ...config.auths, [key]: { auth: Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64') } };
  await writeDockerConfig(config);
  return dockerConfigPath();
}

/** Removes stored credentials; returns false when there were none. */
export async function eraseCredentials(host: string): Promise<boolean> {
  const config = await readDockerConfig();
  const key = configKey(host);
  const helper = helperFor(config, host);
  let found = false;
  if (helper) {
    found = (await runHelper(helper, 'get', key)).trim() !== '';
    if (found) await runHelper(helper, 'erase', key);
  }
  if (config.auths && key in config.auths) {
    delete config.auths[key];
    found = true;
    await writeDockerConfig(config);
  }
  return found;
}
