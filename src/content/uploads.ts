// Blob upload sessions. Data goes into a storage writer (a file, or a multipart upload) while a
// running hash follows it; a small sidecar file and the writer's checkpoint after each PATCH let a
// session survive a restart (its hash is then recomputed from the data).
//
// With shared locks (replicas on one PostgreSQL and one bucket) any replica may get the next
// request of a session: each request holds the session's lock and reads the writer's state
// afresh from storage. The running hash is kept only where it followed every byte (its size is
// the stored size); otherwise the digest is recomputed from storage once, at completion. That
// beats a resumable hash saved after each PATCH: a WebAssembly SHA-256 whose state can be saved
// (hash-wasm) hashed 38 MiB/s here against 310 MiB/s for node:crypto, on every byte of every upload.
import { randomUUID, type Hash } from 'node:crypto';
import { once } from 'node:events';
import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { ObjectWriter, StorageDriver } from '../storage/driver.ts';
import { newHash, type DigestAlgorithm } from '../oci/digest.ts';
import { ContentError } from './errors.ts';
import { UPLOADS_FOLDER } from '../layout/paths.ts';
import { KeyedLock, type Locks } from '../storage/mutex.ts';

const SESSION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface UploadSession {
  id: string;
  repository: string;
  writer: ObjectWriter;
  size: number;
  algorithm: DigestAlgorithm;
  /** Hash of the bytes so far; null after a restart, when it is recomputed on demand. */
  hash: Hash | null;
  touchedAt: number;
  busy: boolean;
  /** Who opened it (identity or address): the per-client cap counts by this. */
  owner: string;
  /** A single-request upload (`POST ?digest=`): lives only as long as its request, never capped. */
  transient: boolean;
  /** Whether its sidecar exists (transient sessions never write one). */
  persisted: boolean;
}

export interface UploadLimits {
  /** Sessions idle for longer than this are removed. */
  timeoutMs: number;
  /** Most sessions one client (identity or address) may hold open; more are refused with 429. */
  maxSessions: number;
  /** Most sessions open at once across all clients (a memory and disk ceiling). */
  maxSessionsTotal: number;
  /** Largest blob accepted, in bytes; 0 means no limit. */
  maxBlobBytes: number;
  /** A request body that sends nothing for this long is aborted; 0 turns the check off. */
  bodyIdleTimeoutMs: number;
}

/**
 * A timer that fires once `ms` pass without a `rearm`; 0 turns it off. It is re-armed for every
 * chunk of a body (1,600 times for 100 MiB), so one timer is refreshed rather than a new one made.
 */
function idleTimer(ms: number, onIdle: (ms: number) => void): { rearm(): void; stop(): void } {
  if (ms <= 0) return { rearm: () => undefined, stop: () => undefined };
  const timer = setTimeout(() => onIdle(ms), ms);
  return { rearm: () => void timer.refresh(), stop: () => clearTimeout(timer) };
}

/**
 * Hands each chunk of `body` to `take` as it arrives ('data' events: unlike an async iterator,
 * whose read() concatenates whatever is buffered, no chunk is copied). When `take` answers a
 * promise the body is paused until it settles; a rejection ends the reading with that error.
 * `done` settles when the body ends, fails or closes early, or when `stop` is called.
 */
function readBody(body: Readable, take: (chunk: Buffer) => Promise<unknown> | undefined): { done: Promise<void>; stop(err: Error): void } {
  let settled = false;
  let settle: (err?: Error) => void = () => {};
  const done = new Promise<void>((resolve, reject) => {
    settle = (err) => {
      if (settled) return;
      settled = true;
      body.off('data', onData);
      if (err) {
        body.pause();
        reject(err);
      } else {
        resolve();
      }
    };
  });
  const onData = (chunk: Buffer) => {
    const wait = take(chunk);
    if (!wait) return;
    body.pause();
    wait.then(() => settled || body.resume(), settle);
  };
  // The error and close listeners stay: an error after the end must not go unhandled.
  body.on('data', onData).on('end', () => settle()).on('error', settle)
    .on('close', () => settle(new Error('the request body ended before it was complete')));
  body.resume(); // a 'data' listener alone does not restart a body paused before
  return { done, stop: settle };
}

/** Thrown when a request body stalled. */
function bodyStalled(idleMs: number): ContentError {
  return new ContentError('stalled', 'BLOB_UPLOAD_INVALID', `request body sent nothing for ${idleMs} ms; the chunk was discarded`);
}

