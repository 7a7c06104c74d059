// Runs in a worker thread: copies the SQLite write-ahead log into the database file on a second
// connection. A checkpoint fsyncs; done inside a commit on the main thread (SQLite's default) it
// stalls every request behind it, and was measured to halve manifest push throughput.
//
// This file must stay plain JavaScript (no type syntax): sqlite.ts starts it from its source text,
// so the worker needs no TypeScript stripper, which would double its memory (35 MiB against 17).
import { existsSync } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';
import { parentPort, workerData } from 'node:worker_threads';

const { path, intervalMs } = workerData;
// The database may be gone already (a short-lived store in a test, a rebuild); never create one.
function open() {
  try {
    return existsSync(path) ? new DatabaseSync(path) : undefined;
  } catch {
    return undefined;
  }
}
const db = open();
const checkpoint = db?.prepare('PRAGMA wal_checkpoint(PASSIVE)');
db?.exec('PRAGMA busy_timeout = 1000');

function run() {
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
