// Crash safety: the real server is killed with SIGKILL in the middle of concurrent pushes, again
// and again on the same data directory. Whatever the registry acknowledged (a 201 or 202 that
// reached the client) must survive: manifests by digest with identical bytes, tags at their last
// acknowledged digest, tag deletes, referrers and blobs. Every layout must be valid right after
// the kill, `trellis fsck` must be clean after each restart and after a graceful stop, and every
// index.json must list the acknowledged tags (checked by reading the files and with oras/regctl).
//
// TRELLIS_CRASH_ROUNDS raises the number of kills (default 5); TRELLIS_CRASH_SEED replays the
// choice of operations and kill delays (timing itself cannot be replayed).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { existsSync, watch } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { cliEnv } from '../helpers/registry.ts';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  EMPTY_BLOB, OCI_MANIFEST, REF_NAME, getBlob, getManifest, listReferrers, listTags, makeImage, makeReferrer, pushBlob, pushBuilt, pushManifest, sha256,
  type Built,
} from '../helpers/oci-client.ts';
import { needsFileStorage, testStorage } from '../helpers/registry.ts';
import { openStorage } from '../../src/storage/index.ts';
import { requirePeer } from '../helpers/peers.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const ROUNDS = Math.max(1, Number(process.env.TRELLIS_CRASH_ROUNDS ?? 5));
const PUSHERS = 6;
const SEED = Number(process.env.TRELLIS_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
const REPOS = ['crash/app', 'a', 'a/b', 'a/b/c', 'x-y.z/deep/er'];
const ARTIFACT_TYPES = ['application/vnd.example.sbom', 'application/vnd.example.signature', 'application/vnd.example.attestation'];
const CONTAINERD_SUBJECT = 'io.containerd.manifest.subject';
/** Marks the referrers index Trellis writes into a layout per subject (under its fallback tag). */
const GENERATED_SUBJECT = 'dev.trellis.referrers.subject';

/**
 * Worker thread that races tag deletes against an index.json rewrite and kills the server at its
 * rename. Per try it gets `{ tags }`, opens one connection per tag and answers 'armed'. When the
 * rewrite's temp file appears (the index is built by then) it sends the DELETEs on those open
 * connections at once; when `<dir>/index.json` is renamed into place it kills the server if at
 * least one DELETE was answered 202 by then. It answers `{ killed, statuses }` once every
 * connection has closed (a status of 0: no answer). Sending from here, on open connections, keeps
 * the delay between the temp file and the deletes far below the rewrite's own time, whatever the
 * test's main thread or the metadata store are doing.
 */
const KILLER = `
const { watch } = require('node:fs');
const { connect } = require('node:net');
const { workerData, parentPort } = require('node:worker_threads');
const { dir, temps, port, pathPrefix, pid } = workerData;
let round;
const settle = () => {
  if (round.open > 0 || round.killed === undefined) return;
  parentPort.postMessage({ killed: round.killed, statuses: round.statuses });
  round = undefined;
};
parentPort.on('message', ({ tags }) => {
  const current = round = { tags, sockets: [], statuses: tags.map(() => 0), acked: 0, open: tags.length, sent: false, killed: undefined };
  let connected = 0;
  tags.forEach((tag, i) => {
    const socket = connect(port, '127.0.0.1');
    let head = '';
    socket.setEncoding('latin1');
    socket.on('connect', () => { if (++connected === tags.length) parentPort.postMessage('armed'); });
    socket.on('data', (chunk) => {
      if (current.statuses[i]) return;
      head += chunk;
      const match = /^HTTP\\/1\\.1 (\\d{3})/.exec(head);
      if (!match) return;
      current.statuses[i] = Number(match[1]);
      if (current.statuses[i] === 202) current.acked++;
    });
    socket.on('error', () => undefined);
    socket.on('close', () => { current.open--; settle(); });
    current.sockets.push(socket);
  });
});
watch(temps, () => {
  if (!round || round.sent) return;
  round.sent = true;
  round.tags.forEach((tag, i) => round.sockets[i].write('DELETE ' + pathPrefix + tag + ' HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n'));
});
watch(dir, (event, file) => {
  if (file !== 'index.json' || !round || !round.sent || round.killed !== undefined) return;
  round.killed = round.acked > 0;
  if (round.killed) process.kill(pid, 'SIGKILL');
  settle();
});
parentPort.postMessage('ready');
`;

// ---- the server as a child process -------------------------------------------------------------

interface Server {
  child: ChildProcess;
  base: string;
  /** Everything it printed (pino JSON lines at warn and above). */
  output: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((done) => probe.listen(0, '127.0.0.1', done));
  const { port } = probe.address() as { port: number };
  await new Promise<void>((done) => probe.close(() => done()));
  return port;
}

/** Starts `trellis serve` on a free port and waits until GET /v2/ answers 200; `env` adds TRELLIS_* settings. */
async function startServer(dataDir: string, env: Record<string, string> = {}): Promise<Server> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await spawnServer(dataDir, await freePort(), env);
    } catch (err) {
      // The free port can be taken between probing it and listening on it: try another.
      if (attempt >= 3 || !/EADDRINUSE/.test((err as Error).message)) throw err;
    }
  }
}

async function spawnServer(dataDir: string, port: number, env: Record<string, string>): Promise<Server> {
  const child = spawn(process.execPath, ['src/main.ts', 'serve', '--listen', `127.0.0.1:${port}`, '--data', dataDir, '--log-level', 'warn'], {
    cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...(await cliEnv(dataDir)), ...env },
  });
  const output: string[] = [];
  child.stdout!.setEncoding('utf8').on('data', (s: string) => output.push(s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => output.push(s));
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  let gone = false;
  void exited.then(() => { gone = true; });
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (gone) throw new Error(`server exited before answering:\n${output.join('')}`);
    try {
      const res = await fetch(`${base}/v2/`);
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`server did not answer GET /v2/ within 60 s:\n${output.join('')}`);
    }
    await sleep(25);
  }
  // The server answers before its catch-up with the layouts (adoption, index.json repairs,
  // interrupted removals) is done; a registry-wide listing waits for it, so after this the server
  // is idle and every layout flushed.
  await (await fetch(`${base}/v2/_catalog?n=1`)).arrayBuffer();
  return { child, base, output, exited };
}

async function waitExit(server: Server, what: string) {
  const timeout = sleep(30_000, undefined, { ref: false }).then(() => { throw new Error(`server did not exit after ${what}`); });
  return Promise.race([server.exited, timeout]);
}

/** Log lines at error level or above (pino level >= 50), and anything that is not pino JSON. */
function serverErrors(server: Server): string[] {
  return server.output.join('').split('\n').filter((line) => {
    if (!line.trim()) return false;
    try {
      return ((JSON.parse(line) as { level?: number }).level ?? 60) >= 50;
    } catch {
      return true;
    }
  });
}