export class Uploads {
  private readonly sessions = new Map<string, UploadSession>();
  /** Open (non-transient) sessions per owner. */
  private readonly held = new Map<string, number>();
  private readonly driver: StorageDriver;
  private readonly now: () => number;
  private readonly locks: Locks;
  readonly limits: UploadLimits;

  /**
   * `now` is the clock idle times are measured by (tests pass their own); `locks` are the
   * registry's: shared ones mean other processes serve the same sessions.
   */
  constructor(driver: StorageDriver, limits: UploadLimits, now: () => number = Date.now, locks: Locks = new KeyedLock()) {
    this.driver = driver;
    this.limits = limits;
    this.now = now;
    this.locks = locks;
  }

  /**
   * Runs one request's work on a session, which is locked for the whole request: another request
   * for it (here or, with shared locks, on another replica) is refused as busy. A PUT or DELETE
   * must never run while a PATCH is still writing: the PATCH's bytes would land in the file the PUT
   * just committed as a blob (and that other repositories then link to). With shared locks the
   * session is also read afresh from storage.
   */
  async using<T>(repository: string, id: string, work: (session: UploadSession) => Promise<T>): Promise<T> {
    if (!SESSION_ID.test(id)) throw unknownSession(repository, id);
    const outcome = await this.locks.tryRun(`upload:${id}`, async () => work(await this.get(repository, id)));
    if (!outcome) throw new ContentError('busy', 'RANGE_INVALID', 'another request is writing to this upload');
    return outcome.value;
  }

  /** Upload sessions open now. */
  get openSessions(): number {
    return this.sessions.size;
  }

  /** Sessions `owner` holds open now. */
  heldBy(owner: string): number {
    return this.held.get(owner) ?? 0;
  }

  /**
   * Opens a session for `owner`. A transient one (the whole blob is in this request) is never
   * refused for the caps: it ends with its request, so it cannot pile up. Others count against the
   * owner's cap only, so one client holding many sessions blocks nobody else.
   */
  async start(repository: string, algorithm: DigestAlgorithm, owner: string, transient = false): Promise<UploadSession> {
    if (!transient) {
      const { maxSessions, maxSessionsTotal } = this.limits;
      if (this.heldBy(owner) >= maxSessions || this.sessions.size >= maxSessionsTotal) await this.sweep();
      if (this.heldBy(owner) >= maxSessions) {
        throw new ContentError('too-many', 'TOOMANYREQUESTS', `you hold ${this.heldBy(owner)} open upload sessions (limit ${maxSessions}); finish or cancel some, or retry later`, undefined, { retryAfterSeconds: 10 });
      }
      if (this.sessions.size >= maxSessionsTotal) {
        throw new ContentError('too-many', 'TOOMANYREQUESTS', `too many upload sessions open (limit ${maxSessionsTotal}); retry later`, undefined, { retryAfterSeconds: 10 });
      }
    }
    const id = randomUUID();
    const session: UploadSession = {
      id, repository, writer: await this.driver.createWriter(id), size: 0, algorithm, hash: newHash(algorithm), touchedAt: this.now(), busy: false,
      owner, transient, persisted: false,
    };
    // Counted before the next await, so concurrent starts cannot overshoot the cap.
    this.track(session);
    // Another replica must find the session at once. A single process keeps an empty session in
    // memory until its first PATCH: a blob pushed with POST + PUT then writes no sidecar at all,
    // and a restart in between costs the client a new POST, never a byte it was told was stored.
    if (this.locks.shared) await this.persist(session);
    return session;
  }

  private track(session: UploadSession): void {
    this.sessions.set(session.id, session);
    if (!session.transient) this.held.set(session.owner, this.heldBy(session.owner) + 1);
  }

  private untrack(session: UploadSession): void {
    if (this.sessions.get(session.id) !== session) return;
    this.sessions.delete(session.id);
    if (session.transient) return;
    const count = this.heldBy(session.owner) - 1;
    if (count > 0) this.held.set(session.owner, count);
    else this.held.delete(session.owner);
  }

  /** Finds a session of this repository, recovering it from disk after a restart. */
  async get(repository: string, id: string): Promise<UploadSession> {
    if (!SESSION_ID.test(id)) throw unknownSession(repository, id);
    let session = this.sessions.get(id);
    if (session && this.locks.shared && !session.transient) session = await this.refresh(session);
    session ??= await this.recover(id);
    if (!session || session.repository !== repository || session.transient) throw unknownSession(repository, id);
    session.touchedAt = this.now();
    return session;
  }

