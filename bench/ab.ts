// A/B of two Trellis checkouts on the write paths where small calls dominate: each runs as
// `trellis serve` on its own data directory, and the client alternates between them round by
// round, so both see the same machine (this one's disk writeback swings results between runs far
// more than between the two builds). Server CPU per operation comes from /proc/<pid>/stat.
//
//   git worktree add /tmp/before <commit> && ln -s $PWD/node_modules /tmp/before/
//   node bench/ab.ts /tmp/before .              # 1,000 × 4 KiB blobs pushed and pulled, 500 new repositories
//   AB_BIG=1 node bench/ab.ts /tmp/before .     # 100 MiB monolithic push, pull, 20 PATCHes
//   AB_ROUNDS=6 …                               # rounds (default 4; the first one is cold)
//   node bench/ab.ts . '.::--max-semi-space-size=4'   # one checkout, with and without Node flags
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** `CHECKOUT` or `CHECKOUT::FLAGS` (Node flags, space-separated, before the entry point). */
const roots = process.argv.slice(2);
if (roots.length < 2) {
  console.error('usage: node bench/ab.ts CHECKOUT_A CHECKOUT_B [more…]');
  process.exit(2);
}
const ROUNDS = Number(process.env.AB_ROUNDS ?? 4);
const BIG = Boolean(process.env.AB_BIG);
const CLOCK_TICKS = 100;

interface Server { root: string; child: ChildProcess; base: string; dataDir: string }

function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
}

const sha256 = (bytes: Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

async function start(root: string, port: number): Promise<Server> {
  const dataDir = mkdtempSync(join(tmpdir(), 'trellis-ab-'));
  const [checkout, flags = ''] = root.split('::');
  const child = spawn(process.execPath, [...flags.split(' ').filter(Boolean), 'src/main.ts', 'serve', '--listen', `127.0.0.1:${port}`, '--data', dataDir, '--log-level', 'warn'], { cwd: resolve(checkout!), stdio: 'ignore' });
  const base = `http://127.0.0.1:${port}`;
  for (const deadline = Date.now() + 30_000; ; await sleep(50)) {
    if (Date.now() > deadline) throw new Error(`${root} did not start`);
    const status = await fetch(`${base}/v2/`).then((res) => res.status, () => 0);
    if (status === 200) return { root, child, base, dataDir };
  }
}

async function expect(res: Response, status: number, what: string): Promise<Response> {
  await res.arrayBuffer();
  if (res.status !== status) throw new Error(`${what}: ${res.status}`);
  return res;
}

/** POST then PUT ?digest= with the whole body. */
async function pushBlob(base: string, repo: string, bytes: Buffer, digest = sha256(bytes)): Promise<string> {
  const post = await expect(await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' }), 202, 'POST');
  const location = new URL(post.headers.get('location')!, base);
  location.searchParams.set('digest', digest);
  await expect(await fetch(location, { method: 'PUT', body: bytes, headers: { 'Content-Type': 'application/octet-stream' } }), 201, 'PUT');
  return digest;
}

const CONFIG = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [] } }));

/** A new repository in 5 requests: config and layer (POST + PUT each), manifest by tag. */
async function newRepository(base: string, repo: string): Promise<void> {
  const config = await pushBlob(base, repo, CONFIG);
  const layerBytes = randomBytes(1024);
  const layer = await pushBlob(base, repo, layerBytes);
  const manifest = JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: CONFIG.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layer, size: layerBytes.length }],
  });
  await expect(await fetch(`${base}/v2/${repo}/manifests/v1`, { method: 'PUT', body: manifest, headers: { 'Content-Type': 'application/vnd.oci.image.manifest.v1+json' } }), 201, 'manifest PUT');
}