async function trellis(args: string[]): Promise<{ code: number; output: string }> {
  const dataDir = args[args.indexOf('--data') + 1];
  const env = dataDir && args.includes('--data') ? await cliEnv(dataDir) : process.env;
  return new Promise((done) => {
    execFile(process.execPath, ['src/main.ts', ...args], { cwd: ROOT, maxBuffer: 64 << 20, env }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      done({ code, output: `${stdout}${stderr}` });
    });
  });
}

async function fsckClean(dataDir: string, when: string): Promise<string> {
  const { code, output } = await trellis(['fsck', '--data', dataDir]);
  assert.equal(code, 0, `trellis fsck ${when} exited ${code}:\n${output.split('\n').slice(0, 40).join('\n')}`);
  return output.trim().split('\n').at(-1) ?? '';
}

// ---- what the registry acknowledged -----------------------------------------------------------

interface TagState {
  /** Last acknowledged digest, or null when absent (deleted or never pushed). */
  acked: string | null;
  /** Outcome of an operation cut off by the kill: it may or may not have happened. */
  inflight: (string | null)[];
}

interface RepoState {
  name: string;
  /** Acknowledged manifests (or ones seen served after a restart), by digest. */
  manifests: Map<string, Buffer>;
  /** Every manifest ever sent, acknowledged or not. */
  sent: Map<string, Buffer>;
  blobs: Map<string, number>;
  tags: Map<string, TagState>;
  /** subject → referrer digest → artifactType, acknowledged only. */
  referrers: Map<string, Map<string, string>>;
}

class Model {
  readonly repos = new Map<string, RepoState>();
  readonly counts: Record<string, number> = {};

  repo(name: string): RepoState {
    let repo = this.repos.get(name);
    if (!repo) {
      repo = { name, manifests: new Map(), sent: new Map(), blobs: new Map(), tags: new Map(), referrers: new Map() };
      this.repos.set(name, repo);
    }
    return repo;
  }

  count(kind: string): void {
    this.counts[kind] = (this.counts[kind] ?? 0) + 1;
  }

  total(): number {
    return Object.values(this.counts).reduce((a, b) => a + b, 0);
  }
}

function tagState(tags: Map<string, TagState>, tag: string): TagState {
  let state = tags.get(tag);
  if (!state) {
    state = { acked: null, inflight: [] };
    tags.set(tag, state);
  }
  return state;
}

/** Small deterministic PRNG (mulberry32) so a seed replays the same choices. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Unexpected extends Error {}

/**
 * Pushes blobs, sends the manifest and records what was acknowledged. Throws Unexpected on an
 * answer that is not the expected status, and lets network errors (the kill) through.
 */
async function pushRecorded(base: string, model: Model, repo: RepoState, ref: string, item: Built, tag?: string): Promise<boolean> {
  for (const blob of item.blobs) {
    const pushed = await pushBlob(base, repo.name, blob);
    if (pushed.status !== 201) throw new Unexpected(`blob push to ${repo.name} answered ${pushed.status}: ${pushed.body}`);
    repo.blobs.set(pushed.digest, blob.length);
    model.count('blob');
  }
  repo.sent.set(item.digest, item.bytes);
  const state = tag ? tagState(repo.tags, tag) : undefined;
  state?.inflight.push(item.digest);
  const answer = await pushManifest(base, repo.name, ref, item.bytes, item.mediaType);
  if (answer.status !== 201) throw new Unexpected(`manifest push ${repo.name}:${ref} answered ${answer.status}: ${answer.body}`);
  if (answer.headers.get('docker-content-digest') !== item.digest) throw new Unexpected(`manifest push ${repo.name}:${ref} answered digest ${answer.headers.get('docker-content-digest')}, not ${item.digest}`);
  repo.manifests.set(item.digest, item.bytes);
  if (state) {
    state.acked = item.digest;
    state.inflight = [];
  }
  return true;
}

interface Traffic {
  stopped: boolean;
  failures: string[];
  /** Requests the kill cut off (a network error after the stop): proof the kill came mid-traffic. */
  cutOff: number;
}

async function pusher(id: number, round: number, base: string, model: Model, random: () => number, traffic: Traffic): Promise<void> {
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)]!;
  let n = 0;
  while (!traffic.stopped) {
    n++;
    const repo = model.repo(pick(REPOS));
    const ownTags = [...repo.tags.entries()].filter(([tag]) => tag.startsWith(`w${id}-`));
    const roll = random();
    const what = roll < 0.3 ? 'tag' : roll < 0.4 ? 'untagged' : roll < 0.65 ? 'referrer' : roll < 0.78 ? 'blob' : roll < 0.87 ? 'delete' : roll < 0.95 ? 'redo' : 'fresh';
    try {
      if (what === 'tag') {
        // A re-tag of one of this pusher's tags, or a new tag: each tag has exactly one writer.
        const present = ownTags.filter(([, s]) => s.acked);
        const tag = present.length && random() < 0.5 ? pick(present)[0] : `w${id}-${round}-${n}`;
        const image = makeImage({ layer: randomBytes(16 + Math.floor(random() * 4000)), annotations: { pusher: String(id), tag } });
        await pushRecorded(base, model, repo, tag, image, tag);
        model.count(present.some(([t]) => t === tag) ? 'retag' : 'tag');
      } else if (what === 'untagged') {
        const image = makeImage({ layer: randomBytes(16 + Math.floor(random() * 2000)) });
        await pushRecorded(base, model, repo, image.digest, image);
        model.count('untagged');
      } else if (what === 'referrer') {
        const subjects = [...repo.manifests.entries()];
        if (!subjects.length) continue;
        const [subjectDigest, subjectBytes] = pick(subjects);
        const artifactType = pick(ARTIFACT_TYPES);
        const referrer = makeReferrer({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: subjectDigest, size: subjectBytes.length }, {
          artifactType, annotations: { pusher: String(id), round: String(round), n: String(n) },
          ...(random() < 0.5 ? { payload: randomBytes(32) } : {}),
        });
        await pushRecorded(base, model, repo, referrer.digest, referrer);
        let listed = repo.referrers.get(subjectDigest);
        if (!listed) repo.referrers.set(subjectDigest, (listed = new Map()));
        listed.set(referrer.digest, artifactType);
        model.count('referrer');
      } else if (what === 'blob') {
        const bytes = randomBytes(1 + Math.floor(random() * 8000));
        const pushed = await pushBlob(base, repo.name, bytes);
        if (pushed.status !== 201) throw new Unexpected(`blob push to ${repo.name} answered ${pushed.status}: ${pushed.body}`);
        repo.blobs.set(pushed.digest, bytes.length);
        model.count('blob');
      } else if (what === 'delete') {
        const present = ownTags.filter(([, s]) => s.acked);
        if (!present.length) continue;
        const [tag, state] = pick(present);
        state.inflight.push(null);
        const res = await fetch(`${base}/v2/${repo.name}/manifests/${tag}`, { method: 'DELETE' });
        const body = await res.text();
        if (res.status !== 202) throw new Unexpected(`DELETE ${repo.name}:${tag} answered ${res.status}: ${body}`);
        state.acked = null;
        state.inflight = [];
        model.count('delete');
      } else if (what === 'redo') {
        // Delete one of this pusher's manifests by digest, then push the same bytes under a new
        // tag at once: the removal the delete journaled must not take the re-pushed file.
        const present = ownTags.filter(([, s]) => s.acked);
        if (!present.length) continue;
        const [, state] = pick(present);
        const digest = state.acked!;
        const bytes = repo.sent.get(digest)!;
        // From here until the re-push is acknowledged, the manifest may or may not be there.
        repo.manifests.delete(digest);
        state.inflight.push(null);
        const res = await fetch(`${base}/v2/${repo.name}/manifests/${digest}`, { method: 'DELETE' });
        const body = await res.text();
        if (res.status !== 202) throw new Unexpected(`DELETE ${repo.name}@${digest} answered ${res.status}: ${body}`);
        state.acked = null;
        state.inflight = [];
        const again: Built = { bytes, digest, mediaType: OCI_MANIFEST, descriptor: { mediaType: OCI_MANIFEST, digest, size: bytes.length }, blobs: [] };
        const newTag = `w${id}-${round}-${n}-redo`;
        await pushRecorded(base, model, repo, newTag, again, newTag);
        model.count('redo');
      } else {
        // A brand-new repository, created mid-traffic.
        const fresh = model.repo(`fresh/r${round}-w${id}-${n}`);
        const tag = `w${id}-${round}-${n}`;
        await pushRecorded(base, model, fresh, tag, makeImage({ layer: randomBytes(100) }), tag);
        model.count('fresh-repo');
      }
    } catch (err) {
      if (err instanceof Unexpected) {
        traffic.failures.push(`pusher ${id} (${what}): ${err.message}`);
        return;
      }
      // A network error: expected once the server is killed, a failure before that.
      if (!traffic.stopped) traffic.failures.push(`pusher ${id} (${what}): ${(err as Error).message} ${String((err as Error).cause ?? '')} before the kill`);
      else traffic.cutOff++;
      return;
    }
  }
}

