// Upload sessions: caps per client (one client holding many sessions blocks nobody else), single
// request uploads that no cap refuses, and idle sessions swept by an injected clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { Uploads } from '../../src/content/uploads.ts';
import { FileSystemDriver } from '../../src/storage/filesystem.ts';
import { ContentError } from '../../src/content/errors.ts';
import { asOciError } from '../../src/registry/errors.ts';

async function setup(t: { after(fn: () => Promise<void>): void }, limits: Partial<Uploads['limits']> = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-uploads-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  let clock = 1_000_000;
  const uploads = new Uploads(new FileSystemDriver(dir, { durable: false }), {
    timeoutMs: 60_000, maxSessions: 3, maxSessionsTotal: 100, maxBlobBytes: 0, bodyIdleTimeoutMs: 0, ...limits,
  }, () => clock);
  return { dir, uploads, advance: (ms: number) => { clock += ms; } };
}

// Content errors carry no HTTP status; the registry's one mapping gives it.
const refusal = (status: number) => (err: unknown) => err instanceof ContentError && asOciError(err)?.status === status;

test('the session cap is per client: a client at its cap blocks only itself', async (t) => {
  const { uploads } = await setup(t);
  for (let i = 0; i < 3; i++) await uploads.start('a/b', 'sha256', 'mallory');
  await assert.rejects(uploads.start('a/b', 'sha256', 'mallory'), refusal(429));
  // Others open sessions as usual, and single-request uploads are never refused, even mallory's.
  const alice = await uploads.start('a/b', 'sha256', 'alice');
  assert.equal(uploads.heldBy('alice'), 1);
  const single = await uploads.start('a/b', 'sha256', 'mallory', true);
  assert.equal(uploads.heldBy('mallory'), 3);
  await uploads.end(single);
  await uploads.end(alice);
  assert.equal(uploads.heldBy('alice'), 0);
});

test('the total ceiling refuses new sessions but never single-request uploads', async (t) => {
  const { uploads } = await setup(t, { maxSessions: 10, maxSessionsTotal: 2 });
  await uploads.start('a/b', 'sha256', 'one');
  await uploads.start('a/b', 'sha256', 'two');
  await assert.rejects(uploads.start('a/b', 'sha256', 'three'), refusal(429));
  const single = await uploads.start('a/b', 'sha256', 'three', true);
  await uploads.append(single, Readable.from([Buffer.from('whole blob')]));
  assert.equal(await uploads.digest(single, 'sha256'), 'sha256:' + (await import('node:crypto')).createHash('sha256').update('whole blob').digest('hex'));
  await uploads.end(single);
});

test('idle sessions are swept by the clock, with their files, and free the cap', async (t) => {
  const { dir, uploads, advance } = await setup(t);
  const sessions = [];
  for (let i = 0; i < 3; i++) sessions.push(await uploads.start('a/b', 'sha256', 'mallory'));
  await uploads.append(sessions[0]!, Readable.from([Buffer.from('partial')]));
  await uploads.persist(sessions[0]!);
  advance(30_000);
  // Touching a session keeps it alive; the others go once idle for longer than the timeout.
  await uploads.get('a/b', sessions[0]!.id);
  advance(30_001);
  assert.equal(await uploads.sweep(), 2);
  assert.equal(uploads.heldBy('mallory'), 1);
  await assert.rejects(uploads.get('a/b', sessions[1]!.id), refusal(404));
  assert.equal((await uploads.get('a/b', sessions[0]!.id)).size, 7);
  // A client at its cap gets room as soon as its idle sessions are swept.
  await uploads.start('a/b', 'sha256', 'mallory');
  await uploads.start('a/b', 'sha256', 'mallory');
  await assert.rejects(uploads.start('a/b', 'sha256', 'mallory'), refusal(429));
  advance(60_001);
  await uploads.start('a/b', 'sha256', 'mallory');
  assert.equal(uploads.heldBy('mallory'), 1);
  // The swept sessions' files are gone; the new ones write nothing before their first PATCH.
  const files = await readdir(join(dir, '_trellis/uploads'));
  assert.deepEqual(files, []);
});

test('a body that stalls is aborted after the idle time; the session keeps its last complete offset', { timeout: 10_000 }, async (t) => {
  const { uploads } = await setup(t, { bodyIdleTimeoutMs: 100 });
  const session = await uploads.start('a/b', 'sha256', 'alice');
  await uploads.append(session, Readable.from([Buffer.from('first,')]));
  const stalled = new Readable({ read() {} });
  stalled.push(Buffer.from('half of a chunk'));
  await assert.rejects(uploads.append(session, stalled), refusal(408));
  assert.equal(session.busy, false);
  assert.equal(session.size, 6);
  await uploads.append(session, Readable.from([Buffer.from('second')]));
  assert.equal(session.size, 12);
});

test('a slow body that keeps sending is not cut off, however long it takes in all', { timeout: 10_000 }, async (t) => {
  const { uploads } = await setup(t, { bodyIdleTimeoutMs: 150 });
  const session = await uploads.start('a/b', 'sha256', 'alice');
  // Ten pieces 50 ms apart: half a second in all, never 150 ms without a byte.
  const trickle = Readable.from((async function* () {
    for (let i = 0; i < 10; i++) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      yield Buffer.from(`piece ${i};`);
    }
  })());
  await uploads.append(session, trickle);
  assert.equal(session.size, 80);
});

// A refused body must leave no byte behind: the stored data would otherwise differ from what the
// session's running digest vouches for, and the blob would be committed under a digest it lacks.
for (const [name, limits, body, expected, status] of [
  ['longer than announced', {}, ['abc', 'defgh', 'ij'], 4, 400],
  ['over the size limit', { maxBlobBytes: 10 }, ['abc', 'defgh', 'ijk'], undefined, 413],
] as const) {
  test(`a body ${name} is refused and the stored data stays as it was`, async (t) => {
    const { uploads } = await setup(t, limits);
    const session = await uploads.start('a/b', 'sha256', 'alice');
    await uploads.append(session, Readable.from([Buffer.from('first,')]));
    await assert.rejects(uploads.append(session, Readable.from(body.map((s) => Buffer.from(s))), expected), refusal(status));
    assert.equal(session.size, 6);
    await uploads.append(session, Readable.from([Buffer.from('last')]));
    const stored: Buffer[] = [];
    for await (const chunk of session.writer.read()) stored.push(chunk as Buffer);
    assert.equal(Buffer.concat(stored).toString(), 'first,last');
    await uploads.end(session);
  });
}

test('storage that fails to take an upload\'s bytes (a full disk) is the registry\'s error, not a 400 for the client\'s body', async (t) => {
  const { uploads } = await setup(t);
  const full = () => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
  // The disk fills while a chunk is written, or at the end, when a small body is written at once.
  for (const sink of [
    () => new Writable({ write: (_chunk, _encoding, done) => done(full()) }),
    () => new Writable({ write: (_chunk, _encoding, done) => done(), final: (done) => done(full()) }),
  ]) {
    const session = await uploads.start('a/b', 'sha256', 'alice');
    session.writer.append = sink;
    await assert.rejects(uploads.append(session, Readable.from([Buffer.from('some bytes')])), (err: Error) => {
      assert.equal(asOciError(err), undefined, `answered ${asOciError(err)?.status} ${err.message}: a client error, never logged, not retried`);
      assert.match(err.message, /ENOSPC/);
      return true;
    });
    await uploads.end(session);
  }
});
