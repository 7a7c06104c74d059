// Docker registry tokens: short-lived JWTs whose `access` claim lists the granted scopes
// (`repository:<name>:pull,push`, `registry:catalog:*`). The built-in issuer signs them with a key
// from config or one generated on first start; an external issuer's tokens are verified with its
// public key or JWK Set. Signature, expiry, not-before, issuer and audience are always checked.
import { randomUUID } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { CryptoKey, JWK, JWTPayload, JWTVerifyGetKey } from 'jose';
import type { BuiltInIssuer, ExternalIssuer } from './config.ts';

// jose loads only when a token is first made or checked: an open registry (and every client
// command) starts without it (about 50 ms of start-up).
let joseModule: Promise<typeof import('jose')> | undefined;
const jose = () => (joseModule ??= import('jose'));

export interface Grant {
  type: string;
  name: string;
  actions: string[];
}

export interface VerifiedToken {
  subject: string;
  access: Grant[];
}

export class TokenInvalid extends Error {}

const REFRESH_USE = 'refresh';

/** `repository:a/b:pull,push` (several may share one string, space-separated, as OAuth2 sends them). */
export function parseScopes(values: string[]): Grant[] {
  const grants: Grant[] = [];
  for (const scope of values.flatMap((v) => v.split(' ')).filter(Boolean)) {
    const first = scope.indexOf(':');
    const last = scope.lastIndexOf(':');
    if (first <= 0 || last === first) continue;
    // `repository(plugin)` is an old distribution spelling of the same type.
    const type = scope.slice(0, first).replace(/\(.*\)$/, '');
    grants.push({ type, name: scope.slice(first + 1, last), actions: scope.slice(last + 1).split(',').filter(Boolean) });
  }
  return grants;
}

export function formatScope(grant: Grant): string {
  return `${grant.type}:${grant.name}:${grant.actions.join(',')}`;
}

/** The actions a token's claims grant on one resource. */
export function grantedActions(access: Grant[], type: string, name: string): Set<string> {
  const actions = new Set<string>();
  for (const grant of access) if (grant.type === type && grant.name === name) for (const a of grant.actions) actions.add(a);
  return actions;
}

function accessClaim(payload: JWTPayload): Grant[] {
  const access = payload.access;
  if (!Array.isArray(access)) return [];
  return access.filter((g): g is Grant => typeof g === 'object' && g !== null && typeof g.type === 'string' && typeof g.name === 'string' && Array.isArray(g.actions))
    .map((g) => ({ type: g.type, name: g.name, actions: g.actions.filter((a) => typeof a === 'string') }));
}

async function verifyJwt(token: string, key: CryptoKey | JWTVerifyGetKey, options: { issuer: string; audience: string; algorithms: string[]; clockTolerance: number }): Promise<JWTPayload> {
  try {
    // A token without `exp` would never expire: refused, whoever signed it.
    const checks = { ...options, requiredClaims: ['exp'] };
    const { jwtVerify } = await jose();
    const { payload } = typeof key === 'function' ? await jwtVerify(token, key, checks) : await jwtVerify(token, key, checks);
    return payload;
  } catch (err) {
    throw new TokenInvalid((err as Error).message);
  }
}

export interface TokenVerifier {
  verify(token: string): Promise<VerifiedToken>;
}

export class TokenIssuer implements TokenVerifier {
  readonly config: BuiltInIssuer;
  private readonly privateKey: CryptoKey;
  private readonly publicKey: CryptoKey;
  readonly kid: string;

  private constructor(config: BuiltInIssuer, keys: { privateKey: CryptoKey; publicKey: CryptoKey; kid: string }) {
    this.config = config;
    this.privateKey = keys.privateKey;
    this.publicKey = keys.publicKey;
    this.kid = keys.kid;
  }

