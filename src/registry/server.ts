// The registry HTTP API on node:http. Routing is by suffix because repository names contain '/'.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Registry } from '../content/registry.ts';
import type { Uploads } from '../content/uploads.ts';
import { requireRepositoryName } from '../content/registry.ts';
import { OciError } from '../oci/errors.ts';
import { API_VERSION_HEADER, clientAddress, clientKey, sendError, sendJson } from './http.ts';

const NO_PROXIES: ReadonlySet<string> = new Set();
// Not `import … from 'node:http'`: an ES module import of it evaluates every lazy export,
// loading the fetch implementation (undici), ~50 ms of CPU at every start. node:https only
// when serving TLS.
const { STATUS_CODES, createServer } = process.getBuiltinModule('node:http');
import { asOciError, unavailableError } from './errors.ts';
import { ALLOW_ALL, type ApiContext, type ApiLimits, type Gate, type Handler, type RepositoryAction } from './context.ts';
import type { GcReport } from '../gc/collector.ts';
import { cancelUpload, deleteBlob, getBlob, patchUpload, putUpload, startUpload, uploadStatus } from './blobs.ts';
import { deleteManifest, getManifest, putManifest } from './manifests.ts';
import { catalog, discoverExtensions, listTags, manifestReferences, referrers } from './listing.ts';
import { graph } from './graph.ts';
import { isComponentsPath, type ComponentsApi } from './components.ts';
import { references, search } from './query.ts';
import type { RateLimiter } from './rate-limit.ts';
import { answerHealthProbe, answerMetrics, METRICS_PATH, type OpsEndpoints } from './ops.ts';
import type { RequestObserver } from './request-log.ts';
import { isUiPath, serveUi } from './ui.ts';
import { attributes, tagDetails, tree } from './browse.ts';
import type { UiBundle } from '../ui/index.ts';

interface Route {
  pattern: RegExp;
  methods: Partial<Record<string, Handler>>;
  /** Every method here is part of pushing (upload sessions), so each needs push. */
  upload?: true;
  /** Answers may name other repositories (nested namespaces): they need every layout adopted. */
  crossRepository?: true;
}

// Order matters: upload paths before blob paths.
const ROUTES: Route[] = [
  { pattern: /^\/v2\/(.+)\/_trellis\/graph\/([^/]+)$/, methods: { GET: graph, HEAD: graph }, crossRepository: true },
  { pattern: /^\/v2\/(.+)\/_trellis\/tags\/?$/, methods: { GET: tagDetails, HEAD: tagDetails } },
  { pattern: /^\/v2\/(.+)\/blobs\/uploads\/?$/, methods: { POST: startUpload }, upload: true },
  { pattern: /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/, methods: { PATCH: patchUpload, PUT: putUpload, GET: uploadStatus, HEAD: uploadStatus, DELETE: cancelUpload }, upload: true },
  { pattern: /^\/v2\/(.+)\/blobs\/([^/]+)$/, methods: { GET: getBlob, HEAD: getBlob, DELETE: deleteBlob } },
  { pattern: /^\/v2\/(.+)\/manifests\/([^/]+)\/references$/, methods: { GET: manifestReferences, HEAD: manifestReferences }, crossRepository: true },
  { pattern: /^\/v2\/(.+)\/manifests\/([^/]+)$/, methods: { GET: getManifest, HEAD: getManifest, PUT: putManifest, DELETE: deleteManifest } },
  { pattern: /^\/v2\/(.+)\/tags\/list\/?$/, methods: { GET: listTags, HEAD: listTags } },
  { pattern: /^\/v2\/(.+)\/referrers\/([^/]+)$/, methods: { GET: referrers, HEAD: referrers } },
];

