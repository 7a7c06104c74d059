// The gate every request passes when access control is on: who is calling (Basic from htpasswd or
// a robot, a Bearer token, or nobody), whether they are over a rate limit, and what they may see
// and do. It also serves the token endpoint of the Docker token flow. The rules and credentials
// are src/auth's (no HTTP there); this file is where they meet requests and status codes.
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { OciError } from '../oci/errors.ts';
import { repositoryNameProblem } from '../oci/names.ts';
import { readBody, sendJson } from './http.ts';
import { RateLimiter, type RateLimit } from './rate-limit.ts';
import { METRICS_PATH } from './ops.ts';
import type { AccessView, ApiContext, Gate } from './context.ts';
import { Policies, ROBOT_PREFIX, TokenInvalid, formatScope, grantedActions, parseScopes, type AuthSetup, type Grant, type Htpasswd, type Principal, type RepositoryAction, type TokenVerifier } from '../auth/index.ts';

export const TOKEN_PATH = '/v2/_trellis/token';
const GC_PATH = '/v2/_trellis/gc';
const ALL_ACTIONS: readonly RepositoryAction[] = ['pull', 'push', 'delete'];
/** How long a verified password is remembered, so bcrypt does not run on every request. */
const PASSWORD_CACHE_MS = 60_000;

export interface Identity extends Principal {
  kind: 'anonymous' | 'user' | 'robot' | 'external';
}

const ANONYMOUS: Identity = { kind: 'anonymous', groups: [] };

/** What authentication established for one request. */
interface Caller {
  identity: Identity;
  address: string;
  /** The access claim of the Bearer token used, if any. */
  token?: Grant[];
}

export interface AccessControlOptions extends AuthSetup {
  /** Per identity (anonymous callers: per address). */
  requests: RateLimit;
  /** Failed sign-ins, per address and per user name. */
  failures: RateLimit;
  tls: boolean;
  log: Logger;
  /** Where audit lines go (default: `log`). */
  audit?: Logger | undefined;
}

export class AccessControl implements Gate {
  private readonly options: AccessControlOptions;
  readonly policies: Policies;
  private readonly requests: RateLimiter;
  private readonly failures: RateLimiter;
  private readonly passwordCache = new Map<string, { until: number; identity: Identity }>();
  /** Sign-in checks under way, by address, user and password: the same credentials sent at once are checked once. */
  private readonly checking = new Map<string, Promise<Identity | undefined>>();
  /** Sign-in checks under way per failure-limit key, each counted as a failure until it ends. */
  private readonly unsettled = new Map<string, number>();

  constructor(options: AccessControlOptions) {
    this.options = options;
    this.policies = new Policies(options.config.policies, options.config.admins);
    this.requests = new RateLimiter(options.requests);
    this.failures = new RateLimiter(options.failures);
  }

  private get verifier(): TokenVerifier | undefined {
    return this.options.issuer ?? this.options.external;
  }

  // ---- the gate ---------------------------------------------------------------------------

  async admit(ctx: ApiContext, repositoryRoute: boolean): Promise<boolean> {
    // The server keyed the client (clientKey: an IPv6 client by its /64; behind a trusted proxy,
    // the address it forwarded); limits count by that.
    const address = ctx.client;
    const path = ctx.url.pathname;
    if (path === TOKEN_PATH) {
      this.limit(ctx, { identity: ANONYMOUS, address }, 'token');
      await this.tokenEndpoint(ctx, address);
      return true;
    }
    const caller = await this.authenticate(ctx, address);
    ctx.client = caller.identity.name ?? address;
    this.limit(ctx, caller, 'request');
    const pullable = new Map<string, boolean>();
    const view: AccessView = {
      canPull: (repository) => {
        let ok = pullable.get(repository);
        if (ok === undefined) pullable.set(repository, (ok = this.rights(caller, repository).has('pull')));
        return ok;
      },
      canPush: (repository) => this.rights(caller, repository).has('push'),
      authorize: (repository, action, reference) => this.authorizeRepository(ctx, caller, repository, action, reference),
    };
    ctx.access = view;
    if (!repositoryRoute) this.authorizeGlobal(ctx, caller, path);
    return false;
  }

