// Blob upload sessions. Data goes to `_trellis/uploads/<id>` while a running hash follows it; a
// small sidecar file lets a session survive a restart (its hash is then recomputed from the data).
import { randomUUID, type Hash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { StorageDriver } from '../storage/driver.ts';
import { newHash, type DigestAlgorithm } from '../oci/digest.ts';
import { OciError } from '../oci/errors.ts';
import { UPLOADS_FOLDER } from '../layout/paths.ts';

const SESSION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface UploadSession {
  id: string;
  repository: string;
  dataKey: string;
  size: number;
  algorithm: DigestAlgorithm;
  /** Hash of the bytes so far; null after a restart, when it is recomputed on demand. */
  hash: Hash | null;
  touchedAt: number;
  busy: boolean;
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

  /** Upload sessions open now. */
  get openSessions(): number {
    return this.sessions.size;
  }

  async start(repository: string, algorithm: DigestAlgorithm): Promise<UploadSession> {
    this.sweep();
    if (this.sessions.size >= this.limits.maxSessions) {
      throw new OciError(429, 'TOOMANYREQUESTS', `too many upload sessions open (limit ${this.limits.maxSessions}); retry later`, undefined, { 'Retry-After': '10' });
    }
    const id = randomUUID();
    const session: UploadSession = {
      id, repository, dataKey: `${UPLOADS_FOLDER}/${id}`, size: 0, algorithm, hash: newHash(algorithm), touchedAt: Date.now(), busy: false,
    };
    await this.driver.writeAtomic(`${UPLOADS_FOLDER}/${id}.json`, JSON.stringify({ repository, algorithm }));
    await this.driver.writeAtomic(session.dataKey, '');
    this.sessions.set(id, session);
    return session;
  }

  /** Finds a session of this repository, recovering it from disk after a restart. */
  async get(repository: string, id: string): Promise<UploadSession> {
    const unknown = () => new OciError(404, 'BLOB_UPLOAD_UNKNOWN', `upload ${id} is not known in ${repository}`);
    if (!SESSION_ID.test(id)) throw unknown();
    let session = this.sessions.get(id);
    if (!session) {
      const meta = await this.driver.readFile(`${UPLOADS_FOLDER}/${id}.json`, 4096).catch(() => undefined);
      const info = await this.driver.stat(`${UPLOADS_FOLDER}/${id}`);
      if (!meta || !info) throw unknown();
      const { repository: owner, algorithm } = JSON.parse(meta.toString('utf8')) as { repository: string; algorithm: DigestAlgorithm };
      session = { id, repository: owner, dataKey: `${UPLOADS_FOLDER}/${id}`, size: info.size, algorithm, hash: null, touchedAt: Date.now(), busy: false };
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
      await pipeline(body, counter, this.driver.appendStream(session.dataKey));
      if (!problem && expectedLength !== undefined && received !== expectedLength) {
        problem = new OciError(400, 'SIZE_INVALID', `body has ${received} bytes but ${expectedLength} were announced`);
      }
      if (problem) throw problem;
      session.size = before + received;
      session.hash = hash;
    } catch (err) {
      await this.driver.truncate(session.dataKey, before).catch(() => undefined);
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
    for await (const chunk of this.driver.readStream(session.dataKey)) hash.update(chunk as Buffer);
    return `${algorithm}:${hash.digest('hex')}`;
  }

  rangeHeader(session: UploadSession): Record<string, string> {
    // An empty session has no true inclusive range; "0-0" is what distribution sends and what the
    // conformance suite and clients parse (a following chunk must still start at 0).
    return { Range: `0-${Math.max(session.size - 1, 0)}` };
  }

  /** Forgets a session; its data file is removed unless it was already moved into a layout. */
  async end(session: UploadSession): Promise<void> {
    this.sessions.delete(session.id);
    await this.driver.remove(session.dataKey);
    await this.driver.remove(`${UPLOADS_FOLDER}/${session.id}.json`);
  }

  /** Removes sessions idle for longer than the timeout. */
  sweep(now = Date.now()): void {
    for (const session of this.sessions.values()) {
      if (!session.busy && now - session.touchedAt > this.limits.timeoutMs) void this.end(session).catch(() => undefined);
    }
  }

  /** Removes session files on disk older than the timeout (left by a previous run). */
  async sweepDisk(now = Date.now()): Promise<void> {
    for (const entry of await this.driver.list(UPLOADS_FOLDER)) {
      const id = entry.name.replace(/\.json$/, '');
      if (this.sessions.has(id)) continue;
      const info = await this.driver.stat(`${UPLOADS_FOLDER}/${entry.name}`);
      if (info && now - Number(info.mtimeNs / 1_000_000n) > this.limits.timeoutMs) await this.driver.remove(`${UPLOADS_FOLDER}/${entry.name}`);
    }
  }
}