export interface ServerDependencies {
  registry: Registry;
  uploads: Uploads;
  limits: ApiLimits;
  log: Logger;
  components?: ComponentsApi;
  rateLimits: { query: RateLimiter };
  /** Access control; without it every request is allowed. */
  gate?: Gate | undefined;
  /** Runs garbage collection for `POST /v2/_trellis/gc` (serialized with the periodic runs). */
  collectGarbage?: ((dryRun: boolean) => Promise<GcReport>) | undefined;
  /** PEM certificate chain and key: serve HTTPS. */
  tls?: { cert: Buffer; key: Buffer } | undefined;
  /** Headers must arrive within `headersMs`; a whole request within `requestMs` (0: no limit). */
  timeouts?: { headersMs: number; requestMs: number } | undefined;
  /** Health probes and metrics (src/registry/ops.ts). */
  ops?: OpsEndpoints | undefined;
  /** Request ids, the per-request log line and request metrics. */
  requests?: RequestObserver | undefined;
  /** The web UI's bundle, served under /ui/; without it neither /ui/ nor / is answered. */
  ui?: UiBundle | undefined;
  /** Load balancers whose X-Forwarded-For names the client (trustedProxySet). */
  trustedProxies?: ReadonlySet<string> | undefined;
}

function actionFor(route: Route, method: string): RepositoryAction {
  if (route.upload) return 'push';
  return method === 'GET' || method === 'HEAD' ? 'pull' : method === 'DELETE' ? 'delete' : 'push';
}

function onlyGet(method: string, ctx: ApiContext, handler: (ctx: ApiContext) => Promise<void>): Promise<void> {
  if (method !== 'GET' && method !== 'HEAD') throw new OciError(405, 'UNSUPPORTED', `${method} is not supported on this endpoint`, undefined, { Allow: 'GET, HEAD' });
  return handler(ctx);
}

async function dispatch(ctx: ApiContext, deps: ServerDependencies): Promise<void> {
  const path = ctx.url.pathname;
  const method = ctx.head ? 'HEAD' : ctx.req.method ?? 'GET';
  if (path === '/v2' || path === '/v2/') {
    if (method !== 'GET' && method !== 'HEAD') throw new OciError(405, 'UNSUPPORTED', `${method} is not supported on /v2/`);
    return sendJson(ctx.res, 200, {}, {}, ctx.head);
  }
  // Right after a start, storage may hold layouts the index has not adopted yet: registry-wide
  // answers wait for all of them, a repository's own requests only for it (Registry.adopted).
  if (path.startsWith('/v2/_')) await deps.registry.adopted();
  if (path === '/v2/_catalog') return onlyGet(method, ctx, catalog);
  if (path === '/v2/_oci/ext/discover') return onlyGet(method, ctx, async (c) => discoverExtensions(c));
  if (deps.components && isComponentsPath(path)) return deps.components.handle(ctx);
  if (path === '/v2/_oci/references') return onlyGet(method, ctx, references);
  if (path === '/v2/_trellis/search') return onlyGet(method, ctx, search);
  if (path === '/v2/_trellis/tree') return onlyGet(method, ctx, tree);
  if (path === '/v2/_trellis/attributes') return onlyGet(method, ctx, attributes);
  if (path === '/v2/_trellis/gc') return collect(ctx, method, deps);
  if (path === METRICS_PATH && deps.ops?.metricsOnMainPort) return answerMetrics(ctx.req, ctx.res, deps.ops.metrics);
  for (const route of ROUTES) {
    const match = route.pattern.exec(path);
    if (!match) continue;
    const handler = route.methods[method];
    if (!handler) throw new OciError(405, 'UNSUPPORTED', `${method} is not supported on this endpoint`, undefined, { Allow: Object.keys(route.methods).join(', ') });
    const name = match[1]!;
    // Names never need percent-encoding; an encoded one is an attempt to smuggle '/' or '..'.
    if (name.includes('%')) throw new OciError(400, 'NAME_INVALID', 'repository name must not be percent-encoded');
    requireRepositoryName(name);
    const arg = decodeURIComponent(match[2] ?? '');
    ctx.access.authorize(name, actionFor(route, method), arg || undefined);
    await deps.registry.adopted(route.crossRepository ? undefined : name);
    return handler(ctx, name, arg);
  }
  throw new OciError(404, 'NAME_UNKNOWN', `no registry endpoint at ${path.slice(0, 200)}`);
}

