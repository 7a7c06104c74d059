// `trellis serve`: opens the data directory and serves the registry API until a signal arrives.
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { Registry, type RegistryOptions } from '../content/registry.ts';
import { Uploads } from '../content/uploads.ts';
import { createRegistryServer } from '../registry/server.ts';
import { trustedProxySet } from '../registry/http.ts';
import { RateLimiter } from '../registry/rate-limit.ts';
import { parseListen, type Settings } from '../config/settings.ts';
import { collectGarbage, type GcPolicy, type GcReport } from '../gc/collector.ts';
import { openAuth } from '../auth/index.ts';
import { AccessControl } from '../registry/access-control.ts';
import { TRELLIS_FOLDER } from '../layout/paths.ts';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { openComponents } from '../components/index.ts';
import { ComponentsApi } from '../registry/components.ts';
import { describeMetadata } from '../metadata/index.ts';
import { Observability } from '../observe/index.ts';
import { Events, configuredWebhooks } from '../events/index.ts';
import { createOpsServer } from '../registry/ops.ts';
import { RequestObserver } from '../registry/request-log.ts';
import type { Server } from 'node:http';
import type { Level } from 'pino';
import { openUiBundle } from '../ui/index.ts';

export function gcPolicy(settings: Settings): GcPolicy {
  return { untagged: settings.gcUntagged, danglingReferrers: settings.gcDanglingReferrers, graceSeconds: settings.gcGraceSeconds };
}

/**
 * The serving process's id, for service managers. Informational only: what keeps a second process
 * off the data directory is its lock (metadata/directory-lock.ts), taken before this is written.
 */
export function pidFile(dataDir: string): string {
  return `${dataDir}/${TRELLIS_FOLDER}/serve.pid`;
}

const SHUTDOWN_GRACE_MS = 10_000;
/** EX_TEMPFAIL: a supervisor should start the process again. */
export const EXIT_LOCKS_LOST = 75;

export function createLogger(level: string): Logger {
  return pino({ level, base: undefined });
}

/** Audit lines on the same stream as `logger` but with their own level, so `logLevel: warn` keeps them. */
export function auditLogger(logger: Logger, settings: Settings): Logger {
  return logger.child({}, { level: settings.auditLogLevel });
}

async function listen(server: Server, address: string): Promise<void> {
  const { host, port } = parseListen(address);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    // Keep-alive connections would hold the server open: close each as soon as it is idle,
    // and after a grace period close whatever is left.
    const idle = setInterval(() => server.closeIdleConnections(), 50);
    const grace = setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS);
    server.once('close', () => {
      clearInterval(idle);
      clearTimeout(grace);
    });
  });
}

export function registryOptions(settings: Settings, logger: Logger): RegistryOptions {
  return {
    dataDir: settings.data,
    storage: settings.storage,
    metadata: settings.metadata,
    maxManifestBytes: settings.maxManifestBytes,
    durable: settings.fsync,
    layoutReferrers: { fallbackTags: settings.layoutFallbackTags, olaregAnnotations: settings.layoutOlaregAnnotations },
    flush: {
      minDelayMs: settings.indexFlushMinMs, maxDelayMs: settings.indexFlushMaxMs, costFactor: settings.indexFlushCostFactor,
      // A fault-injection point for the crash tests, deliberately not a setting.
      pauseBeforeRenameMs: Number(process.env.TRELLIS_FAULT_PAUSE_BEFORE_INDEX_RENAME_MS ?? 0),
    },
    layoutCheckIntervalMs: settings.layoutCheckIntervalMs,
    protectNestedChildren: settings.protectNestedChildren,
    buildkitAttestations: settings.buildkitAttestations,
    // Offline commands with the same settings (trellis gc, layout import) record events too; the
    // server delivers them when it next runs.
    recordEvents: settings.webhooks.length > 0,
    logger,
  };
}

export interface RunningRegistry {
  url: string;
  registry: Registry;
  /** `http://host:port` of the separate metrics address, when `metricsListen` is set. */
  metricsUrl?: string | undefined;
  close(): Promise<void>;
}