  /** Identity from the Authorization header; a bad credential is a 401, never a silent anonymous. */
  private async authenticate(ctx: ApiContext, address: string): Promise<Caller> {
    const header = ctx.req.headers.authorization ?? '';
    const [scheme = '', value = ''] = header.split(/\s+/, 2);
    if (!header) return { identity: ANONYMOUS, address };
    if (scheme.toLowerCase() === 'basic') {
      const { user, password } = decodeBasic(value);
      return { identity: await this.signIn(ctx, user, password, address), address };
    }
    if (scheme.toLowerCase() === 'bearer' && this.verifier) {
      let verified;
      try {
        verified = await this.verifier.verify(value);
      } catch (err) {
        this.audit(ctx, { address, identity: ANONYMOUS }, { outcome: 'denied', status: 401, reason: `invalid token: ${(err as Error).message}` });
        throw this.unauthorized(ctx, 'authentication required: the token is invalid or expired', undefined, 'invalid_token');
      }
      if (this.options.external) return { identity: { kind: 'external', name: verified.subject || undefined, groups: [] } as Identity, address, token: verified.access };
      const identity = verified.subject ? await this.identityOf(verified.subject) : ANONYMOUS;
      if (!identity) {
        this.audit(ctx, { address, identity: ANONYMOUS }, { outcome: 'denied', status: 401, reason: `token subject ${verified.subject} no longer exists` });
        throw this.unauthorized(ctx, 'authentication required: the token\'s account no longer exists', undefined, 'invalid_token');
      }
      return { identity, address, token: verified.access };
    }
    throw this.unauthorized(ctx, `authentication required: unsupported Authorization scheme ${JSON.stringify(scheme.slice(0, 20))}`);
  }

  /**
   * Checks a user name and password (htpasswd or robot), limiting failures per address and per
   * user at that address. Failures never count against a user everywhere: that would let anyone
   * lock a user out by guessing wrong on purpose from elsewhere.
   */
  private async signIn(ctx: ApiContext, user: string, password: string, address: string): Promise<Identity> {
    const keys = [`addr:${address}`, `user:${address}\0${user}`];
    // A check under way counts as a failure until it ends: otherwise guesses sent all at once would
    // all be checked before the first failure is counted, and the limit would not hold.
    const attempt = createHash('sha256').update(`${address}\0${user}\0${password}`).digest('hex');
    const joined = this.checking.get(attempt);
    const wait = Math.max(...keys.map((key) => this.failures.wait(key, Math.max(1, (this.unsettled.get(key) ?? 0) + (joined ? 0 : 1)))));
    if (wait > 0) {
      this.audit(ctx, { address, identity: ANONYMOUS }, { outcome: 'denied', status: 429, user, reason: 'too many failed sign-ins' });
      throw tooManyRequests(wait, 'too many failed sign-ins; wait before trying again');
    }
    let checking = joined;
    if (!checking) {
      for (const key of keys) this.unsettled.set(key, (this.unsettled.get(key) ?? 0) + 1);
      checking = this.verifyPassword(user, password).then((identity) => {
        // Counted once, however many requests sent these credentials at once.
        if (!identity) for (const key of keys) this.failures.take(key);
        return identity;
      }).finally(() => {
        this.checking.delete(attempt);
        for (const key of keys) {
          const left = (this.unsettled.get(key) ?? 1) - 1;
          if (left > 0) this.unsettled.set(key, left);
          else this.unsettled.delete(key);
        }
      });
      this.checking.set(attempt, checking);
    }
    const identity = await checking;
    if (identity) return identity;
    this.audit(ctx, { address, identity: ANONYMOUS }, { outcome: 'denied', status: 401, user, reason: 'wrong user name or password' });
    throw this.unauthorized(ctx, 'authentication required: wrong user name or password');
  }

  private async verifyPassword(user: string, password: string): Promise<Identity | undefined> {
    if (!user) return undefined;
    if (user.startsWith(ROBOT_PREFIX)) {
      const robot = await this.options.robots.verify(user, password);
      return robot && { kind: 'robot', name: user, groups: [...new Set([...robot.groups, ...this.configGroups(user)])] };
    }
    const htpasswd = this.options.htpasswd;
    if (!htpasswd) return undefined;
    if (await this.refreshUsers(htpasswd)) this.passwordCache.clear();
    const key = createHash('sha256').update(`${user}\0${password}`).digest('hex');
    const cached = this.passwordCache.get(key);
    if (cached && cached.until > Date.now()) return cached.identity;
    if (!(await htpasswd.verify(user, password))) return undefined;
    const identity: Identity = { kind: 'user', name: user, groups: this.configGroups(user) };
    if (this.passwordCache.size > 10_000) this.passwordCache.clear();
    this.passwordCache.set(key, { until: Date.now() + PASSWORD_CACHE_MS, identity });
    return identity;
  }