// ---- checks --------------------------------------------------------------------------------------

async function eachLimit<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await work(items[next++]!);
  }));
}

/** Folders holding an `oci-layout` file, relative to the data root (as `trellis` finds them). */
async function layoutsOnDisk(dataDir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (rel: string) => {
    for (const entry of await readdir(join(dataDir, rel), { withFileTypes: true })) {
      if (!entry.isDirectory() || entry.name.startsWith('_') || entry.name === 'blobs') continue;
      const name = rel ? `${rel}/${entry.name}` : entry.name;
      if (existsSync(join(dataDir, name, 'oci-layout'))) found.push(name);
      await walk(name);
    }
  };
  await walk('');
  return found.sort();
}

interface IndexEntry { mediaType: string; digest: string; size: number; annotations?: Record<string, string> }

/** Every layout is a valid OCI layout: header, parseable index.json, every entry's blob present. */
async function checkLayoutsValid(dataDir: string, when: string): Promise<string[]> {
  const problems: string[] = [];
  for (const name of await layoutsOnDisk(dataDir)) {
    try {
      const header = JSON.parse(await readFile(join(dataDir, name, 'oci-layout'), 'utf8')) as { imageLayoutVersion?: unknown };
      if (typeof header.imageLayoutVersion !== 'string') problems.push(`${name}: oci-layout has no imageLayoutVersion`);
    } catch (err) {
      problems.push(`${name}: oci-layout unreadable: ${(err as Error).message}`);
    }
    let index: { manifests?: IndexEntry[] };
    try {
      index = JSON.parse(await readFile(join(dataDir, name, 'index.json'), 'utf8')) as { manifests?: IndexEntry[] };
    } catch (err) {
      problems.push(`${name}: index.json unreadable: ${(err as Error).message}`);
      continue;
    }
    if (!Array.isArray(index.manifests)) {
      problems.push(`${name}: index.json has no manifests list`);
      continue;
    }
    for (const entry of index.manifests) {
      const path = join(dataDir, name, 'blobs', ...entry.digest.split(':'));
      if (!existsSync(path)) problems.push(`${name}: index.json lists ${entry.digest}, whose blob is missing`);
    }
  }
  return problems.map((p) => `${when}: ${p}`);
}

/** Checks every acknowledged write through the API; settles tags an interrupted operation left open. */
async function verifyAcknowledged(base: string, model: Model, when: string): Promise<string[]> {
  const problems: string[] = [];
  const fail = (text: string): void => {
    problems.push(`${when}: ${text}`);
  };
  const checks: (() => Promise<void>)[] = [];
  for (const repo of model.repos.values()) {
    for (const [digest, bytes] of repo.manifests) {
      checks.push(async () => {
        const got = await getManifest(base, repo.name, digest);
        if (got.status !== 200) return fail(`${repo.name}@${digest}: acknowledged manifest answers ${got.status}`);
        if (!got.bytes.equals(bytes)) fail(`${repo.name}@${digest}: served bytes differ from the pushed ones`);
      });
    }
    for (const [digest, size] of repo.blobs) {
      checks.push(async () => {
        const got = await getBlob(base, repo.name, digest);
        if (got.status !== 200) return fail(`${repo.name} blob ${digest}: acknowledged blob answers ${got.status}`);
        if (got.bytes.length !== size || sha256(got.bytes) !== digest) fail(`${repo.name} blob ${digest}: served content does not match its digest`);
      });
    }
    for (const [tag, state] of repo.tags) {
      checks.push(async () => {
        const got = await getManifest(base, repo.name, tag);
        const observed = got.status === 200 ? got.digest : got.status === 404 ? null : `status ${got.status}`;
        const allowed = [state.acked, ...state.inflight];
        if (!allowed.includes(observed)) {
          return fail(`${repo.name}:${tag} is ${observed ?? 'absent'}; last acknowledged: ${state.acked ?? 'absent (deleted or never pushed)'}` +
            (state.inflight.length ? `, interrupted: ${state.inflight.map((d) => d ?? 'delete').join(', ')}` : ''));
        }
        // Whatever the restarted server serves is durable from now on.
        state.acked = observed;
        state.inflight = [];
        if (observed) repo.manifests.set(observed, repo.sent.get(observed)!);
      });
    }
    for (const [subject, expected] of repo.referrers) {
      checks.push(async () => {
        const got = await listReferrers(base, repo.name, subject);
        if (got.status !== 200) return fail(`${repo.name} referrers of ${subject} answer ${got.status}`);
        const listed = new Map(got.manifests.map((d) => [d.digest, d]));
        for (const [digest, artifactType] of expected) {
          const d = listed.get(digest);
          if (!d) fail(`${repo.name}: acknowledged referrer ${digest} of ${subject} is not listed`);
          else if (d.artifactType !== artifactType) fail(`${repo.name}: referrer ${digest} is listed with artifactType ${d.artifactType}, not ${artifactType}`);
        }
        for (const digest of listed.keys()) if (!repo.sent.has(digest)) fail(`${repo.name}: referrers of ${subject} list ${digest}, which nobody pushed`);
      });
    }
  }
  await eachLimit(checks, 16, (check) => check());
  // The tag list must be exactly the tags that are present (each tag has one writer: this test).
  for (const repo of model.repos.values()) {
    const expected = [...repo.tags].filter(([, s]) => s.acked).map(([t]) => t).sort();
    const got = await listTags(base, repo.name);
    if (got.status === 404 && expected.length === 0) continue;
    if (got.status !== 200) fail(`${repo.name}: tags/list answers ${got.status}`);
    else assert.deepEqual([...got.tags].sort(), expected, `${when}: ${repo.name} tags/list`);
  }
  return problems;
}

