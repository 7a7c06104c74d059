// Per-request observation: a request id (the caller's `X-Request-Id` when it is sane, else a new
// one, echoed in the answer), one JSON log line when the answer ends, and the request metrics.
// Kept to a few property reads and one cached metric child per request (see docs/operations.md).
import { randomUUID } from 'node:crypto';
import type { Level, Logger } from 'pino';
import type { Metrics } from '../observe/metrics.ts';
import type { ApiContext } from './context.ts';
import { routeName } from './route-names.ts';

export const REQUEST_ID_HEADER = 'X-Request-Id';
const SANE_REQUEST_ID = /^[A-Za-z0-9._:@+=/-]{1,128}$/;
const TOO_MANY_REQUESTS = 429;

export interface RequestObserverOptions {
  log: Logger;
  /** Level of the one line per request; 'silent' for none. */
  level: Level | 'silent';
  metrics?: Metrics | undefined;
}

export class RequestObserver {
  private readonly log: Logger;
  private readonly level: Level | 'silent';
  private readonly metrics: Metrics | undefined;

  constructor(options: RequestObserverOptions) {
    this.log = options.log;
    this.level = options.level;
    this.metrics = options.metrics;
  }

  /** Starts observing a request; `ctx.requestId` is set and the header is on the answer. */
  begin(ctx: ApiContext): void {
    const { req, res } = ctx;
    const incoming = req.headers['x-request-id'];
    const id = typeof incoming === 'string' && SANE_REQUEST_ID.test(incoming) ? incoming : randomUUID();
    ctx.requestId = id;
    res.setHeader(REQUEST_ID_HEADER, id);
    const started = performance.now();
    const socket = req.socket;
    const readBefore = socket.bytesRead;
    const writtenBefore = socket.bytesWritten;
    this.metrics?.requestStarted();
    res.once('close', () => {
      const route = routeName(ctx.url.pathname);
      const seconds = (performance.now() - started) / 1000;
      // A small body arrives with the headers, before this request was seen: its declared length is exact.
      const declared = Number(req.headers['content-length']);
      const bytesIn = Number.isFinite(declared) && declared > 0 ? declared : Math.max(0, socket.bytesRead - readBefore);
      const bytesOut = Math.max(0, socket.bytesWritten - writtenBefore);
      const status = res.headersSent ? res.statusCode : 0;
      const method = ctx.head ? 'HEAD' : req.method ?? 'GET';
      if (this.metrics) {
        this.metrics.requestDone({ route, method, status, seconds, bytesIn, bytesOut });
        if (status === TOO_MANY_REQUESTS) this.metrics.rateLimitRejected(route);
      }
      if (this.level !== 'silent') {
        this.log[this.level]({
          reqId: id, method, route, path: ctx.url.pathname.slice(0, 300), status, ms: +(seconds * 1000).toFixed(2), bytesIn, bytesOut,
          client: ctx.client, ...(res.writableFinished ? {} : { aborted: true }),
        }, 'request');
      }
    });
  }
}