  /** The identity of a token subject, if the account still exists (a revoked robot does not). */
  private async identityOf(name: string): Promise<Identity | undefined> {
    if (name.startsWith(ROBOT_PREFIX)) {
      const robot = await this.options.robots.active(name);
      return robot && { kind: 'robot', name, groups: [...new Set([...robot.groups, ...this.configGroups(name)])] };
    }
    const htpasswd = this.options.htpasswd;
    if (!htpasswd) return undefined;
    await this.refreshUsers(htpasswd);
    return htpasswd.has(name) ? { kind: 'user', name, groups: this.configGroups(name) } : undefined;
  }

  /** A fingerprint of the account's current password hash or robot secret hash (never the hash itself: tokens are readable). */
  private async credentialOf(name: string): Promise<string | undefined> {
    const stored = name.startsWith(ROBOT_PREFIX) ? (await this.options.robots.active(name))?.secret : this.options.htpasswd?.hashOf(name);
    return stored && createHash('sha256').update(`trellis refresh\0${name}\0${stored}`).digest('base64url').slice(0, 22);
  }

  /** Reads the htpasswd file again if it changed; a file that cannot be read keeps the last users. */
  private async refreshUsers(htpasswd: Htpasswd): Promise<boolean> {
    try {
      const changed = await htpasswd.refresh();
      if (changed) for (const problem of htpasswd.problems) this.options.log.warn({ problem }, 'htpasswd entry refused');
      return changed;
    } catch (err) {
      this.options.log.error({ err }, 'cannot read the htpasswd file; keeping the users read before');
      return false;
    }
  }

  private configGroups(name: string): string[] {
    return Object.entries(this.options.config.groups).filter(([, members]) => members.includes(name)).map(([group]) => group);
  }

  private limit(ctx: ApiContext, caller: Caller, what: string): void {
    const key = caller.identity.name ? `id:${caller.identity.name}` : `addr:${caller.address}`;
    const wait = this.requests.take(key);
    if (wait <= 0) return;
    this.audit(ctx, caller, { outcome: 'denied', status: 429, reason: `${what} rate limit` });
    throw tooManyRequests(wait, 'too many requests; slow down');
  }

  // ---- authorization ----------------------------------------------------------------------

  /** What the caller's identity may do on a repository (for external tokens: what the token says). */
  private rights(caller: Caller, repository: string): Set<RepositoryAction> {
    if (caller.identity.kind === 'external') {
      const granted = grantedActions(caller.token ?? [], 'repository', repository);
      return new Set(ALL_ACTIONS.filter((a) => granted.has(a) || granted.has('*')));
    }
    return this.policies.rights(caller.identity, repository);
  }

  private authorizeRepository(ctx: ApiContext, caller: Caller, repository: string, action: RepositoryAction, reference?: string): void {
    const allowed = this.rights(caller, repository).has(action);
    const scoped = !caller.token || caller.identity.kind === 'external' || hasAction(grantedActions(caller.token, 'repository', repository), action);
    const digest = ctx.url.searchParams.get('digest') ?? undefined;
    if (allowed && scoped) {
      if (action !== 'pull') {
        ctx.res.once('finish', () => this.audit(ctx, caller, { outcome: action, status: ctx.res.statusCode, repository, reference, digest }));
      }
      return;
    }
    const scope = formatScope({ type: 'repository', name: repository, actions: action === 'push' ? ['pull', 'push'] : [action] });
    const status = allowed || caller.identity.kind !== 'user' && caller.identity.kind !== 'robot' ? 401 : 403;
    this.audit(ctx, caller, { outcome: 'denied', status, action, repository, reference, digest });
    if (status === 403) throw denied();
    throw this.unauthorized(ctx, `authentication required to ${action}`, scope, caller.token ? 'insufficient_scope' : undefined);
  }

