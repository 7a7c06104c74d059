// Locks that hold across every process on one PostgreSQL database: session-level advisory locks,
// all taken on one connection per process. A lock is taken with pg_try_advisory_lock and, while
// another process holds it, tried again after a short, growing pause, so that no connection ever
// sits blocked in the server and one connection serves all of a process's locks. The server
// drops a dead process's locks with its connection (kill -9 included), so none is left stale.
// Inside the process a KeyedLock queues holders first: the database sees one holder per key.
import { createHash } from 'node:crypto';
import pg from 'pg';
import { KeyedLock, type Locks } from '../storage/mutex.ts';

/** Longest wait for a lock another process holds before the work fails (a lost holder, a bug). */
const WAIT_LIMIT_MS = 120_000;
const FIRST_PAUSE_MS = 2;
const LONGEST_PAUSE_MS = 50;

export class LockTimeout extends Error {}

/** The advisory lock id of a key: 64 bits of its SHA-256, as PostgreSQL's signed bigint. */
export function advisoryLockId(key: string): string {
  return createHash('sha256').update(`trellis:${key}`).digest().readBigInt64BE(0).toString();
}

/** The server ended the session, or the socket went: the connection is gone, not the statement wrong. */
function isConnectionLoss(err: unknown): boolean {
  const code = (err as { code?: string }).code ?? '';
  return code.startsWith('57P') || code.startsWith('08') || /Connection terminated|ECONNRESET|EPIPE|not queryable/i.test((err as Error).message ?? '');
}

export class AdvisoryLocks implements Locks {
  readonly shared = true;
  private readonly local = new KeyedLock();
  private readonly url: string;
  private client: Promise<pg.Client> | undefined;
  /** The last statement queued on the connection. */
  private statements: Promise<unknown> = Promise.resolve();
  private closed = false;
  /** Advisory lock ids this process holds at the server now. */
  private readonly held = new Set<string>();
  private readonly lostListeners: ((reason: string) => void)[] = [];

  constructor(url: string) {
    this.url = url;
  }

  run<T>(key: string, work: () => Promise<T>): Promise<T> {
    return this.local.run(key, () => this.holding(key, work));
  }

  whenLost(listener: (reason: string) => void): void {
    this.lostListeners.push(listener);
  }

  async tryRun<T>(key: string, work: () => Promise<T>): Promise<{ value: T } | undefined> {
    return this.local.tryRun(key, async () => {
      const id = advisoryLockId(key);
      if (!(await this.tryLock(id))) return undefined;
      return { value: await this.releasing(id, work) };
    }).then((outcome) => outcome?.value);
  }

  private async holding<T>(key: string, work: () => Promise<T>): Promise<T> {
    const id = advisoryLockId(key);
    const deadline = Date.now() + WAIT_LIMIT_MS;
    for (let pause = FIRST_PAUSE_MS; !(await this.tryLock(id)); pause = Math.min(LONGEST_PAUSE_MS, pause * 2)) {
      if (Date.now() > deadline) throw new LockTimeout(`waited over ${WAIT_LIMIT_MS / 1000} s for the lock on ${key}, held by another process`);
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
    return this.releasing(id, work);
  }

  private async releasing<T>(id: string, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } finally {
      // Waited for: a client answered here may send its next request to another replica at once,
      // which must find the key free (an upload's next PATCH would be refused as busy).
      // A lost connection has already dropped every lock it held; nothing is left to release.
      await this.query('SELECT pg_advisory_unlock($1::bigint)', [id]).catch(() => undefined);
      this.held.delete(id);
    }
  }

  private async tryLock(id: string): Promise<boolean> {
    const { rows } = await this.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS locked', [id]);
    if (rows[0]!.locked) this.held.add(id);
    return rows[0]!.locked;
  }

  /** The lock connection ended: any lock held on it is gone, whatever the work under it does next. */
  private connectionLost(reason: string): void {
    if (this.closed || this.held.size === 0) return;
    const count = this.held.size;
    this.held.clear();
    this.abandon(`${count} shared lock(s) lost with their PostgreSQL connection: ${reason}`);
  }

  /** Tells the process to stop working under these locks (also when its presence is lost). */
  abandon(reason: string): void {
    if (this.closed) return;
    for (const listener of this.lostListeners) listener(reason);
  }

  /**
   * Runs a statement on the lock connection after the ones already sent (pg wants one statement
   * at a time per client); once more on a new connection if the connection was lost.
   */
  private query<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<pg.QueryResult<R>> {
    const next = this.statements.then(() => this.send<R>(text, values));
    this.statements = next.catch(() => undefined);
    return next;
  }

  private async send<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<pg.QueryResult<R>> {
    const opened = this.connection();
    try {
      return await (await opened).query<R>(text, values);
    } catch (err) {
      if (this.client === opened && !isConnectionLoss(err)) throw err;
      if (this.client === opened) this.client = undefined;
      return (await this.connection()).query<R>(text, values);
    }
  }

  /** The process's lock connection, opened on first use and again after it was lost. */
  private connection(): Promise<pg.Client> {
    if (this.closed) return Promise.reject(new Error('the metadata store is closed'));
    this.client ??= (async () => {
      const client = new pg.Client({ connectionString: this.url, keepAlive: true, application_name: 'trellis locks' });
      const forget = (err?: Error) => {
        if (this.client === opened) this.client = undefined;
        this.connectionLost(err?.message ?? 'the connection ended');
      };
      client.on('error', forget);
      client.on('end', () => forget());
      await client.connect();
      return client;
    })();
    const opened = this.client;
    opened.catch(() => {
      if (this.client === opened) this.client = undefined;
    });
    return opened;
  }

  async close(): Promise<void> {
    this.closed = true;
    const client = await this.client?.catch(() => undefined);
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }
}
