// The auth file (setting `authFile`): users, groups, robots, policies and the token mode, as JSON.
// Relative paths in it are relative to the file. See docs/auth.md.
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { POLICY_ACTIONS, type PolicyAction, type PolicyRule } from './policy.ts';

export interface BuiltInIssuer {
  /** Where clients fetch tokens; default: this registry's `/v2/_trellis/token` at the Host they used. */
  realm?: string;
  service: string;
  issuer: string;
  expirySeconds: number;
  refreshExpirySeconds: number;
  /** PKCS#8 PEM signing key; default: an ES256 key generated on first start under `_trellis/`. */
  privateKey?: string;
  /** JWS algorithm of `privateKey` (ES256, RS256, EdDSA, ...). */
  algorithm: string;
}

export interface ExternalIssuer {
  realm: string;
  service: string;
  issuer: string;
  audience: string;
  /** A JWK Set file, or a PEM public key (SPKI) with its algorithm. */
  jwks?: string;
  publicKey?: string;
  algorithm: string;
}

export interface AuthConfig {
  htpasswd?: string;
  robots: string;
  groups: Record<string, string[]>;
  admins: { users: string[]; groups: string[] };
  policies: Record<string, PolicyRule>;
  token?: { kind: 'builtin'; builtin: BuiltInIssuer } | { kind: 'external'; external: ExternalIssuer };
}

export class AuthConfigError extends Error {}

type Json = Record<string, unknown>;

function object(value: unknown, where: string): Json {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new AuthConfigError(`${where} must be a JSON object`);
  return value as Json;
}

function only(value: Json, keys: string[], where: string): void {
  for (const key of Object.keys(value)) if (!keys.includes(key)) throw new AuthConfigError(`${where}: unknown key ${JSON.stringify(key)} (expected one of ${keys.join(', ')})`);
}

function string(value: unknown, where: string): string {
  if (typeof value !== 'string' || !value) throw new AuthConfigError(`${where} must be a non-empty string`);
  return value;
}

function strings(value: unknown, where: string): string[] {
  if (!Array.isArray(value) || value.some((v) => typeof v !== 'string')) throw new AuthConfigError(`${where} must be an array of strings`);
  return value as string[];
}

function actions(value: unknown, where: string): PolicyAction[] {
  const list = strings(value, where);
  for (const a of list) if (!POLICY_ACTIONS.includes(a as PolicyAction)) throw new AuthConfigError(`${where}: unknown action ${JSON.stringify(a)} (use ${POLICY_ACTIONS.join(', ')})`);
  return list as PolicyAction[];
}

function actionMap(value: unknown, where: string): Record<string, PolicyAction[]> {
  return Object.fromEntries(Object.entries(object(value, where)).map(([k, v]) => [k, actions(v, `${where}.${k}`)]));
}

function seconds(value: unknown, fallback: number, where: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) throw new AuthConfigError(`${where} must be a positive integer`);
  return value;
}

const PATTERN = /^(\*\*?|[a-z0-9*]+(?:(?:[._]|__|-+)[a-z0-9*]+)*)(\/(\*\*?|[a-z0-9*]+(?:(?:[._]|__|-+)[a-z0-9*]+)*))*$/;