  /** Registry-wide endpoints: the base, the catalog, GC, and the `_oci` / `_trellis` extensions. */
  private authorizeGlobal(ctx: ApiContext, caller: Caller, path: string): void {
    const { identity } = caller;
    const signedIn = identity.kind !== 'anonymous';
    const need = (ok: boolean, scope: string | undefined, signedInFails: boolean) => {
      if (ok) return;
      const status = signedIn && signedInFails ? 403 : 401;
      this.audit(ctx, caller, { outcome: 'denied', status, action: scope ?? 'access', path });
      if (status === 403) throw denied();
      throw this.unauthorized(ctx, 'authentication required', scope, caller.token && scope ? 'insufficient_scope' : undefined);
    };
    const tokenHas = (name: string) => !caller.token || grantedActions(caller.token, 'registry', name).has('*');
    if (path === METRICS_PATH) {
      const admin = identity.kind === 'external' ? grantedActions(caller.token ?? [], 'registry', 'metrics').has('*') : this.policies.isAdmin(identity);
      return need(admin && tokenHas('metrics'), 'registry:metrics:*', !admin);
    }
    if (path === GC_PATH) {
      const admin = identity.kind === 'external' ? grantedActions(caller.token ?? [], 'registry', 'gc').has('*') : this.policies.isAdmin(identity);
      need(admin && tokenHas('gc'), 'registry:gc:*', !admin);
      ctx.res.once('finish', () => this.audit(ctx, caller, { outcome: 'gc', status: ctx.res.statusCode, dryRun: ctx.url.searchParams.get('dryRun') }));
      return;
    }
    const open = signedIn || this.policies.anonymousAnywhere;
    if (path === '/v2' || path === '/v2/') {
      // In token mode a bare request is always challenged, as distribution does: clients then fetch
      // a token (anonymous or not), so a login checks its credentials instead of passing unchecked.
      const bare = !ctx.req.headers.authorization && this.verifier !== undefined;
      return need(open && !bare, undefined, false);
    }
    if (path === '/v2/_catalog') return need(open && tokenHas('catalog'), 'registry:catalog:*', false);
    if (path.startsWith('/v2/')) need(open, undefined, false);
  }

  // ---- the token endpoint -----------------------------------------------------------------

  private async tokenEndpoint(ctx: ApiContext, address: string): Promise<void> {
    const issuer = this.options.issuer;
    if (!issuer) throw new OciError(404, 'UNSUPPORTED', 'this registry does not issue tokens; get one from the realm in its challenge');
    const method = ctx.req.method ?? 'GET';
    let identity: Identity = ANONYMOUS;
    let scopes: Grant[];
    let offline: boolean;
    if (method === 'POST') {
      const form = new URLSearchParams((await readBody(ctx.req, 64 * 1024, 'token request', ctx.limits.bodyIdleTimeoutMs)).toString('utf8'));
      const grantType = form.get('grant_type');
      if (grantType === 'password') {
        identity = await this.signIn(ctx, form.get('username') ?? '', form.get('password') ?? '', address);
      } else if (grantType === 'refresh_token') {
        let subject: string;
        let credential: string;
        try {
          ({ subject, credential } = await issuer.verifyRefresh(form.get('refresh_token') ?? ''));
        } catch (err) {
          if (!(err instanceof TokenInvalid)) throw err;
          this.audit(ctx, { address, identity: ANONYMOUS }, { outcome: 'denied', status: 401, reason: `invalid refresh token: ${err.message}` });
          throw this.unauthorized(ctx, 'the refresh token is invalid or expired');
        }
        const found = await this.identityOf(subject);
        if (!found) throw this.unauthorized(ctx, 'the refresh token\'s account no longer exists');
        if (credential !== (await this.credentialOf(subject))) {
          this.audit(ctx, { address, identity: found }, { outcome: 'denied', status: 401, reason: 'refresh token issued before a password or secret change' });
          throw this.unauthorized(ctx, 'the refresh token was issued before the account\'s password or secret changed; sign in again');
        }
        identity = found;
      } else {
        throw new OciError(400, 'UNSUPPORTED', `grant_type must be password or refresh_token, not ${JSON.stringify((grantType ?? '').slice(0, 40))}`);
      }
      scopes = parseScopes(form.getAll('scope'));
      offline = form.get('access_type') === 'offline';
    } else if (method === 'GET' || method === 'HEAD') {
      const header = ctx.req.headers.authorization ?? '';
      const [scheme = '', value = ''] = header.split(/\s+/, 2);
      if (header && scheme.toLowerCase() !== 'basic') throw this.unauthorized(ctx, 'the token endpoint takes Basic credentials');
      if (header) {
        const { user, password } = decodeBasic(value);
        identity = await this.signIn(ctx, user, password, address);
      }
      scopes = parseScopes(ctx.url.searchParams.getAll('scope'));
      offline = ctx.url.searchParams.get('offline_token') === 'true';
    } else {
      throw new OciError(405, 'UNSUPPORTED', `${method} is not supported on ${TOKEN_PATH}`, undefined, { Allow: 'GET, HEAD, POST' });
    }
    const access = scopes.map((scope) => ({ ...scope, actions: this.grant(identity, scope) })).filter((g) => g.actions.length);
    const subject = identity.name ?? '';
    const token = await issuer.issue(subject, access);
    const body: Record<string, unknown> = {
      token, access_token: token, token_type: 'Bearer', expires_in: issuer.config.expirySeconds, issued_at: new Date().toISOString(),
    };
    const credential = offline && identity.name ? await this.credentialOf(identity.name) : undefined;
    if (credential) body.refresh_token = await issuer.issueRefresh(identity.name!, credential);
    ctx.log.debug({ identity: subject || 'anonymous', client: address, access: access.map(formatScope) }, 'token issued');
    sendJson(ctx.res, 200, body, { 'Cache-Control': 'no-store' }, ctx.head);
  }

