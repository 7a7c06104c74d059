// A throw-away PostgreSQL cluster for tests: initdb + pg_ctl on a temp directory, a free
// 127.0.0.1 port, the unix socket inside the temp directory, no system service. PostgreSQL
// refuses to run as root, so as root the cluster runs as the `postgres` user (or `nobody`).
// `scripts/test.ts` starts one for the PostgreSQL pass and hands its URL to every test process
// (TRELLIS_TEST_POSTGRES_URL); a process without one starts its own on first use and stops it
// at exit. Each registry gets its own database.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export interface PostgresCluster {
  /** postgres://…/postgres, for administration (creating databases). */
  url: string;
  dir: string;
  stop(): void;
}

/** The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/<version>/bin). */
export function postgresBinDir(): string | undefined {
  if (process.env.TRELLIS_PG_BIN) return process.env.TRELLIS_PG_BIN;
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions[0] ? join(root, versions[0], 'bin') : undefined;
}

/** Why PostgreSQL tests cannot run here, or undefined when they can. */
export function postgresMissing(): string | undefined {
  if (process.env.TRELLIS_TEST_POSTGRES_URL) return undefined;
  return postgresBinDir() ? undefined : 'PostgreSQL is not installed (apt-get install postgresql)';
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function runAs(): { user: string; uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  for (const user of ['postgres', 'nobody']) {
    const line = spawnSync('getent', ['passwd', user], { encoding: 'utf8' }).stdout.trim();
    if (line) {
      const [, , uid, gid] = line.split(':');
      return { user, uid: Number(uid), gid: Number(gid) };
    }
  }
  throw new Error('running as root and neither the postgres nor the nobody user exists to run PostgreSQL');
}

/** Starts a cluster; stop() (also run at process exit) kills it and removes its files. */
export async function startPostgresCluster(options: { durable?: boolean } = {}): Promise<PostgresCluster> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('PostgreSQL is not installed (apt-get install postgresql)');
  const dir = mkdtempSync(join(tmpdir(), 'trellis-pg-'));
  const data = join(dir, 'data');
  const owner = runAs();
  if (owner) {
    chownSync(dir, owner.uid, owner.gid);
    chmodSync(dir, 0o700);
  }
  const as = (command: string, args: string[]) => (owner ? ['runuser', ['-u', owner.user, '--', command, ...args]] as const : [command, args] as const);
  const exec = (command: string, args: string[]) => {
    const [c, a] = as(command, args);
    execFileSync(c, a, { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
  };
  const pwfile = join(dir, 'pw');
  writeFileSync(pwfile, 'trellis\n');
  if (owner) chownSync(pwfile, owner.uid, owner.gid);
  exec(join(bin, 'initdb'), ['-D', data, '-U', 'trellis', '--pwfile', pwfile, '-A', 'scram-sha-256', '--encoding=UTF8', '--locale=C', '--no-sync']);
  const port = await freePort();
  // Tests do not test PostgreSQL's durability: fsync off makes their many small commits cheap.
  // Benchmarks keep PostgreSQL's defaults (durable commits), as a deployment would.
  const relaxed = options.durable ? '' : ' -c fsync=off -c synchronous_commit=off -c full_page_writes=off';
  const serverOptions = `-c listen_addresses=127.0.0.1 -c port=${port} -c unix_socket_directories=${dir} -c max_connections=300 -c shared_buffers=64MB${relaxed}`;
  exec(join(bin, 'pg_ctl'), ['-D', data, '-o', serverOptions, '-l', join(dir, 'log'), '-w', '-t', '60', 'start']);
  let stopped = false;
  const stop = () => {
    if (stopped) return;
    stopped = true;
    const [c, a] = as(join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', '-w', 'stop']);
    spawnSync(c, a, { stdio: 'ignore', cwd: dir });
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', stop);
  return { url: `postgres://trellis:trellis@127.0.0.1:${port}/postgres`, dir, stop };
}

let shared: Promise<string> | undefined;

/** The admin URL of the cluster this process uses (the test runner's, or its own). */
function adminUrl(): Promise<string> {
  const given = process.env.TRELLIS_TEST_POSTGRES_URL;
  if (given) return Promise.resolve(given);
  shared ??= startPostgresCluster().then((cluster) => cluster.url);
  return shared;
}

let counter = 0;

/** A fresh, empty database on the test cluster; drop() removes it. */
export async function createTestDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const admin = await adminUrl();
  const name = `trellis_${process.pid}_${++counter}_${Date.now().toString(36)}`;
  const client = new pg.Client({ connectionString: admin });
  await client.connect();
  try {
    await client.query(`CREATE DATABASE ${name} TEMPLATE template0`);
  } finally {
    await client.end();
  }
  const url = new URL(admin);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: admin });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

/** Whether tests in this process run their registries on PostgreSQL (TRELLIS_TEST_METADATA). */
export function testsUsePostgres(): boolean {
  return process.env.TRELLIS_TEST_METADATA === 'postgres';
}

/**
 * A fresh database, a data directory for a Trellis process on it and an admin connection to it
 * (to hold or end its advisory locks), all removed after the test.
 */
export async function databaseFixture(t: { after(fn: () => Promise<void>): void }, name: string): Promise<{ url: string; dataDir: string; admin: pg.Client }> {
  const database = await createTestDatabase();
  const dataDir = await mkdtemp(join(tmpdir(), `trellis-${name}-`));
  const admin = new pg.Client({ connectionString: database.url });
  await admin.connect();
  t.after(async () => {
    await admin.end();
    await database.drop();
    await rm(dataDir, { recursive: true, force: true });
  });
  return { url: database.url, dataDir, admin };
}

/**
 * Ends the connections named `applicationName` ('trellis locks', 'trellis presence') that hold an
 * advisory lock, as a database restart or a cut network would; the server pids of those it ended
 * (a terminated backend may still be listed for a moment after).
 */
export async function endLockConnections(admin: pg.Client, applicationName: string): Promise<number[]> {
  const { rows } = await admin.query<{ pid: number }>(`SELECT a.pid, pg_terminate_backend(a.pid) FROM pg_stat_activity a
    WHERE a.application_name = $1 AND a.datname = current_database()
    AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)`, [applicationName]);
  return rows.map((row) => row.pid);
}
