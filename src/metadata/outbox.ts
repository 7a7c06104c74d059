// The event outbox: events about changes (a manifest pushed, a tag moved, ...) are written in the
// same transaction as the change, so an acknowledged write never loses its event, not even to
// kill -9. Consumers (src/events/ delivers them to webhooks) read them in order from a durable
// position each, and events every consumer has passed are pruned.
//
// EventOutbox is the seam: small and asynchronous, so a PostgreSQL store implements it the same
// way. Recording inside a change's transaction is the store's own business (`record` below is
// the SQLite one, called by SqliteMetadataStore and the component index on their connection).
import { randomUUID } from 'node:crypto';
import type { DatabaseSync } from 'node:sqlite';
import { BOUND_LIMIT, StatementCache } from './statements.ts';
import type { ManifestRecord } from './store.ts';

export const EVENT_TYPES = [
  'manifest.pushed', 'manifest.deleted', 'tag.set', 'tag.removed', 'referrer.attached',
  'component.version.added', 'component.version.removed', 'gc.completed',
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

/** A change to report. */
export interface NewEvent {
  type: EventType;
  /** The repository it concerns; '' for registry-wide events (a GC run). */
  repository: string;
  /** What it is about: `repo@digest`, `repo:tag`, `component@version`; '' for none. */
  subject: string;
  data: Record<string, unknown>;
}

export interface OutboxEvent extends NewEvent {
  /** Position in the outbox: strictly increasing, never reused (even after pruning). */
  seq: number;
  /** Stable unique id (a UUID), the same on every delivery attempt: receivers dedup by it. */
  id: string;
  /** When the change was committed (ms since the epoch). */
  time: number;
}

export interface EventOutbox {
  /** Appends events in a transaction of their own (changes made outside the index, e.g. a GC run). */
  append(events: NewEvent[]): Promise<void>;
  /** Events after position `seq`, oldest first. */
  after(seq: number, limit: number): Promise<OutboxEvent[]>;
  /** A consumer's position; one seen for the first time starts after the newest event. */
  position(consumer: string): Promise<number>;
  /** Records that a consumer has handled every event up to `seq`. */
  advance(consumer: string, seq: number): Promise<void>;
  /**
   * Deletes the events all `consumers` have handled and forgets every other consumer (one removed
   * from the configuration). Returns how many events went.
   */
  prune(consumers: string[]): Promise<number>;
  /** Calls `listener` soon after events may have been committed (a hint: consumers also poll). */
  onAppend(listener: () => void): void;
}

// AUTOINCREMENT: a plain rowid restarts at 1 once every row is pruned, and consumers positioned
// further on would skip the new events.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS event_outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, type TEXT NOT NULL, repository TEXT NOT NULL,
  subject TEXT NOT NULL, time INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS event_consumers (consumer TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
`;

interface EventRow {
  seq: number;
  id: string;
  type: string;
  repository: string;
  subject: string;
  time: number;
  data: string;
}

export class SqliteEventOutbox implements EventOutbox {
  private readonly db: DatabaseSync;
  private readonly statements: StatementCache;
  private readonly listeners: (() => void)[] = [];
  private notifyScheduled = false;
  /** Changes record events only when someone consumes them (webhooks are configured). */
  readonly recording: boolean;

  constructor(db: DatabaseSync, options: { recording: boolean; readOnly?: boolean }) {
    this.db = db;
    this.statements = new StatementCache(db, 50);
    this.recording = options.recording;
    if (!options.readOnly) this.db.exec(SCHEMA);
  }

  /**
   * Writes events inside the caller's open transaction on the same connection, so they commit or
   * roll back with the change they report. Does nothing unless recording.
   */
  record(events: NewEvent[]): void {
    if (!this.recording || !events.length) return;
    const insert = this.statements.get('INSERT INTO event_outbox (id, type, repository, subject, time, data) VALUES (?, ?, ?, ?, ?, ?)');
    const time = Date.now();
    for (const e of events) insert.run(randomUUID(), e.type, e.repository, e.subject, time, JSON.stringify(e.data));
    this.scheduleNotify();
  }

  async append(events: NewEvent[]): Promise<void> {
    if (!this.recording || !events.length) return;
    this.db.exec('BEGIN IMMEDIATE');
    try {
      this.record(events);
      this.db.exec('COMMIT');
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
  }

  async after(seq: number, limit: number): Promise<OutboxEvent[]> {
    const rows = this.statements.get(`SELECT seq, id, type, repository, subject, time, data FROM event_outbox WHERE seq > ? ORDER BY seq ${BOUND_LIMIT}`)
      .all(seq, limit) as unknown as EventRow[];
    return rows.map((r) => ({
      seq: r.seq, id: r.id, type: r.type as EventType, repository: r.repository, subject: r.subject, time: r.time,
      data: JSON.parse(r.data) as Record<string, unknown>,
    }));
  }

  async position(consumer: string): Promise<number> {
    // One statement: a change committed meanwhile cannot fall between reading the newest and inserting.
    this.statements.get(`INSERT INTO event_consumers (consumer, seq)
      VALUES (?, COALESCE((SELECT MAX(seq) FROM event_outbox), 0)) ON CONFLICT (consumer) DO NOTHING`).run(consumer);
    return (this.statements.get('SELECT seq FROM event_consumers WHERE consumer = ?').get(consumer) as { seq: number }).seq;
  }

  async advance(consumer: string, seq: number): Promise<void> {
    this.statements.get('UPDATE event_consumers SET seq = MAX(seq, ?) WHERE consumer = ?').run(seq, consumer);
  }

  async prune(consumers: string[]): Promise<number> {
    const list = JSON.stringify(consumers);
    this.statements.get('DELETE FROM event_consumers WHERE consumer NOT IN (SELECT value FROM json_each(?))').run(list);
    if (!consumers.length) return Number(this.statements.get('DELETE FROM event_outbox').run().changes);
    return Number(this.statements.get('DELETE FROM event_outbox WHERE seq <= (SELECT MIN(seq) FROM event_consumers)').run().changes);
  }

  onAppend(listener: () => void): void {
    this.listeners.push(listener);
  }

  // After the current synchronous transaction has committed (or rolled back: a harmless wake-up).
  private scheduleNotify(): void {
    if (this.notifyScheduled || !this.listeners.length) return;
    this.notifyScheduled = true;
    setImmediate(() => {
      this.notifyScheduled = false;
      for (const listener of this.listeners) listener();
    });
  }
}

// ---- events for the outbox (what a change means to a webhook) --------------------------------

export function pushEvents(repository: string, record: ManifestRecord, known: boolean, tags: string[], previous: (string | undefined)[]): NewEvent[] {
  const events: NewEvent[] = [];
  const at = `${repository}@${record.digest}`;
  if (!known) {
    events.push({
      type: 'manifest.pushed', repository, subject: at,
      data: { repository, digest: record.digest, mediaType: record.mediaType, size: record.size, artifactType: record.artifactType, subject: record.subject, tags },
    });
    if (record.subject) {
      events.push({ type: 'referrer.attached', repository, subject: at, data: { repository, digest: record.digest, subject: record.subject, artifactType: record.artifactType } });
    }
  }
  tags.forEach((tag, i) => {
    if (previous[i] === record.digest) return;
    events.push({ type: 'tag.set', repository, subject: `${repository}:${tag}`, data: { repository, tag, digest: record.digest, previous: previous[i] ?? null } });
  });
  return events;
}

export function deleteEvents(repository: string, digest: string, tags: string[]): NewEvent[] {
  return [
    ...tags.map((tag) => tagRemoved(repository, tag, digest)),
    { type: 'manifest.deleted', repository, subject: `${repository}@${digest}`, data: { repository, digest } },
  ];
}

export function tagRemoved(repository: string, tag: string, digest: string): NewEvent {
  return { type: 'tag.removed', repository, subject: `${repository}:${tag}`, data: { repository, tag, digest } };
}
