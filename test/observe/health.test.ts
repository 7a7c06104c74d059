// Readiness logic: not ready while starting or stopping, or when a check fails; results are reused
// for a short while so frequent probes stay cheap.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Health } from '../../src/observe/health.ts';

test('readiness follows start-up, each check, and shutdown', async () => {
  const health = new Health({ cacheMs: 0 });
  let starting = await health.ready();
  assert.equal(starting.status, 'unavailable');
  assert.match(starting.checks.startup!.error ?? '', /start-up/);
  let storageFails = false;
  let metadataCalls = 0;
  const logged: string[] = [];
  health.onCheckFailed = (check, err) => logged.push(`${check}: ${(err as Error).message}`);
  health.serving({
    metadata: () => { metadataCalls++; },
    storage: async () => {
      if (storageFails) throw Object.assign(new Error("EROFS: read-only file system, open '/srv/secret-path/.trellis/readyz-probe'"), { code: 'EROFS' });
    },
  });
  assert.equal((await health.ready()).status, 'ok');
  storageFails = true;
  const broken = await health.ready();
  assert.equal(broken.status, 'unavailable');
  assert.equal(broken.checks.storage!.ok, false);
  assert.match(broken.checks.storage!.error ?? '', /EROFS/);
  // The probes answer anyone: the code is shown, the message (paths, hosts) only logged.
  assert.doesNotMatch(JSON.stringify(broken), /secret-path/);
  assert.deepEqual(logged, ["storage: EROFS: read-only file system, open '/srv/secret-path/.trellis/readyz-probe'"]);
  assert.equal(broken.checks.metadata!.ok, true);
  storageFails = false;
  health.stopping();
  starting = await health.ready();
  assert.equal(starting.status, 'unavailable');
  assert.equal(starting.checks.startup!.error, 'shutting down');
  assert.equal(health.alive().status, 'ok');
  assert.equal(metadataCalls, 2);
});

test('a readiness result is reused within cacheMs', async () => {
  const health = new Health({ cacheMs: 60_000 });
  let calls = 0;
  health.serving({ metadata: () => { calls++; }, storage: async () => undefined });
  await Promise.all([health.ready(), health.ready(), health.ready()]);
  await health.ready();
  assert.equal(calls, 1);
});

test('not ready while start-up still catches up with storage, though the server answers', async () => {
  const health = new Health({ cacheMs: 0 });
  let caughtUp = false;
  health.serving({ metadata: () => undefined, storage: async () => undefined, caughtUp: () => caughtUp });
  const walking = await health.ready();
  assert.equal(walking.status, 'unavailable');
  assert.equal(walking.checks.startup!.ok, false);
  assert.match(walking.checks.startup!.error ?? '', /adopting the layouts in storage/);
  caughtUp = true;
  assert.equal((await health.ready()).status, 'ok');
});

test('a check that hangs (a frozen database, a stuck network mount) answers unavailable in time and is not started again while it hangs', async () => {
  const health = new Health({ cacheMs: 0, checkTimeoutMs: 100 });
  let storageCalls = 0;
  health.serving({ metadata: () => undefined, storage: () => { storageCalls++; return new Promise(() => undefined); } });
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    const report = await Promise.race([health.ready(), new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 2000))]);
    assert.ok(report, '/readyz never answered while a check hung');
    assert.ok(performance.now() - started < 1000);
    assert.equal(report.status, 'unavailable');
    assert.equal(report.checks.storage!.ok, false);
    assert.match(report.checks.storage!.error ?? '', /TIMEOUT/);
    assert.equal(report.checks.metadata!.ok, true);
  }
  assert.equal(storageCalls, 1, 'each probe started one more hanging check');
});
