// Which metadata index owns the storage. One storage (a bucket, or a folder) is indexed by one
// SQLite index, or by replicas that share one PostgreSQL database. Two SQLite indexes over one
// bucket would each rewrite index.json from their own journal, and each remove blobs only the
// other knows are in use: acknowledged pushes would be lost. The data directory's lock cannot see
// this, since each process has a data directory of its own; so the claim is an object in the
// storage itself, naming the index that holds it and refreshed while it runs. A claim left
// unrefreshed for `staleMs`, or released by a clean stop, is free to take. Replicas on two
// PostgreSQL databases are two indexes as well: the id is the database's, not the engine's.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { StorageDriver } from '../storage/index.ts';
import { TRELLIS_FOLDER } from '../layout/paths.ts';
import { DataDirectoryBusy } from '../metadata/directory-lock.ts';

const CLAIM_KEY = `${TRELLIS_FOLDER}/index-claim.json`;
const MAX_CLAIM_BYTES = 64 * 1024;

export interface ClaimTiming {
  /** How often a holder refreshes its claim. */
  heartbeatMs: number;
  /** A claim not refreshed for this long belongs to a process that is gone. */
  staleMs: number;
  /** After taking a claim from someone else, how long to wait before reading it back (two takers at once: the later wins). */
  settleMs: number;
}

export const CLAIM_TIMING: ClaimTiming = { heartbeatMs: 30_000, staleMs: 120_000, settleMs: 1_000 };

interface Claim {
  /** This storage's id, made with its first claim and kept by every later one; the index records it. */
  storage?: string;
  /** The index's id (MetadataStore.indexId): `sqlite:…`, or `postgres:…` for every replica of one database. */
  index: string;
  host: string;
  dataDir: string;
  pid: number;
  refreshed: string;
  /** How often its holder refreshes it: a taker watches that long before calling it stale. */
  heartbeatMs?: number;
  released?: boolean;
}

/** Another index holds the storage: as with a data directory in use, stop that one first. */
export class StorageClaimed extends DataDirectoryBusy {}

/** The metadata index was built over another storage than the one it is opened with. */
export class IndexOfAnotherStorage extends StorageClaimed {}

/** Replicas on PostgreSQL before index ids wrote just this: taken as any database's own. */
const POSTGRES_WITHOUT_ID = 'postgres';

function isPostgres(index: string): boolean {
  return index === POSTGRES_WITHOUT_ID || index.startsWith('postgres:');
}

function describe(claim: Claim): string {
  const what = isPostgres(claim.index) ? 'Trellis replicas on a PostgreSQL database' : 'another Trellis with its own SQLite index';
  return `${what} (index ${claim.index}, last refreshed by pid ${claim.pid} on ${claim.host}, data directory ${claim.dataDir}, at ${claim.refreshed})`;
}

export class StorageClaim {
  private readonly driver: StorageDriver;
  private readonly index: string;
  private readonly dataDir: string;
  private readonly timing: ClaimTiming;
  private heartbeat: NodeJS.Timeout | undefined;
  private refreshing: Promise<void> = Promise.resolve();
  /** The storage's id (Claim.storage): the metadata index records which storage it was built over. */
  storageId: string = randomUUID();

  private constructor(driver: StorageDriver, index: string, dataDir: string, timing: ClaimTiming) {
    this.driver = driver;
    this.index = index;
    this.dataDir = dataDir;
    this.timing = timing;
  }

  /**
   * Takes the storage for this index, or throws StorageClaimed naming who holds it. While held it
   * is refreshed; `onLost` is called if another index took it meanwhile (this process was stopped
   * for longer than `staleMs`): the process must stop writing.
   */
  static async take(driver: StorageDriver, options: { index: string; dataDir: string; timing?: ClaimTiming; onLost: (reason: string) => void }): Promise<StorageClaim> {
    const claim = new StorageClaim(driver, options.index, options.dataDir, options.timing ?? CLAIM_TIMING);
    await claim.acquire();
    claim.heartbeat = setInterval(() => {
      claim.refreshing = claim.refresh().catch((err: unknown) => {
        if (err instanceof StorageClaimed) {
          claim.stopHeartbeat();
          options.onLost(err.message);
        }
        // Storage unreachable for now: the next heartbeat tries again.
      });
    }, claim.timing.heartbeatMs).unref();
    return claim;
  }

