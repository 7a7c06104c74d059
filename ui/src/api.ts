// The registry client of the web UI: same-origin fetches to the public API and its documented
// extensions, with the registry's own sign-in. In token mode a 401's `WWW-Authenticate: Bearer`
// challenge names the scope to ask the realm for (anonymously, or with the refresh token the
// password sign-in returned); with Basic-only registries the credentials are sent as they are.
// Nothing is kept beyond the browser tab (sessionStorage).

export interface Session {
  user: string;
  refreshToken?: string;
  basic?: string;
}

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const SESSION_KEY = 'trellis.session';
/** Scopes carried by one token at most; the oldest are dropped first. */
const MAX_SCOPES = 64;

export const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.artifact.manifest.v1+json',
].join(', ');

export function parseChallenge(header: string | null): Challenge | undefined {
  if (!header) return undefined;
  const match = /^(\w+)\s*(.*)$/.exec(header.trim());
  if (!match) return undefined;
  const params: Record<string, string> = {};
  for (const param of match[2]!.matchAll(/(\w+)="([^"]*)"/g)) params[param[1]!.toLowerCase()] = param[2]!;
  return { scheme: match[1]!.toLowerCase(), params };
}

/** The `rel="next"` target of a `Link` header. */
export function nextPage(response: Response): string | undefined {
  const link = response.headers.get('Link');
  const match = link && /<([^>]+)>\s*;\s*rel="?next"?/.exec(link);
  return match ? match[1] : undefined;
}

function loadSession(): Session | undefined {
  try {
    const raw = sessionStorage.getItem(SESSION_KEY);
    return raw ? (JSON.parse(raw) as Session) : undefined;
  } catch {
    return undefined;
  }
}

type Listener = () => void;

export class RegistryClient {
  private session: Session | undefined = loadSession();
  private token: string | undefined;
  private readonly scopes: string[] = ['registry:catalog:*'];
  private tokenRequest: Promise<void> | undefined;
  /** The scopes the current token was asked for. */
  private tokenScopes = new Set<string>();
  private realm = '/v2/_trellis/token';
  private service = 'trellis';
  private readonly listeners = new Set<Listener>();

  get user(): string | undefined {
    return this.session?.user;
  }

  onChange(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }

  /** A GET (or HEAD) of a registry path, signed in as needed. Errors are thrown as ApiError. */
  async fetch(path: string, init: RequestInit = {}): Promise<Response> {
    let response = await this.send(path, init);
    if (response.status === 401) {
      const challenge = parseChallenge(response.headers.get('WWW-Authenticate'));
      if (challenge?.scheme === 'bearer') {
        this.learnRealm(challenge);
        const wanted = (challenge.params.scope ?? '').split(' ').filter(Boolean);
        for (const scope of wanted) this.addScope(scope);
        await this.refreshToken();
        // A token request already under way when this scope was added does not carry it.
        if (wanted.some((scope) => !this.tokenScopes.has(scope))) await this.refreshToken();
        response = await this.send(path, init);
      }
    }
    if (!response.ok) throw await this.error(response);
    return response;
  }

  async json<T>(path: string, init: RequestInit = {}): Promise<{ value: T; response: Response }> {
    const response = await this.fetch(path, init);
    return { value: (await response.json()) as T, response };
  }

