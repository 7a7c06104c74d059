// The event outbox on PostgreSQL (the contract is EventOutbox in outbox.ts): events are inserted
// by the change's own transaction, so they commit or roll back with it. `onAppend` wakes this
// process's consumers after its own commits; consumers also poll, which covers other replicas.
// Positions come from a sequence, which is not transactional: a rolled-back change leaves a gap
// (allowed: positions only increase), and two transactions could commit out of sequence order,
// letting a consumer pass an event not yet visible. So recording takes a transaction-scoped
// advisory lock first: sequence order is then commit order.
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { EventOutbox, EventType, NewEvent, OutboxEvent } from './outbox.ts';
import { transaction, type Sql } from './postgres.ts';

/** Arbitrary, fixed: the advisory lock event writers take until their transaction ends. */
const OUTBOX_LOCK = 7_346_127_002;

interface EventRow {
  seq: number;
  id: string;
  type: string;
  repository: string;
  subject: string;
  time: number;
  data: string;
}

export class PostgresEventOutbox implements EventOutbox {
  private readonly pool: pg.Pool;
  private readonly listeners: (() => void)[] = [];
  private notifyScheduled = false;
  /** Changes record events only when someone consumes them (webhooks are configured). */
  readonly recording: boolean;

  constructor(pool: pg.Pool, options: { recording: boolean }) {
    this.pool = pool;
    this.recording = options.recording;
  }

  /** Inserts events on the caller's transaction; listeners are woken after it (a harmless hint if it rolls back). */
  async record(sql: Sql, events: NewEvent[]): Promise<void> {
    if (!this.recording || !events.length) return;
    await sql.query('SELECT pg_advisory_xact_lock($1)', [OUTBOX_LOCK]);
    const time = Date.now();
    // In the order given: positions follow the order of the changes.
    await sql.query(`INSERT INTO event_outbox (id, type, repository, subject, time, data)
      SELECT e.id, e.type, e.repository, e.subject, e.time, e.data
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[]) WITH ORDINALITY AS e(id, type, repository, subject, time, data, n) ORDER BY e.n`,
    [events.map(() => randomUUID()), events.map((e) => e.type), events.map((e) => e.repository), events.map((e) => e.subject),
      events.map(() => String(time)), events.map((e) => JSON.stringify(e.data))]);
    this.scheduleNotify();
  }

  async append(events: NewEvent[]): Promise<void> {
    if (!this.recording || !events.length) return;
    await transaction(this.pool, (sql) => this.record(sql, events));
  }

  async after(seq: number, limit: number): Promise<OutboxEvent[]> {
    const { rows } = await this.pool.query<EventRow>('SELECT seq, id, type, repository, subject, time, data FROM event_outbox WHERE seq > $1 ORDER BY seq LIMIT $2', [seq, limit]);
    return rows.map((r) => ({
      seq: r.seq, id: r.id, type: r.type as EventType, repository: r.repository, subject: r.subject, time: r.time,
      data: JSON.parse(r.data) as Record<string, unknown>,
    }));
  }

  async position(consumer: string): Promise<number> {
    // One statement: a change committed meanwhile cannot fall between reading the newest and inserting.
    await this.pool.query(`INSERT INTO event_consumers (consumer, seq)
      VALUES ($1, COALESCE((SELECT MAX(seq) FROM event_outbox), 0)) ON CONFLICT (consumer) DO NOTHING`, [consumer]);
    return (await this.pool.query<{ seq: number }>('SELECT seq FROM event_consumers WHERE consumer = $1', [consumer])).rows[0]!.seq;
  }

  async advance(consumer: string, seq: number): Promise<void> {
    await this.pool.query('UPDATE event_consumers SET seq = GREATEST(seq, $1) WHERE consumer = $2', [seq, consumer]);
  }

  async prune(consumers: string[]): Promise<number> {
    await this.pool.query('DELETE FROM event_consumers WHERE NOT (consumer = ANY($1::text[]))', [consumers]);
    if (!consumers.length) return (await this.pool.query('DELETE FROM event_outbox')).rowCount ?? 0;
    return (await this.pool.query('DELETE FROM event_outbox WHERE seq <= (SELECT MIN(seq) FROM event_consumers)')).rowCount ?? 0;
  }

  onAppend(listener: () => void): void {
    this.listeners.push(listener);
  }

  private scheduleNotify(): void {
    if (this.notifyScheduled || !this.listeners.length) return;
    this.notifyScheduled = true;
    setImmediate(() => {
      this.notifyScheduled = false;
      for (const listener of this.listeners) listener();
    });
  }
}
