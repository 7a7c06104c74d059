// A registry over the OCI Distribution API, as a copy source and sink (plain fetch, streaming
// blobs). Speaks the Docker token flow and Basic auth when a registry asks, and on registries
// without the referrers API reads and maintains the spec's `<alg>-<hex>` fallback tag.
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { referrerDescriptor, parseManifest, type Descriptor } from '../oci/manifest.ts';
import { digestOf, isDigestAlgorithm } from '../oci/digest.ts';
import { INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX, bareMediaType } from '../oci/mediatypes.ts';
import { fallbackTag } from '../layout/referrers.ts';
import type { Credentials } from './auth.ts';
import { drain, exchange, type WireResponse } from './wire.ts';
import { ChildrenMissing, type BlobStream, type ContentSink, type ContentSource, type FetchedManifest } from './store.ts';
import { RegistryRequestFailed } from './errors.ts';

const ACCEPT = [...MANIFEST_TYPES].join(', ');
// Not ES module imports: those evaluate node:http's lazy exports, loading undici (~50 ms per start).
const { Agent: HttpAgent, request: httpRequest } = process.getBuiltinModule('node:http');
const { Agent: HttpsAgent, request: httpsRequest } = process.getBuiltinModule('node:https');
const httpAgent = new HttpAgent({ keepAlive: true });
const httpsAgent = new HttpsAgent({ keepAlive: true });


export interface HttpRegistryOptions {
  /** Looks up credentials for a host (`host:port`); undefined means anonymous. */
  credentials?: (host: string) => Promise<Credentials | undefined>;
  /** Fixed credentials (login checks them before storing). */
  login?: Credentials;
}

interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

function parseChallenge(header: string): Challenge | undefined {
  const match = /^\s*(\w+)\s*(.*)$/.exec(header);
  if (!match) return undefined;
  const params: Record<string, string> = {};
  for (const m of match[2]!.matchAll(/(\w+)="([^"]*)"/g)) params[m[1]!.toLowerCase()] = m[2]!;
  return { scheme: match[1]!.toLowerCase(), params };
}

function isTlsError(err: Error & { code?: string }): boolean {
  const text = `${err.code ?? ''} ${err.message}`;
  return /SSL|TLS|EPROTO|wrong version number|packet length/i.test(text);
}

export class HttpRegistry implements ContentSource, ContentSink {
  readonly base: string;
  readonly host: string;
  private readonly options: HttpRegistryOptions;
  private authorization: string | undefined;
  private readonly tokens = new Map<string, string>();
  /** Per repository: whether the referrers API answered (false after a 404). */
  private readonly referrersApi = new Map<string, boolean>();
  /** Fallback-tag updates per subject run one after another. */
  private readonly fallbackQueue = new Map<string, Promise<unknown>>();

  constructor(base: string, options: HttpRegistryOptions = {}) {
    this.base = base.replace(/\/+$/, '');
    this.host = new URL(this.base).host;
    this.options = options;
  }

  private async credentials(): Promise<Credentials | undefined> {
    return this.options.login ?? (await this.options.credentials?.(this.host));
  }

  /** A failure to reach the registry; a TLS handshake failure names --plain-http. */
  private connectionFailure(method: string, url: URL, err: Error & { code?: string }): RegistryRequestFailed {
    if (url.protocol === 'https:' && isTlsError(err)) {
      const reason = err.code ?? /[a-z ]*wrong version number|[^:\n]*$/i.exec(err.message)?.[0]?.trim() ?? err.message;
      return new RegistryRequestFailed(`${method} ${url}: TLS handshake failed (${reason}); if ${this.host} serves plain HTTP, add --plain-http`, 'tls');
    }
    if (err.code === 'ECONNREFUSED') {
      return new RegistryRequestFailed(`${method} ${url}: connection refused; is a registry running at ${this.host}? (start one with \`trellis serve\`, or check the address)`, 'network');
    }
    if (err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') {
      return new RegistryRequestFailed(`${method} ${url}: cannot resolve ${url.hostname}; check the registry name`, 'network');
    }
    return new RegistryRequestFailed(`${method} ${url}: ${err.message}`, 'network');
  }

