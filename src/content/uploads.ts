// Blob upload sessions. Data goes into a storage writer (a file, or a multipart upload) while a
// running hash follows it. A session lives in memory until it holds acknowledged data: each
// accepted PATCH checkpoints the writer and (once) writes a small sidecar, which let the session
// survive a restart (its hash is then recomputed from the data).
import { randomUUID, type Hash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ObjectWriter, StorageDriver } from '../storage/driver.ts';
import { newHash, type DigestAlgorithm } from '../oci/digest.ts';
import { OciError } from '../oci/errors.ts';
import { UPLOADS_FOLDER } from '../layout/paths.ts';

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
  /** Whether the sidecar that lets the session survive a restart has been written. */
  persisted: boolean;
}
export interface UploadLimits {
  /** Sessions idle for longer than this are removed. */
  timeoutMs: number;
  /** Most sessions open at once; more are refused with 429. */
  maxSessions: number;
  /** Largest blob accepted, in bytes; 0 means no limit. */
  maxBlobBytes: number;
}

export class Uploads {
  private readonly sessions = new Map<string, UploadSession>();
  private readonly driver: StorageDriver;
  readonly limits: UploadLimits;

  constructor(driver: StorageDriver, limits: UploadLimits) {
    this.driver = driver;
    this.limits = limits;
  }

  async start(repository: string, algorithm: DigestAlgorithm): Promise<UploadSession> {
    this.sweep();
    if (this.sessions.size >= this.limits.maxSessions) {
      throw new OciError(429, 'TOOMANYREQUESTS', `too many upload sessions open (limit ${this.limits.maxSessions}); retry later`, undefined, { 'Retry-After': '10' });
    }
    const id = randomUUID();
    const session: UploadSession = {
      id, repository, writer: await this.driver.createWriter(id), size: 0, algorithm, hash: newHash(algorithm), touchedAt: Date.now(), busy: false,
      persisted: false,
    };
    this.sessions.set(id, session);
    return session;
  }

  /** Makes an open session survive a restart: called once it holds data the client was told about. */
  async persist(session: UploadSession): Promise<void> {
    await session.writer.checkpoint();
    if (session.persisted) return;
    await this.driver.writeFile(sidecarKey(session.id), JSON.stringify({ repository: session.repository, algorithm: session.algorithm }));
    session.persisted = true;
  }

  /** Finds a session of this repository, recovering it from disk after a restart. */
  async get(repository: string, id: string): Promise<UploadSession> {
    const unknown = () => new OciError(404, 'BLOB_UPLOAD_UNKNOWN', `upload ${id} is not known in ${repository}`);
    if (!SESSION_ID.test(id)) throw unknown();
    let session = this.sessions.get(id);
    if (!session) {
      const meta = await this.driver.readFile(sidecarKey(id), 4096).catch(() => undefined);
      const writer = meta && (await this.driver.resumeWriter(id));
      if (!meta || !writer) throw unknown();
      const { repository: owner, algorithm } = JSON.parse(meta.toString('utf8')) as { repository: string; algorithm: DigestAlgorithm };
      session = { id, repository: owner, writer, size: writer.size, algorithm, hash: null, touchedAt: Date.now(), busy: false, persisted: true };
      this.sessions.set(id, session);
    }
    if (session.repository !== repository) throw unknown();
    session.touchedAt = Date.now();
    return session;
  }

  /**
   * Appends a request body. With `expectedLength` the body must be exactly that long. On any
   * failure the session is left as it was before the call.
   */
  async append(session: UploadSession, body: Readable, expectedLength?: number): Promise<void> {
    if (session.busy) throw new OciError(416, 'RANGE_INVALID', 'another request is writing to this upload', undefined, this.rangeHeader(session));
    session.busy = true;
    const before = session.size;
    const hash = session.hash?.copy() ?? null;
    const limit = this.limits.maxBlobBytes;
    let received = 0;
    let problem: OciError | undefined;
    // Excess bytes are read and dropped rather than failing the stream: failing it would reset
    // the connection and the client would never see the error answer.
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        received += chunk.length;
        if (problem) return done();
        if (expectedLength !== undefined && received > expectedLength) {
          problem = new OciError(400, 'SIZE_INVALID', `body is longer than the ${expectedLength} bytes announced`);
        } else if (limit > 0 && before + received > limit) {
          problem = new OciError(413, 'SIZE_INVALID', `blob exceeds the limit of ${limit} bytes`);
        }
        if (problem) return done();
        hash?.update(chunk);
        done(null, chunk);
      },
    });
    try {
      await pipeline(body, counter, session.writer.append());
      if (!problem && expectedLength !== undefined && received !== expectedLength) {
        problem = new OciError(400, 'SIZE_INVALID', `body has ${received} bytes but ${expectedLength} were announced`);
      }
      if (problem) throw problem;
      session.size = before + received;
      session.hash = hash;
    } catch (err) {
      // The writer undid the failed append itself.
      if (err instanceof OciError) throw err;
      throw new OciError(400, 'BLOB_UPLOAD_INVALID', `upload body could not be read: ${(err as Error).message}`);
    } finally {
      session.busy = false;
      session.touchedAt = Date.now();
    }
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
   * Forgets a session. `stored`: its writer was committed into a layout; otherwise its data is
   * discarded.
   */
  async end(session: UploadSession, stored = false): Promise<void> {
    this.sessions.delete(session.id);
    if (!stored) await session.writer.cancel();
    if (session.persisted) await this.driver.remove(sidecarKey(session.id));
    session.persisted = false;
  }

  /** Removes sessions idle for longer than the timeout. */
  sweep(now = Date.now()): void {
    for (const session of this.sessions.values()) {
      if (!session.busy && now - session.touchedAt > this.limits.timeoutMs) void this.end(session).catch(() => undefined);
    }
  }

  /** Removes session files on disk older than the timeout (left by a previous run). */
  async sweepDisk(now = Date.now()): Promise<void> {
    for (const { id, modifiedMs } of await this.driver.listWriters()) {
      if (this.sessions.has(id) || now - modifiedMs <= this.limits.timeoutMs) continue;
      await (await this.driver.resumeWriter(id))?.cancel();
    }
    for (const entry of await this.driver.list(UPLOADS_FOLDER)) {
      const id = entry.name.replace(/\.json$/, '');
      if (entry.dir || id === entry.name || this.sessions.has(id)) continue;
      const info = await this.driver.stat(sidecarKey(id));
      if (info && now - info.modifiedMs > this.limits.timeoutMs) await this.driver.remove(sidecarKey(id));
    }
  }
}

function sidecarKey(id: string): string {
  return `${UPLOADS_FOLDER}/${id}.json`;
}
