// `trellis serve`: opens the data directory and serves the registry API until a signal arrives.
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { Registry, type RegistryOptions } from '../content/registry.ts';
import { Uploads } from '../content/uploads.ts';
import { createRegistryServer } from '../registry/server.ts';
import { RateLimiter } from '../registry/rate-limit.ts';
import { parseListen, type Settings } from '../config/settings.ts';
import { collectGarbage, type GcPolicy, type GcReport } from '../gc/collector.ts';
import { openAccessControl } from '../auth/index.ts';
import { TRELLIS_FOLDER } from '../layout/paths.ts';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { openComponents } from '../components/index.ts';

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

export function createLogger(level: string): Logger {
  return pino({ level, base: undefined });
}

export function registryOptions(settings: Settings, logger: Logger): RegistryOptions {
  return {
    dataDir: settings.data,
    storage: settings.storage,
    maxManifestBytes: settings.maxManifestBytes,
    durable: settings.fsync,
    layoutReferrers: { fallbackTags: settings.layoutFallbackTags, olaregAnnotations: settings.layoutOlaregAnnotations },
    flush: { minDelayMs: settings.indexFlushMinMs, maxDelayMs: settings.indexFlushMaxMs, costFactor: settings.indexFlushCostFactor },
    layoutCheckIntervalMs: settings.layoutCheckIntervalMs,
    protectNestedChildren: settings.protectNestedChildren,
    buildkitAttestations: settings.buildkitAttestations,
    logger,
  };
}

export interface RunningRegistry {
  url: string;
  registry: Registry;
  close(): Promise<void>;
}

export async function startRegistry(settings: Settings, logger = createLogger(settings.logLevel)): Promise<RunningRegistry> {
  // Settings that can be wrong are read before the data directory is opened.
  const tls = settings.tlsCert ? { cert: await readFile(settings.tlsCert), key: await readFile(settings.tlsKey) } : undefined;
  const gate = await openAccessControl(settings, logger);
  const registry = await Registry.open(registryOptions(settings, logger));
  const uploads = new Uploads(registry.driver, {
    timeoutMs: settings.uploadTimeoutSeconds * 1000, maxSessions: settings.maxUploadSessions, maxSessionsTotal: settings.maxUploadSessionsTotal,
    maxBlobBytes: settings.maxBlobBytes, bodyIdleTimeoutMs: settings.bodyIdleTimeoutSeconds * 1000,
  });
  await uploads.sweepDisk();
  const sweeper = setInterval(() => {
    uploads.sweep().catch((err) => logger.warn({ err }, 'sweeping idle uploads failed'));
    uploads.sweepDisk().catch((err) => logger.warn({ err }, 'sweeping old uploads failed'));
  }, Math.min(60_000, settings.uploadTimeoutSeconds * 1000)).unref();
  // One collection at a time, periodic or asked for over HTTP.
  let collecting: Promise<GcReport> | undefined;
  const collect = (dryRun: boolean): Promise<GcReport> => {
    const run = (collecting ?? Promise.resolve()).catch(() => undefined).then(() => collectGarbage(registry, gcPolicy(settings), { dryRun }));
    collecting = run;
    run.then((report) => logger.info({ dryRun, removed: report.removed.length, bytes: report.bytes, ms: Math.round(report.durationMs) }, 'garbage collection done'))
      .catch((err) => logger.error({ err }, 'garbage collection failed'))
      .finally(() => { if (collecting === run) collecting = undefined; });
    return run;
  };
  const collector = settings.gcIntervalSeconds > 0 ? setInterval(() => {
    if (!collecting) collect(false).catch(() => undefined);
  }, settings.gcIntervalSeconds * 1000).unref() : undefined;
  const components = await openComponents(registry, settings, logger);
  const server = createRegistryServer({
    registry, uploads, log: logger, components,
    rateLimits: { query: new RateLimiter({ perSecond: settings.queryRatePerSecond, burst: settings.queryRateBurst }) },
    tls, collectGarbage: collect, gate,
    limits: {
      maxManifestBytes: settings.maxManifestBytes, maxListPage: settings.maxListPage, defaultReferrersPage: settings.defaultReferrersPage,
      maxReferrersBytes: settings.maxReferrersBytes, bodyIdleTimeoutMs: settings.bodyIdleTimeoutSeconds * 1000,
      blobRedirectSeconds: settings.storageRedirectSeconds,
    },
    timeouts: { headersMs: settings.headersTimeoutSeconds * 1000, requestMs: settings.requestTimeoutSeconds * 1000 },
  });
  const { host, port } = parseListen(settings.listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const url = `${tls ? 'https' : 'http'}://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  await writeFile(pidFile(settings.data), String(process.pid));
  logger.info({ url, data: settings.data }, 'trellis registry listening');
  let closing: Promise<void> | undefined;
  return {
    url,
    registry,
    close() {
      closing ??= (async () => {
        clearInterval(sweeper);
        if (collector) clearInterval(collector);
        await new Promise<void>((resolve) => {
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
        await registry.close();
        await rm(pidFile(settings.data), { force: true });
      })();
      return closing;
    },
  };
}

/** Runs until SIGINT/SIGTERM, then flushes every layout and exits. */
export async function serve(settings: Settings): Promise<void> {
  const logger = createLogger(settings.logLevel);
  const running = await startRegistry(settings, logger);
  const stop = (signal: string) => {
    logger.info({ signal }, 'shutting down: flushing layouts');
    running.close().then(() => process.exit(0), (err) => {
      logger.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