/** The gate of access control (undefined without an auth file: an open registry). */
async function openAccessGate(settings: Settings, log: Logger, audit: Logger): Promise<AccessControl | undefined> {
  const auth = await openAuth(settings, log);
  if (!auth) return undefined;
  return new AccessControl({
    ...auth, log, audit,
    tls: Boolean(settings.tlsCert),
    requests: { perSecond: settings.rateLimitPerSecond, burst: settings.rateLimitBurst },
    failures: { perSecond: settings.authFailuresPerMinute / 60, burst: settings.authFailureBurst },
  });
}

export async function startRegistry(settings: Settings, logger = createLogger(settings.logLevel), audit = logger): Promise<RunningRegistry> {
  // Settings that can be wrong are read before the data directory is opened.
  const tls = settings.tlsCert ? { cert: await readFile(settings.tlsCert), key: await readFile(settings.tlsKey) } : undefined;
  const gate = await openAccessGate(settings, logger, audit);
  const webhooks = configuredWebhooks(settings);
  const observe = new Observability();
  // The metrics address answers from the start, so /readyz can say start-up is still under way.
  const opsServer = settings.metricsListen ? createOpsServer(observe) : undefined;
  if (opsServer) {
    await listen(opsServer, settings.metricsListen);
    opsServer.unref(); // it never holds the process open by itself (e.g. when opening the data fails)
  }
  // Serves at once: the walk of storage for other tools' layouts runs meanwhile (Registry.adopted),
  // from when the server listens (with 5,000 repositories it delayed the first answer by a third).
  let nowListening = (): void => undefined;
  const listening = new Promise<void>((resolve) => { nowListening = resolve; });
  const registry = await Registry.open({
    ...registryOptions(settings, logger), instrumentMetadata: observe.instrumentMetadata, adoptInBackground: true, catchUpAfter: listening,
  });
  const events = webhooks.length ? await Events.open(webhooks, settings, registry.metadata.outbox, logger, observe.metrics, registry.locks) : undefined;
  const uploads = new Uploads(registry.driver, {
    timeoutMs: settings.uploadTimeoutSeconds * 1000, maxSessions: settings.maxUploadSessions, maxSessionsTotal: settings.maxUploadSessionsTotal,
    maxBlobBytes: settings.maxBlobBytes, bodyIdleTimeoutMs: settings.bodyIdleTimeoutSeconds * 1000,
  }, Date.now, registry.locks);
  await uploads.sweepDisk();
  observe.watch(registry, uploads);
  const sweeper = setInterval(() => {
    uploads.sweep().catch((err) => logger.warn({ err }, 'sweeping idle uploads failed'));
    uploads.sweepDisk().catch((err) => logger.warn({ err }, 'sweeping old uploads failed'));
  }, Math.min(60_000, settings.uploadTimeoutSeconds * 1000)).unref();
  // One collection at a time, periodic or asked for over HTTP, in this process and (shared locks)
  // across replicas.
  let collecting: Promise<GcReport> | undefined;
  const collect = (dryRun: boolean): Promise<GcReport> => {
    const run = (collecting ?? Promise.resolve()).catch(() => undefined).then(() => registry.locks.run('gc', () => collectGarbage(registry, gcPolicy(settings), { dryRun })));
    collecting = run;
    run.then((report) => {
      observe.gcDone(report);
      return events?.gcCompleted(report);
    }, () => observe.gcFailed()).catch((err) => logger.error({ err }, 'recording the garbage collection event failed'));
    run.then((report) => logger.info({ dryRun, removed: report.removed.length, bytes: report.bytes, ms: Math.round(report.durationMs) }, 'garbage collection done'))
      .catch((err) => logger.error({ err }, 'garbage collection failed'))
      .finally(() => { if (collecting === run) collecting = undefined; });
    return run;
  };
  const collector = settings.gcIntervalSeconds > 0 ? setInterval(() => {
    if (!collecting) collect(false).catch(() => undefined);
  }, settings.gcIntervalSeconds * 1000).unref() : undefined;
  // With access control on, the portable index lists a repository's versions only if everyone who
  // may pull the index may pull that repository: its entries name them.
  const publishes = gate ? (repository: string) => gate.policies.pullersIncluded(settings.componentIndexRepository, repository) : undefined;
  const components = new ComponentsApi(await openComponents(registry, settings, logger, { background: true, publishes }));
  const ui = settings.ui ? await openUiBundle() : undefined;
  if (settings.ui && !ui) logger.warn('the web UI is not built (run npm run build); /ui/ is not served');
  const server = createRegistryServer({
    registry, uploads, log: logger, components,
    rateLimits: { query: new RateLimiter({ perSecond: settings.queryRatePerSecond, burst: settings.queryRateBurst }) },
    tls, collectGarbage: collect, gate, ui, trustedProxies: trustedProxySet(settings.trustedProxies),
    ops: { health: observe.health, metrics: observe.metrics, metricsOnMainPort: !opsServer },
    requests: new RequestObserver({ log: logger, level: settings.requestLogLevel as Level | 'silent', metrics: observe.metrics }),
    limits: {
      maxManifestBytes: settings.maxManifestBytes, maxListPage: settings.maxListPage, defaultReferrersPage: settings.defaultReferrersPage,
      maxReferrersBytes: settings.maxReferrersBytes, bodyIdleTimeoutMs: settings.bodyIdleTimeoutSeconds * 1000,
      blobRedirectSeconds: settings.storageRedirectSeconds,
      // GC may run in another process (trellis gc) even when this one collects nothing itself.
      blobRenewAfterMs: settings.gcGraceSeconds * 500,
    },
    timeouts: { headersMs: settings.headersTimeoutSeconds * 1000, requestMs: settings.requestTimeoutSeconds * 1000 },
  });
  await listen(server, settings.listen);
  nowListening();
  observe.health.onCheckFailed = (check, err) => logger.warn({ err, check }, 'a readiness check failed');
  observe.serving(registry);
  observe.metrics.loadSoon();
  const address = server.address() as AddressInfo;
  const url = `${tls ? 'https' : 'http'}://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  events?.start(settings.eventSource || url);
  await writeFile(pidFile(settings.data), String(process.pid));
  const opsAddress = opsServer?.address() as AddressInfo | undefined;
  const metricsUrl = opsAddress && `http://${opsAddress.family === 'IPv6' ? `[${opsAddress.address}]` : opsAddress.address}:${opsAddress.port}`;
  logger.info({ url, data: settings.data, metadata: describeMetadata({ location: settings.metadata, dataDir: settings.data }), metrics: metricsUrl ?? `${url}/metrics` }, 'trellis registry listening');
  let closing: Promise<void> | undefined;
  return {
    url,
    registry,
    metricsUrl,
    close() {
      closing ??= (async () => {
        observe.health.stopping();
        clearInterval(sweeper);
        if (collector) clearInterval(collector);
        await closeServer(server);
        await events?.stop();
        await registry.close();
        if (opsServer) await closeServer(opsServer);
        await rm(pidFile(settings.data), { force: true });
      })();
      return closing;
    },
  };
}