  /** The subset of a requested scope the identity holds. */
  private grant(identity: Identity, scope: Grant): string[] {
    if (scope.type === 'repository') {
      if (repositoryNameProblem(scope.name)) return [];
      const rights = this.policies.rights(identity, scope.name);
      return scope.actions.includes('*') ? [...rights] : scope.actions.filter((a) => rights.has(a as RepositoryAction));
    }
    if (scope.type === 'registry' && scope.name === 'catalog') return identity.name || this.policies.anonymousAnywhere ? ['*'] : [];
    if (scope.type === 'registry' && (scope.name === 'gc' || scope.name === 'metrics')) return this.policies.isAdmin(identity) ? ['*'] : [];
    return [];
  }

  // ---- answers ----------------------------------------------------------------------------

  private challenge(ctx: ApiContext, scope?: string, error?: string): string {
    const { issuer, external } = this.options;
    if (!issuer && !external) return 'Basic realm="trellis", charset="UTF-8"';
    const service = issuer ? issuer.config.service : this.options.config.token?.kind === 'external' ? this.options.config.token.external.service : '';
    const realm = external ? (this.options.config.token as { external: { realm: string } }).external.realm : issuer!.config.realm ?? this.defaultRealm(ctx);
    let value = `Bearer realm="${realm}",service="${service}"`;
    if (scope) value += `,scope="${scope}"`;
    if (error) value += `,error="${error}"`;
    return value;
  }

  private defaultRealm(ctx: ApiContext): string {
    const host = ctx.req.headers.host ?? '';
    return `${this.options.tls ? 'https' : 'http'}://${/^[A-Za-z0-9.:[\]-]{1,300}$/.test(host) ? host : 'localhost'}${TOKEN_PATH}`;
  }

  private unauthorized(ctx: ApiContext, message: string, scope?: string, error?: string): OciError {
    return new OciError(401, 'UNAUTHORIZED', message, undefined, { 'WWW-Authenticate': this.challenge(ctx, scope, error) });
  }

  /** One structured line per denied request and per push, delete or GC. */
  private audit(ctx: ApiContext, caller: Caller, entry: Record<string, unknown>): void {
    const fields: Record<string, unknown> = {
      audit: true, identity: caller.identity.name ?? 'anonymous', kind: caller.identity.kind, client: ctx.req.socket?.remoteAddress ?? caller.address,
      method: ctx.req.method, path: ctx.url.pathname, reqId: ctx.requestId,
    };
    for (const [key, value] of Object.entries(entry)) if (value !== undefined && value !== null) fields[key] = value;
    // Audit lines have their own logger and level (auditLogLevel), so logLevel cannot drop them.
    (this.options.audit ?? ctx.log).info(fields, 'audit');
  }
}

function hasAction(actions: Set<string>, action: string): boolean {
  return actions.has(action) || actions.has('*');
}

function decodeBasic(value: string): { user: string; password: string } {
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? { user: decoded, password: '' } : { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

function denied(): OciError {
  return new OciError(403, 'DENIED', 'requested access to the resource is denied');
}

function tooManyRequests(seconds: number, message: string): OciError {
  return new OciError(429, 'TOOMANYREQUESTS', message, undefined, { 'Retry-After': String(seconds) });
}