/** A layout file as the server stored it: in the data directory, or in the bucket (TRELLIS_TEST_STORAGE=s3). */
async function readLayoutFile(dataDir: string, key: string): Promise<string> {
  const { storage } = await testStorage(dataDir);
  if (!storage) return readFile(join(dataDir, key), 'utf8');
  const driver = await openStorage(storage, dataDir, { durable: false });
  try {
    const bytes = await driver.readFile(key, 64 << 20);
    if (!bytes) throw new Error(`${key} is absent from ${driver.description}`);
    return bytes.toString('utf8');
  } finally {
    await driver.close();
  }
}

async function readIndex(dataDir: string, repo: string): Promise<{ manifests: IndexEntry[] }> {
  return JSON.parse(await readLayoutFile(dataDir, `${repo}/index.json`)) as { manifests: IndexEntry[] };
}

/**
 * index.json lists exactly the acknowledged tags and every acknowledged manifest and referrer.
 * Entries Trellis generates per subject (a referrers index under the subject's fallback tag, see
 * layoutFallbackTags) are not registry tags: each must list every acknowledged referrer.
 */
async function checkIndexFiles(dataDir: string, model: Model): Promise<string[]> {
  const problems: string[] = [];
  for (const repo of model.repos.values()) {
    const expectedTags = new Map([...repo.tags].filter(([, s]) => s.acked).map(([t, s]) => [t, s.acked!]));
    if (!repo.manifests.size && !expectedTags.size) continue;
    let index: { manifests: IndexEntry[] };
    try {
      index = await readIndex(dataDir, repo.name);
    } catch (err) {
      problems.push(`${repo.name}: index.json unreadable: ${(err as Error).message}`);
      continue;
    }
    const tags = new Map<string, string>();
    const listed = new Map<string, IndexEntry>();
    const generated = new Map<string, IndexEntry>();
    for (const entry of index.manifests) {
      const subject = entry.annotations?.[GENERATED_SUBJECT];
      if (subject) {
        generated.set(subject, entry);
        continue;
      }
      const tag = entry.annotations?.[REF_NAME];
      if (tag) tags.set(tag, entry.digest);
      listed.set(entry.digest, entry);
    }
    for (const [tag, digest] of expectedTags) {
      if (tags.get(tag) !== digest) problems.push(`${repo.name}/index.json: tag ${tag} is ${tags.get(tag) ?? 'absent'}, acknowledged ${digest}`);
    }
    for (const tag of tags.keys()) if (!expectedTags.has(tag)) problems.push(`${repo.name}/index.json: lists tag ${tag}, which is deleted or was never pushed`);
    for (const digest of repo.manifests.keys()) if (!listed.has(digest)) problems.push(`${repo.name}/index.json: acknowledged manifest ${digest} is not listed`);
    for (const [subject, referrers] of repo.referrers) {
      for (const digest of referrers.keys()) {
        const entry = listed.get(digest);
        if (entry && entry.annotations?.[CONTAINERD_SUBJECT] !== subject) problems.push(`${repo.name}/index.json: referrer ${digest} lacks its subject annotation`);
      }
    }
    if (!generated.size) continue; // layoutFallbackTags is off
    for (const [subject, referrers] of repo.referrers) {
      const entry = generated.get(subject);
      if (!entry) {
        problems.push(`${repo.name}/index.json: no referrers index for subject ${subject}`);
        continue;
      }
      const body = JSON.parse(await readLayoutFile(dataDir, `${repo.name}/blobs/${entry.digest.replace(':', '/')}`)) as { manifests: IndexEntry[] };
      const inIndex = new Set(body.manifests.map((m) => m.digest));
      for (const digest of referrers.keys()) if (!inIndex.has(digest)) problems.push(`${repo.name}: referrers index of ${subject} lacks acknowledged referrer ${digest}`);
      for (const digest of inIndex) if (!repo.sent.has(digest)) problems.push(`${repo.name}: referrers index of ${subject} lists ${digest}, which nobody pushed`);
    }
  }
  return problems;
}

function tagsFromTool(output: string): string[] {
  return output.split('\n').map((l) => l.trim()).filter(Boolean).sort();
}

async function toolTags(tool: string, args: string[]): Promise<string[]> {
  return new Promise((done, reject) => {
    execFile(tool, args, { maxBuffer: 16 << 20, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${tool} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else done(tagsFromTool(stdout));
    });
  });
}

async function checkWithPeers(t: TestContext, dataDir: string, model: Model): Promise<void> {
  const repos = [...model.repos.values()].filter((r) => r.manifests.size > 0);
  // The tools list every ref.name in index.json: the acknowledged tags (checked above against
  // the file) and the fallback tags of generated referrers indexes.
  const expected = async (repo: RepoState) => (await readIndex(dataDir, repo.name)).manifests
    .map((e) => e.annotations?.[REF_NAME]).filter((tag): tag is string => !!tag).sort();
  await t.test('regctl reads every layout and lists the acknowledged tags', async (t) => {
    if (!needsFileStorage(t)) return;
    const regctl = requirePeer(t, 'regctl');
    if (!regctl) return;
    for (const repo of repos) assert.deepEqual(await toolTags(regctl, ['tag', 'ls', `ocidir://${join(dataDir, repo.name)}`]), await expected(repo), repo.name);
  });
  await t.test('oras reads every layout and lists the acknowledged tags', async (t) => {
    if (!needsFileStorage(t)) return;
    const oras = requirePeer(t, 'oras');
    if (!oras) return;
    for (const repo of repos) assert.deepEqual(await toolTags(oras, ['repo', 'tags', '--oci-layout', join(dataDir, repo.name)]), await expected(repo), repo.name);
  });
}