async function pushChunked(base: string, repo: string, bytes: Buffer, digest: string, chunk: number): Promise<void> {
  const post = await expect(await fetch(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST' }), 202, 'POST');
  let location = new URL(post.headers.get('location')!, base);
  for (let offset = 0; offset < bytes.length; offset += chunk) {
    const part = bytes.subarray(offset, offset + chunk);
    const patched = await expect(await fetch(location, {
      method: 'PATCH', body: part, headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `${offset}-${offset + part.length - 1}` },
    }), 202, 'PATCH');
    location = new URL(patched.headers.get('location')!, base);
  }
  location.searchParams.set('digest', digest);
  await expect(await fetch(location, { method: 'PUT' }), 201, 'closing PUT');
}

async function pullBlob(base: string, repo: string, digest: string): Promise<number> {
  const res = await fetch(`${base}/v2/${repo}/blobs/${digest}`);
  let received = 0;
  for await (const piece of res.body!) received += (piece as Uint8Array).length;
  return received;
}

async function pool(count: number, concurrency: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) await task(next++);
  }));
}

/** Runs `work` against `server`; returns its server CPU in ms and its wall time in ms. */
async function measured(server: Server, work: () => Promise<unknown>): Promise<{ cpu: number; ms: number }> {
  const cpu = cpuMs(server.child.pid!);
  const started = performance.now();
  await work();
  return { cpu: cpuMs(server.child.pid!) - cpu, ms: performance.now() - started };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const rows = new Map<string, number[]>();
const note = (server: Server, row: string, value: number) => {
  const key = `${server.root}\t${row}`;
  rows.set(key, [...(rows.get(key) ?? []), value]);
};

const servers: Server[] = [];
try {
  for (const [i, root] of roots.entries()) servers.push(await start(root, 5600 + i));
  const big = BIG ? randomBytes(100 << 20) : Buffer.alloc(0);
  const bigDigest = sha256(big);
  for (let round = 0; round < ROUNDS; round++) {
    for (const server of servers) {
      if (BIG) {
        const operations = {
          'monolithic 100 MiB push': () => pushBlob(server.base, `big/m${round}`, big, bigDigest),
          '100 MiB pull': () => pullBlob(server.base, `big/m${round}`, bigDigest),
          '20 PATCHes of 5 MiB': () => pushChunked(server.base, `big/c${round}`, big, bigDigest, 5 << 20),
        };
        for (const [row, work] of Object.entries(operations)) {
          const { cpu, ms } = await measured(server, work);
          note(server, `${row}, CPU ms`, cpu);
          note(server, `${row}, MB/s`, big.length / 1000 / ms);
        }
        continue;
      }
      const blobs = Array.from({ length: 1000 }, () => randomBytes(4096));
      const small = await measured(server, () => pool(blobs.length, 8, (i) => pushBlob(server.base, `small/r${round}`, blobs[i]!)));
      note(server, '4 KiB blob, CPU ms', small.cpu / blobs.length);
      note(server, '4 KiB blobs/s', blobs.length / (small.ms / 1000));
      const digests = blobs.map((blob) => sha256(blob));
      const pulled = await measured(server, () => pool(digests.length, 8, (i) => pullBlob(server.base, `small/r${round}`, digests[i]!)));
      note(server, '4 KiB blob GET, CPU ms', pulled.cpu / digests.length);
      const repositories = 500;
      const created = await measured(server, () => pool(repositories, 8, (i) => newRepository(server.base, `repos${round}/r${i}`)));
      note(server, 'new repository, CPU ms', created.cpu / repositories);
      note(server, 'new repositories/s', repositories / (created.ms / 1000));
    }
  }
  for (const server of servers) {
    const peak = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${server.child.pid}/status`, 'utf8'))?.[1];
    note(server, 'peak RSS (VmHWM), MiB', Number(peak) / 1024);
  }
  for (const [key, values] of rows) {
    const [root, row] = key.split('\t');
    console.log(`${root}  ${row}: median ${median(values).toFixed(2)} (rounds ${values.map((v) => v.toFixed(2)).join(', ')})`);
  }
} finally {
  for (const server of servers) {
    server.child.kill('SIGTERM');
    await new Promise((done) => server.child.once('exit', done));
    rmSync(server.dataDir, { recursive: true, force: true });
  }
}
