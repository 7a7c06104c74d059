// Runs in a worker thread: copies the SQLite write-ahead log into the database file on a second
// connection. A checkpoint fsyncs; done inside a commit on the main thread (SQLite's default) it
// stalls every request behind it, and was measured to halve manifest push throughput.
import { existsSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { parentPort, workerData } from 'node:worker_threads';

const { path, intervalMs } = workerData as { path: string; intervalMs: number };
// The database may be gone already (a short-lived store in a test, a rebuild); never create one.
let db: DatabaseSync | undefined;
try {
  if (existsSync(path)) db = new DatabaseSync(path);
} catch {
  db = undefined;
}
const checkpoint = db?.prepare('PRAGMA wal_checkpoint(PASSIVE)');
db?.exec('PRAGMA busy_timeout = 1000');

function run(): void {
  try {
    checkpoint?.get();
  } catch {
    // busy or closing: the next round retries, and the main connection checkpoints past a bound
  }
}

const timer = setInterval(run, intervalMs);
parentPort?.on('message', (message) => {
  if (message !== 'stop') return;
  clearInterval(timer);
  run();
  try {
    db?.close();
  } catch {
    // already closed
  }
  parentPort?.close();
});
