// Several Trellis replicas behind a real load balancer, as docs/deployment.md describes the HA
// layout: N `trellis serve` processes (bin/trellis.mjs, each on a free 127.0.0.1 port with its own
// empty data directory) share one PostgreSQL database (test/helpers/postgres.ts) and one bucket
// prefix on versitygw (test/helpers/s3.ts); nginx from Debian balances round-robin in front of them
// with the configuration docs/examples/nginx.conf shows. A replica can be killed with SIGKILL and
// started again on its port; only processes started here are ever signalled.
//
// Without nginx, PostgreSQL or versitygw a test is skipped, except under CI=true, where it fails.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestContext } from 'node:test';
import { createTestDatabase, postgresMissing } from './postgres.ts';
import { findS3Server, startS3Server, useCredentials, type S3Server } from './s3.ts';
import { findPeer } from './peers.ts';
import type { StorageDriver } from '../../src/storage/index.ts';
import { S3Driver, parseS3Url } from '../../src/storage/s3.ts';
import { readIndexJson } from '../../src/layout/reader.ts';
import { REF_NAME } from '../../src/layout/paths.ts';
import { pushBlob, pushManifest } from './oci-client.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const TRELLIS = join(ROOT, 'bin/trellis.mjs');
/** Printed output kept per process, for failure messages. */
const OUTPUT_LIMIT = 64 * 1024;

export interface Replica {
  index: number;
  /** http://127.0.0.1:port of this replica alone. */
  url: string;
  host: string;
  port: number;
  dataDir: string;
  /** The running process, or undefined after kill() until restart(). */
  child: ChildProcess | undefined;
  /** What it printed (pino JSON lines at warn and above), the last 64 KiB. */
  output: string;
}

export interface ReplicaSet {
  /** http://127.0.0.1:port of the balancer. */
  url: string;
  /** host:port of the balancer, as clients want it. */
  host: string;
  replicas: Replica[];
  /** The shared settings every replica runs with (TRELLIS_METADATA, TRELLIS_STORAGE, AWS_*). */
  env: Record<string, string>;
  /** SIGKILL to one replica; resolves once it has exited. */
  kill(index: number): Promise<void>;
  /** Starts a killed (or stopped) replica again on its port and data directory. */
  restart(index: number): Promise<void>;
  /** Runs `trellis <args>` on the shared metadata and storage (with a scratch --data for fsck/gc). */
  trellis(args: string[]): Promise<{ code: number; output: string }>;
  /** The storage every replica shares, opened in this process (for reading index.json). */
  storage(): StorageDriver;
  /** Tag → digest as the repository's index.json in the bucket says. */
  layoutTags(repository: string): Promise<Map<string, string>>;
  /** The balancer's error log and each replica's output, for failure messages. */
  diagnostics(): Promise<string>;
  /** The requests nginx passed on (method, path, status, replica) whose line contains `text`. */
  requestsMentioning(text: string): Promise<string[]>;
  /** Stops everything started here (replicas, nginx, versitygw) and drops the database. */
  stop(): Promise<void>;
}

export interface ReplicaOptions {
  /** Replicas to start (default 3). */
  count?: number;
  /** TRELLIS_* settings for every replica. */
  env?: Record<string, string>;
  /** TRELLIS_* settings for one replica, on top of `env`. */
  replicaEnv?: (index: number) => Record<string, string>;
  /** The balancer's port on 127.0.0.1 (default: a free one); the caller checks it is free. */
  balancerPort?: number;
}

/** nginx's binary, or undefined: Debian puts it in /usr/sbin, which a non-root PATH may lack. */
export function findNginx(): string | undefined {
  return existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : findPeer('nginx');
}

/** What is missing to run replicas here, or undefined when nothing is. */
export function replicasMissing(): string | undefined {
  if (!findNginx()) return 'nginx is not installed (apt-get install nginx-light)';
  if (!findS3Server()) return 'versitygw is not installed (run .ci/install-peers.sh)';
  return postgresMissing();
}

/**
 * Starts the set and stops it when the test ends; undefined (the test is skipped) when a
 * component is missing, except under CI=true, where that throws.
 */
