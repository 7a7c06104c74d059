// Which Trellis processes use a PostgreSQL database. Replicas on object storage each have a data
// directory of their own, so the directory lock that keeps `trellis reindex` away from a running
// server on SQLite does not reach them. Here every process that opens the store holds one shared
// advisory lock, on a connection of its own, for as long as the store is open. `trellis reindex`,
// which drops every table and builds them again, takes that lock exclusively: it refuses while
// any replica or command uses the database, and none can open the database while it runs.
import pg from 'pg';
import { advisoryLockId } from './postgres-locks.ts';
import { MetadataInUse } from './directory-lock.ts';

type Mode = 'shared' | 'exclusive';

const PRESENCE_LOCK = advisoryLockId('presence');
/** After a lost connection, the first attempt to take the lock again, then the pause between them. */
const RETAKE_FIRST_MS = 250;
const RETAKE_PAUSE_MS = 1000;

/** Databases this process holds exclusively: its own opens during the reindex need no shared hold. */
const heldExclusively = new Set<string>();

function inUse(mode: Mode): MetadataInUse {
  return new MetadataInUse(mode === 'shared'
    ? 'a `trellis reindex` is rebuilding this PostgreSQL database; start again once it has ended'
    : 'other Trellis processes (replicas serving it, or commands) use this PostgreSQL database; stop them all before `trellis reindex`');
}

export class Presence {
  private client: pg.Client | undefined;
  private closed = false;
  private readonly url: string;
  private readonly mode: Mode;
  private readonly onLost: (reason: string) => void;

  private constructor(url: string, mode: Mode, onLost: (reason: string) => void) {
    this.url = url;
    this.mode = mode;
    this.onLost = onLost;
  }

  /**
   * Marks this process as a user of the database until `release`, or throws MetadataInUse while a
   * reindex runs. `onLost` is called if the mark cannot be taken again after its connection ended
   * (a reindex took the database meanwhile): the process must stop using the database.
   */
  static async share(url: string, onLost: (reason: string) => void): Promise<Presence | undefined> {
    if (heldExclusively.has(url)) return undefined;
    const presence = new Presence(url, 'shared', onLost);
    await presence.take();
    return presence;
  }

  /** Holds the database for this process alone until `release`, or throws MetadataInUse. */
  static async exclusive(url: string, onLost: (reason: string) => void): Promise<Presence> {
    const presence = new Presence(url, 'exclusive', onLost);
    await presence.take();
    heldExclusively.add(url);
    return presence;
  }

  private async take(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url, keepAlive: true, application_name: 'trellis presence' });
    client.on('error', () => undefined);
    await client.connect();
    try {
      const take = this.mode === 'shared' ? 'pg_try_advisory_lock_shared' : 'pg_try_advisory_lock';
      const { rows } = await client.query<{ taken: boolean }>(`SELECT ${take}($1::bigint) AS taken`, [PRESENCE_LOCK]);
      if (!rows[0]!.taken) throw inUse(this.mode);
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err;
    }
    if (this.closed) {
      await client.end().catch(() => undefined); // released while this retake was under way
      return;
    }
    // The server dropped the lock with the connection: take it again on a new one.
    client.once('end', () => {
      if (this.client === client) this.retake(RETAKE_FIRST_MS);
    });
    this.client = client;
  }

  private retake(pauseMs: number): void {
    this.client = undefined;
    if (this.closed) return;
    setTimeout(() => {
      if (this.closed) return;
      this.take().catch((err: unknown) => {
        if (err instanceof MetadataInUse) return this.onLost(`its hold on the database went with a connection, and meanwhile: ${err.message}`);
        this.retake(RETAKE_PAUSE_MS); // the server is unreachable for now
      });
    }, pauseMs).unref();
  }

  async release(): Promise<void> {
    this.closed = true;
    if (this.mode === 'exclusive') heldExclusively.delete(this.url);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => undefined);
  }
}