/** Removes the data directory, or keeps it for inspection when the test failed. */
/** After a test: the server (if still up) is killed, and the data is removed unless the test failed. */
async function killAndCleanUp(t: TestContext, server: Server | undefined, dataDir: string, passed: boolean): Promise<void> {
  if (server) {
    server.child.kill('SIGKILL');
    await server.exited;
  }
  await cleanUp(t, dataDir, passed);
}

async function cleanUp(t: TestContext, dataDir: string, passed: boolean): Promise<void> {
  if (passed || process.env.CI === 'true') await rm(dataDir, { recursive: true, force: true });
  else t.diagnostic(`data directory kept for inspection: ${dataDir}`);
}

// ---- the tests ---------------------------------------------------------------------------------

test(`kill -9 mid-traffic (${ROUNDS} rounds, ${PUSHERS} pushers) loses no acknowledged write and leaves every layout valid`, async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-crash-'));
  const random = prng(SEED);
  const model = new Model();
  const started = performance.now();
  t.diagnostic(`seed ${SEED} (TRELLIS_CRASH_SEED), data ${dataDir}`);
  let server: Server | undefined;
  let passed = false;
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      server = await startServer(dataDir);
      if (round > 1) {
        // Restarted over the data the previous kill left: fsck first (the server is idle and
        // flushed every layout before it began to listen), then every acknowledged write.
        await fsckClean(dataDir, `after restart ${round - 1}`);
        assert.deepEqual(await verifyAcknowledged(server.base, model, `after kill ${round - 1}`), []);
      }
      const before = model.total();
      const traffic: Traffic = { stopped: false, failures: [], cutOff: 0 };
      const base = server.base;
      const pushers = Array.from({ length: PUSHERS }, (_, id) => pusher(id, round, base, model, prng(SEED + round * 1000 + id), traffic));
      const delay = 50 + Math.floor(random() * 750);
      await sleep(delay);
      // Mid-traffic means after traffic began: on a slow machine the first answer can take longer.
      for (const deadline = Date.now() + 30_000; model.total() === before && !traffic.failures.length; await sleep(10)) {
        assert.ok(Date.now() < deadline, `round ${round}: no operation was acknowledged within 30 s`);
      }
      traffic.stopped = true;
      server.child.kill('SIGKILL');
      const exit = await waitExit(server, 'SIGKILL');
      assert.equal(exit.signal, 'SIGKILL', `the server was already gone before the kill: ${JSON.stringify(exit)}\n${server.output.join('')}`);
      await Promise.all(pushers);
      assert.deepEqual(traffic.failures, [], `round ${round}: unexpected answers before the kill`);
      assert.ok(traffic.cutOff > 0, `round ${round}: the kill cut off no request, so it did not come mid-traffic`);
      assert.deepEqual(serverErrors(server), [], `round ${round}: the server logged errors`);
      assert.deepEqual(await checkLayoutsValid(dataDir, `right after kill ${round}`), []);
      t.diagnostic(`round ${round}: killed after ${delay} ms, ${model.total() - before} operations acknowledged, ${traffic.cutOff} cut off`);
      server = undefined;
    }

    server = await startServer(dataDir);
    await fsckClean(dataDir, `after restart ${ROUNDS}`);
    assert.deepEqual(await verifyAcknowledged(server.base, model, `after kill ${ROUNDS}`), []);
    server.child.kill('SIGTERM');
    const exit = await waitExit(server, 'SIGTERM');
    assert.equal(exit.code, 0, `graceful stop exited ${JSON.stringify(exit)}:\n${server.output.join('')}`);
    assert.deepEqual(serverErrors(server), [], 'the server logged errors');
    server = undefined;

    const summary = await fsckClean(dataDir, 'after the graceful stop');
    assert.deepEqual(await checkLayoutsValid(dataDir, 'after the graceful stop'), []);
    assert.deepEqual(await checkIndexFiles(dataDir, model), []);
    await checkWithPeers(t, dataDir, model);
    t.diagnostic(`${model.total()} operations acknowledged over ${ROUNDS} kills in ${((performance.now() - started) / 1000).toFixed(1)} s: ${JSON.stringify(model.counts)}; fsck: ${summary}`);
    passed = true;
  } finally {
    await killAndCleanUp(t, server, dataDir, passed);
  }
});