export async function startReplicas(t: TestContext, options: ReplicaOptions = {}): Promise<ReplicaSet | undefined> {
  const missing = replicasMissing();
  if (missing) {
    if (process.env.CI === 'true') throw new Error(`${missing}; CI must run the replica tests`);
    t.skip(missing);
    return undefined;
  }
  const set = await launchReplicas(options);
  t.after(() => set.stop());
  return set;
}

export async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((done) => probe.listen(0, '127.0.0.1', done));
  const { port } = probe.address() as { port: number };
  await new Promise<void>((done) => probe.close(() => done()));
  return port;
}

/** Resolves once GET /v2/ at `base` answers 200; rejects when `alive()` turns false or after 60 s. */
async function waitReady(base: string, alive: () => boolean, what: () => string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (!alive()) throw new Error(`${base} exited before answering:\n${what()}`);
    try {
      const res = await fetch(`${base}/v2/`, { signal: AbortSignal.timeout(5000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${base} did not answer GET /v2/ within 60 s:\n${what()}`);
    await sleep(50);
  }
}

/**
 * The proxy settings of the balancer, here and in docs/examples/nginx.conf (a test checks that the
 * example carries every one): bodies of any size streamed both ways without buffering to disk,
 * HTTP/1.1 to the replicas (chunked request bodies need it), Host passed with its port, and a
 * request tried on the next replica only when the connection failed (nginx never passes a POST or
 * PATCH on once it was sent).
 */
export const NGINX_PROXY_SETTINGS = [
  'client_max_body_size 0;',
  'proxy_request_buffering off;',
  'proxy_buffering off;',
  'proxy_http_version 1.1;',
  'proxy_set_header Host $http_host;',
  'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
  'proxy_next_upstream error;',
  'proxy_connect_timeout 2s;',
  'proxy_read_timeout 300s;',
  'proxy_send_timeout 300s;',
];

/** How nginx treats a replica that refused a connection: skipped for a second, then tried again. */
export const NGINX_SERVER_OPTIONS = 'max_fails=1 fail_timeout=1s';

/** nginx in the foreground, round-robin over `upstreams`, every file it writes inside `dir`. */
export function nginxConfig(dir: string, port: number, upstreams: string[]): string {
  return `# Generated by test/helpers/replicas.ts; the proxy settings of docs/examples/nginx.conf.
daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  log_format upstreams '$request $status upstream=$upstream_addr $upstream_status $request_time';
  access_log ${dir}/access.log upstreams;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream trellis {
${upstreams.map((u) => `    server ${u} ${NGINX_SERVER_OPTIONS};`).join('\n')}
  }
  server {
    listen 127.0.0.1:${port};
${NGINX_PROXY_SETTINGS.map((line) => `    ${line}`).join('\n')}
    location / {
      proxy_pass http://trellis;
    }
  }
}
`;
}

function remember(sink: { output: string }, child: ChildProcess): void {
  const add = (chunk: string) => {
    sink.output = (sink.output + chunk).slice(-OUTPUT_LIMIT);
  };
  child.stdout?.setEncoding('utf8').on('data', add);
  child.stderr?.setEncoding('utf8').on('data', add);
}

async function exited(child: ChildProcess | undefined, limitMs: number): Promise<boolean> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return true;
  const timeout = sleep(limitMs, false, { ref: false });
  return Promise.race([once(child, 'exit').then(() => true), timeout]);
}

/** Starts the set (the benchmark's replica targets call this directly); stop() ends it. */
export async function launchReplicas(options: ReplicaOptions): Promise<ReplicaSet> {
  const count = options.count ?? 3;
  const work = await mkdtemp(join(tmpdir(), 'trellis-replicas-'));
  const started: ChildProcess[] = [];
  const balancers = new Set<ChildProcess>();
  /**
   * Stops whatever still runs if this process ends without stop(): replicas by SIGKILL, nginx by
   * SIGTERM (its master then stops its workers; a SIGKILL would leave them listening).
   */
  const killAll = () => {
    for (const child of started) if (child.exitCode === null && child.signalCode === null) child.kill(balancers.has(child) ? 'SIGTERM' : 'SIGKILL');
  };
  process.once('exit', killAll);
  let s3: S3Server | undefined;
  let database: Awaited<ReturnType<typeof createTestDatabase>> | undefined;
  let stopped = false;
  const replicas: Replica[] = [];
  let nginx: { child: ChildProcess; output: string } | undefined;
  let driver: StorageDriver | undefined;

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await Promise.all(replicas.map(async (replica) => {
      replica.child?.kill('SIGTERM');
      if (!(await exited(replica.child, 15_000))) replica.child?.kill('SIGKILL');
    }));
    nginx?.child.kill('SIGTERM');
    if (!(await exited(nginx?.child, 5000))) nginx?.child.kill('SIGKILL');
    killAll();
    process.removeListener('exit', killAll);
    await driver?.close();
    await s3?.stop();
    await database?.drop().catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  };

  try {
    [s3, database] = await Promise.all([startS3Server(), createTestDatabase()]);
    useCredentials(s3); // this process reads the bucket too (index.json, fsck through the CLI)
    const storageUrl = s3.storageUrl(`replicas-${process.pid}-${Date.now().toString(36)}`);
    const env: Record<string, string> = {
      ...s3.env, TRELLIS_METADATA: database.url, TRELLIS_STORAGE: storageUrl, TRELLIS_LOG_LEVEL: 'warn', TRELLIS_INDEX_FLUSH_MIN_MS: '5', TRELLIS_TRUSTED_PROXIES: '127.0.0.1', ...options.env,
    };

    const spawnReplica = async (replica: Replica) => {
      const child = spawn(process.execPath, [TRELLIS, 'serve', '--listen', replica.host, '--data', replica.dataDir], {
        cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env, ...options.replicaEnv?.(replica.index) },
      });
      started.push(child);
      replica.child = child;
      remember(replica, child);
      await waitReady(replica.url, () => child.exitCode === null && child.signalCode === null, () => replica.output);
    };

    for (let index = 0; index < count; index++) {
      const port = await freePort();
      const dataDir = join(work, `replica-${index}`);
      await mkdir(dataDir);
      replicas.push({ index, port, host: `127.0.0.1:${port}`, url: `http://127.0.0.1:${port}`, dataDir, child: undefined, output: '' });
    }
    // A port picked free may be taken by another test before the replica listens (the others wait
    // while the first migrates): at the first start only (nginx is not configured yet), such a
    // replica moves to another free port.
    const firstStart = async (replica: Replica) => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await spawnReplica(replica);
        } catch (err) {
          if (attempt >= 5 || !/already in use/.test(replica.output)) throw err;
          replica.output = '';
          replica.port = await freePort();
          replica.host = `127.0.0.1:${replica.port}`;
          replica.url = `http://${replica.host}`;
        }
      }
    };
    // The first applies the schema migrations; the others then start side by side.
    await firstStart(replicas[0]!);
    await Promise.all(replicas.slice(1).map(firstStart));

    const nginxDir = join(work, 'nginx');
    await mkdir(nginxDir);
    let balancer = '';
    for (let attempt = 1; !balancer; attempt++) {
      const port = options.balancerPort ?? await freePort();
      const config = join(nginxDir, 'nginx.conf');
      await writeFile(config, nginxConfig(nginxDir, port, replicas.map((r) => r.host)));
      const child = spawn(findNginx()!, ['-c', config, '-p', nginxDir, '-e', join(nginxDir, 'error.log')], { stdio: ['ignore', 'pipe', 'pipe'] });
      started.push(child);
      balancers.add(child);
      nginx = { child, output: '' };
      remember(nginx, child);
      try {
        await waitReady(`http://127.0.0.1:${port}`, () => child.exitCode === null, () => nginx!.output);
        balancer = `127.0.0.1:${port}`;
      } catch (err) {
        child.kill('SIGTERM');
        // The probed port may have been taken meanwhile: try another, unless the caller chose it.
        if (attempt >= 3 || options.balancerPort !== undefined) throw err;
      }
    }

    const set: ReplicaSet = {
      url: `http://${balancer}`,
      host: balancer,
      replicas,
      env,
      async kill(index) {
        const replica = replicas[index]!;
        replica.child?.kill('SIGKILL');
        if (!(await exited(replica.child, 10_000))) throw new Error(`replica ${index} did not die on SIGKILL`);
        replica.child = undefined;
      },
      async restart(index) {
        const replica = replicas[index]!;
        if (replica.child) throw new Error(`replica ${index} is still running`);
        await spawnReplica(replica);
      },
      async trellis(args) {
        const scratch = await mkdtemp(join(work, 'cli-'));
        const withData = ['fsck', 'gc', 'reindex'].includes(args[0]!) && !args.includes('--data') ? [...args, '--data', scratch] : args;
        return new Promise((done) => {
          execFile(process.execPath, [TRELLIS, ...withData], { cwd: ROOT, maxBuffer: 64 << 20, timeout: 120_000, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
            const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
            void rm(scratch, { recursive: true, force: true });
            done({ code, output: `${stdout}${stderr}` });
          });
        });
      },
      storage() {
        driver ??= new S3Driver(parseS3Url(storageUrl));
        return driver;
      },
      async layoutTags(repository) {
        const { index } = await readIndexJson(set.storage(), repository);
        const tags = new Map<string, string>();
        for (const entry of (index.manifests ?? []) as { digest: string; annotations?: Record<string, string> }[]) {
          const tag = entry.annotations?.[REF_NAME];
          if (tag !== undefined) tags.set(tag, entry.digest);
        }
        return tags;
      },
      async diagnostics() {
        const errors = await readFile(join(nginxDir, 'error.log'), 'utf8').catch(() => '');
        const access = await readFile(join(nginxDir, 'access.log'), 'utf8').catch(() => '');
        const failed = access.split('\n').filter((line) => / 5\d\d upstream=/.test(line));
        const state = (r: Replica) => (!r.child ? 'killed' : r.child.exitCode === null && r.child.signalCode === null ? 'running' : `exited (${r.child.exitCode ?? r.child.signalCode})`);
        return [`nginx error.log (last 40 lines):\n${errors.split('\n').slice(-40).join('\n')}`,
          `requests answered 5xx through nginx (last 20 of ${failed.length}):\n${failed.slice(-20).join('\n')}`,
          ...replicas.map((r) => `replica ${r.index} (${r.host}, ${state(r)}) output:\n${r.output.split('\n').slice(-30).join('\n')}`)].join('\n');
      },
      async requestsMentioning(text) {
        const access = await readFile(join(nginxDir, 'access.log'), 'utf8').catch(() => '');
        return access.split('\n').filter((line) => line.includes(text));
      },
      stop,
    };
    return set;
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * `trellis fsck` on the replicas' store once it has settled. index.json follows the metadata
 * within the flush delay (which grows with a rewrite's cost on a loaded machine), and a rewrite and
 * the removals after it can land while fsck reads: fsck is asked again every 2 s while it finds
 * problems, for up to 30 s. What is still wrong then is a real inconsistency.
 */
export async function fsckWhenSettled(set: ReplicaSet): Promise<{ code: number; output: string }> {
  let fsck = { code: -1, output: '' };
  for (const deadline = Date.now() + 30_000; ;) {
    await sleep(2000);
    fsck = await set.trellis(['fsck']);
    if (fsck.code === 0 || Date.now() > deadline) return fsck;
  }
}

/** What is wrong with `ref` on each replica (asked directly, not through the balancer): it must be `digest`, with every blob it names. */
export async function problemsOnEveryReplica(set: ReplicaSet, repository: string, ref: string, digest: string): Promise<string[]> {
  const accept = ['application/vnd.oci.image.manifest.v1+json', 'application/vnd.oci.image.index.v1+json',
    'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.docker.distribution.manifest.list.v2+json'].join(', ');
  const problems: string[] = [];
  for (const replica of set.replicas) {
    const where = `replica ${replica.index}: ${repository}:${ref}`;
    const res = await fetch(`${replica.url}/v2/${repository}/manifests/${ref}`, { headers: { Accept: accept } });
    const bytes = Buffer.from(await res.arrayBuffer());
    if (res.status !== 200) {
      problems.push(`${where} answered ${res.status} ${bytes.toString().slice(0, 200)}`);
      continue;
    }
    if (res.headers.get('docker-content-digest') !== digest) problems.push(`${where} is ${res.headers.get('docker-content-digest')}, not ${digest}`);
    const manifest = JSON.parse(bytes.toString()) as { config?: { digest: string }; layers?: { digest: string }[] | null };
    for (const blob of [manifest.config, ...(manifest.layers ?? [])]) {
      if (!blob) continue;
      const head = await fetch(`${replica.url}/v2/${repository}/blobs/${blob.digest}`, { method: 'HEAD' });
      if (head.status !== 200) problems.push(`${where}: its blob ${blob.digest} answered ${head.status}`);
    }
  }
  return problems;
}

export async function assertOnEveryReplica(set: ReplicaSet, repository: string, ref: string, digest: string): Promise<void> {
  assert.deepEqual(await problemsOnEveryReplica(set, repository, ref, digest), []);
}

/** Asserts that every acknowledged tag is whole on every replica; the message counts what is not. */
export async function assertAllOnEveryReplica(set: ReplicaSet, items: { repository: string; tag: string; digest: string }[]): Promise<void> {
  const problems: string[] = [];
  const broken = new Set<string>();
  const queue = [...items];
  // A few at a time: hundreds of tags, each asked of every replica, would otherwise take long.
  await Promise.all(Array.from({ length: 8 }, async () => {
    for (let item = queue.shift(); item; item = queue.shift()) {
      const found = await problemsOnEveryReplica(set, item.repository, item.tag, item.digest);
      if (found.length) broken.add(`${item.repository}:${item.tag}`);
      problems.push(...found);
    }
  }));
  if (problems.length) {
    assert.fail(`${broken.size} of ${items.length} acknowledged tags are missing or incomplete somewhere (${problems.length} problems; the first 15):\n${problems.slice(0, 15).join('\n')}`);
  }
}

export interface PushOutcome {
  /** Whether the manifest PUT was acknowledged (201). */
  acked: boolean;
  attempts: number;
  /** Why earlier attempts failed (connection errors, 5xx from the balancer, refusals). */
  failures: string[];
}

/**
 * Pushes an image's blobs then its manifest to `base`, starting over on any failure (a connection
 * cut by a kill, a 502 from the balancer, a refusal) up to `attempts` times, as a client would.
 * `pauseBeforeManifestMs` holds the first attempt's manifest back (a window in which its blobs are
 * unreferenced); a retry sends the manifest right after the blobs, as a client that was refused
 * does. (Pausing every attempt let a collector with no grace period, running back to back, win
 * ten times in a row.)
 */
export async function pushRetrying(base: string, repository: string, ref: string, image: { blobs: Buffer[]; bytes: Buffer; mediaType: string },
  options: { attempts?: number; pauseBeforeManifestMs?: number } = {}): Promise<PushOutcome> {
  const attempts = options.attempts ?? 10;
  const failures: string[] = [];
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      let failed = '';
      for (const blob of image.blobs) {
        const pushed = await pushBlob(base, repository, blob);
        if (pushed.status !== 201) {
          failed = `blob ${pushed.digest}: ${pushed.status} ${pushed.body.toString().slice(0, 200)}`;
          break;
        }
      }
      if (!failed) {
        if (options.pauseBeforeManifestMs && attempt === 1) await sleep(options.pauseBeforeManifestMs);
        const put = await pushManifest(base, repository, ref, image.bytes, image.mediaType);
        if (put.status === 201) return { acked: true, attempts: attempt, failures };
        failed = `manifest: ${put.status} ${put.body.toString().slice(0, 200)}`;
      }
      failures.push(failed);
    } catch (err) {
      failures.push(`${(err as Error).message}${(err as Error).cause ? `: ${((err as Error).cause as Error).message}` : ''}`);
    }
    await sleep(100 * attempt);
  }
  return { acked: false, attempts, failures };
}

/** Runs `body`; a failure is thrown again with the balancer's error log and every replica's output added. */
export async function withDiagnostics<T>(set: ReplicaSet, body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    const error = new Error(`${(err as Error).message}\n${await set.diagnostics()}`, { cause: err });
    error.stack = `${error.message}\n${(err as Error).stack?.split('\n').filter((line) => line.trimStart().startsWith('at ')).join('\n') ?? ''}`;
    throw error;
  }
}