/** `POST /v2/_trellis/gc[?dryRun=true]`: one collection now; the report as JSON. */
async function collect(ctx: ApiContext, method: string, deps: ServerDependencies): Promise<void> {
  if (method !== 'POST') throw new OciError(405, 'UNSUPPORTED', `${method} is not supported on /v2/_trellis/gc`, undefined, { Allow: 'POST' });
  if (!deps.collectGarbage) throw new OciError(404, 'NAME_UNKNOWN', 'garbage collection is not available here');
  const dryRun = ['true', '1'].includes(ctx.url.searchParams.get('dryRun') ?? '');
  sendJson(ctx.res, 200, await deps.collectGarbage(dryRun));
}

function isRepositoryRoute(path: string): boolean {
  return ROUTES.some((route) => route.pattern.test(path));
}

/**
 * Why a raw request path is refused, if it is: dot segments, backslashes and empty segments, plain
 * or percent-encoded. URL parsing would resolve them (`/v2/a\..\b/` becomes `/v2/b/`), so they
 * are refused before anything is parsed or resolved: a name means exactly what was sent.
 */
export function pathProblem(rawUrl: string): string | undefined {
  const query = rawUrl.indexOf('?');
  const path = query < 0 ? rawUrl : rawUrl.slice(0, query);
  if (!path.startsWith('/')) return 'request path must start with /';
  const plain = path.includes('%') ? path.replace(/%(2e|2f|5c)/gi, (code) => decodeURIComponent(code)) : path;
  if (plain.includes('\\')) return 'request path must not contain a backslash';
  const segments = plain.split('/').slice(1);
  if (segments.some((segment, i) => segment === '.' || segment === '..' || (segment === '' && i < segments.length - 1))) {
    return 'request path must not contain ".", ".." or empty segments';
  }
  return undefined;
}

/**
 * A request node:http could not parse (or whose headers came too slowly) still gets an OCI error
 * body, then the connection is closed: after a framing error nothing else on it can be trusted.
 */
function answerClientError(err: NodeJS.ErrnoException, socket: Duplex, log: Logger): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const [status, message] = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'the request did not arrive in time']
    : err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'request headers are too large']
      : [400, `the request is not valid HTTP/1.1 (${err.code ?? 'parse error'})`];
  log.debug({ code: err.code, status }, 'client error');
  answerOnSocket(socket, status, message);
}

