// timeMethods: outside calls are timed once each (sync and async), the object's calls to itself
// are not, and properties, getters and instanceof read through.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { timeMethods } from '../../src/observe/instrument.ts';

class Store {
  count = 0;
  get doubled(): number {
    return this.count * 2;
  }
  bump(): number {
    return ++this.count;
  }
  bumpTwice(): number {
    this.bump();
    return this.bump();
  }
  async later(): Promise<string> {
    await new Promise((resolve) => setTimeout(resolve, 20));
    return 'done';
  }
  fail(): never {
    throw new Error('no');
  }
}

test('every outside call is timed once; internal calls and state read through', async () => {
  const seen: [string, number][] = [];
  const store = new Store();
  const timed = timeMethods(store, (operation) => ({ observe: (seconds) => seen.push([operation, seconds]) }));
  assert.ok(timed instanceof Store);
  assert.equal(timed.bumpTwice(), 2);
  assert.equal(timed.count, 2);
  assert.equal(timed.doubled, 4);
  assert.equal(await timed.later(), 'done');
  assert.throws(() => timed.fail(), /no/);
  assert.deepEqual(seen.map(([operation]) => operation), ['bumpTwice', 'later']);
  assert.ok(seen[1]![1] >= 0.015, 'an async method is timed until it settles');
});
