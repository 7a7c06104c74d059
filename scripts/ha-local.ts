// `npm run ha`: the HA layout of docs/deployment.md (what docs/examples/compose.yaml starts) from
// local binaries, for a machine without container images: a throw-away PostgreSQL cluster,
// versitygw as the S3 server, N `trellis serve` replicas and nginx round-robin in front, all on
// 127.0.0.1 with their files in temp folders. It is the set the replica tests run on
// (test/helpers/replicas.ts). It stays up until SIGINT or SIGTERM, then stops everything, removes
// its files and exits 0. Exit 2: bad options or a component is missing; 1: it failed to start.
//
//   npm run ha                                  # 3 replicas, the balancer on a free port
//   npm run ha -- --replicas 2 --port 5000
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { basename, dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { postgresBinDir, startPostgresCluster, type PostgresCluster } from '../test/helpers/postgres.ts';
import { launchReplicas, replicasMissing, type ReplicaSet } from '../test/helpers/replicas.ts';

/** Each replica holds 11 PostgreSQL connections and the throw-away cluster allows 300. */
const MAX_REPLICAS = 20;
const USAGE = `Usage: npm run ha -- [--replicas N] [--port P]
  --replicas N   trellis serve processes behind the balancer (default 3, at most ${MAX_REPLICAS})
  --port P       the balancer's port on 127.0.0.1 (default: a free port)
TRELLIS_* settings in the environment (TRELLIS_AUTH_FILE, TRELLIS_LOG_LEVEL, …) apply to every
replica, except TRELLIS_METADATA and TRELLIS_STORAGE: the set's own database and bucket.`;
/** Variables a replica must not take from the environment: the set's own, and the tests'. */
const SET_OWN = /^TRELLIS_(METADATA|STORAGE|TEST_.*)$/;

interface Options {
  replicas: number;
  port: number | undefined;
}

function usageError(message: string): never {
  console.error(`${message}\n${USAGE}`);
  process.exit(2);
}

function parseOptions(argv: string[]): Options {
  let values: { replicas?: string; port?: string; help?: boolean };
  try {
    ({ values } = parseArgs({ args: argv, options: { replicas: { type: 'string' }, port: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    usageError((err as Error).message);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const replicas = Number(values.replicas ?? 3);
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > MAX_REPLICAS) usageError(`--replicas must be a whole number from 1 to ${MAX_REPLICAS}, not ${values.replicas}`);
  const port = values.port === undefined ? undefined : Number(values.port);
  if (port !== undefined && (!Number.isInteger(port) || port < 1 || port > 65535)) usageError(`--port must be a port number, not ${values.port}`);
  return { replicas, port };
}

async function portIsFree(port: number): Promise<boolean> {
  const probe = createServer();
  return new Promise((resolve) => {
    probe.once('error', () => resolve(false));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(true)));
  });
}

/** The user's TRELLIS_* settings, which win over the set's defaults. */
function userSettings(): Record<string, string> {
  const given = Object.entries(process.env).filter((entry): entry is [string, string] => entry[1] !== undefined);
  return Object.fromEntries(given.filter(([key]) => key.startsWith('TRELLIS_') && !SET_OWN.test(key)));
}

/** `KEY='value'` for a POSIX shell. */
function shellAssignment(key: string, value: string): string {
  return `${key}='${value.replaceAll("'", `'\\''`)}'`;
}

/** What a user needs: the balancer (first line, which the test waits for), each replica, and the CLI's settings. */
function readyText(set: ReplicaSet, cluster: PostgresCluster, cliData: string): string {
  const database = new URL(set.env.TRELLIS_METADATA!);
  const storage = new URL(set.env.TRELLIS_STORAGE!);
  const pgVersion = basename(dirname(postgresBinDir() ?? ''));
  const cliEnv = { ...Object.fromEntries(Object.entries(set.env).filter(([key]) => key.startsWith('AWS_'))),
    TRELLIS_METADATA: set.env.TRELLIS_METADATA!, TRELLIS_STORAGE: set.env.TRELLIS_STORAGE!, TRELLIS_DATA: cliData };
  return [
    `trellis HA set ready: ${set.url} (${set.replicas.length} replicas, PostgreSQL ${pgVersion} on ${database.host}, bucket ${storage.host}${storage.pathname} on versitygw at ${storage.searchParams.get('endpoint')})`,
    ...set.replicas.map((replica) => `  replica ${replica.index}: ${replica.url}`),
    `  files: ${dirname(set.replicas[0]!.dataDir)} (replicas, nginx), ${cluster.dir} (PostgreSQL)`,
    `Push through the balancer, e.g.: oras push --plain-http ${set.host}/demo:v1 file.txt`,
    'To run trellis fsck (or gc, reindex) on the set, from the repository:',
    `  export ${Object.entries(cliEnv).map(([key, value]) => shellAssignment(key, value)).join(' ')}`,
    '  npx trellis fsck',
    'Ctrl-C (SIGINT) or SIGTERM stops everything and removes these files.',
  ].join('\n');
}

/** Reports on stderr a replica that ends before a stop was asked for; the balancer skips it from then on. */
function reportReplicaDeaths(set: ReplicaSet, stopping: () => boolean): void {
  for (const replica of set.replicas) {
    // 'close' rather than 'exit': the output it printed last has been read by then.
    replica.child?.once('close', (code, signal) => {
      if (stopping()) return;
      const last = replica.output.trimEnd().split('\n').slice(-20).join('\n');
      console.error(`replica ${replica.index} (${replica.url}) exited unexpectedly (${signal ?? `exit code ${code}`}); it is not restarted, nginx sends its requests to the others. Its last output:\n${last}`);
    });
  }
}

/** Resolves with the first SIGINT or SIGTERM; later ones only say the set is stopping. */
function stopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let received = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (received) return console.error(`${signal}: still stopping`);
      received = true;
      resolve(signal);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  // Always a cluster of its own (never the test runner's), so that stopping the set stops all of it.
  delete process.env.TRELLIS_TEST_POSTGRES_URL;
  const missing = replicasMissing();
  if (missing) {
    console.error(`cannot start the HA set: ${missing}`);
    process.exit(2);
  }
  if (options.port !== undefined && !(await portIsFree(options.port))) {
    console.error(`cannot start the HA set: 127.0.0.1:${options.port} is in use`);
    process.exit(1);
  }
  // Listened for from the start: a signal during start-up stops the set once it is up.
  let stopping = false;
  const signal = stopSignal().then((received) => {
    stopping = true;
    return received;
  });

  const cluster = await startPostgresCluster();
  process.env.TRELLIS_TEST_POSTGRES_URL = cluster.url; // launchReplicas creates its database there
  let set: ReplicaSet;
  try {
    // A deployment's index.json flush delay, not the tests' quicker one.
    set = await launchReplicas({ count: options.replicas, balancerPort: options.port, env: { TRELLIS_INDEX_FLUSH_MIN_MS: '50', ...userSettings() } });
  } catch (err) {
    cluster.stop();
    console.error(`cannot start the HA set: ${(err as Error).message}`);
    process.exit(1);
  }
  try {
    // fsck, gc and reindex want an existing --data; on PostgreSQL and S3 they keep nothing in it.
    const cliData = join(dirname(set.replicas[0]!.dataDir), 'cli');
    await mkdir(cliData);
    reportReplicaDeaths(set, () => stopping);
    if (!stopping) console.log(readyText(set, cluster, cliData));
    console.log(`${await signal}: stopping the HA set`);
  } finally {
    stopping = true;
    await set.stop();
    cluster.stop();
  }
  console.log('stopped; its files are removed');
  process.exit(0);
}

await main().catch((err: unknown) => {
  console.error(`ha-local failed: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
