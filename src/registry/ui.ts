// Serving the web UI's bundle under /ui/ (and redirecting / there). The files hold no registry
// data, so they are served before access control: the app signs in through the token flow.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { UI_PATH, type UiBundle } from '../ui/index.ts';
import { send, sendError } from './http.ts';
import { OciError } from '../oci/errors.ts';

// The app loads only its own files and calls only this origin's API.
const SECURITY_HEADERS = {
  'Content-Security-Policy': "default-src 'self'; img-src 'self' data:; style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
};

/** Whether a path belongs to the UI (the bundle, or `/` which leads to it). */
export function isUiPath(path: string): boolean {
  return path === '/' || path === '/ui' || path.startsWith(UI_PATH);
}

export function serveUi(req: IncomingMessage, res: ServerResponse, url: URL, bundle: UiBundle): void {
  const method = req.method ?? 'GET';
  const head = method === 'HEAD';
  if (method !== 'GET' && !head) {
    return sendError(res, new OciError(405, 'UNSUPPORTED', `${method} is not supported on the web UI`, undefined, { Allow: 'GET, HEAD' }), head);
  }
  if (url.pathname === '/' || url.pathname === '/ui') return send(res, 302, { Location: UI_PATH });
  const asset = bundle.lookup(url.pathname.slice(UI_PATH.length));
  if (!asset) return sendError(res, new OciError(404, 'NAME_UNKNOWN', 'no such file in the web UI'), head);
  const headers = {
    ...SECURITY_HEADERS,
    'Content-Type': asset.contentType,
    'Cache-Control': asset.immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
    ETag: asset.etag,
  };
  if (req.headers['if-none-match'] === asset.etag) return send(res, 304, headers);
  send(res, 200, { ...headers, 'Content-Length': asset.body.length }, head ? undefined : asset.body);
}