export function parseAuthConfig(raw: unknown, file: string, dataDir: string): AuthConfig {
  const base = dirname(resolve(file));
  const path = (value: unknown, where: string) => resolve(base, string(value, where));
  const top = object(raw, file);
  only(top, ['htpasswd', 'robots', 'groups', 'admins', 'policies', 'token'], file);
  const config: AuthConfig = {
    robots: top.robots === undefined ? resolve(dataDir, '_trellis', 'robots.json') : path(top.robots, 'robots'),
    groups: {},
    admins: { users: [], groups: [] },
    policies: {},
  };
  if (top.htpasswd !== undefined) config.htpasswd = path(top.htpasswd, 'htpasswd');
  for (const [group, members] of Object.entries(object(top.groups ?? {}, 'groups'))) config.groups[group] = strings(members, `groups.${group}`);
  if (top.admins !== undefined) {
    const admins = object(top.admins, 'admins');
    only(admins, ['users', 'groups'], 'admins');
    config.admins = { users: strings(admins.users ?? [], 'admins.users'), groups: strings(admins.groups ?? [], 'admins.groups') };
  }
  for (const [pattern, value] of Object.entries(object(top.policies ?? {}, 'policies'))) {
    const where = `policies[${JSON.stringify(pattern)}]`;
    if (!PATTERN.test(pattern)) throw new AuthConfigError(`${where}: not a repository pattern (lowercase name components, * within a component, ** for any depth)`);
    const rule = object(value, where);
    only(rule, ['users', 'groups', 'anonymous', 'authenticated'], where);
    const parsed: PolicyRule = {};
    if (rule.users !== undefined) parsed.users = actionMap(rule.users, `${where}.users`);
    if (rule.groups !== undefined) parsed.groups = actionMap(rule.groups, `${where}.groups`);
    if (rule.anonymous !== undefined) parsed.anonymous = actions(rule.anonymous, `${where}.anonymous`);
    if (rule.authenticated !== undefined) parsed.authenticated = actions(rule.authenticated, `${where}.authenticated`);
    config.policies[pattern] = parsed;
  }
  if (top.token !== undefined) {
    const token = object(top.token, 'token');
    if (token.external !== undefined) {
      only(token, ['external', 'realm', 'service'], 'token');
      const ext = object(token.external, 'token.external');
      only(ext, ['jwks', 'publicKey', 'algorithm', 'issuer', 'audience'], 'token.external');
      if ((ext.jwks === undefined) === (ext.publicKey === undefined)) throw new AuthConfigError('token.external needs exactly one of jwks or publicKey');
      const external: ExternalIssuer = {
        realm: string(token.realm, 'token.realm (the external issuer\'s token URL)'),
        service: string(token.service, 'token.service'),
        issuer: string(ext.issuer, 'token.external.issuer'),
        audience: ext.audience === undefined ? string(token.service, 'token.service') : string(ext.audience, 'token.external.audience'),
        algorithm: ext.algorithm === undefined ? 'RS256' : string(ext.algorithm, 'token.external.algorithm'),
      };
      if (ext.jwks !== undefined) external.jwks = path(ext.jwks, 'token.external.jwks');
      if (ext.publicKey !== undefined) external.publicKey = path(ext.publicKey, 'token.external.publicKey');
      config.token = { kind: 'external', external };
    } else {
      only(token, ['realm', 'service', 'issuer', 'expirySeconds', 'refreshExpirySeconds', 'privateKey', 'algorithm'], 'token');
      const builtin: BuiltInIssuer = {
        service: token.service === undefined ? 'trellis' : string(token.service, 'token.service'),
        issuer: token.issuer === undefined ? 'trellis' : string(token.issuer, 'token.issuer'),
        expirySeconds: seconds(token.expirySeconds, 300, 'token.expirySeconds'),
        refreshExpirySeconds: seconds(token.refreshExpirySeconds, 86_400, 'token.refreshExpirySeconds'),
        algorithm: token.algorithm === undefined ? 'ES256' : string(token.algorithm, 'token.algorithm'),
      };
      if (token.realm !== undefined) builtin.realm = string(token.realm, 'token.realm');
      if (token.privateKey !== undefined) builtin.privateKey = path(token.privateKey, 'token.privateKey');
      config.token = { kind: 'builtin', builtin };
    }
  }
  return config;
}

export async function readAuthConfig(file: string, dataDir: string): Promise<AuthConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new AuthConfigError(`cannot read auth file ${file}: ${(err as Error).message}`);
  }
  return parseAuthConfig(raw, file, dataDir);
}