test('kill -9 while the index.json flush of a repository with 2000+ referrers is pending', async (t) => {
  // Times its kill by watching the layout's files, which only a filesystem has.
  if (!needsFileStorage(t)) return;
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-crash-big-'));
  const repo = 'big/referrers';
  const acked = new Map<string, Buffer>();
  const started = performance.now();
  // Rewrites wait at least a second after a change, so the kill right after the last 201 surely
  // comes while the rewrite that would list it is pending (asserted below).
  let server: Server | undefined = await startServer(dataDir, { TRELLIS_INDEX_FLUSH_MIN_MS: '1000' });
  let passed = false;
  try {
    const subject = makeImage();
    for (const blob of [...subject.blobs, EMPTY_BLOB]) assert.equal((await pushBlob(server.base, repo, blob)).status, 201);
    assert.equal((await pushManifest(server.base, repo, 'subject', subject.bytes)).status, 201);
    const referrerNo = (i: number) => makeReferrer(subject.descriptor, { artifactType: ARTIFACT_TYPES[i % 3]!, annotations: { n: String(i) } });

    // 2000 referrers as fast as the server takes them; the kill follows the last 201 at once,
    // before the coalesced index.json rewrite it scheduled can run.
    const first = Array.from({ length: 2000 }, (_, i) => referrerNo(i));
    const base = server.base;
    await eachLimit(first, 16, async (r) => {
      const pushed = await pushManifest(base, repo, r.digest, r.bytes);
      assert.equal(pushed.status, 201, pushed.body.toString());
      acked.set(r.digest, r.bytes);
    });
    server.child.kill('SIGKILL');
    await waitExit(server, 'SIGKILL');
    assert.deepEqual(serverErrors(server), []);
    assert.deepEqual(await checkLayoutsValid(dataDir, 'right after the first kill'), []);
    const onDisk = (await readIndex(dataDir, repo)).manifests.filter((e) => acked.has(e.digest)).length;
    t.diagnostic(`index.json listed ${onDisk} of the ${acked.size} acknowledged referrers when killed (the rest was pending)`);
    assert.ok(onDisk < acked.size, 'index.json already listed every referrer: the kill did not come while a rewrite was pending');

    // More referrers with a kill at a random moment, while rewrites of the large index run.
    server = await startServer(dataDir);
    const again = server;
    const traffic = { stopped: false };
    const more = Array.from({ length: 3000 }, (_, i) => referrerNo(2000 + i));
    const firstPhase = acked.size;
    const pushing = eachLimit(more, 16, async (r) => {
      if (traffic.stopped) return;
      let pushed;
      try {
        pushed = await pushManifest(again.base, repo, r.digest, r.bytes);
      } catch (err) {
        if (traffic.stopped) return; // cut off by the kill
        throw err;
      }
      assert.equal(pushed.status, 201, pushed.body.toString());
      acked.set(r.digest, r.bytes);
    }).then(() => undefined, (err: unknown) => err);
    await sleep(200 + Math.floor(Math.random() * 800));
    // The kill must come while referrers arrive: wait for the first one on a slow machine.
    for (const deadline = Date.now() + 30_000; acked.size === firstPhase; await sleep(10)) {
      assert.ok(Date.now() < deadline, 'no referrer was acknowledged within 30 s of the restart');
    }
    traffic.stopped = true;
    server.child.kill('SIGKILL');
    assert.equal((await waitExit(server, 'SIGKILL')).signal, 'SIGKILL');
    const pushError = await pushing;
    if (pushError) throw pushError;
    assert.deepEqual(serverErrors(server), []);
    assert.deepEqual(await checkLayoutsValid(dataDir, 'right after the second kill'), []);

    server = await startServer(dataDir);
    await fsckClean(dataDir, 'after the restart');
    const listed = await listReferrers(server.base, repo, subject.digest);
    assert.equal(listed.status, 200);
    const listedDigests = new Set(listed.manifests.map((d) => d.digest));
    const lost = [...acked.keys()].filter((d) => !listedDigests.has(d));
    assert.deepEqual(lost, [], `${lost.length} acknowledged referrers are missing from the referrers API`);
    const sample = [...acked].filter((_, i) => i % 50 === 0);
    for (const [digest, bytes] of sample) {
      const got = await getManifest(server.base, repo, digest);
      assert.equal(got.status, 200);
      assert.ok(got.bytes.equals(bytes), `${digest}: bytes differ`);
    }
    server.child.kill('SIGTERM');
    assert.equal((await waitExit(server, 'SIGTERM')).code, 0);
    assert.deepEqual(serverErrors(server), []);
    server = undefined;

    await fsckClean(dataDir, 'after the graceful stop');
    const index = await readIndex(dataDir, repo);
    const entries = new Map(index.manifests.filter((e) => !e.annotations?.[GENERATED_SUBJECT]).map((e) => [e.digest, e]));
    const missing = [...acked.keys()].filter((d) => entries.get(d)?.annotations?.[CONTAINERD_SUBJECT] !== subject.digest);
    assert.deepEqual(missing, [], `${missing.length} acknowledged referrers are not in index.json with their subject`);
    assert.equal(entries.get(subject.digest)?.annotations?.[REF_NAME], 'subject');
    // With layoutFallbackTags (the default) the subject's generated referrers index lists them all too.
    const generated = index.manifests.find((e) => e.annotations?.[GENERATED_SUBJECT] === subject.digest);
    if (generated) {
      const body = JSON.parse(await readFile(join(dataDir, repo, 'blobs', ...generated.digest.split(':')), 'utf8')) as { manifests: IndexEntry[] };
      const inIndex = new Set(body.manifests.map((m) => m.digest));
      const absent = [...acked.keys()].filter((d) => !inIndex.has(d));
      assert.deepEqual(absent, [], `${absent.length} acknowledged referrers are not in the generated referrers index`);
    }
    t.diagnostic(`${acked.size} referrers acknowledged, all listed after 2 kills, in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    passed = true;
  } finally {
    await killAndCleanUp(t, server, dataDir, passed);
  }
});

test('kill -9 the instant index.json is renamed into place, with tag deletes acknowledged while it was written', async (t) => {
  // Times its kill by watching the layout's files, which only a filesystem has.
  if (!needsFileStorage(t)) return;
  // The journal confirms the index.json it wrote (its stamp) only after the rename. A kill in
  // between leaves an index.json the journal has not confirmed; on restart it must not bring back
  // tags whose deletion was acknowledged after that index.json was built. Each try sends deletes
  // once the rewrite's temp file appears (the index is already built then) and kills the server
  // the moment index.json is renamed, if at least one delete was acknowledged by then (see
  // KILLER). Only index.json rewrites create temp files during the tries: tags point at a stored
  // manifest. The server pauses between writing index.json and its rename (a fault-injection
  // setting): without it the rename comes before a delete's round trips to PostgreSQL end.
  const attempts = Math.max(3, Math.ceil(ROUNDS / 2));
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-crash-rename-'));
  const repo = 'race/tags';
  const tags = new Map<string, TagState>();
  const pause = { TRELLIS_FAULT_PAUSE_BEFORE_INDEX_RENAME_MS: '40' };
  let server: Server | undefined = await startServer(dataDir, pause);
  let raced = 0;
  let kills = 0;
  let passed = false;
  try {
    // 800 referrers: the index.json rewritten is a large one, with their untagged entries and the
    // subject's fallback-tag referrers index.
    const subject = makeImage();
    for (const blob of [...subject.blobs, EMPTY_BLOB]) assert.equal((await pushBlob(server.base, repo, blob)).status, 201);
    assert.equal((await pushManifest(server.base, repo, 'subject', subject.bytes)).status, 201);
    tags.set('subject', { acked: subject.digest, inflight: [] });
    let referrers = 0;
    const addReferrers = async (base: string, count: number) => {
      const batch = Array.from({ length: count }, (_, i) => makeReferrer(subject.descriptor, { artifactType: ARTIFACT_TYPES[i % 3]!, annotations: { n: String(referrers + i) } }));
      await eachLimit(batch, 16, async (r) => {
        assert.equal((await pushManifest(base, repo, r.digest, r.bytes)).status, 201);
      });
      referrers += count;
      // Wait for the rewrite that lists them (it also writes the subject's referrers index blob):
      // from then on, only index.json rewrites create temp files.
      for (const deadline = Date.now() + 60_000; ; await sleep(50)) {
        if ((await readIndex(dataDir, repo)).manifests.filter((e) => e.annotations?.[CONTAINERD_SUBJECT]).length >= referrers) break;
        assert.ok(Date.now() < deadline, `the ${referrers} referrers did not reach index.json within 60 s`);
      }
    };
    await addReferrers(server.base, 800);

    // Unexpected answers are collected (a network error after the kill is expected).
    const failures: string[] = [];
    const setTag = async (base: string, tag: string): Promise<void> => {
      const state = tagState(tags, tag);
      state.inflight.push(subject.digest);
      const pushed = await pushManifest(base, repo, tag, subject.bytes);
      if (pushed.status !== 201) {
        failures.push(`PUT ${tag} answered ${pushed.status}: ${pushed.body}`);
        return;
      }
      state.acked = subject.digest;
      state.inflight = [];
    };
    /** Records the deletes the killer sent for `batch`: 202 is acknowledged, no answer is in flight. */
    const noteDeletes = (batch: string[], statuses: number[]) => {
      batch.forEach((tag, i) => {
        const state = tagState(tags, tag);
        if (statuses[i] === 202) {
          state.acked = null;
          state.inflight = [];
        } else if (statuses[i] === 0) {
          state.inflight.push(null);
        } else {
          failures.push(`DELETE ${tag} answered ${statuses[i]}`);
        }
      });
    };

    for (let attempt = 1; attempt <= attempts; attempt++) {
      const base = server.base;
      const killer = new Worker(KILLER, {
        eval: true,
        workerData: { dir: join(dataDir, repo), temps: join(dataDir, '_trellis/tmp'), port: Number(new URL(base).port), pathPrefix: `/v2/${repo}/manifests/`, pid: server.child.pid },
      });
      await once(killer, 'message'); // watching
      let killed = false;
      try {
        for (let tries = 1; !killed && tries <= 20; tries++) {
          const batch = Array.from({ length: 32 }, (_, i) => `k${attempt}-${tries}-${i}`);
          await Promise.all(batch.map((tag) => setTag(base, tag)));
          killer.postMessage({ tags: batch });
          await once(killer, 'message'); // armed: one open connection per delete
          const verdict = once(killer, 'message') as Promise<[{ killed: boolean; statuses: number[] }]>;
          // A change made after the killer is armed, so a rewrite follows.
          void setTag(base, `trigger-${attempt}-${tries}`).catch(() => undefined);
          const timeout = sleep(30_000, undefined, { ref: false }).then(() => { throw new Error(`attempt ${attempt}: index.json was not rewritten within 30 s`); });
          const [outcome] = await Promise.race([verdict, timeout]);
          killed = outcome.killed;
          noteDeletes(batch, outcome.statuses);
          assert.deepEqual(failures, [], `attempt ${attempt}: unexpected answers`);
          if (killed) {
            raced += outcome.statuses.filter((status) => status === 202).length;
            t.diagnostic(`attempt ${attempt}: killed at the rename on try ${tries}, with ${referrers} referrers`);
          }
          else await sleep(100); // let the trigger's own rewrite pass before the next try
        }
      } finally {
        await killer.terminate();
      }
      // Without a kill at the rename there is nothing to check: that is a failure, not a pass.
      assert.ok(killed, `attempt ${attempt}: no rewrite of index.json overlapped the deletes in 20 tries, so the server was never killed at the rename`);
      kills++;
      await waitExit(server, 'SIGKILL');
      assert.deepEqual(serverErrors(server), []);
      assert.deepEqual(await checkLayoutsValid(dataDir, `right after kill ${attempt}`), []);

      server = await startServer(dataDir, pause);
      await fsckClean(dataDir, `after restart ${attempt}`);
      const problems: string[] = [];
      for (const [tag, state] of tags) {
        const got = await getManifest(server.base, repo, tag);
        const observed = got.status === 200 ? got.digest : got.status === 404 ? null : `status ${got.status}`;
        if (![state.acked, ...state.inflight].includes(observed)) {
          problems.push(`${tag}: ${observed ?? 'absent'} after restart ${attempt}, but its last acknowledged state is ${state.acked ?? 'deleted'}`);
        }
        state.acked = observed;
        state.inflight = [];
      }
      assert.equal(problems.length, 0, `${problems.length} acknowledged writes lost after kill ${attempt} (at the rename of index.json):\n${problems.slice(0, 5).join('\n')}`);
    }

    server.child.kill('SIGTERM');
    assert.equal((await waitExit(server, 'SIGTERM')).code, 0);
    server = undefined;
    await fsckClean(dataDir, 'after the graceful stop');
    const index = await readIndex(dataDir, repo);
    const listed = index.manifests.filter((e) => !e.annotations?.[GENERATED_SUBJECT]).map((e) => e.annotations?.[REF_NAME]).filter((tag): tag is string => !!tag).sort();
    assert.deepEqual(listed, [...tags].filter(([, s]) => s.acked).map(([tag]) => tag).sort());
    t.diagnostic(`${kills} kills at the rename of index.json, ${raced} deletes acknowledged during those rewrites`);
    passed = true;
  } finally {
    await killAndCleanUp(t, server, dataDir, passed);
  }
});

test('kill -9 while a new repository is being created, then a read before its first push', async (t) => {
  // Times its kill by watching the layout's files, which only a filesystem has.
  if (!needsFileStorage(t)) return;
  // Creating a repository writes blobs/, index.json and oci-layout one after the other. The server
  // is killed the moment index.json appears in the new folder; after the restart the repository is
  // read (as clients do before pushing: tags, a manifest HEAD), then pushed to. Every repository
  // must end up a valid layout that fsck accepts and that lists its tag.
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-crash-create-'));
  await mkdir(join(dataDir, 'new'));
  let server: Server | undefined = await startServer(dataDir);
  let passed = false;
  const pushed = new Map<string, string>();
  let kills = 0;
  try {
    // Until three kills landed at the instant (a creation can complete before the watch is set).
    let tries = 0;
    for (let i = 0; i < 12 && kills < 3; i++) {
      tries++;
      const repo = `new/r${i}`;
      const running: Server = server!;
      let killSent = false;
      const folderWatch = watch(join(dataDir, 'new'), (_event, file) => {
        if (file !== `r${i}`) return;
        folderWatch.close();
        try {
          const inner = watch(join(dataDir, repo), (_e, f) => {
            if (f !== 'index.json') return;
            inner.close();
            killSent = true;
            running.child.kill('SIGKILL');
          });
          void running.exited.then(() => inner.close());
          setTimeout(() => inner.close(), 5000).unref();
        } catch {
          // the folder is already complete: no kill this time
        }
      });
      const blob = randomBytes(100);
      const created: { status: number } | undefined = await pushBlob(running.base, repo, blob).catch(() => undefined);
      folderWatch.close();
      await sleep(20);
      if (!killSent) {
        assert.equal(created?.status, 201);
        continue;
      }
      kills++;
      assert.equal((await waitExit(running, 'SIGKILL')).signal, 'SIGKILL');
      assert.deepEqual(serverErrors(running), []);
      assert.deepEqual(await checkLayoutsValid(dataDir, `right after kill ${kills}`), []);
      server = await startServer(dataDir);
      // Read first, as clients do, then push.
      const tags = await listTags(server.base, repo);
      assert.ok(tags.status === 200 || tags.status === 404, `tags/list answered ${tags.status}`);
      assert.equal((await getManifest(server.base, repo, 'v1')).status, 404);
      const image = makeImage();
      const result = await pushBuilt(server.base, repo, 'v1', image);
      assert.equal(result.status, 201, result.body.toString());
      pushed.set(repo, image.digest);
    }
    server.child.kill('SIGTERM');
    assert.equal((await waitExit(server, 'SIGTERM')).code, 0);
    server = undefined;
    await fsckClean(dataDir, 'after the graceful stop');
    assert.deepEqual(await checkLayoutsValid(dataDir, 'after the graceful stop'), []);
    for (const [repo, digest] of pushed) {
      assert.ok(existsSync(join(dataDir, repo, 'oci-layout')), `${repo}: no oci-layout, so the folder is not an OCI layout`);
      const index = await readIndex(dataDir, repo);
      assert.equal(index.manifests.find((e) => e.annotations?.[REF_NAME] === 'v1')?.digest, digest, `${repo}/index.json does not list v1`);
    }
    t.diagnostic(`${kills} kills during repository creation in ${tries} tries`);
    assert.ok(kills >= 1, `no creation was killed at the instant index.json appeared in ${tries} tries: nothing was checked`);
    passed = true;
  } finally {
    await killAndCleanUp(t, server, dataDir, passed);
  }
});

test('kill -9 while clients delete manifests by digest and re-push the same bytes', async (t) => {
  // Each client owns one image: it deletes it by digest, then pushes the same bytes under a new
  // tag, again and again. A delete journals the file for removal after the next index.json
  // rewrite; a re-push of the same bytes must keep it. After each kill (mid-cycle) and restart,
  // every acknowledged re-push must still resolve and serve its bytes, and fsck must be clean.
  // A client left without a tag must get 404 by digest: a re-push killed after its file's rename
  // but before its commit once answered 200 here (test/content/registry.test.ts recreates it).
  const CLIENTS = 4;
  const KILLS = 2;
  const dataDir = await mkdtemp(join(tmpdir(), 'trellis-crash-redo-'));
  const repo = 'crash/redo';
  let server: Server | undefined = await startServer(dataDir, { TRELLIS_INDEX_FLUSH_MIN_MS: '1', TRELLIS_INDEX_FLUSH_MAX_MS: '5' });
  let passed = false;
  const images = Array.from({ length: CLIENTS }, (_, c) => makeImage({ layer: Buffer.from(`redo client ${c} ${randomBytes(8).toString('hex')}`) }));
  // Per client: the tag last acknowledged (null once a delete of it was acknowledged) and whether an operation was cut off.
  const state = images.map(() => ({ tag: null as string | null, interrupted: false }));
  let cycles = 0;
  try {
    for (const [c, image] of images.entries()) {
      assert.equal((await pushBuilt(server.base, repo, `c${c}-0`, image)).status, 201);
      state[c]!.tag = `c${c}-0`;
    }
    for (let kill = 1; kill <= KILLS; kill++) {
      const base = server.base;
      const traffic = { stopped: false, cutOff: 0, failures: [] as string[] };
      const before = cycles;
      const client = async (c: number) => {
        const image = images[c]!;
        const s = state[c]!;
        for (let i = 1; !traffic.stopped; i++) {
          try {
            s.interrupted = true;
            const deleted = await fetch(`${base}/v2/${repo}/manifests/${image.digest}`, { method: 'DELETE' });
            await deleted.arrayBuffer();
            if (deleted.status !== 202 && deleted.status !== 404) return void traffic.failures.push(`client ${c}: DELETE answered ${deleted.status}`);
            s.tag = null;
            const tag = `c${c}-k${kill}-${i}`;
            const pushed = await pushManifest(base, repo, tag, image.bytes, image.mediaType);
            if (pushed.status !== 201) return void traffic.failures.push(`client ${c}: PUT ${tag} answered ${pushed.status}: ${pushed.body}`);
            s.tag = tag;
            s.interrupted = false;
            cycles++;
            // Read it back once the rewrite that follows the delete had its chance to run.
            await sleep(i % 4);
            const got = await getManifest(base, repo, tag);
            if (got.status !== 200) return void traffic.failures.push(`client ${c}: ${tag} answers ${got.status} after its 201`);
          } catch (err) {
            if (!traffic.stopped) traffic.failures.push(`client ${c}: ${(err as Error).message} before the kill`);
            else traffic.cutOff++;
            return;
          }
        }
      };
      const clients = images.map((_, c) => client(c));
      await sleep(300 + Math.floor(Math.random() * 500));
      for (const deadline = Date.now() + 30_000; cycles - before < CLIENTS && !traffic.failures.length; await sleep(10)) {
        assert.ok(Date.now() < deadline, `kill ${kill}: fewer than ${CLIENTS} cycles were acknowledged within 30 s`);
      }
      traffic.stopped = true;
      server.child.kill('SIGKILL');
      assert.equal((await waitExit(server, 'SIGKILL')).signal, 'SIGKILL');
      await Promise.all(clients);
      assert.deepEqual(traffic.failures, []);
      assert.ok(traffic.cutOff > 0, `kill ${kill}: no request was cut off, so the kill did not come mid-cycle`);
      assert.deepEqual(serverErrors(server), []);
      assert.deepEqual(await checkLayoutsValid(dataDir, `right after kill ${kill}`), []);
      t.diagnostic(`kill ${kill}: ${cycles - before} delete/re-push cycles acknowledged, ${traffic.cutOff} cut off`);

      server = await startServer(dataDir, { TRELLIS_INDEX_FLUSH_MIN_MS: '1', TRELLIS_INDEX_FLUSH_MAX_MS: '5' });
      await fsckClean(dataDir, `after restart ${kill}`);
      const tags = new Set((await listTags(server.base, repo)).tags);
      for (const [c, image] of images.entries()) {
        const s = state[c]!;
        if (s.tag && !s.interrupted) {
          const got = await getManifest(server.base, repo, s.tag);
          assert.equal(got.status, 200, `client ${c}: acknowledged re-push ${s.tag} answers ${got.status} after restart ${kill}`);
          assert.ok(got.bytes.equals(image.bytes));
        }
        // Settle what an interrupted cycle left: the client carries on from what the server has.
        const mine = [...tags].filter((tag) => tag.startsWith(`c${c}-`));
        assert.ok(mine.length <= 1, `client ${c} has tags ${mine.join(', ')}: a delete by digest removes every tag`);
        s.tag = mine[0] ?? null;
        s.interrupted = false;
        const byDigest = await getManifest(server.base, repo, image.digest);
        assert.equal(byDigest.status, s.tag ? 200 : 404, `client ${c}: by digest`);
      }
    }
    server.child.kill('SIGTERM');
    assert.equal((await waitExit(server, 'SIGTERM')).code, 0);
    server = undefined;
    await fsckClean(dataDir, 'after the graceful stop');
    t.diagnostic(`${cycles} delete/re-push cycles over ${KILLS} kills`);
    passed = true;
  } finally {
    await killAndCleanUp(t, server, dataDir, passed);
  }
});
