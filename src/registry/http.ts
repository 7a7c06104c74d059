// Small helpers for exact HTTP answers: the spec's headers on every response, OCI error bodies.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP, isIPv6 } from 'node:net';
import { OciError } from '../oci/errors.ts';
import { OCI_INDEX } from '../oci/mediatypes.ts';

export const API_VERSION_HEADER = { 'Docker-Distribution-API-Version': 'registry/2.0' };

/**
 * The key per-client limits count an address by: an IPv4 address as is, an IPv6 address by its /64
 * (one host usually holds a whole /64, so per-address limits would otherwise be unlimited).
 */
export function clientKey(address: string): string {
  if (!isIPv6(address)) return address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  const [head = '', tail = ''] = address.split('%')[0]!.split('::');
  const left = head ? head.split(':') : [];
  const right = address.includes('::') && tail ? tail.split(':') : [];
  const groups = address.includes('::') ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right] : left;
  return `${groups.slice(0, 4).map((g) => (parseInt(g, 16) || 0).toString(16)).join(':')}::/64`;
}

/** `trustedProxies` as a set of addresses (IPv4-mapped IPv6 written as IPv4). */
export function trustedProxySet(setting: string): ReadonlySet<string> {
  return new Set(setting.split(',').map((a) => plainAddress(a.trim())).filter(Boolean));
}

function plainAddress(address: string): string {
  return /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1] ?? address;
}

/**
 * Who sent a request: the connection's address, or, when that is a trusted proxy, the address
 * X-Forwarded-For names last before the trusted proxies (each appends who connected to it, so
 * the entries a client wrote itself come first and are never believed). Limits key it by clientKey.
 */
export function clientAddress(req: IncomingMessage, trusted: ReadonlySet<string>): string {
  let address = plainAddress(req.socket.remoteAddress ?? 'unknown');
  if (!trusted.size || !trusted.has(address)) return address;
  const header = req.headers['x-forwarded-for'];
  const forwarded = (Array.isArray(header) ? header.join(',') : header ?? '').split(',').map((a) => a.trim());
  while (trusted.has(address) && forwarded.length) {
    const next = plainAddress(forwarded.pop()!);
    if (!isIP(next)) break; // not an address: the proxy's own stands
    address = next;
  }
  return address;
}

export type Headers = Record<string, string | number | string[]>;

export function send(res: ServerResponse, status: number, headers: Headers = {}, body?: string | Buffer): void {
  const payload = body === undefined ? undefined : typeof body === 'string' ? Buffer.from(body) : body;
  res.writeHead(status, { ...API_VERSION_HEADER, 'Content-Length': payload?.length ?? 0, ...headers });
  res.end(payload);
}

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Headers = {}, head = false): void {
  const body = Buffer.from(JSON.stringify(value));
  res.writeHead(status, { ...API_VERSION_HEADER, 'Content-Type': 'application/json', 'Content-Length': body.length, ...headers });
  res.end(head ? undefined : body);
}

export function sendError(res: ServerResponse, error: OciError, head = false): void {
  const body = Buffer.from(error.body());
  res.writeHead(error.status, { ...API_VERSION_HEADER, 'Content-Type': 'application/json', 'Content-Length': body.length, ...error.headers });
  res.end(head ? undefined : body);
}

/**
 * Reads a whole request body up to `maxBytes`. A larger body is drained and dropped, then
 * answered with 413 (failing mid-stream would reset the connection before the answer). A body
 * that sends nothing for `idleMs` (0: never) is refused with 408.
 */
export function readBody(req: IncomingMessage, maxBytes: number, what: string, idleMs = 0): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    let idle: NodeJS.Timeout | undefined;
    const rearm = () => {
      if (idleMs <= 0) return;
      clearTimeout(idle);
      idle = setTimeout(() => {
        // The server answers 408 and closes the connection (see server.ts).
        reject(new OciError(408, 'MANIFEST_INVALID', `${what} body sent nothing for ${idleMs} ms`));
      }, idleMs);
    };
    rearm();
    req.on('data', (chunk: Buffer) => {
      rearm();
      total += chunk.length;
      if (total <= maxBytes) chunks.push(chunk);
    });
    req.on('error', (err) => {
      clearTimeout(idle);
      reject(new OciError(400, 'MANIFEST_INVALID', `request body could not be read: ${err.message}`));
    });
    req.on('end', () => {
      clearTimeout(idle);
      if (total > maxBytes) reject(new OciError(413, 'SIZE_INVALID', `${what} exceeds the limit of ${maxBytes} bytes`));
      else resolve(Buffer.concat(chunks, total));
    });
    req.on('close', () => clearTimeout(idle));
  });
}

/**
 * `n` and `last` of a paginated listing, checked. `n` is capped at `maxPage`; without `n` the page
 * holds `defaultPage`, also capped at `maxPage` unless `capDefault` is false.
 */
export function pageParams(query: URLSearchParams, maxPage: number, defaultPage = maxPage, capDefault = true): { limit: number; after?: string; requested: number | undefined } {
  const raw = query.get('n');
  let requested: number | undefined;
  if (raw !== null) {
    if (!/^\d{1,9}$/.test(raw)) throw new OciError(400, 'PAGINATION_NUMBER_INVALID', `n must be a non-negative integer, not ${JSON.stringify(raw.slice(0, 50))}`);
    requested = Number(raw);
  }
  const last = query.get('last') ?? undefined;
  const limit = requested !== undefined ? Math.min(requested, maxPage) : capDefault ? Math.min(defaultPage, maxPage) : defaultPage;
  const page: { limit: number; after?: string; requested: number | undefined } = { limit, requested };
  if (last) page.after = last;
  return page;
}

/** An RFC 8288 `Link` header to the next page. */
export function nextLink(path: string, params: Record<string, string | string[]>): string {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) for (const v of [value].flat()) query.append(key, v);
  return `<${path}?${query.toString()}>; rel="next"`;
}

/**
 * Puts up to `limit` items, each serialised by `serialize`, into a page no larger than `maxBytes`
 * (at least one item). `more` says whether anything was left out, by `limit`, by the budget, or
 * because `items` held one beyond the limit (callers fetch limit + 1 to learn that). Items are
 * serialised once: the answer is assembled from `parts`.
 */
export function fitPage<S>(items: S[], limit: number, maxBytes: number, serialize: (item: S) => string): { parts: string[]; last: S | undefined; more: boolean } {
  const parts: string[] = [];
  let bytes = 200;
  let last: S | undefined;
  for (const item of items.slice(0, limit)) {
    const json = serialize(item);
    if (parts.length > 0 && bytes + json.length + 1 > maxBytes) return { parts, last, more: true };
    bytes += json.length + 1;
    parts.push(json);
    last = item;
  }
  return { parts, last, more: items.length > limit };
}

/** An OCI image index whose `manifests` are already serialised descriptors. */
export function indexJson(parts: string[]): string {
  return `{"schemaVersion":2,"mediaType":"${OCI_INDEX}","manifests":[${parts.join(',')}]}`;
}
