// The dispatcher on its own, over an outbox in memory: what happens when reading the outbox fails
// for a moment (a dropped PostgreSQL connection, a restarted server).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { Dispatcher } from '../../src/events/dispatcher.ts';
import { parseWebhooks } from '../../src/events/webhooks.ts';
import type { EventOutbox, NewEvent, OutboxEvent } from '../../src/metadata/outbox.ts';
import { KeyedLock, type Locks } from '../../src/storage/mutex.ts';
import { Receiver } from './receiver.ts';

/** An outbox in memory whose reads fail `failures` times (as a lost database connection does). */
class FlakyOutbox implements EventOutbox {
  events: OutboxEvent[] = [];
  positions = new Map<string, number>();
  failures = 0;

  async append(events: NewEvent[]): Promise<void> {
    for (const e of events) this.events.push({ ...e, seq: this.events.length + 1, id: crypto.randomUUID(), time: Date.now() });
  }

  private fail(): void {
    if (this.failures > 0) {
      this.failures--;
      throw new Error('Connection terminated unexpectedly');
    }
  }

  async after(seq: number, limit: number): Promise<OutboxEvent[]> {
    this.fail();
    return this.events.filter((e) => e.seq > seq).slice(0, limit);
  }

  async position(consumer: string): Promise<number> {
    this.fail();
    if (!this.positions.has(consumer)) this.positions.set(consumer, this.events.length);
    return this.positions.get(consumer)!;
  }

  async advance(consumer: string, seq: number): Promise<void> {
    this.fail();
    this.positions.set(consumer, Math.max(seq, this.positions.get(consumer) ?? 0));
  }

  async prune(): Promise<number> {
    return 0;
  }

  onAppend(): void {}
}

/** Locks that say they are shared, as replicas' are (the dispatcher then takes a lock per webhook). */
class SharedLocks extends KeyedLock implements Locks {
  override readonly shared = true as false;
}

for (const shared of [false, true]) {
  test(`a failed read of the outbox is retried: delivery goes on${shared ? ' (replicas)' : ''}`, { timeout: 10_000 }, async (t) => {
    const receiver = await Receiver.start();
    t.after(() => receiver.stop());
    const outbox = new FlakyOutbox();
    const dispatcher = new Dispatcher({
      outbox, webhooks: parseWebhooks([{ name: 'hook', url: receiver.url }]), log: pino({ level: 'silent' }),
      timeoutMs: 2000, retryMinMs: 20, retryMaxMs: 100, pollMs: 20, ...(shared ? { locks: new SharedLocks() } : {}),
    });
    await dispatcher.register();
    dispatcher.start('test');
    t.after(() => dispatcher.stop());
    await sleep(50);
    outbox.failures = 2;
    await outbox.append([{ type: 'tag.set', repository: 'app', subject: 'app:v1', data: {} }]);
    for (let i = 0; i < 100 && receiver.events.length === 0; i++) await sleep(20);
    assert.equal(receiver.events.length, 1, 'the event is delivered once the outbox answers again');
  });
}