  /** Loads the configured key, or the generated one at `generatedKeyFile` (creating it on first start). */
  static async open(config: BuiltInIssuer, generatedKeyFile: string): Promise<TokenIssuer> {
    const { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, importPKCS8 } = await jose();
    let jwk: JWK;
    if (config.privateKey) {
      const key = await importPKCS8(await readFile(config.privateKey, 'utf8'), config.algorithm, { extractable: true });
      jwk = await exportJWK(key);
    } else {
      try {
        jwk = JSON.parse(await readFile(generatedKeyFile, 'utf8')) as JWK;
        config = { ...config, algorithm: jwk.alg ?? 'ES256' };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        const pair = await generateKeyPair('ES256', { extractable: true });
        jwk = { ...(await exportJWK(pair.privateKey)), alg: 'ES256' };
        config = { ...config, algorithm: 'ES256' };
        await mkdir(dirname(generatedKeyFile), { recursive: true });
        await writeFile(generatedKeyFile, JSON.stringify(jwk), { mode: 0o600 });
        await chmod(generatedKeyFile, 0o600);
      }
    }
    const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...publicJwk } = jwk;
    const kid = await calculateJwkThumbprint(publicJwk);
    const privateKey = await importJWK(jwk, config.algorithm) as CryptoKey;
    const publicKey = await importJWK(publicJwk, config.algorithm) as CryptoKey;
    return new TokenIssuer(config, { privateKey, publicKey, kid });
  }

  private async sign(claims: JWTPayload, subject: string, seconds: number): Promise<string> {
    const { SignJWT } = await jose();
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT(claims)
      .setProtectedHeader({ alg: this.config.algorithm, kid: this.kid, typ: 'JWT' })
      .setIssuer(this.config.issuer).setAudience(this.config.service).setSubject(subject)
      .setIssuedAt(now).setNotBefore(now).setExpirationTime(now + seconds).setJti(randomUUID())
      .sign(this.privateKey);
  }

  issue(subject: string, access: Grant[], seconds = this.config.expirySeconds): Promise<string> {
    return this.sign({ access }, subject, seconds);
  }

  /**
   * A long-lived token that can only be traded for access tokens (OAuth2 `refresh_token`).
   * `credential` fingerprints the account's password or secret as it is now: a new one (or a robot
   * revoked and created again under its name) makes the token worthless.
   */
  issueRefresh(subject: string, credential: string): Promise<string> {
    return this.sign({ use: REFRESH_USE, cred: credential }, subject, this.config.refreshExpirySeconds);
  }

  private async payload(token: string): Promise<JWTPayload> {
    return verifyJwt(token, this.publicKey, { issuer: this.config.issuer, audience: this.config.service, algorithms: [this.config.algorithm], clockTolerance: 0 });
  }

  async verify(token: string): Promise<VerifiedToken> {
    const payload = await this.payload(token);
    if (payload.use === REFRESH_USE) throw new TokenInvalid('a refresh token cannot be used as an access token');
    return { subject: payload.sub ?? '', access: accessClaim(payload) };
  }

  /** The subject of a refresh token and the credential fingerprint it was issued under. */
  async verifyRefresh(token: string): Promise<{ subject: string; credential: string }> {
    const payload = await this.payload(token);
    if (payload.use !== REFRESH_USE || !payload.sub) throw new TokenInvalid('not a refresh token');
    return { subject: payload.sub, credential: typeof payload.cred === 'string' ? payload.cred : '' };
  }
}

export class ExternalVerifier implements TokenVerifier {
  private readonly config: ExternalIssuer;
  private readonly key: CryptoKey | JWTVerifyGetKey;

  private constructor(config: ExternalIssuer, key: CryptoKey | JWTVerifyGetKey) {
    this.config = config;
    this.key = key;
  }

  static async open(config: ExternalIssuer): Promise<ExternalVerifier> {
    const { createLocalJWKSet, importSPKI } = await jose();
    const key = config.jwks
      ? createLocalJWKSet(JSON.parse(await readFile(config.jwks, 'utf8')) as { keys: JWK[] })
      : await importSPKI(await readFile(config.publicKey!, 'utf8'), config.algorithm);
    return new ExternalVerifier(config, key);
  }

  async verify(token: string): Promise<VerifiedToken> {
    const algorithms = this.config.jwks ? ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'ES512', 'EdDSA'] : [this.config.algorithm];
    const payload = await verifyJwt(token, this.key, { issuer: this.config.issuer, audience: this.config.audience, algorithms, clockTolerance: 30 });
    return { subject: payload.sub ?? '', access: accessClaim(payload) };
  }
}
