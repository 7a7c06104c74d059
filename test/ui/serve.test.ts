// Serving the built bundle: / leads to /ui/, app routes get index.html, assets are cached forever
// and carry a strict CSP, unknown files are 404, and `ui: false` turns all of it off. Runs against
// the real bundle (npm run build), and against a small bundle of its own for the details.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestRegistry } from '../helpers/registry.ts';
import { openUiBundle } from '../../src/ui/index.ts';
import { pushBlob } from '../helpers/oci-client.ts';
import { BUNDLE, launch, openPage } from './browser.ts';

const noRedirect = { redirect: 'manual' } as const;

test('the registry serves the UI under /ui/ and redirects / there', async (t) => {
  if (!existsSync(BUNDLE)) {
    if (process.env.CI === 'true') throw new Error('the web UI is not built; npm run build');
    return t.skip('the web UI is not built (npm run build)');
  }
  const reg = await startTestRegistry();
  t.after(() => reg.dispose());
  for (const path of ['/', '/ui']) {
    const res = await fetch(`${reg.url}${path}`, noRedirect);
    assert.equal(res.status, 302, path);
    assert.equal(res.headers.get('location'), '/ui/');
  }
  const index = await fetch(`${reg.url}/ui/`);
  assert.equal(index.status, 200);
  assert.match(index.headers.get('content-type')!, /^text\/html/);
  assert.match(index.headers.get('content-security-policy')!, /default-src 'self'/);
  assert.equal(index.headers.get('cache-control'), 'no-cache');
  const html = await index.text();
  // No CDN: every script and stylesheet is one of ours.
  const refs = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
  assert.ok(refs.length >= 2 && refs.every((ref) => ref.startsWith('/ui/assets/')), refs.join());
  for (const ref of refs) {
    const asset = await fetch(`${reg.url}${ref}`);
    assert.equal(asset.status, 200, ref);
    assert.match(asset.headers.get('cache-control')!, /immutable/);
    const body = await asset.text();
    assert.doesNotMatch(body, /https?:\/\/(?!www\.w3\.org|reactjs\.org|react\.dev|127\.0\.0\.1)[a-z0-9.-]+\.[a-z]{2,}\/[^"'\s]*\.(?:js|css|woff2?)\b/, `${ref} loads nothing from elsewhere`);
  }
  // App routes (shared links) get the app; a missing asset is a 404, not the app.
  for (const path of ['/ui/repository?name=a/b', '/ui/query?q_tag__eq=x', '/ui/components']) {
    const res = await fetch(`${reg.url}${path}`);
    assert.equal(res.status, 200, path);
    assert.equal(await res.text(), html);
  }
  assert.equal((await fetch(`${reg.url}/ui/assets/nope.js`)).status, 404);
  assert.equal((await fetch(`${reg.url}/ui/`, { method: 'POST' })).status, 405);
  const etag = index.headers.get('etag')!;
  assert.equal((await fetch(`${reg.url}/ui/`, { headers: { 'If-None-Match': etag } })).status, 304);
  // The API is untouched.
  assert.equal((await fetch(`${reg.url}/v2/`)).status, 200);
});

test('the CSP stops an injected script even when it points at a blob anyone may push', async (t) => {
  const reg = await startTestRegistry();
  t.after(() => reg.dispose());
  // 'self' admits this origin's URLs, blobs among them: without nosniff a pushed blob ran as a
  // script in the app (and could read the session's refresh token from sessionStorage).
  const blob = await pushBlob(reg.url, 'evil/app', Buffer.from('window.ran = sessionStorage.length + 1;'));
  const res = await fetch(`${reg.url}/v2/evil/app/blobs/${blob.digest}`);
  assert.equal(res.status, 200);
  const browser = await launch(t);
  if (!browser) return;
  t.after(() => browser.close());
  const page = await openPage(browser);
  await page.goto(`${reg.url}/ui/`);
  const outcome = await page.evaluate(`new Promise((resolve) => {
    const script = document.createElement('script');
    script.src = '/v2/evil/app/blobs/${blob.digest}';
    script.onload = () => resolve(window.ran === undefined ? 'not run' : 'ran');
    script.onerror = () => resolve('refused');
    document.body.append(script);
  })`);
  assert.equal(outcome, 'refused');
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
});

test('the bundle stays within its budget (docs/ui.md)', async (t) => {
  if (!existsSync(BUNDLE)) return t.skip('the web UI is not built (npm run build)');
  const { bundleSizes, BUDGET_BYTES } = await import('../../scripts/ui-budget.ts');
  const js = bundleSizes().filter((s) => s.file.endsWith('.js'));
  assert.ok(js.length > 0);
  const gzipped = js.reduce((sum, s) => sum + s.gzipped, 0);
  assert.ok(gzipped <= BUDGET_BYTES, `${gzipped} bytes gzipped > ${BUDGET_BYTES}`);
  assert.ok(gzipped > 10_000, 'the bundle holds the app');
});

test('ui: false serves neither /ui/ nor /; a missing bundle is the same as no UI', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'trellis-ui-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const off = await startTestRegistry({ ui: false });
  t.after(() => off.dispose());
  assert.equal((await fetch(`${off.url}/`, noRedirect)).status, 404);
  assert.equal((await fetch(`${off.url}/ui/`, noRedirect)).status, 404);
  assert.equal(await openUiBundle(join(dir, 'missing')), undefined);
  await mkdir(join(dir, 'b/assets'), { recursive: true });
  await writeFile(join(dir, 'b/index.html'), '<!doctype html><script type="module" src="/ui/assets/a.js"></script>');
  await writeFile(join(dir, 'b/assets/a.js'), 'export {}');
  const bundle = (await openUiBundle(join(dir, 'b')))!;
  assert.equal(bundle.lookup('')!.contentType, 'text/html; charset=utf-8');
  assert.equal(bundle.lookup('manifest')!.body.toString(), await readFile(join(dir, 'b/index.html'), 'utf8'));
  assert.equal(bundle.lookup('assets/a.js')!.contentType, 'text/javascript; charset=utf-8');
  assert.equal(bundle.lookup('assets/a.js')!.immutable, true);
  assert.equal(bundle.lookup('assets/b.js'), undefined);
  // Lookups are in the files read at start, never on disk: a path outside the bundle is an app route.
  assert.equal(bundle.lookup('../../etc/passwd')!.body.toString(), await readFile(join(dir, 'b/index.html'), 'utf8'));
  assert.equal(bundle.lookup('favicon.ico'), undefined);
});