  /** A session another process (or an earlier run) started, from its sidecar and writer state. */
  private async recover(id: string): Promise<UploadSession | undefined> {
    const meta = await this.driver.readFile(sidecarKey(id), 4096).catch(() => undefined);
    const writer = meta && (await this.driver.resumeWriter(id));
    if (!meta || !writer) return undefined;
    const saved = JSON.parse(meta.toString('utf8')) as { repository: string; algorithm: DigestAlgorithm; owner?: string };
    const session: UploadSession = {
      id, repository: saved.repository, writer, size: writer.size, algorithm: saved.algorithm, hash: null,
      touchedAt: this.now(), busy: false, owner: saved.owner ?? 'unknown', transient: false, persisted: true,
    };
    this.track(session);
    return session;
  }

  /**
   * The session as storage has it now (another replica may have appended since this one saw it);
   * the running hash survives only when it has seen every stored byte.
   */
  private async refresh(session: UploadSession): Promise<UploadSession | undefined> {
    const writer = await this.driver.resumeWriter(session.id);
    if (!writer) {
      this.untrack(session);
      return undefined;
    }
    if (writer.size !== session.size) session.hash = null;
    session.writer = writer;
    session.size = writer.size;
    return session;
  }

  /**
   * Appends a request body. With `expectedLength` the body must be exactly that long. On any
   * failure the session is left as it was before the call: its size is the last complete offset
   * and the partial chunk is removed. A body that sends nothing for `bodyIdleTimeoutMs` is given
   * up the same way (408), so a stalled client holds neither the session nor disk.
   */
  async append(session: UploadSession, body: Readable, expectedLength?: number): Promise<void> {
    if (session.busy) throw new ContentError('busy', 'RANGE_INVALID', 'another request is writing to this upload', undefined, { uploadedBytes: session.size });
    session.busy = true;
    const before = session.size;
    const hash = session.hash?.copy() ?? null;
    let received = 0;
    let problem: ContentError | undefined;
    // A body chunk is hashed and written, then never touched again: its memory may be handed over.
    const sink = session.writer.append({ handOver: true });
    // Settles once the sink has closed, and so after a destroyed append has undone itself.
    const sinkClosed = finished(sink);
    sinkClosed.catch(() => undefined);
    // Storage that failed to take the bytes (a full disk, an object store refusing a part) is the
    // registry's failure, not the client's: it is not answered as a body that could not be read.
    let storageFailure: Error | undefined;
    sink.once('error', (err) => { storageFailure = err; });
    const reading = readBody(body, (chunk) => {
      idle.rearm();
      received += chunk.length;
      // Excess bytes are read and dropped rather than failing the body: failing it would reset
      // the connection and the client would never see the error answer.
      if (problem) return undefined;
      problem = this.overrun(before, received, expectedLength);
      if (problem) {
        sink.destroy(); // takes back what this append wrote, so the data matches `hash`
        return undefined;
      }
      hash?.update(chunk);
      return sink.write(chunk) ? undefined : Promise.race([once(sink, 'drain'), sinkClosed]);
    });
    // A stalled body is given up, not destroyed: destroying a request closes its socket, and the
    // client would never see the 408 (the answer closes the connection instead).
    const idle = idleTimer(this.limits.bodyIdleTimeoutMs, (ms) => {
      problem ??= bodyStalled(ms);
      reading.stop(problem);
    });
    try {
      await reading.done;
      if (!problem && expectedLength !== undefined && received !== expectedLength) {
        problem = new ContentError('invalid', 'SIZE_INVALID', `body has ${received} bytes but ${expectedLength} were announced`);
      }
      if (problem) throw problem;
      sink.end();
      await sinkClosed;
      session.size = before + received;
      session.hash = hash;
    } catch (err) {
      sink.destroy();
      await sinkClosed.catch(() => undefined);
      if (problem) throw problem;
      if (err instanceof ContentError) throw err;
      if (storageFailure) throw storageFailure;
      throw new ContentError('invalid', 'BLOB_UPLOAD_INVALID', `upload body could not be read: ${(err as Error).message}`);
    } finally {
      idle.stop();
      session.busy = false;
      session.touchedAt = this.now();
    }
  }

  /** Why `received` more bytes after `before` cannot be taken, if they cannot. */
  private overrun(before: number, received: number, expectedLength: number | undefined): ContentError | undefined {
    const limit = this.limits.maxBlobBytes;
    if (expectedLength !== undefined && received > expectedLength) {
      return new ContentError('invalid', 'SIZE_INVALID', `body is longer than the ${expectedLength} bytes announced`);
    }
    if (limit > 0 && before + received > limit) return new ContentError('too-large', 'SIZE_INVALID', `blob exceeds the limit of ${limit} bytes`);
    return undefined;
  }

