// What request metrics and the per-request log line cost: manifest HEAD and GET throughput of a
// Trellis checkout without them (BENCH_BEFORE_ROOT, e.g. an export of the commit before) against
// this one with metrics only (requestLogLevel silent) and with the default request log line.
//
//   git archive <commit> | tar -x -C /tmp/before && ln -s $PWD/node_modules /tmp/before/
//   BENCH_BEFORE_ROOT=/tmp/before node bench/observe.ts
//
// Every configuration runs at once, each a `trellis serve` process on a fresh data directory; the
// client (this process) loads them in turn, BENCH_SLICE_MS (250) at a time for BENCH_SECONDS (20)
// each, with BENCH_CONCURRENCY (16) keep-alive connections alternating HEAD and GET by tag. Slicing
// makes every configuration see the same machine, which matters on a shared one. Reported: requests
// per second, and the server's CPU time per request (user + system, from /proc), which depends
// less on what else the machine runs.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const ROOT = resolve(import.meta.dirname, '..');
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 16);
const BEFORE_ROOT = process.env.BENCH_BEFORE_ROOT;

interface Configuration {
  name: string;
  root: string;
  env: Record<string, string>;
}

const configurations: Configuration[] = [
  ...(BEFORE_ROOT ? [{ name: 'before (no metrics, no request line)', root: resolve(BEFORE_ROOT), env: {} }] : []),
  { name: 'metrics, requestLogLevel silent', root: ROOT, env: { TRELLIS_REQUEST_LOG_LEVEL: 'silent' } },
  { name: 'metrics + request line (default, info)', root: ROOT, env: {} },
];

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((done) => probe.listen(0, '127.0.0.1', done));
  const { port } = probe.address() as { port: number };
  await new Promise<void>((done) => probe.close(() => done()));
  return port;
}

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function pushImage(base: string): Promise<void> {
  const config = Buffer.from('{}');
  const layer = randomBytes(1024);
  for (const blob of [config, layer]) {
    const res = await fetch(`${base}/v2/bench/app/blobs/uploads/?digest=${sha256(blob)}`, { method: 'POST', body: blob, headers: { 'Content-Type': 'application/octet-stream' } });
    if (res.status !== 201) throw new Error(`blob push: ${res.status}`);
  }
  const manifest = JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(layer), size: layer.length }],
  });
  const res = await fetch(`${base}/v2/bench/app/manifests/v1`, { method: 'PUT', body: manifest, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } });
  if (res.status !== 201) throw new Error(`manifest push: ${res.status}`);
}

/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}


interface Running {
  configuration: Configuration;
  port: number;
  pid: number;
  stop(): Promise<void>;
}

async function startServer(configuration: Configuration): Promise<Running> {
  const data = await mkdtemp(join(tmpdir(), 'trellis-bench-observe-'));
  const port = await freePort();
  const child = spawn(process.execPath, [join(configuration.root, 'src/main.ts'), 'serve', '--listen', `127.0.0.1:${port}`, '--data', data], {
    cwd: configuration.root, stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...configuration.env },
  });
  const stop = async () => {
    child.kill('SIGTERM');
    await new Promise((done) => child.once('exit', done));
    await rm(data, { recursive: true, force: true });
  };
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; !(await fetch(`${base}/v2/`).then((r) => r.ok, () => false)); i++) {
    if (i > 1200) {
      await stop();
      throw new Error(`${configuration.name}: server did not start`);
    }
    await sleep(50);
  }
  await pushImage(base);
  return { configuration, port, pid: child.pid!, stop };
}

/** Runs CONCURRENCY request loops against one server for `ms`; returns the requests completed. */
async function slice(port: number, agent: Agent, ms: number): Promise<number> {
  let done = 0;
  const until = performance.now() + ms;
  const one = (method: string) => new Promise<void>((resolveOne, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/v2/bench/app/manifests/v1', method, agent, headers: { Accept: 'application/vnd.oci.image.manifest.v1+json' } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolveOne() : reject(new Error(`status ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end();
  });
  await Promise.all(Array.from({ length: CONCURRENCY }, async (_, i) => {
    for (let n = i; performance.now() < until; n++) {
      await one(n % 2 ? 'GET' : 'HEAD');
      done++;
    }
  }));
  return done;
}

