// Events end to end with a real HTTP receiver: each event type with its CloudEvents attributes,
// webhook filters, a receiver that is down for a while, and a server killed with SIGKILL right
// after acknowledging pushes whose events were not delivered yet.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTestRegistry } from '../helpers/registry.ts';
import { runGc } from '../../src/cli/gc.ts';
import { DEFAULT_SETTINGS } from '../../src/config/settings.ts';
import { makeImage, makeReferrer, pushBuilt } from '../helpers/oci-client.ts';
import { Receiver, waitFor } from './receiver.ts';

const ROOT = resolve(import.meta.dirname, '../..');
const FAST_RETRIES = { webhookRetryMinMs: 20, webhookRetryMaxMs: 200 };

test('every event type arrives as a structured CloudEvent with its attributes and a valid signature', async (t) => {
  const receiver = await Receiver.start();
  t.after(() => receiver.stop());
  const started = Date.now();
  const reg = await startTestRegistry({
    webhooks: [{ name: 'all', url: receiver.url, secret: 's3cret', headers: { 'X-Team': 'ops' } }], ...FAST_RETRIES,
    componentRepositoryPrefixes: 'apps/', componentIndexRepository: '', gcUntagged: 'delete', gcGraceSeconds: 0,
  });
  t.after(() => reg.dispose());
  const image = makeImage();
  assert.equal((await pushBuilt(reg.url, 'apps/web', '1.0.0', image)).status, 201);
  const sbom = makeReferrer(image.descriptor, { artifactType: 'application/vnd.example.sbom' });
  assert.equal((await pushBuilt(reg.url, 'apps/web', sbom.digest, sbom)).status, 201);
  assert.equal((await fetch(`${reg.url}/v2/apps/web/manifests/1.0.0`, { method: 'DELETE' })).status, 202);
  assert.equal((await fetch(`${reg.url}/v2/apps/web/manifests/${sbom.digest}`, { method: 'DELETE' })).status, 202);
  assert.equal((await fetch(`${reg.url}/v2/_trellis/gc`, { method: 'POST' })).status, 200);

  const expected = [
    ['manifest.pushed', `apps/web@${image.digest}`], ['tag.set', 'apps/web:1.0.0'], ['component.version.added', 'apps/web@1.0.0'],
    ['manifest.pushed', `apps/web@${sbom.digest}`], ['referrer.attached', `apps/web@${sbom.digest}`],
    ['tag.removed', 'apps/web:1.0.0'], ['component.version.removed', 'apps/web@1.0.0'],
    ['manifest.deleted', `apps/web@${sbom.digest}`],
    ['manifest.deleted', `apps/web@${image.digest}`], ['gc.completed', undefined],
  ];
  await waitFor('every event', () => receiver.events.length >= expected.length);
  const events = receiver.events;
  assert.deepEqual(events.map((e) => [e.type.replace('dev.trellis.', ''), e.subject]), expected);
  assert.equal(new Set(events.map((e) => e.id)).size, events.length, 'ids are unique');
  for (const { event, headers, raw } of receiver.received) {
    assert.equal(event.specversion, '1.0');
    assert.match(event.type, /^dev\.trellis\./);
    assert.equal(event.source, reg.url);
    assert.match(event.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(event.datacontenttype, 'application/json');
    const time = Date.parse(event.time);
    assert.ok(time >= started - 1000 && time <= Date.now(), event.time);
    assert.match(headers['content-type'] ?? '', /^application\/cloudevents\+json/);
    assert.equal(headers['x-team'], 'ops');
    assert.equal(headers['x-trellis-signature'], `sha256=${createHmac('sha256', 's3cret').update(raw).digest('hex')}`);
  }
  const [pushed, tagged, component, , attached, untagged] = events;
  assert.deepEqual(pushed!.data, {
    repository: 'apps/web', digest: image.digest, mediaType: image.mediaType, size: image.bytes.length, artifactType: 'application/vnd.oci.image.config.v1+json', subject: null, tags: ['1.0.0'],
  });
  assert.deepEqual(tagged!.data, { repository: 'apps/web', tag: '1.0.0', digest: image.digest, previous: null });
  assert.deepEqual(component!.data, { repository: 'apps/web', component: 'apps/web', version: '1.0.0', kind: 'generic', digest: image.digest });
  assert.deepEqual(attached!.data, { repository: 'apps/web', digest: sbom.digest, subject: image.digest, artifactType: 'application/vnd.example.sbom' });
  assert.deepEqual(untagged!.data, { repository: 'apps/web', tag: '1.0.0', digest: image.digest });
  const gc = events.at(-1)!;
  assert.equal(gc.data.manifests, 1);
  assert.ok(gc.data.blobs >= 2, 'the image config and layer');
  // Delivered events leave the outbox (pruned at most once a second).
  const outbox = reg.registry.metadata.outbox;
  const deadline = Date.now() + 5000;
  while ((await outbox.after(0, 100)).length && Date.now() < deadline) await sleep(100);
  assert.deepEqual(await outbox.after(0, 100), [], 'delivered events are pruned');
});

test('filters: event types and repository patterns per webhook', async (t) => {
  const tags = await Receiver.start();
  const team = await Receiver.start();
  const everything = await Receiver.start();
  t.after(() => Promise.all([tags.stop(), team.stop(), everything.stop()]));
  const reg = await startTestRegistry({
    webhooks: [
      { name: 'tags', url: tags.url, events: ['tag.*'] },
      { name: 'team', url: team.url, events: ['manifest.pushed', 'gc.completed'], repositories: ['team/**'] },
      { name: 'everything', url: everything.url },
    ],
    ...FAST_RETRIES,
  });
  t.after(() => reg.dispose());
  const one = makeImage();
  const two = makeImage();
  const three = makeImage();
  assert.equal((await pushBuilt(reg.url, 'team/app', 'v1', one)).status, 201);
  assert.equal((await pushBuilt(reg.url, 'team', 'v1', two)).status, 201);
  assert.equal((await pushBuilt(reg.url, 'other/app', 'v2', three)).status, 201);
  assert.equal((await fetch(`${reg.url}/v2/team/app/manifests/v1`, { method: 'DELETE' })).status, 202);
  assert.equal((await fetch(`${reg.url}/v2/_trellis/gc`, { method: 'POST' })).status, 200);
  await waitFor('every event at the unfiltered webhook', () => everything.events.some((e) => e.type === 'dev.trellis.gc.completed'));
  await waitFor('the filtered webhooks', () => tags.events.length >= 4 && team.events.length >= 1);
  await sleep(300); // anything a filter should have held back would have arrived by now
  assert.deepEqual(tags.events.map((e) => e.subject), ['team/app:v1', 'team:v1', 'other/app:v2', 'team/app:v1']);
  assert.deepEqual(tags.events.map((e) => e.type), ['dev.trellis.tag.set', 'dev.trellis.tag.set', 'dev.trellis.tag.set', 'dev.trellis.tag.removed']);
  // `team/**` covers repositories under team/, not team itself; GC runs have no repository.
  assert.deepEqual(team.events.map((e) => [e.type, e.subject]), [['dev.trellis.manifest.pushed', `team/app@${one.digest}`]]);
  assert.equal(everything.events.length, 8);
});

test('a receiver that is down for a while gets every event, in order, when it comes back', async (t) => {
  const receiver = await Receiver.start();
  t.after(() => receiver.stop());
  const reg = await startTestRegistry({ webhooks: [{ url: receiver.url, events: ['manifest.pushed'] }], ...FAST_RETRIES });
  t.after(() => reg.dispose());
  const images = Array.from({ length: 6 }, () => makeImage());
  receiver.failing = true; // answering 503
  for (const image of images.slice(0, 3)) assert.equal((await pushBuilt(reg.url, 'down/app', image.digest, image)).status, 201);
  await waitFor('retries against 503', () => receiver.refused >= 3);
  await receiver.stop(); // refusing connections
  for (const image of images.slice(3)) assert.equal((await pushBuilt(reg.url, 'down/app', image.digest, image)).status, 201);
  await sleep(300);
  assert.equal(receiver.received.length, 0);
  receiver.failing = false;
  await receiver.listen();
  await waitFor('every event after the outage', () => receiver.events.length >= images.length);
  assert.deepEqual(receiver.events.map((e) => e.data.digest), images.map((i) => i.digest), 'in push order, none lost');
  const metrics = await (await fetch(`${reg.url}/metrics`)).text();
  assert.match(metrics, /trellis_event_delivery_failures_total\{webhook="http:\/\/127\.0\.0\.1:\d+\/hook"\} [1-9]/);
  assert.match(metrics, /trellis_events_delivered_total\{webhook="http:\/\/127\.0\.0\.1:\d+\/hook"\} 6/);
});

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((done) => probe.listen(0, '127.0.0.1', done));
  const { port } = probe.address() as { port: number };
  await new Promise<void>((done) => probe.close(() => done()));
  return port;
}

