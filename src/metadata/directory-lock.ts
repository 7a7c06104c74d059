// One process at a time writes a data directory. The lock is an fcntl (POSIX record) lock that
// SQLite takes on `_trellis/lock` and, in exclusive locking mode, holds until the connection
// closes: the kernel drops it when the process ends in any way (exit, crash, kill -9, OOM), so it
// can never be stale, and SQLite also refuses a second holder inside the same process. It lives
// here because it is SQL (node:sqlite), the one way Node reaches fcntl locks without a native addon.
import { DatabaseSync } from 'node:sqlite';
import { accessSync, constants, readFileSync, rmSync, writeFileSync } from 'node:fs';

export class DataDirectoryBusy extends Error {}

/**
 * The same for a PostgreSQL database that replicas with data directories of their own share: it is
 * in use in a way that excludes what was asked (src/metadata/postgres-presence.ts).
 */
export class MetadataInUse extends DataDirectoryBusy {}

export interface DirectoryLock {
  /** Lets the next process in; the lock also ends with this process, whatever way it ends. */
  release(): void;
}

interface Owner {
  pid: number;
  command: string;
  since: string;
}

function lockPath(trellisFolder: string): string {
  return `${trellisFolder}/lock`;
}

/** Who holds the lock, for the refusal message (written by the holder after it got the lock). */
function ownerPath(trellisFolder: string): string {
  return `${trellisFolder}/lock.owner.json`;
}

function describeOwner(trellisFolder: string): string {
  try {
    const owner = JSON.parse(readFileSync(ownerPath(trellisFolder), 'utf8')) as Owner;
    return `\`${owner.command}\` (pid ${owner.pid}, since ${owner.since})`;
  } catch {
    return 'another trellis process';
  }
}

/**
 * Why this process cannot write the lock, as the file system says it (EROFS on a read-only
 * mount, EACCES for a folder another user owns): SQLite only says "attempt to write a readonly
 * database" or "unable to open database file", which reads like a bug in Trellis.
 */
function unwritable(trellisFolder: string): Error | undefined {
  for (const [path, mode] of [[trellisFolder, constants.W_OK | constants.X_OK], [lockPath(trellisFolder), constants.R_OK | constants.W_OK]] as const) {
    try {
      accessSync(path, mode);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return err as Error;
    }
  }
  return undefined;
}

/**
 * Takes the data directory's lock (its `_trellis/` folder must exist) or throws DataDirectoryBusy
 * at once, naming the holder.
 */
export function lockDataDirectory(dataDir: string, trellisFolder: string, command: string): DirectoryLock {
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(lockPath(trellisFolder));
  } catch (err) {
    throw unwritable(trellisFolder) ?? err;
  }
  try {
    db.exec('PRAGMA busy_timeout = 0');
    // EXCLUSIVE locking mode keeps the lock of the first write transaction until close.
    db.exec('PRAGMA locking_mode = EXCLUSIVE');
    db.exec('PRAGMA journal_mode = MEMORY');
    db.exec('BEGIN EXCLUSIVE');
    db.exec('CREATE TABLE IF NOT EXISTS held (since TEXT NOT NULL)');
    db.exec('DELETE FROM held');
    db.prepare('INSERT INTO held (since) VALUES (?)').run(new Date().toISOString());
    db.exec('COMMIT');
  } catch (err) {
    db.close();
    if (/locked|busy/i.test((err as Error).message)) {
      throw new DataDirectoryBusy(`${dataDir} is in use by ${describeOwner(trellisFolder)}; stop it first (one trellis process per data directory)`);
    }
    throw unwritable(trellisFolder) ?? err;
  }
  const owner: Owner = { pid: process.pid, command: command.slice(0, 200), since: new Date().toISOString() };
  writeFileSync(ownerPath(trellisFolder), JSON.stringify(owner));
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      rmSync(ownerPath(trellisFolder), { force: true });
      db.close();
    },
  };
}