/** An OCI error written straight to a socket node:http has let go of, then the connection closed. */
function answerOnSocket(socket: Duplex, status: number, message: string, extra: Record<string, string> = {}): void {
  const body = new OciError(status, 'UNSUPPORTED', message).body();
  const head = { ...API_VERSION_HEADER, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), ...extra, Connection: 'close' };
  const lines = Object.entries(head).map(([name, value]) => `${name}: ${value}`);
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${lines.join('\r\n')}\r\n\r\n${body}`);
}

export function createRegistryServer(deps: ServerDependencies): Server {
  const headersTimeout = deps.timeouts?.headersMs ?? 30_000;
  const options = {
    requestTimeout: deps.timeouts?.requestMs ?? 0, headersTimeout, keepAliveTimeout: 65_000,
    // node's own answer to an HTTP/1.1 request without Host is a bare 400; handle() gives an OCI body.
    requireHostHeader: false,
    // How often node checks those timeouts: often enough that a short one is honoured closely.
    connectionsCheckingInterval: Math.max(50, Math.min(headersTimeout / 4, 5_000)),
  };
  const server: Server = deps.tls ? process.getBuiltinModule('node:https').createServer({ ...options, cert: deps.tls.cert, key: deps.tls.key }, handle) : createServer(options, handle);
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => answerClientError(err, socket, deps.log));
  // Without a listener node closes a CONNECT's connection with no answer at all.
  server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
    socket.on('error', () => socket.destroy());
    answerOnSocket(socket, 405, 'CONNECT is not supported: this is a registry, not a proxy');
  });
  // An Expect other than 100-continue: node would answer a bare 417 with no body.
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    res.setHeader('Connection', 'close');
    sendError(res, new OciError(417, 'UNSUPPORTED', 'only Expect: 100-continue is supported'), req.method === 'HEAD');
  });
  function handle(req: IncomingMessage, res: ServerResponse): void {
    let url: URL;
    if (req.httpVersion === '1.1' && req.headers.host === undefined) {
      res.setHeader('Connection', 'close');
      return sendError(res, new OciError(400, 'UNSUPPORTED', 'an HTTP/1.1 request must have a Host header'), req.method === 'HEAD');
    }
    // Absolute-form (`GET http://host/v2/ HTTP/1.1`, RFC 9112 §3.2.2: a server must accept it):
    // the path after the authority, taken as sent like any other.
    const absolute = /^https?:\/\/[^/?#]*/i.exec(req.url ?? '');
    if (absolute) req.url = req.url!.slice(absolute[0].length).replace(/^(?=\?|$)/, '/');
    const problem = pathProblem(req.url ?? '/');
    if (problem) return sendError(res, new OciError(400, 'NAME_INVALID', problem), req.method === 'HEAD');
    try {
      url = new URL(req.url ?? '/', 'http://registry.invalid');
    } catch {
      return sendError(res, new OciError(400, 'NAME_INVALID', 'request URL cannot be parsed'));
    }
    // Probes are answered before access control and are not logged (balancers call them often).
    if (deps.ops && answerHealthProbe(req, res, url.pathname, deps.ops.health)) return;
    // Once shutdown has begun, tell keep-alive clients to go away after this answer.
    if (!server.listening) res.setHeader('Connection', 'close');
    if (deps.ui && isUiPath(url.pathname)) return serveUi(req, res, url, deps.ui);
    const head = req.method === 'HEAD';
    const ctx: ApiContext = { req, res, url, head, registry: deps.registry, uploads: deps.uploads, limits: deps.limits, log: deps.log, rateLimits: deps.rateLimits, access: ALLOW_ALL, client: clientKey(clientAddress(req, deps.trustedProxies ?? NO_PROXIES)) };
    deps.requests?.begin(ctx);
    const admitted = deps.gate ? deps.gate.admit(ctx, isRepositoryRoute(url.pathname)) : Promise.resolve(false);
    admitted.then((answered) => answered ? undefined : dispatch(ctx, deps)).catch(
      (err: unknown) => {
        if (res.headersSent) {
          // The body was already streaming; all that is left is to cut the connection. A client
          // that hung up, or stopped reading and was cut off (a write cancelled), is ordinary, not
          // worth a warning.
          const code = (err as NodeJS.ErrnoException).code ?? '';
          const level = ['ERR_STREAM_PREMATURE_CLOSE', 'ECONNRESET', 'EPIPE', 'ECANCELED'].includes(code) ? 'debug' : 'warn';
          deps.log[level]({ err, reqId: ctx.requestId, method: req.method, path: url.pathname }, 'response failed after headers were sent');
          res.destroy();
          return;
        }
        let error = asOciError(err);
        if (error) {
          // a client error: answered with its code
        } else if (err instanceof URIError) {
          error = new OciError(400, 'NAME_INVALID', 'request path has malformed percent-encoding');
        } else if ((error = unavailableError(err))) {
          deps.log.warn({ err, reqId: ctx.requestId, method: req.method, path: url.pathname }, 'a service the registry depends on is unavailable');
        } else {
          deps.log.error({ err, reqId: ctx.requestId, method: req.method, path: url.pathname }, 'internal error');
          error = new OciError(500, 'UNKNOWN', 'internal error; see the registry log');
        }
        deps.log.debug({ reqId: ctx.requestId, method: req.method, path: url.pathname, status: error.status, code: error.entries[0]?.code }, 'request rejected');
        if (error.status === 408) {
          // The rest of a stalled body may still come: the connection cannot carry another request.
          res.setHeader('Connection', 'close');
          const socket = req.socket as Duplex | null;
          res.once('finish', () => socket?.destroy());
        }
        sendError(res, error, head);
      },
    );
  }
  return server;
}