  private send(path: string, init: RequestInit): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.token) headers.set('Authorization', `Bearer ${this.token}`);
    else if (this.session?.basic) headers.set('Authorization', `Basic ${this.session.basic}`);
    // No cookies and no browser password prompts: credentials travel only in Authorization.
    return fetch(path, { ...init, headers, credentials: 'omit' });
  }

  private async error(response: Response): Promise<ApiError> {
    let code = 'UNKNOWN';
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = (await response.json()) as { errors?: { code: string; message: string }[] };
      const first = body.errors?.[0];
      if (first) {
        code = first.code;
        message = first.message;
      }
    } catch {
      // not an OCI error body
    }
    return new ApiError(response.status, code, message);
  }

  private learnRealm(challenge: Challenge): void {
    const realm = challenge.params.realm;
    // Only this origin's token endpoint ever sees the refresh token.
    if (realm) {
      const url = new URL(realm, location.href);
      if (url.origin === location.origin) this.realm = url.pathname;
    }
    if (challenge.params.service) this.service = challenge.params.service;
  }

  private addScope(scope: string): void {
    const at = this.scopes.indexOf(scope);
    if (at >= 0) this.scopes.splice(at, 1);
    this.scopes.push(scope);
    if (this.scopes.length > MAX_SCOPES) this.scopes.splice(1, this.scopes.length - MAX_SCOPES);
  }

  private refreshToken(): Promise<void> {
    if (!this.tokenRequest) {
      const request: Promise<void> = this.requestToken().finally(() => {
        if (this.tokenRequest === request) this.tokenRequest = undefined;
      });
      this.tokenRequest = request;
    }
    return this.tokenRequest;
  }

  private async requestToken(): Promise<void> {
    // A token asked for one session is dropped if the tab signed out or in meanwhile: else a sign-out
    // during the request would leave the old account's token in use (and its repositories shown).
    const session = this.session;
    const refresh = session?.refreshToken;
    const scopes = new Set(this.scopes);
    let response: Response;
    if (refresh) {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refresh, service: this.service, client_id: 'trellis-ui', scope: this.scopes.join(' ') });
      response = await fetch(this.realm, { method: 'POST', body: form, credentials: 'omit' });
    } else {
      const query = new URLSearchParams({ service: this.service });
      for (const scope of this.scopes) query.append('scope', scope);
      response = await fetch(`${this.realm}?${query}`, { credentials: 'omit' });
    }
    if (this.session !== session) return;
    if (response.status === 401 && refresh) {
      // The refresh token expired or the account is gone: continue anonymously.
      this.signOut();
      return;
    }
    if (!response.ok) throw await this.error(response);
    const token = ((await response.json()) as { token: string }).token;
    if (this.session !== session) return;
    this.token = token;
    this.tokenScopes = scopes;
  }

  /** Signs in with a user name and password: the token flow if the registry has it, else Basic. */
  async signIn(user: string, password: string): Promise<void> {
    const probe = await fetch('/v2/', { credentials: 'omit' });
    const challenge = parseChallenge(probe.headers.get('WWW-Authenticate'));
    if (challenge?.scheme === 'bearer') this.learnRealm(challenge);
    const form = new URLSearchParams({ grant_type: 'password', username: user, password, service: this.service, client_id: 'trellis-ui', access_type: 'offline', scope: this.scopes.join(' ') });
    const response = await fetch(this.realm, { method: 'POST', body: form, credentials: 'omit' });
    if (response.ok) {
      const body = (await response.json()) as { token: string; refresh_token?: string };
      this.token = body.token;
      this.tokenScopes = new Set(this.scopes);
      this.session = { user, ...(body.refresh_token ? { refreshToken: body.refresh_token } : {}) };
    } else if (response.status === 404) {
      const error = await this.error(response);
      // No token endpoint at all: a registry without access control, where there is no one to be.
      if (error.code === 'NAME_UNKNOWN') throw new ApiError(404, 'UNSUPPORTED', 'This registry has no accounts: everything in it is open to everyone.');
      const basic = btoa(`${user}:${password}`);
      const check = await fetch('/v2/', { headers: { Authorization: `Basic ${basic}` }, credentials: 'omit' });
      if (!check.ok) throw await this.error(check);
      this.token = undefined;
      this.session = { user, basic };
    } else {
      throw await this.error(response);
    }
    this.tokenRequest = undefined;
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(this.session));
    this.changed();
  }

  signOut(): void {
    this.session = undefined;
    this.token = undefined;
    this.tokenRequest = undefined;
    this.tokenScopes = new Set();
    sessionStorage.removeItem(SESSION_KEY);
    this.changed();
  }
}

export const api = new RegistryClient();

/** Follows `Link` headers, collecting up to `max` items of every page. */
export async function collectPages<T>(path: string, pick: (body: unknown) => T[], max = 100_000): Promise<T[]> {
  const items: T[] = [];
  let next: string | undefined = path;
  while (next && items.length < max) {
    const { value, response } = await api.json<unknown>(next);
    items.push(...pick(value));
    next = nextPage(response);
  }
  return items;
}

export const enc = encodeURIComponent;