  /** Answers a 401 challenge; returns the Authorization header to retry with, if any. */
  private async authorize(res: Response, scopeHint: string | undefined): Promise<string | undefined> {
    const challenge = parseChallenge(res.headers.get('www-authenticate') ?? '');
    if (!challenge) return undefined;
    const creds = await this.credentials();
    const basic = creds && `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    if (challenge.scheme === 'basic') return basic;
    if (challenge.scheme !== 'bearer' || !challenge.params.realm) return undefined;
    const scope = challenge.params.scope ?? scopeHint;
    const cacheKey = scope ?? '';
    const url = new URL(challenge.params.realm);
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    if (scope) for (const s of scope.split(' ')) url.searchParams.append('scope', s);
    let token: Response;
    try {
      token = await fetch(url, { headers: basic ? { Authorization: basic } : {} });
    } catch (err) {
      throw new RegistryRequestFailed(`token request to ${url.origin}: ${(err as Error).message}`, 'network');
    }
    if (!token.ok) {
      await token.arrayBuffer().catch(() => undefined);
      return undefined;
    }
    const body = (await token.json()) as { token?: string; access_token?: string };
    const value = body.token ?? body.access_token;
    if (!value) return undefined;
    this.tokens.set(cacheKey, `Bearer ${value}`);
    return `Bearer ${value}`;
  }

  async request(path: string, init: RequestInit = {}, scope?: string): Promise<Response> {
    const url = path.startsWith('http') ? path : `${this.base}${path}`;
    const send = async (authorization: string | undefined) => {
      const headers = new Headers(init.headers);
      if (authorization) headers.set('Authorization', authorization);
      try {
        return await fetch(url, { ...init, headers });
      } catch (err) {
        throw this.connectionFailure(init.method ?? 'GET', new URL(url), (err as { cause?: Error }).cause ?? (err as Error));
      }
    };
    // Credentials go to the registry only, never to another origin it points at.
    const sameOrigin = new URL(url).origin === new URL(this.base).origin;
    let res = await send(sameOrigin ? this.authHeaders(scope ?? '').Authorization : undefined);
    // A streamed body cannot be sent twice; uploads authenticate on the POST before them.
    const replayable = !(init.body instanceof ReadableStream || init.body instanceof Readable);
    if (res.status === 401 && replayable && sameOrigin) {
      const authorization = await this.authorize(res, scope);
      if (authorization) {
        await res.arrayBuffer().catch(() => undefined);
        this.authorization = authorization;
        res = await send(authorization);
      }
    }
    return res;
  }

  async fail(res: Response, what: string): Promise<never> {
    const text = await res.text().catch(() => '');
    let message = text.slice(0, 300).trim();
    try {
      const errors = (JSON.parse(text) as { errors?: { code: string; message: string }[] }).errors;
      if (errors?.length) message = errors.map((e) => `${e.code}: ${e.message}`).join('; ');
    } catch { /* not an OCI error body */ }
    if (res.status === 401) {
      throw new RegistryRequestFailed(`${what}: 401 unauthorized${message ? ` (${message})` : ''}; run \`trellis login ${this.host}\` first`, 'unauthorized', 401);
    }
    if (res.status === 403) throw new RegistryRequestFailed(`${what}: 403 denied${message ? ` (${message})` : ''}; the account logged in to ${this.host} lacks permission`, 'denied', 403);
    if (res.status === 404) throw new RegistryRequestFailed(`${what}: not found${message ? ` (${message})` : ''}`, 'not-found', 404);
    throw new RegistryRequestFailed(`${what}: ${res.status} ${message || res.statusText}`, 'other', res.status);
  }

  /** Follows `Link: <…>; rel="next"` pages. */
  async *pages(path: string, scope?: string): AsyncGenerator<Response> {
    let next: string | undefined = path;
    while (next) {
      const res = await this.request(next, {}, scope);
      yield res;
      const link = /<([^>]+)>;\s*rel="next"/.exec(res.headers.get('link') ?? '');
      next = link ? new URL(link[1]!, this.base).toString() : undefined;
    }
  }

  /** GET /v2/ with credentials: whether they are accepted. */
  async ping(): Promise<void> {
    const res = await this.request('/v2/');
    if (!res.ok) await this.fail(res, `checking ${this.host}`);
    await res.arrayBuffer();
  }

  async tags(repository: string): Promise<string[]> {
    return (await this.tagList(repository)) ?? [];
  }

  /** Every tag; undefined when the repository is unknown. */
  async tagList(repository: string): Promise<string[] | undefined> {
    const tags: string[] = [];
    for await (const res of this.pages(`/v2/${repository}/tags/list`, pullScope(repository))) {
      if (res.status === 404) {
        await res.arrayBuffer();
        return tags.length ? tags : undefined;
      }
      if (!res.ok) await this.fail(res, `listing tags of ${repository}`);
      tags.push(...(((await res.json()) as { tags?: string[] | null }).tags ?? []));
    }
    return tags;
  }

  /** The catalog; `prefix` asks registries that can (Trellis) for one subtree, others ignore it. */
  async repositories(prefix?: string): Promise<string[]> {
    const names: string[] = [];
    for await (const res of this.pages(`/v2/_catalog${prefix ? `?prefix=${encodeURIComponent(prefix)}` : ''}`, 'registry:catalog:*')) {
      if (!res.ok) await this.fail(res, `listing repositories of ${this.host}`);
      names.push(...(((await res.json()) as { repositories?: string[] | null }).repositories ?? []));
    }
    return names;
  }

  async manifest(repository: string, reference: string): Promise<FetchedManifest | undefined> {
    const res = await this.request(`/v2/${repository}/manifests/${reference}`, { headers: { Accept: ACCEPT } }, pullScope(repository));
    if (res.status === 404) {
      await res.arrayBuffer();
      return undefined;
    }
    if (!res.ok) await this.fail(res, `fetching manifest ${repository}:${reference}`);
    const bytes = Buffer.from(await res.arrayBuffer());
    const mediaType = bareMediaType(res.headers.get('content-type') ?? undefined) ?? '';
    const algorithm = reference.split(':')[0]!;
    if (reference.includes(':') && isDigestAlgorithm(algorithm)) {
      // By digest, the bytes must be what was asked for, in its algorithm (never trust a registry's word for it).
      const digest = digestOf(bytes, algorithm);
      if (digest !== reference) throw new RegistryRequestFailed(`manifest ${repository}@${reference} came back with digest ${digest}`, 'invalid');
      return { bytes, mediaType, digest };
    }
    return { bytes, mediaType, digest: res.headers.get('docker-content-digest') ?? digestOf(bytes) };
  }

  /**
   * Blob bytes go through node:http rather than fetch: piping one socket into another costs the
   * client about a third of the CPU that web streams do, which decides copy speed on a busy machine.
   */
  private rawRequest(method: string, url: URL, headers: Record<string, string>, body?: Readable): Promise<IncomingMessage> {
    const secure = url.protocol === 'https:';
    return new Promise((resolve, reject) => {
      const req = (secure ? httpsRequest : httpRequest)(url, { method, headers, agent: secure ? httpsAgent : httpAgent }, resolve);
      req.once('error', (err) => reject(this.connectionFailure(method, url, err)));
      if (body) {
        body.once('error', (err) => req.destroy(err));
        body.pipe(req);
      } else {
        req.end();
      }
    });
  }

  private authHeaders(scope: string): Record<string, string> {
    const authorization = this.tokens.get(scope) ?? this.authorization;
    return authorization ? { Authorization: authorization } : {};
  }

  /** Turns an unsuccessful raw answer into the same error a fetch answer would give. */
  private async failRaw(res: IncomingMessage, what: string): Promise<never> {
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    const headers = new Headers();
    for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') headers.set(k, v);
    return this.fail(new Response(Buffer.concat(chunks), { status: res.statusCode ?? 500, headers }), what);
  }

  /** A wire exchange with the same errors as the other paths. */
  private async wire(method: string, url: URL, headers: Record<string, string>, body?: Readable): Promise<WireResponse> {
    try {
      return await exchange(method, url, headers, body);
    } catch (err) {
      throw this.connectionFailure(method, url, err as Error);
    }
  }

  private async failWire(res: WireResponse, what: string): Promise<never> {
    const body = await drain(res);
    return this.fail(new Response(body, { status: res.status, headers: res.headers }), what);
  }

  async blob(repository: string, digest: string): Promise<{ stream: Readable; size: number } | undefined> {
    const scope = pullScope(repository);
    let url = new URL(`${this.base}/v2/${repository}/blobs/${digest}`);
    let res = await this.wire('GET', url, this.authHeaders(scope));
    if (res.status === 401) {
      res.body.destroy();
      // Let the fetch path answer the challenge, then try again with what it obtained.
      await (await this.request(url.toString(), { method: 'HEAD' }, scope)).arrayBuffer();
      res = await this.wire('GET', url, this.authHeaders(scope));
    }
    // Registries may redirect blob downloads to storage; credentials stay with the registry.
    for (let hops = 0; res.status >= 300 && res.status < 400 && res.headers.location && hops < 5; hops++) {
      res.body.destroy();
      const next = new URL(res.headers.location, url);
      res = await this.wire('GET', next, next.origin === url.origin ? this.authHeaders(scope) : {});
      url = next;
    }
    if (res.status === 404) {
      res.body.destroy();
      return undefined;
    }
    if (res.status !== 200) await this.failWire(res, `fetching blob ${repository}@${digest}`);
    const length = res.headers['content-length'];
    if (length === undefined || res.headers['transfer-encoding']) {
      // Not a plain body: let node:http decode it.
      res.body.destroy();
      const decoded = await this.rawRequest('GET', url, url.origin === this.base ? this.authHeaders(scope) : {});
      if (decoded.statusCode !== 200) await this.failRaw(decoded, `fetching blob ${repository}@${digest}`);
      return { stream: decoded, size: Number(decoded.headers['content-length'] ?? 0) };
    }
    return { stream: res.body, size: Number(length) };
  }

  /** Whether the registry answers the referrers API for this repository (404 means it does not). */
  async hasReferrersApi(repository: string): Promise<boolean> {
    const known = this.referrersApi.get(repository);
    if (known !== undefined) return known;
    await this.referrers(repository, `sha256:${'0'.repeat(64)}`);
    return this.referrersApi.get(repository) ?? true;
  }

  /**
   * Referrers of a subject. `query` holds extra parameters (artifactType, q_ filters); the
   * answer says which the registry applied. Without the API, the fallback tag is read.
   */
  async referrersFiltered(repository: string, digest: string, query: URLSearchParams = new URLSearchParams()): Promise<{ manifests: Descriptor[]; applied: string[]; api: boolean }> {
    const found: Descriptor[] = [];
    const applied = new Set<string>();
    if (this.referrersApi.get(repository) !== false) {
      const qs = query.toString();
      for await (const res of this.pages(`/v2/${repository}/referrers/${digest}${qs ? `?${qs}` : ''}`, pullScope(repository))) {
        if (res.status === 404 && found.length === 0) {
          await res.arrayBuffer();
          this.referrersApi.set(repository, false);
          break;
        }
        if (!res.ok) await this.fail(res, `listing referrers of ${repository}@${digest}`);
        this.referrersApi.set(repository, true);
        for (const f of (res.headers.get('oci-filters-applied') ?? '').split(',')) if (f.trim()) applied.add(f.trim());
        found.push(...(((await res.json()) as { manifests?: Descriptor[] | null }).manifests ?? []));
      }
      if (this.referrersApi.get(repository)) return { manifests: found, applied: [...applied], api: true };
    }
    return { manifests: (await this.fallbackIndex(repository, digest)).manifests, applied: [], api: false };
  }

  async referrers(repository: string, digest: string): Promise<Descriptor[]> {
    return (await this.referrersFiltered(repository, digest)).manifests;
  }

  /** The fallback tag's index; an absent tag or anything but an index means no referrers. */
  private async fallbackIndex(repository: string, subject: string): Promise<{ manifests: Descriptor[]; present: boolean }> {
    const tagged = await this.manifest(repository, fallbackTag(subject));
    if (!tagged || !INDEX_TYPES.has(tagged.mediaType)) return { manifests: [], present: false };
    try {
      const body = JSON.parse(tagged.bytes.toString('utf8')) as { manifests?: Descriptor[] | null };
      return { manifests: Array.isArray(body.manifests) ? body.manifests : [], present: true };
    } catch {
      return { manifests: [], present: false };
    }
  }

  /** Adds or removes one referrer in the subject's fallback tag, one update at a time per subject. */
  private updateFallback(repository: string, subject: string, change: (list: Descriptor[]) => Descriptor[] | undefined): Promise<void> {
    const key = `${repository}@${subject}`;
    const run = async () => {
      const { manifests, present } = await this.fallbackIndex(repository, subject);
      const next = change(manifests);
      if (!next) return;
      const tag = fallbackTag(subject);
      if (next.length === 0 && present) {
        const current = await this.manifest(repository, tag);
        if (current) await this.deleteManifestRaw(repository, current.digest);
        return;
      }
      const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: next }));
      await this.putManifestRaw(repository, tag, body, OCI_INDEX);
    };
    const previous = this.fallbackQueue.get(key) ?? Promise.resolve();
    const done = previous.catch(() => undefined).then(run);
    this.fallbackQueue.set(key, done);
    return done;
  }

  async hasBlob(repository: string, digest: string): Promise<boolean> {
    const res = await this.request(`/v2/${repository}/blobs/${digest}`, { method: 'HEAD' }, pushScope(repository));
    await res.arrayBuffer().catch(() => undefined);
    if (res.status === 401 || res.status === 403) await this.fail(res, `checking blob ${repository}@${digest}`);
    return res.ok;
  }

  async hasManifest(repository: string, reference: string): Promise<boolean> {
    const res = await this.request(`/v2/${repository}/manifests/${reference}`, { method: 'HEAD', headers: { Accept: ACCEPT } }, pushScope(repository));
    await res.arrayBuffer().catch(() => undefined);
    return res.ok;
  }

  async putBlob(repository: string, digest: string, size: number, stream: BlobStream): Promise<void> {
    const open = await this.request(`/v2/${repository}/blobs/uploads/`, { method: 'POST' }, pushScope(repository));
    const location = open.headers.get('location');
    if (open.status !== 202 || !location) await this.fail(open, `starting upload to ${repository}`);
    await open.arrayBuffer();
    const url = new URL(location!, this.base);
    url.searchParams.set('digest', digest);
    const body = stream instanceof Readable ? stream : Readable.fromWeb(stream as import('node:stream/web').ReadableStream<Uint8Array>);
    // The location may be on another origin (storage behind the registry): credentials stay here.
    const auth = url.origin === new URL(this.base).origin ? this.authHeaders(pushScope(repository)) : {};
    const res = await this.wire('PUT', url, { ...auth, 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) }, body);
    if (res.status !== 201) await this.failWire(res, `uploading blob ${digest} to ${repository}`);
    res.body.destroy();
  }

  private async putManifestRaw(repository: string, reference: string, bytes: Buffer, mediaType: string): Promise<Response> {
    const res = await this.request(`/v2/${repository}/manifests/${reference}`, { method: 'PUT', body: bytes, headers: { 'Content-Type': mediaType } }, pushScope(repository));
    if (res.status === 400 && INDEX_TYPES.has(mediaType)) {
      const text = await res.text();
      if (/MANIFEST_BLOB_UNKNOWN|MANIFEST_UNKNOWN/.test(text)) throw new ChildrenMissing(`${repository}:${reference}: ${text.slice(0, 200)}`);
      throw new RegistryRequestFailed(`pushing manifest ${repository}:${reference}: 400 ${text.slice(0, 300)}`, 'other', 400);
    }
    if (res.status !== 201) await this.fail(res, `pushing manifest ${repository}:${reference}`);
    await res.arrayBuffer();
    return res;
  }

  async putManifest(repository: string, reference: string, bytes: Buffer, mediaType: string): Promise<void> {
    const res = await this.putManifestRaw(repository, reference, bytes, mediaType);
    // A registry that handled the subject says so with OCI-Subject; otherwise keep the fallback tag.
    if (res.headers.get('oci-subject')) return;
    let parsed;
    try {
      parsed = parseManifest(bytes, mediaType);
    } catch {
      return;
    }
    if (!parsed.subject) return;
    const digest = digestOf(bytes);
    const entry = referrerDescriptor({ mediaType: parsed.mediaType, digest, size: bytes.length, artifactType: parsed.artifactType, annotations: parsed.annotations });
    await this.updateFallback(repository, parsed.subject, (list) => (list.some((d) => d.digest === digest) ? undefined : [...list, entry]));
  }

  private async deleteManifestRaw(repository: string, digest: string): Promise<void> {
    const res = await this.request(`/v2/${repository}/manifests/${digest}`, { method: 'DELETE' }, pushScope(repository));
    if (res.status !== 202 && res.status !== 200) await this.fail(res, `deleting ${repository}@${digest}`);
    await res.arrayBuffer();
  }

  /**
   * Removes one tag and leaves the manifest and its other tags (DELETE by tag, which the
   * distribution spec lets registries refuse: then the error says so).
   */
  async deleteTag(repository: string, tag: string): Promise<void> {
    const res = await this.request(`/v2/${repository}/manifests/${tag}`, { method: 'DELETE' }, pushScope(repository));
    if (res.status === 202 || res.status === 200) return void (await res.arrayBuffer());
    if (res.status === 400 || res.status === 405) {
      await res.arrayBuffer().catch(() => undefined);
      throw new RegistryRequestFailed(`${this.host} does not support deleting a tag alone (DELETE ${repository}/manifests/${tag} answered ${res.status}); retag, or delete the manifest`, 'other', res.status);
    }
    await this.fail(res, `deleting tag ${repository}:${tag}`);
  }

  /** Deletes a manifest by digest, and takes it out of its subject's fallback tag where one is kept. */
  async deleteManifest(repository: string, digest: string): Promise<void> {
    const manifest = await this.manifest(repository, digest);
    await this.deleteManifestRaw(repository, digest);
    if (!manifest) return;
    let subject: string | undefined;
    try {
      subject = parseManifest(manifest.bytes, manifest.mediaType).subject;
    } catch {
      return;
    }
    if (!subject || (await this.hasReferrersApi(repository))) return;
    await this.updateFallback(repository, subject, (list) => (list.some((d) => d.digest === digest) ? list.filter((d) => d.digest !== digest) : undefined));
  }

  /** GET a JSON document (extension endpoints); undefined on 404. */
  async getJson<T>(path: string): Promise<{ body: T; headers: Headers } | undefined> {
    const res = await this.request(path);
    if (res.status === 404) {
      await res.arrayBuffer();
      return undefined;
    }
    if (!res.ok) await this.fail(res, `GET ${path}`);
    return { body: (await res.json()) as T, headers: res.headers };
  }
}

const pullScope = (repository: string) => `repository:${repository}:pull`;
const pushScope = (repository: string) => `repository:${repository}:pull,push`;