const SLICE_MS = Number(process.env.BENCH_SLICE_MS ?? 250);
const servers: Running[] = [];
try {
  for (const configuration of configurations) servers.push(await startServer(configuration));
  const agents = servers.map(() => new Agent({ keepAlive: true, maxSockets: CONCURRENCY }));
  for (const [i, server] of servers.entries()) await slice(server.port, agents[i]!, 2000); // warm-up: JIT, caches
  const totals = servers.map(() => ({ requests: 0, ms: 0, cpu: 0 }));
  const slices = Math.ceil((SECONDS * 1000) / SLICE_MS);
  for (let n = 0; n < slices; n++) {
    for (const [i, server] of servers.entries()) {
      const cpu = cpuSeconds(server.pid);
      const started = performance.now();
      totals[i]!.requests += await slice(server.port, agents[i]!, SLICE_MS);
      totals[i]!.ms += performance.now() - started;
      totals[i]!.cpu += cpuSeconds(server.pid) - cpu;
    }
  }
  for (const agent of agents) agent.destroy();
  const percent = (value: number, base: number | undefined) => base === undefined ? '' : `${value >= base ? '+' : ''}${(((value - base) / base) * 100).toFixed(1)} %`;
  const rows = totals.map((t) => ({ rate: t.requests / (t.ms / 1000), cpu: (t.cpu / t.requests) * 1e6 }));
  const base = BEFORE_ROOT ? rows[0] : undefined;
  console.log(`| configuration | req/s | vs before | server CPU µs/request | vs before |`);
  console.log('| --- | --- | --- | --- | --- |');
  rows.forEach((row, i) => console.log(`| ${configurations[i]!.name} | ${Math.round(row.rate)} | ${percent(row.rate, base?.rate)} | ${row.cpu.toFixed(1)} | ${percent(row.cpu, base?.cpu)} |`));
  console.log(`\n(${SECONDS} s per configuration in ${slices} slices of ${SLICE_MS} ms, ${CONCURRENCY} connections; load average at the end: ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')})`);
} finally {
  for (const server of servers) await server.stop();
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

// ---- the same costs in isolation ---------------------------------------------------------------
// Per request, what the observer adds (request id, metrics, the log line) and what timing four
// metadata calls adds (a manifest GET makes about that many), each as ns per request, interleaved
// with the bare operation so both see the same machine.
import { EventEmitter } from 'node:events';
import { pino } from 'pino';
import { Metrics } from '../src/observe/metrics.ts';
import { timeMethods } from '../src/observe/instrument.ts';
import { RequestObserver } from '../src/registry/request-log.ts';
import { openSqliteMetadata } from '../src/metadata/sqlite.ts';
import type { MetadataStore } from '../src/metadata/store.ts';
import type { ApiContext } from '../src/registry/context.ts';

function fakeContext(): ApiContext {
  const res = Object.assign(new EventEmitter(), { setHeader() {}, headersSent: true, statusCode: 200, writableFinished: true });
  const req = { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' }, socket: { bytesRead: 0, bytesWritten: 0 }, method: 'GET' };
  return { req, res, url: new URL('http://x/v2/bench/app/manifests/v1'), head: false, client: '127.0.0.1' } as unknown as ApiContext;
}

function nsPer(iterations: number, work: () => void): number {
  const started = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) work();
  return Number(process.hrtime.bigint() - started) / iterations;
}

const ITERATIONS = 100_000;
const devNull = pino.destination({ dest: '/dev/null', sync: true });
const observers = {
  'metrics, no log line': new RequestObserver({ log: pino({ level: 'info' }, devNull), level: 'silent', metrics: new Metrics() }),
  'metrics + log line': new RequestObserver({ log: pino({ level: 'info' }, devNull), level: 'info', metrics: new Metrics() }),
};
const micro: Record<string, number[]> = { bare: [], ...Object.fromEntries(Object.keys(observers).map((k) => [k, []])) };
for (let round = 0; round < 5; round++) {
  micro.bare!.push(nsPer(ITERATIONS, () => { const ctx = fakeContext(); ctx.res.emit('close'); }));
  for (const [name, observer] of Object.entries(observers)) {
    micro[name]!.push(nsPer(ITERATIONS, () => { const ctx = fakeContext(); observer.begin(ctx); ctx.res.emit('close'); }));
  }
}
const bare = median(micro.bare!);
console.log('\n| per request, in isolation | ns added (median of 5) |\n| --- | --- |');
for (const name of Object.keys(observers)) console.log(`| request observer: ${name} | ${Math.round(median(micro[name]!) - bare)} |`);

const dbDir = await mkdtemp(join(tmpdir(), 'trellis-bench-observe-db-'));
const store = openSqliteMetadata(join(dbDir, 'metadata.sqlite'));
const repo = await store.ensureRepository('bench/app');
const timed = timeMethods(store, (operation) => new Metrics().metadataTimer(operation));
// The SQLite store's calls run to completion before they return (the promises are already settled).
const lookups = (s: MetadataStore) => () => {
  void s.repository('bench/app');
  void s.resolveTag(repo.id, 'v1');
  void s.manifest(repo.id, 'sha256:0000000000000000000000000000000000000000000000000000000000000000');
  void s.awaitsUnlink(repo.id, 'sha256:0000000000000000000000000000000000000000000000000000000000000000');
};
const direct: number[] = [];
const viaProxy: number[] = [];
for (let round = 0; round < 5; round++) {
  direct.push(nsPer(ITERATIONS / 4, lookups(store)));
  viaProxy.push(nsPer(ITERATIONS / 4, lookups(timed)));
}
console.log(`| four metadata calls, timed (${Math.round(median(direct))} ns bare) | ${Math.round(median(viaProxy) - median(direct))} |`);
await store.close();
await rm(dbDir, { recursive: true, force: true });