/** Runs until SIGINT/SIGTERM, then flushes every layout and exits. */
export async function serve(settings: Settings): Promise<void> {
  const logger = createLogger(settings.logLevel);
  const starting = startRegistry(settings, logger, auditLogger(logger, settings));
  const stop = (signal: string) => {
    logger.info({ signal }, 'shutting down: flushing layouts');
    starting.then((running) => running.close()).then(() => process.exit(0), (err) => {
      logger.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  // Installed before the start: a signal right after the "listening" line (a supervisor that
  // waits for it) must stop the server gracefully, not kill it.
  // `on`, not `once`: a terminal's Ctrl-C reaches both the launcher (which forwards it) and this
  // process; a second signal must not cut the flush short.
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  const running = await starting;
  // A replica whose shared locks went with their PostgreSQL connection (or whose storage another
  // index took) may be writing while another process, now let in, writes the same things (a GC
  // sweep, an index.json rewrite). Ending at once is safe (what was not answered was not
  // acknowledged, and a start finishes what a crash left); going on is not. Without a lock held,
  // a lost connection is simply opened again.
  running.registry.whenLost((reason) => {
    logger.fatal({ reason }, 'exiting: what kept other processes out was lost while work ran; a restart is safe');
    process.exit(EXIT_LOCKS_LOST);
  });
}