  /** The digest of everything received, in the requested algorithm. */
  async digest(session: UploadSession, algorithm: DigestAlgorithm): Promise<string> {
    if (session.hash && session.algorithm === algorithm) return `${algorithm}:${session.hash.copy().digest('hex')}`;
    const hash = newHash(algorithm);
    for await (const chunk of session.writer.read()) hash.update(chunk as Buffer);
    return `${algorithm}:${hash.digest('hex')}`;
  }

  rangeHeader(session: UploadSession): Record<string, string> {
    // An empty session has no true inclusive range; "0-0" is what distribution sends and what the
    // conformance suite and clients parse (a following chunk must still start at 0).
    return { Range: `0-${Math.max(session.size - 1, 0)}` };
  }

  /**
   * Makes the session and what a PATCH appended survive a restart: the writer's checkpoint (nothing
   * on a filesystem, the buffered tail on S3) and, the first time, the session's sidecar.
   */
  async persist(session: UploadSession): Promise<void> {
    if (session.transient) return;
    await session.writer.checkpoint();
    if (session.persisted) return;
    try {
      await this.driver.writeFile(sidecarKey(session.id), JSON.stringify({ repository: session.repository, algorithm: session.algorithm, owner: session.owner }));
      session.persisted = true;
    } catch (err) {
      await this.end(session).catch(() => undefined);
      throw err;
    }
  }

  /** Forgets a session. `stored`: its writer was committed into a layout; otherwise its data is discarded. */
  async end(session: UploadSession, stored = false): Promise<void> {
    this.untrack(session);
    if (!stored) await session.writer.cancel();
    if (session.persisted) await this.driver.remove(sidecarKey(session.id));
    session.persisted = false;
  }

  /**
   * Removes sessions idle for longer than the timeout, with their data; answers how many. With
   * shared locks a session idle here may be busy on another replica: it is only forgotten here
   * (sweepDisk removes what storage shows idle), and so is one another replica ended.
   */
  async sweep(now = this.now()): Promise<number> {
    const idle = [...this.sessions.values()].filter((s) => !s.busy && now - s.touchedAt > this.limits.timeoutMs);
    // Forgotten at once (the caps see them gone); their files are removed after.
    for (const session of idle) this.untrack(session);
    if (this.locks.shared) {
      // Only sessions whose sidecar was written: one still starting has none yet.
      const ended = await Promise.all([...this.sessions.values()].map(async (s) => (!s.persisted || (await this.driver.stat(sidecarKey(s.id))) ? undefined : s)));
      for (const session of ended) if (session) this.untrack(session);
      return idle.length;
    }
    await Promise.all(idle.map((session) => this.end(session).catch(() => undefined)));
    return idle.length;
  }

  /**
   * Removes sessions storage shows idle for longer than the timeout (left by a previous run, or by
   * a replica), and sidecars whose writer is gone. A session in use (here, or under its lock
   * elsewhere) is left alone.
   */
  async sweepDisk(now = this.now()): Promise<void> {
    const live = new Set<string>();
    for (const { id, modifiedMs } of await this.driver.listWriters()) {
      live.add(id);
      // Here, a session this process holds is timed by its own use (sweep); shared, by storage.
      const here = this.sessions.get(id);
      if ((here && (here.busy || !this.locks.shared)) || now - modifiedMs <= this.limits.timeoutMs) continue;
      const cancelled = await this.locks.tryRun(`upload:${id}`, async () => {
        await (await this.driver.resumeWriter(id))?.cancel();
        return true;
      });
      if (cancelled) live.delete(id);
    }
    for (const entry of await this.driver.list(UPLOADS_FOLDER)) {
      const id = entry.name.replace(/\.json$/, '');
      if (entry.dir || id === entry.name || live.has(id)) continue;
      const session = this.sessions.get(id);
      if (session) this.untrack(session);
      const info = await this.driver.stat(sidecarKey(id));
      if (info && now - info.modifiedMs > this.limits.timeoutMs) await this.driver.remove(sidecarKey(id));
    }
  }
}

function unknownSession(repository: string, id: string): ContentError {
  return new ContentError('not-found', 'BLOB_UPLOAD_UNKNOWN', `upload ${id} is not known in ${repository}`);
}

function sidecarKey(id: string): string {
  return `${UPLOADS_FOLDER}/${id}.json`;
}