/** `trellis serve` as a child process; resolves once GET /v2/ answers. */
async function serve(config: string, port: number) {
  const child = spawn(process.execPath, ['src/main.ts', 'serve', '--config', config, '--listen', `127.0.0.1:${port}`, '--log-level', 'warn'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  child.stdout!.setEncoding('utf8').on('data', (s: string) => output.push(s));
  child.stderr!.setEncoding('utf8').on('data', (s: string) => output.push(s));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`server exited:\n${output.join('')}`);
    if (await fetch(`${base}/v2/`).then((r) => r.ok, () => false)) break;
    if (Date.now() > deadline) throw new Error(`server did not start:\n${output.join('')}`);
    await sleep(25);
  }
  return { child, base, output };
}

test('events of acknowledged pushes survive kill -9 and are delivered after the restart', { timeout: 120_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-events-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const receiverPort = await freePort(); // nothing listens there until after the kill
  const config = join(dir, 'config.json');
  await writeFile(config, JSON.stringify({
    data: join(dir, 'data'), indexFlushMinMs: 5, requestLogLevel: 'silent',
    webhooks: [{ name: 'ci', url: `http://127.0.0.1:${receiverPort}/hook`, events: ['manifest.pushed', 'tag.set'] }], ...FAST_RETRIES,
  }));
  const port = await freePort();
  const first = await serve(config, port);
  const images = Array.from({ length: 5 }, () => makeImage());
  for (const [i, image] of images.entries()) assert.equal((await pushBuilt(first.base, 'crash/app', `v${i}`, image)).status, 201);
  first.child.kill('SIGKILL');
  await once(first.child, 'exit');

  const receiver = await Receiver.start(receiverPort);
  t.after(() => receiver.stop());
  const second = await serve(config, port);
  t.after(async () => {
    second.child.kill('SIGTERM');
    await once(second.child, 'exit');
  });
  await waitFor('every acknowledged push\'s events', () => receiver.events.length >= 2 * images.length);
  assert.deepEqual(receiver.events.filter((e) => e.type === 'dev.trellis.manifest.pushed').map((e) => e.data.digest), images.map((i) => i.digest));
  assert.deepEqual(receiver.events.filter((e) => e.type === 'dev.trellis.tag.set').map((e) => e.subject), images.map((_, i) => `crash/app:v${i}`));
  assert.ok(receiver.events.every((e) => e.source === second.base), 'source is the registry URL');
});

