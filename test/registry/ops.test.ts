// Operations endpoints on a real server: /healthz and /readyz (unauthenticated), /metrics on the
// main port behind admin rights or on its own address, request ids and the per-request log line,
// and audit lines that survive `logLevel: warn`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { DEFAULT_SETTINGS, type Settings } from '../../src/config/settings.ts';
import { auditLogger, startRegistry } from '../../src/cli/serve.ts';
import { startTestRegistry } from '../helpers/registry.ts';
import { makeImage, pushBuilt, getManifest } from '../helpers/oci-client.ts';
import { startAuthRegistry } from '../auth/setup.ts';

/** The value of one sample line, e.g. `trellis_http_requests_total{route="manifest",method="GET",status="200"}`. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const present = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([k, v]) => present[k] === v)) return Number(match[3]);
  }
  return undefined;
}

test('health probes answer JSON without credentials; readiness checks metadata, storage and start-up', async (t) => {
  const reg = await startAuthRegistry(t, { users: ['alice'], auth: { policies: { '**': { authenticated: ['pull'] } } } });
  assert.equal((await reg.call('/v2/')).status, 401, 'the registry itself wants credentials');
  const alive = await reg.call('/healthz');
  assert.equal(alive.status, 200);
  assert.equal(alive.json().status, 'ok');
  // Ready once the start's catch-up with storage is done (an instant here; the answer is reused for a second).
  let ready = await reg.call('/readyz');
  for (const deadline = Date.now() + 10_000; ready.status !== 200 && Date.now() < deadline; ready = await reg.call('/readyz')) {
    assert.match(ready.json().checks.startup.error ?? '', /adopting the layouts/);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  assert.equal(ready.status, 200);
  const report = ready.json();
  assert.equal(report.status, 'ok');
  assert.deepEqual(Object.keys(report.checks).sort(), ['metadata', 'startup', 'storage']);
  for (const check of Object.values(report.checks) as { ok: boolean }[]) assert.equal(check.ok, true);
  assert.equal((await reg.call('/readyz', { method: 'POST' })).status, 405);
});

test('metrics on the main port: request counts by route name, bytes, metadata timings, flush lag, GC, rate limits', async (t) => {
  const reg = await startTestRegistry({ queryRatePerSecond: 1, queryRateBurst: 1 });
  t.after(() => reg.dispose());
  const image = makeImage();
  assert.equal((await pushBuilt(reg.url, 'team/secret-name', 'v1', image)).status, 201);
  for (let i = 0; i < 3; i++) assert.equal((await getManifest(reg.url, 'team/secret-name', 'v1')).status, 200);
  // Over the query rate: the second search in the same second is refused.
  const searches = await Promise.all([1, 2, 3].map(() => fetch(`${reg.url}/v2/_trellis/search?q_artifactType=x`).then((r) => r.status)));
  assert.ok(searches.includes(429), String(searches));
  assert.equal((await fetch(`${reg.url}/v2/_trellis/gc`, { method: 'POST' })).status, 200);
  await new Promise((resolve) => setTimeout(resolve, 100)); // the index.json rewrite (indexFlushMinMs 5)
  const res = await fetch(`${reg.url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  assert.ok(!text.includes('secret-name'), 'no repository name in any label');
  assert.equal(sample(text, 'trellis_http_requests_total', { route: 'manifest', method: 'GET', status: '200' }), 3);
  assert.equal(sample(text, 'trellis_http_requests_total', { route: 'manifest', method: 'PUT', status: '201' }), 1);
  assert.equal(sample(text, 'trellis_http_request_duration_seconds_count', { route: 'manifest', method: 'GET' }), 3);
  assert.ok(sample(text, 'trellis_http_request_bytes_total', { route: 'blob_upload' })! >= image.blobs[1]!.length, 'layer bytes in');
  assert.ok(sample(text, 'trellis_http_response_bytes_total', { route: 'manifest' })! >= 3 * image.bytes.length, 'manifest bytes out');
  assert.ok(sample(text, 'trellis_rate_limit_rejections_total', { route: 'search' })! >= 1);
  assert.equal(sample(text, 'trellis_gc_runs_total', { outcome: 'done' }), 1);
  assert.ok(sample(text, 'trellis_metadata_operation_duration_seconds_count', { operation: 'putManifest' })! >= 1);
  assert.ok(sample(text, 'trellis_metadata_operation_duration_seconds_count', { operation: 'resolveTag' })! >= 3);
  assert.ok(sample(text, 'trellis_index_flush_lag_seconds_count')! >= 1, 'the push was flushed into index.json');
  assert.equal(sample(text, 'trellis_index_flush_failures_total'), 0);
  assert.equal(sample(text, 'trellis_index_flush_pending_seconds'), 0);
  assert.equal(sample(text, 'trellis_uploads_in_flight'), 0);
  const open = await fetch(`${reg.url}/v2/team/secret-name/blobs/uploads/`, { method: 'POST' });
  assert.equal(open.status, 202);
  assert.equal(sample(await (await fetch(`${reg.url}/metrics`)).text(), 'trellis_uploads_in_flight'), 1);
});

test('with access control, /metrics on the main port is for admins only', async (t) => {
  const reg = await startAuthRegistry(t, { users: ['admin', 'bob'], auth: {
    admins: { users: ['admin'] }, policies: { '**': { authenticated: ['pull', 'push'] } }, token: { service: 'trellis', issuer: 'trellis-test', expirySeconds: 60 },
  } });
  assert.equal((await reg.call('/metrics')).status, 401);
  assert.equal((await reg.call('/metrics', { auth: reg.basic('bob') })).status, 403);
  const admin = await reg.call('/metrics', { auth: reg.basic('admin') });
  assert.equal(admin.status, 200);
  assert.match(admin.body.toString(), /trellis_http_requests_total\{route="metrics",method="GET",status="403"\} 1/);
  assert.equal((await reg.call('/metrics', { auth: `Bearer ${await reg.token('admin', ['registry:metrics:*'])}` })).status, 200);
  assert.equal((await reg.call('/metrics', { auth: `Bearer ${await reg.token('admin', ['registry:catalog:*'])}` })).status, 401, 'a token without the metrics scope');
  assert.equal((await reg.call('/metrics', { auth: `Bearer ${await reg.token('bob', ['registry:metrics:*'])}` })).status, 403);
});

test('metricsListen: /metrics and the probes on their own address, not on the public port', async (t) => {
  const reg = await startTestRegistry({ metricsListen: '127.0.0.1:0' });
  t.after(() => reg.dispose());
  assert.ok(reg.metricsUrl);
  assert.equal((await fetch(`${reg.url}/metrics`)).status, 404);
  assert.equal((await fetch(`${reg.url}/v2/`)).status, 200);
  const scraped = await fetch(`${reg.metricsUrl}/metrics`);
  assert.equal(scraped.status, 200);
  assert.match(await scraped.text(), /trellis_http_requests_total\{route="base",method="GET",status="200"\} 1/);
  await reg.registry.adopted(); // readiness waits for the start's catch-up with storage
  assert.equal((await fetch(`${reg.metricsUrl}/readyz`)).status, 200);
  assert.equal((await fetch(`${reg.metricsUrl}/v2/`)).status, 404);
});

test('one JSON line per request with a request id; audit lines are kept when logLevel is warn', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-logs-'));
  const lines: Record<string, unknown>[] = [];
  const sink = { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) };
  const { writeFile } = await import('node:fs/promises');
  const bcrypt = (await import('bcryptjs')).default;
  await writeFile(join(dir, 'htpasswd'), `alice:${bcrypt.hashSync('pw', 4)}\n`);
  await writeFile(join(dir, 'auth.json'), JSON.stringify({ htpasswd: 'htpasswd', policies: { '**': { authenticated: ['pull', 'push'] } } }));
  const settings: Settings = {
    ...DEFAULT_SETTINGS, listen: '127.0.0.1:0', data: join(dir, 'data'), authFile: join(dir, 'auth.json'), indexFlushMinMs: 5,
    logLevel: 'warn', requestLogLevel: 'warn', auditLogLevel: 'info',
  };
  const logger = pino({ level: settings.logLevel, base: undefined }, sink);
  const running = await startRegistry(settings, logger, auditLogger(logger, settings));
  t.after(async () => {
    await running.close();
    await rm(dir, { recursive: true, force: true });
  });
  const auth = { Authorization: `Basic ${Buffer.from('alice:pw').toString('base64')}` };
  const given = await fetch(`${running.url}/v2/`, { headers: { ...auth, 'X-Request-Id': 'trace-abc.123' } });
  assert.equal(given.headers.get('x-request-id'), 'trace-abc.123', 'a sane incoming id is kept');
  const insane = await fetch(`${running.url}/v2/`, { headers: { ...auth, 'X-Request-Id': 'x'.repeat(200) } });
  const generated = insane.headers.get('x-request-id') ?? '';
  assert.match(generated, /^[0-9a-f-]{36}$/, 'an overlong id is replaced');
  const pushed = await fetch(`${running.url}/v2/app/blobs/uploads/`, { method: 'POST', headers: { ...auth, 'X-Request-Id': 'push-1' } });
  assert.equal(pushed.status, 202);
  await fetch(`${running.url}/v2/app/tags/list`, { headers: { 'X-Request-Id': 'denied-1' } });
  const requests = lines.filter((l) => l.msg === 'request');
  const first = requests.find((l) => l.reqId === 'trace-abc.123');
  assert.ok(first, JSON.stringify(lines));
  assert.equal(first.level, 40, 'at requestLogLevel');
  assert.equal(first.method, 'GET');
  assert.equal(first.route, 'base');
  assert.equal(first.status, 200);
  assert.equal(first.client, 'alice');
  assert.equal(typeof first.ms, 'number');
  assert.ok((first.bytesOut as number) > 0);
  assert.ok(requests.some((l) => l.reqId === generated));
  const audit = lines.filter((l) => l.audit === true);
  assert.ok(audit.some((l) => l.outcome === 'push' && l.reqId === 'push-1'), JSON.stringify(audit));
  assert.ok(audit.some((l) => l.outcome === 'denied' && l.reqId === 'denied-1'), 'denied requests are audited with their id');
  assert.ok(!lines.some((l) => l.msg === 'trellis registry listening'), 'info lines stay below logLevel warn');
});