  private async read(): Promise<Claim | undefined> {
    const bytes = await this.driver.readFile(CLAIM_KEY, MAX_CLAIM_BYTES);
    if (!bytes) return undefined;
    try {
      return JSON.parse(bytes.toString('utf8')) as Claim;
    } catch {
      return undefined; // not ours to read: written over below
    }
  }

  private ours(released = false): string {
    const claim: Claim = { storage: this.storageId, index: this.index, host: hostname(), dataDir: this.dataDir, pid: process.pid, refreshed: new Date().toISOString(), heartbeatMs: this.timing.heartbeatMs };
    if (released) claim.released = true;
    return `${JSON.stringify(claim, null, 2)}\n`;
  }

  /** The claim is this index's: the same id, or a PostgreSQL claim written before ids existed. */
  private isOurs(claim: Claim): boolean {
    return claim.index === this.index || (claim.index === POSTGRES_WITHOUT_ID && isPostgres(this.index));
  }

  private isLive(claim: Claim): boolean {
    return !claim.released && Date.now() - Date.parse(claim.refreshed) < this.timing.staleMs;
  }

  /**
   * Old by its time, but its holder's clock may lag ours: a holder still running rewrites its
   * claim within its heartbeat, whatever time it writes. Returns the claim if it changed meanwhile.
   */
  private async rewrittenWithinHeartbeat(claim: Claim): Promise<Claim | undefined> {
    const heartbeatMs = Math.min(claim.heartbeatMs ?? this.timing.heartbeatMs, this.timing.staleMs);
    await new Promise((resolve) => setTimeout(resolve, heartbeatMs + this.timing.settleMs));
    const now = await this.read();
    return now && JSON.stringify(now) !== JSON.stringify(claim) ? now : undefined;
  }

  private refused(holder: Claim): StorageClaimed {
    return new StorageClaimed(`the storage ${this.driver.description} is in use by ${describe(holder)}. One storage takes one SQLite index, `
      + `or replicas that share one PostgreSQL database (TRELLIS_METADATA); stop the other first (a stopped one frees it at once, a vanished one after ${Math.round(this.timing.staleMs / 1000)} s)`);
  }

  private async acquire(): Promise<void> {
    const current = await this.read();
    // Claims written before storage ids existed have none: this one names the storage from now on.
    if (current?.storage) this.storageId = current.storage;
    if (!current) {
      // Atomic where the storage can: of two takers of a new storage, one writes and one reads.
      if (await this.driver.writeFile(CLAIM_KEY, this.ours(), { ifAbsent: true })) return;
      const winner = await this.read();
      if (winner && !this.isOurs(winner)) throw this.refused(winner);
      if (winner?.storage) this.storageId = winner.storage;
      return;
    }
    if (this.isOurs(current)) {
      await this.driver.writeFile(CLAIM_KEY, this.ours());
      return;
    }
    if (this.isLive(current)) throw this.refused(current);
    if (!current.released) {
      const rewritten = await this.rewrittenWithinHeartbeat(current);
      if (rewritten && !this.isOurs(rewritten)) throw this.refused(rewritten);
    }
    // Free to take; another taker may be doing the same right now, and the later write wins.
    await this.driver.writeFile(CLAIM_KEY, this.ours());
    await new Promise((resolve) => setTimeout(resolve, this.timing.settleMs));
    const after = await this.read();
    if (after && !this.isOurs(after)) throw this.refused(after);
  }

  private async refresh(): Promise<void> {
    const current = await this.read();
    // Taken by another index, even one since gone: it wrote what this index does not know of.
    if (current && !this.isOurs(current)) throw this.refused(current);
    await this.driver.writeFile(CLAIM_KEY, this.ours());
  }

  private stopHeartbeat(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
  }

  /**
   * Frees the storage for the next index at once (a clean stop). Replicas on PostgreSQL leave it
   * to go stale instead: the others are most likely still running.
   */
  async release(): Promise<void> {
    this.stopHeartbeat();
    await this.refreshing;
    if (isPostgres(this.index)) return;
    const current = await this.read().catch(() => undefined);
    if (current && this.isOurs(current) && current.pid === process.pid) await this.driver.writeFile(CLAIM_KEY, this.ours(true)).catch(() => undefined);
  }
}