test('an offline trellis gc records its deletions; the next server start delivers them; a moved tag names its previous digest', { timeout: 60_000 }, async (t) => {
  const receiver = await Receiver.start();
  t.after(() => receiver.stop());
  const dir = await mkdtemp(join(tmpdir(), 'trellis-events-offline-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const settings = { webhooks: [{ name: 'ops', url: receiver.url, events: ['tag.set', 'manifest.deleted'] }], ...FAST_RETRIES, gcUntagged: 'delete' as const, gcGraceSeconds: 0 };
  const first = await startTestRegistry(settings, dir);
  const old = makeImage();
  const fresh = makeImage();
  assert.equal((await pushBuilt(first.url, 'app', 'v1', old)).status, 201);
  assert.equal((await pushBuilt(first.url, 'app', 'v1', fresh)).status, 201);
  await waitFor('both tag events', () => receiver.events.length >= 2);
  assert.deepEqual(receiver.events.map((e) => e.data.previous), [null, old.digest]);
  await first.close();
  const report = await runGc({ ...DEFAULT_SETTINGS, data: dir, ...settings, metadata: first.metadata }, false);
  assert.ok(report.removed.some((item) => item.digest === old.digest));
  const second = await startTestRegistry(settings, dir);
  t.after(() => second.close());
  await waitFor('the offline deletion', () => receiver.events.length >= 3);
  assert.deepEqual(receiver.events.slice(2).map((e) => [e.type, e.data.digest]), [['dev.trellis.manifest.deleted', old.digest]]);
  await sleep(300);
  assert.equal(receiver.received.length, 3, 'a graceful stop stored the position: nothing was sent twice');
});

test('a graceful stop lets a delivery in flight be acknowledged: the receiver does not get it again after the restart', { timeout: 60_000 }, async (t) => {
  const receiver = await Receiver.start();
  t.after(() => receiver.stop());
  const dir = await mkdtemp(join(tmpdir(), 'trellis-events-stop-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const settings = { webhooks: [{ name: 'slow', url: receiver.url, events: ['tag.set'] }], ...FAST_RETRIES };
  const first = await startTestRegistry(settings, dir);
  receiver.answerDelayMs = 800;
  assert.equal((await pushBuilt(first.url, 'app', 'v1', makeImage())).status, 201);
  await waitFor('the event, not yet answered', () => receiver.received.length >= 1);
  await first.close(); // while the receiver holds its answer
  receiver.answerDelayMs = 0;
  const second = await startTestRegistry(settings, dir);
  t.after(() => second.close());
  await sleep(1500);
  assert.equal(receiver.received.length, 1, 'the event was sent again after the restart');
});

test('webhook settings are checked at start-up', async () => {
  const { parseWebhooks } = await import('../../src/events/index.ts');
  assert.throws(() => parseWebhooks([{ url: 'ftp://x' }]), /webhooks\[0\]\.url must be an http/);
  assert.throws(() => parseWebhooks([{ url: 'http://a/', events: ['manifest.pushd'] }]), /unknown event type "manifest.pushd"/);
  assert.throws(() => parseWebhooks([{ url: 'http://a/', repositories: ['Team/**'] }]), /not a repository pattern/);
  assert.throws(() => parseWebhooks([{ url: 'http://a/' }, { url: 'http://a/' }]), /already named/);
  assert.throws(() => parseWebhooks([{ url: 'http://a/', secrets: 'x' }]), /unknown key secrets/);
  // Either would fail every delivery with the secret in the logged error (and the URL is the default name, a metrics label).
  const credentials = (() => { try { parseWebhooks([{ url: 'https://ci:pa55@a/' }]); } catch (err) { return (err as Error).message; } return ''; })();
  assert.match(credentials, /webhooks\[0\]\.url must not hold credentials/);
  assert.doesNotMatch(credentials, /pa55/);
  for (const headers of [{ Authorization: 'Bearer to\nken' }, { Authorization: 'Bearer to\u0100ken' }, { 'Bad Name': 'x' }]) {
    const message = (() => { try { parseWebhooks([{ url: 'http://a/', headers }]); } catch (err) { return (err as Error).message; } return ''; })();
    assert.match(message, /webhooks\[0\]\.headers: ".+" is not a valid header name/);
    assert.doesNotMatch(message, /to.?ken/s);
  }
  const [hook] = parseWebhooks([{ url: 'http://a/', events: ['component.*'], repositories: ['apps/*'] }]);
  assert.ok(hook!.matches({ type: 'component.version.added', repository: 'apps/web' }));
  assert.ok(!hook!.matches({ type: 'component.version.added', repository: 'apps/web/deep' }));
  assert.ok(!hook!.matches({ type: 'manifest.pushed', repository: 'apps/web' }));
});

test('a receiver that acknowledges and then streams an endless body is neither waited on nor buffered', { timeout: 30_000 }, async (t) => {
  // The status is the acknowledgement; reading the whole answer held each event up to
  // webhookTimeoutMs and kept every byte the receiver sent meanwhile in memory.
  const arrivals: number[] = [];
  let bytesSent = 0;
  const streams = new Set<NodeJS.Timeout>();
  const server = createHttpServer((req, res) => {
    req.resume().on('end', () => {
      arrivals.push(Date.now());
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      const chunk = Buffer.alloc(64 * 1024, 'x');
      const timer = setInterval(() => { if (res.write(chunk)) bytesSent += chunk.length; }, 10);
      streams.add(timer);
      res.on('close', () => { clearInterval(timer); streams.delete(timer); });
    });
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  t.after(() => new Promise<void>((done) => { for (const timer of streams) clearInterval(timer); server.closeAllConnections(); server.close(() => done()); }));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`;
  const reg = await startTestRegistry({ webhooks: [{ url, events: ['tag.set'] }], ...FAST_RETRIES, webhookTimeoutMs: 5000 });
  t.after(() => reg.dispose());
  const started = Date.now();
  for (const tag of ['v1', 'v2', 'v3']) assert.equal((await pushBuilt(reg.url, 'stream/app', tag, makeImage())).status, 201);
  await waitFor('three deliveries', () => arrivals.length >= 3, 15_000);
  assert.ok(arrivals[2]! - started < 2500, `the third event arrived ${arrivals[2]! - started} ms after the pushes: each waited for the endless body`);
  assert.ok(bytesSent < 16 * 1024 * 1024, `${bytesSent} bytes of answers were read`);
});
