// Settings: built-in defaults, then a JSON config file, then TRELLIS_* environment variables, then
// command-line flags. Every setting is documented in docs/configuration.md.
import { readFileSync } from 'node:fs';

export interface Settings {
  /** HOST:PORT to listen on. */
  listen: string;
  /** Data root: one OCI layout per repository, plus `_trellis/` for the index and uploads. */
  data: string;
  /**
   * Where blobs and layouts live: '' for the data directory, another path, or
   * `s3://bucket/prefix?endpoint=…&region=…` (docs/deployment.md). The metadata index stays in `data`.
   */
  storage: string;
  /** Answer blob GETs with a redirect to a presigned storage URL valid this long (S3 only); 0 serves them. */
  storageRedirectSeconds: number;
  /** The metadata index: '' for SQLite under the data root, or postgres://user:pass@host:port/db. */
  metadata: string;
  logLevel: string;
  /** Level of the one JSON line per request ('silent': none). */
  requestLogLevel: string;
  /**
   * Comma-separated addresses of load balancers whose X-Forwarded-For is believed: a request
   * from one of them counts as from the address the header names last before them. '': none.
   */
  trustedProxies: string;
  /** Level of audit lines, independent of logLevel ('silent': none). */
  auditLogLevel: string;
  /** HOST:PORT of a separate plain-HTTP address for /metrics (and the health probes); '': /metrics on the main port, admins only. */
  metricsListen: string;
  maxManifestBytes: number;
  /** Largest blob accepted; 0 for no limit. */
  maxBlobBytes: number;
  uploadTimeoutSeconds: number;
  /** Upload sessions one client (identity, else address) may hold open at once. */
  maxUploadSessions: number;
  /** Upload sessions open at once across all clients. */
  maxUploadSessionsTotal: number;
  /** A request body that sends nothing for this long is aborted; 0: never. */
  bodyIdleTimeoutSeconds: number;
  /** Request headers must arrive within this time (node:http headersTimeout). */
  headersTimeoutSeconds: number;
  /** A whole request must arrive within this time (node:http requestTimeout); 0: no limit. */
  requestTimeoutSeconds: number;
  /** fsync every write and run SQLite with synchronous=FULL (survives power loss). */
  fsync: boolean;
  indexFlushMinMs: number;
  indexFlushMaxMs: number;
  indexFlushCostFactor: number;
  layoutCheckIntervalMs: number;
  maxListPage: number;
  maxReferrersBytes: number;
  /** Query results per page when the client gives no `n` (plain referrer listings fill maxReferrersBytes instead). */
  defaultReferrersPage: number;
  /** Refuse to delete a manifest an index in an ancestor repository lists (nested namespaces). */
  protectNestedChildren: boolean;
  /** Write a fallback-tag referrers index per subject into layouts (for regctl's default reader). */
  layoutFallbackTags: boolean;
  /** Also annotate those entries with olareg's `org.olareg.referrer.subject`. */
  layoutOlaregAnnotations: boolean;
  /** Serve BuildKit attestations (vnd.docker.reference.*) as referrers of the image they describe. */
  buildkitAttestations: boolean;
  /** Run garbage collection online this often; 0 turns periodic collection off. */
  gcIntervalSeconds: number;
  /** Nothing pushed more recently than this is collected. */
  gcGraceSeconds: number;
  /** Manifests no tag, index or live subject reaches. */
  gcUntagged: 'keep' | 'delete';
  /** Referrers whose subject is not in the repository. */
  gcDanglingReferrers: 'keep' | 'delete';
  /** Repository of the portable component index (referrers of OCM's anchor); '' turns it off. */
  componentIndexRepository: string;
  /** Comma-separated repository name prefixes whose repositories are generic components. */
  componentRepositoryPrefixes: string;
  /** An annotation whose value names the generic component a manifest belongs to; '' turns it off. */
  componentAnnotation: string;
  /** Query and search requests per second each client may make on average; 0 for no limit. */
  queryRatePerSecond: number;
  /** Query and search requests a client may make at once before the rate applies. */
  queryRateBurst: number;
  /** JSON file with users, robots, policies and the token mode; empty: an open registry. */
  authFile: string;
  /** PEM certificate chain and private key; both set: serve HTTPS. */
  tlsCert: string;
  tlsKey: string;
  /** Requests per second per identity (anonymous callers: per address) with an auth file; 0: no limit. */
  rateLimitPerSecond: number;
  rateLimitBurst: number;
  /** Failed sign-ins per minute per address and per user name before 429. */
  authFailuresPerMinute: number;
  authFailureBurst: number;
  /** Webhooks that receive CloudEvents about changes (checked in src/events/webhooks.ts). */
  webhooks: unknown[];
  /** CloudEvents `source` of every event; '' for the registry's URL. */
  eventSource: string;
  /** A webhook answering slower than this counts as failed (and is retried). */
  webhookTimeoutMs: number;
  /** First retry delay after a failed delivery; doubles per failure up to webhookRetryMaxMs. */
  webhookRetryMinMs: number;
  webhookRetryMaxMs: number;
  /** Serve the web UI under /ui/ (and redirect / there). */
  ui: boolean;
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

const CHOICES: Partial<Record<keyof Settings, readonly string[]>> = {
  gcUntagged: ['keep', 'delete'],
  gcDanglingReferrers: ['keep', 'delete'],
  logLevel: LOG_LEVELS,
  requestLogLevel: LOG_LEVELS,
  auditLogLevel: LOG_LEVELS,
};

export const DEFAULT_SETTINGS: Settings = {
  listen: '127.0.0.1:5000',
  data: './trellis-data',
  storage: '',
  storageRedirectSeconds: 0,
  metadata: '',
  logLevel: 'info',
  requestLogLevel: 'info',
  trustedProxies: '',
  auditLogLevel: 'info',
  metricsListen: '',
  maxManifestBytes: 4 * 1024 * 1024,
  maxBlobBytes: 0,
  uploadTimeoutSeconds: 3600,
  maxUploadSessions: 500,
  maxUploadSessionsTotal: 50_000,
  bodyIdleTimeoutSeconds: 60,
  headersTimeoutSeconds: 30,
  requestTimeoutSeconds: 0,
  fsync: false,
  indexFlushMinMs: 50,
  indexFlushMaxMs: 60_000,
  indexFlushCostFactor: 10,
  layoutCheckIntervalMs: 1000,
  maxListPage: 1000,
  maxReferrersBytes: 4 * 1024 * 1024,
  defaultReferrersPage: 250,
  protectNestedChildren: true,
  layoutFallbackTags: true,
  layoutOlaregAnnotations: false,
  buildkitAttestations: false,
  gcIntervalSeconds: 0,
  gcGraceSeconds: 3600,
  gcUntagged: 'keep',
  gcDanglingReferrers: 'keep',
  componentIndexRepository: 'component-index',
  componentRepositoryPrefixes: '',
  componentAnnotation: 'dev.trellis.component',
  queryRatePerSecond: 20,
  queryRateBurst: 40,
  authFile: '',
  tlsCert: '',
  tlsKey: '',
  rateLimitPerSecond: 0,
  rateLimitBurst: 200,
  authFailuresPerMinute: 6,
  authFailureBurst: 10,
  webhooks: [],
  eventSource: '',
  webhookTimeoutMs: 10_000,
  webhookRetryMinMs: 1000,
  webhookRetryMaxMs: 300_000,
  ui: true,
};

export class SettingsError extends Error {}

/**
 * Settings that become a Node.js timer, with milliseconds per unit. setTimeout, setInterval and
 * AbortSignal.timeout fire after 1 ms when asked to wait longer than 2^31-1 ms (about 24.8 days):
 * a 30-day GC interval would collect back to back, a huge webhook timeout would fail every delivery.
 */
const TIMERS: Partial<Record<keyof Settings, number>> = {
  bodyIdleTimeoutSeconds: 1000, gcIntervalSeconds: 1000, indexFlushMinMs: 1, indexFlushMaxMs: 1,
  webhookTimeoutMs: 1, webhookRetryMinMs: 1, webhookRetryMaxMs: 1,
};
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Counts and byte sizes with no "0 turns it off": 0 would refuse or hide everything (an empty page, no manifest fits). */
const POSITIVE_INTEGERS: (keyof Settings)[] = ['maxListPage', 'defaultReferrersPage', 'maxManifestBytes', 'maxReferrersBytes', 'maxUploadSessions', 'maxUploadSessionsTotal'];

/** `maxManifestBytes` → `TRELLIS_MAX_MANIFEST_BYTES`. */
export function envName(key: string): string {
  return `TRELLIS_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

function coerce(key: keyof Settings, value: unknown, source: string): Settings[keyof Settings] {
  const kind = typeof DEFAULT_SETTINGS[key];
  if (Array.isArray(DEFAULT_SETTINGS[key])) {
    // Lists come as JSON in environment variables; their items are checked where they are used.
    let list = value;
    if (typeof value === 'string') {
      try {
        list = JSON.parse(value);
      } catch {
        throw new SettingsError(`${source}: ${key} must be a JSON list`);
      }
    }
    if (!Array.isArray(list)) throw new SettingsError(`${source}: ${key} must be a list`);
    return list;
  }
  if (kind === 'number') {
    const n = typeof value === 'number' ? value : Number(value);
    if (!Number.isFinite(n) || n < 0) throw new SettingsError(`${source}: ${key} must be a non-negative number, not ${JSON.stringify(value)}`);
    return n;
  }
  if (kind === 'boolean') {
    if (typeof value === 'boolean') return value;
    if (value === 'true' || value === '1') return true;
    if (value === 'false' || value === '0') return false;
    throw new SettingsError(`${source}: ${key} must be true or false, not ${JSON.stringify(value)}`);
  }
  if (typeof value !== 'string') throw new SettingsError(`${source}: ${key} must be a string`);
  const choices = CHOICES[key];
  if (choices && !choices.includes(value)) throw new SettingsError(`${source}: ${key} must be one of ${choices.join(', ')}, not ${JSON.stringify(value)}`);
  return value;
}

export function loadSettings(options: { configFile?: string | undefined; env?: NodeJS.ProcessEnv; overrides?: Partial<Record<keyof Settings, unknown>> } = {}): Settings {
  const env = options.env ?? process.env;
  const settings: Settings = { ...DEFAULT_SETTINGS };
  const set = (key: keyof Settings, value: unknown, source: string) => {
    (settings as unknown as Record<string, unknown>)[key] = coerce(key, value, source);
  };
  const configFile = options.configFile ?? env.TRELLIS_CONFIG;
  if (configFile) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(configFile, 'utf8'));
    } catch (err) {
      throw new SettingsError(`cannot read config file ${configFile}: ${(err as Error).message}`);
    }
    if (typeof parsed !== 'object' || parsed === null) throw new SettingsError(`${configFile}: must hold a JSON object`);
    for (const [key, value] of Object.entries(parsed)) {
      // Own keys only: `in` also finds what every object inherits (constructor, toString, __proto__).
      if (!Object.hasOwn(DEFAULT_SETTINGS, key)) throw new SettingsError(`${configFile}: unknown setting ${key}`);
      set(key as keyof Settings, value, configFile);
    }
  }
  for (const key of Object.keys(DEFAULT_SETTINGS) as (keyof Settings)[]) {
    const value = env[envName(key)];
    if (value !== undefined && value !== '') set(key, value, envName(key));
  }
  for (const [key, value] of Object.entries(options.overrides ?? {})) {
    if (value !== undefined) set(key as keyof Settings, value, `--${key}`);
  }
  parseListen(settings.listen);
  for (const key of POSITIVE_INTEGERS) {
    const value = settings[key] as number;
    if (!Number.isSafeInteger(value) || value < 1) throw new SettingsError(`${key} must be a whole number of at least 1, not ${value}`);
  }
  // 0 is no "off" here: a timeout of 0 fails every delivery, a retry delay of 0 retries it in a tight loop.
  for (const key of ['webhookTimeoutMs', 'webhookRetryMinMs', 'webhookRetryMaxMs'] as const) {
    if (settings[key] <= 0) throw new SettingsError(`${key} must be above 0`);
  }
  if (settings.webhookRetryMaxMs < settings.webhookRetryMinMs) throw new SettingsError('webhookRetryMaxMs must be at least webhookRetryMinMs');
  if (!Number.isSafeInteger(settings.maxBlobBytes)) throw new SettingsError(`maxBlobBytes must be a whole number (0 for no limit), not ${settings.maxBlobBytes}`);
  for (const [key, msPerUnit] of Object.entries(TIMERS) as [keyof Settings, number][]) {
    const max = Math.floor(MAX_TIMER_MS / msPerUnit);
    if ((settings[key] as number) > max) throw new SettingsError(`${key} must be at most ${max} (about 24 days), not ${settings[key] as number}`);
  }
  if (settings.headersTimeoutSeconds <= 0) throw new SettingsError('headersTimeoutSeconds must be above 0');
  if (settings.requestTimeoutSeconds > 0 && settings.requestTimeoutSeconds < settings.headersTimeoutSeconds) {
    throw new SettingsError('requestTimeoutSeconds must be 0 or at least headersTimeoutSeconds');
  }
  if (settings.metricsListen) {
    parseListen(settings.metricsListen);
    if (settings.metricsListen === settings.listen) throw new SettingsError('metricsListen must differ from listen (leave it empty to serve /metrics on the main port)');
  }
  if (!settings.tlsCert !== !settings.tlsKey) throw new SettingsError('tlsCert and tlsKey must be set together');
  return settings;
}

export function parseListen(listen: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw new SettingsError(`listen must be HOST:PORT, not ${JSON.stringify(listen)}`);
  return { host: match[1] ?? (match[2] || '127.0.0.1'), port };
}
