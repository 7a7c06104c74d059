// Operations endpoints: `/healthz` and `/readyz` (unauthenticated, before access control) and
// `/metrics` (Prometheus text), on the main port or on a separate `metricsListen` address.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Health } from '../observe/health.ts';
import type { Metrics } from '../observe/metrics.ts';
import { OciError } from '../oci/errors.ts';
import { send, sendError, sendJson } from './http.ts';

export const METRICS_PATH = '/metrics';
export const HEALTH_PATHS = new Set(['/healthz', '/readyz']);

export interface OpsEndpoints {
  health: Health;
  metrics: Metrics;
  /** Serve `/metrics` on the main port (behind admin rights); false when it has its own address. */
  metricsOnMainPort: boolean;
}

function getOnly(req: IncomingMessage, res: ServerResponse, path: string): boolean {
  if (req.method === 'GET' || req.method === 'HEAD') return true;
  sendError(res, new OciError(405, 'UNSUPPORTED', `${req.method} is not supported on ${path}`, undefined, { Allow: 'GET, HEAD' }));
  return false;
}

/** Answers `/healthz` or `/readyz` and returns true; any other path: false. */
export function answerHealthProbe(req: IncomingMessage, res: ServerResponse, path: string, health: Health): boolean {
  if (!HEALTH_PATHS.has(path)) return false;
  if (!getOnly(req, res, path)) return true;
  const head = req.method === 'HEAD';
  const noCache = { 'Cache-Control': 'no-store' };
  if (path === '/healthz') {
    sendJson(res, 200, health.alive(), noCache, head);
    return true;
  }
  health.ready().then(
    (report) => sendJson(res, report.status === 'ok' ? 200 : 503, report, noCache, head),
    () => sendJson(res, 503, { status: 'unavailable', error: 'readiness could not be evaluated' }, noCache, head),
  );
  return true;
}

export async function answerMetrics(req: IncomingMessage, res: ServerResponse, metrics: Metrics): Promise<void> {
  if (!getOnly(req, res, METRICS_PATH)) return;
  const { contentType, body } = await metrics.render();
  send(res, 200, { 'Content-Type': contentType, 'Cache-Control': 'no-store' }, req.method === 'HEAD' ? undefined : body);
}

/** The separate metrics address: `/metrics`, `/healthz`, `/readyz`, nothing else. */
export function createOpsServer(ops: Pick<OpsEndpoints, 'health' | 'metrics'>): Server {
  // Not an ES module import of node:http: see server.ts.
  return process.getBuiltinModule('node:http').createServer({ headersTimeout: 10_000, requestTimeout: 30_000 }, (req, res) => {
    const path = (req.url ?? '/').split('?', 1)[0]!;
    if (answerHealthProbe(req, res, path, ops.health)) return;
    if (path === METRICS_PATH) {
      answerMetrics(req, res, ops.metrics).catch(() => sendError(res, new OciError(500, 'UNKNOWN', 'metrics could not be collected')));
      return;
    }
    sendError(res, new OciError(404, 'NAME_UNKNOWN', 'this address serves /metrics, /healthz and /readyz only'));
  });
}
