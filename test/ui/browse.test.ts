// The web UI in a real Chromium against a registry filled by real clients: the tree, search, a
// repository, the three-level referrer tree, a nested-namespace link, the query builder,
// components, keyboard navigation and an axe-core check of every main page.
// TRELLIS_UI_SCREENSHOTS=1 also writes the screenshots of docs/ui.md.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { startTestRegistry, type TestRegistry } from '../helpers/registry.ts';
import { findPeer } from '../helpers/peers.ts';
import { launch, openPage, seriousViolations } from './browser.ts';
import { fillRegistry, TYPES, type Filled } from './fill.ts';
import { makeImage, pushBuilt } from '../helpers/oci-client.ts';

let reg: TestRegistry;
let filled: Filled;
let browser: Browser | undefined;
let page: Page;
const errors: string[] = [];
const SHOTS = process.env.TRELLIS_UI_SCREENSHOTS === '1' ? join(import.meta.dirname, '../../docs/ui') : undefined;

before(async () => {
  reg = await startTestRegistry();
});
after(async () => {
  await browser?.close();
  await reg.dispose();
});

/** An attribute of the element that has the keyboard focus. */
const focused = (attribute: string) => page.evaluate(`document.activeElement?.getAttribute(${JSON.stringify(attribute)})`);

async function shot(name: string): Promise<void> {
  if (!SHOTS) return;
  await mkdir(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: false });
}

async function axe(where: string): Promise<void> {
  const violations = await seriousViolations(page);
  assert.deepEqual(violations, [], `${where}: ${JSON.stringify(violations, null, 2)}`);
}

test('setup: real clients fill the registry, Chromium starts', async (t) => {
  const oras = findPeer('oras');
  if (!oras) {
    if (process.env.CI === 'true') throw new Error('oras is not installed (run .ci/install-peers.sh)');
    return t.skip('oras is not installed');
  }
  filled = await fillRegistry(reg.url, reg.host, oras);
  browser = await launch(t);
  // Screenshots for docs/ui.md are taken in a smaller window, to keep the PNGs small.
  if (browser) page = await openPage(browser, errors, SHOTS ? { width: 1100, height: 680 } : undefined);
});

test('/ leads to the UI, whose tree lists nested namespaces and works with the keyboard', async (t) => {
  if (!browser) return t.skip('no browser');
  await page.goto(`${reg.url}/`);
  assert.equal(new URL(page.url()).pathname, '/ui/');
  const tree = page.getByRole('tree', { name: 'Repositories' });
  await tree.locator('[data-name="team"]').waitFor();
  const roots = await tree.getByRole('treeitem').evaluateAll((items) => items.map((i) => i.getAttribute('data-name')));
  assert.deepEqual(roots, ['component-index', 'demo', 'ocm', 'team']);
  await shot('repositories');
  await axe('repository tree');

  // Keyboard only: focus the first item, move down to demo, open it, go to its child app, open.
  await tree.getByRole('treeitem').first().focus();
  await page.keyboard.press('ArrowDown');
  assert.equal(await focused('data-name'), 'demo');
  await page.keyboard.press('ArrowRight');
  const demo = tree.locator('[data-name="demo"]');
  await tree.locator('[data-name="app"]').waitFor();
  assert.equal(await demo.getAttribute('aria-expanded'), 'true');
  await page.keyboard.press('ArrowRight');
  assert.equal(await focused('data-name'), 'app');
  assert.equal(await focused('aria-level'), '2');
  await page.keyboard.press('ArrowLeft');
  assert.equal(await focused('data-name'), 'demo');
  await page.keyboard.press('ArrowLeft');
  assert.equal(await demo.getAttribute('aria-expanded'), 'false');
  await page.keyboard.press('End');
  assert.equal(await focused('data-name'), 'team');
  await page.keyboard.press('ArrowRight');
  await tree.locator('[data-name="app"]').waitFor();
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('ArrowRight');
  await tree.locator('[data-name="ko-build"]').waitFor();
  await page.keyboard.press('ArrowRight');
  // team > app > ko-build (a repository with children): Enter opens it.
  assert.equal(await focused('data-name'), 'ko-build');
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'team/app/ko-build' }).waitFor();
  assert.equal(new URL(page.url()).searchParams.get('name'), 'team/app/ko-build');
});

test('the search box finds repositories, tags and digests', async (t) => {
  if (!browser) return t.skip('no browser');
  await page.goto(`${reg.url}/ui/`);
  await page.getByRole('searchbox', { name: /search/i }).fill('app');
  await page.getByRole('button', { name: 'Search' }).click();
  const repositories = page.getByTestId('search-repositories');
  await repositories.waitFor();
  const names = await repositories.getByRole('link').allTextContents();
  assert.ok(names.includes('demo/app') && names.includes('team/app/ko-build'), names.join());
  await shot('search');
  await axe('search');
  await page.goto(`${reg.url}/ui/search?q=v1.4`);
  await page.getByRole('link', { name: 'demo/app:v1.4' }).waitFor();
  await page.goto(`${reg.url}/ui/search?q=${filled.chain[2]!.slice(7, 19)}`);
  await page.getByRole('link', { name: new RegExp(`demo/app@${filled.chain[2]!.slice(0, 19)}`) }).waitFor();
});

test('a repository lists its tags with kind, size and push time', async (t) => {
  if (!browser) return t.skip('no browser');
  await page.goto(`${reg.url}/ui/repository?name=demo/app`);
  const table = page.getByRole('table', { name: 'Tags of demo/app' });
  await table.getByRole('link', { name: 'v1.4' }).waitFor();
  const rows = await table.getByRole('row').allTextContents();
  assert.equal(rows.length, 4, rows.join('\n'));
  assert.ok(rows.every((r, i) => i === 0 || r.includes(TYPES.app)), rows.join('\n'));
  assert.match(rows[1]!, /latest.*UTC/);
  await shot('repository');
  await axe('repository');
});

test('a long tags list is loaded page by page as it scrolls, with only the rows in view rendered', async (t) => {
  if (!browser) return t.skip('no browser');
  const image = makeImage();
  assert.equal((await pushBuilt(reg.url, 'demo/many', 'tag-0000', image)).status, 201);
  for (let i = 1; i < 600; i++) {
    const res = await fetch(`${reg.url}/v2/demo/many/manifests/tag-${String(i).padStart(4, '0')}`, { method: 'PUT', body: image.bytes, headers: { 'Content-Type': image.mediaType } });
    assert.equal(res.status, 201);
  }
  await page.goto(`${reg.url}/ui/repository?name=demo/many`);
  const table = page.getByRole('table', { name: 'Tags of demo/many' });
  await table.getByRole('link', { name: 'tag-0000' }).waitFor();
  assert.equal(await page.getByTestId('tag-count').textContent(), '250+');
  const body = table.locator('.vbody');
  for (let round = 0; round < 20 && (await page.getByTestId('tag-count').textContent()) !== '600'; round++) {
    await body.evaluate((el) => { el.scrollTop = el.scrollHeight; });
    await new Promise((resolve) => setTimeout(resolve, 150));
  }
  assert.equal(await page.getByTestId('tag-count').textContent(), '600');
  await body.evaluate((el) => { el.scrollTop = el.scrollHeight; });
  await table.getByRole('link', { name: 'tag-0599' }).waitFor();
  const rendered = await table.getByRole('row').count();
  assert.ok(rendered < 60, `${rendered} rows in the DOM for 600 tags`);
});

test('a manifest page expands the referrer tree three levels deep and filters by artifact type', async (t) => {
  if (!browser) return t.skip('no browser');
  await page.goto(`${reg.url}/ui/manifest?name=demo/app&ref=v1`);
  const tree = page.getByRole('tree', { name: 'Referrers' });
  await tree.getByRole('treeitem').first().waitFor();
  assert.equal(await tree.getByRole('treeitem').count(), 2);
  // Level 1: the signature; its referrer (level 2) the SBOM; its referrer (level 3) the attestation.
  const signature = tree.getByRole('treeitem', { name: new RegExp(TYPES.signature) });
  await signature.focus();
  await page.keyboard.press('ArrowRight');
  const sbom = tree.locator(`[role=treeitem][aria-level="2"]`);
  await sbom.waitFor();
  assert.match((await sbom.getAttribute('data-name'))!, /spdx/);
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('ArrowRight');
  await page.keyboard.press('ArrowRight');
  const attestation = tree.locator(`[role=treeitem][aria-level="3"]`);
  await attestation.waitFor();
  assert.match((await attestation.getAttribute('data-name'))!, /in-toto/);
  assert.ok((await attestation.getAttribute('data-name'))!.includes(filled.chain[3]!.slice(7, 19)));
  await shot('manifest');
  await axe('manifest');

  // The filter keeps one artifact type at the top level, with its count.
  await page.getByRole('button', { name: new RegExp(`^${TYPES.signature.replace(/[.+]/g, '\\$&')} 1$`) }).click();
  assert.equal(await tree.getByRole('treeitem').count(), 1);
  await page.getByRole('button', { name: /^All 2$/ }).click();
  assert.equal(await tree.getByRole('treeitem').count(), 2);

  // Opening the level-3 node shows its subject chain upward.
  await page.goto(`${reg.url}/ui/manifest?name=demo/app&ref=${filled.chain[3]}`);
  await page.getByTestId('uses').getByRole('link', { name: new RegExp(filled.chain[2]!.slice(7, 19)) }).waitFor();
  await page.getByRole('button', { name: 'Copy the docker command' }).waitFor();
});

test('an index links into nested namespaces, and the child shows what uses it', async (t) => {
  if (!browser) return t.skip('no browser');
  await page.goto(`${reg.url}/ui/repository?name=team/app/ko-build`);
  const tags = page.getByRole('table', { name: 'Tags of team/app/ko-build' });
  await tags.getByRole('link', { name: 'v1' }).waitFor();
  assert.match((await tags.getByRole('row').nth(1).textContent())!, /image index.*linux\/amd64, linux\/arm64/);
  await shot('repository-index');
  await page.goto(`${reg.url}/ui/manifest?name=team/app/ko-build&ref=v1`);
  const child = filled.nested.children[0]!;
  const link = page.getByTestId('children').getByRole('link', { name: new RegExp(`^${child.repository}@`) });
  await link.click();
  await page.getByRole('heading', { name: new RegExp(`^${child.repository}@`) }).waitFor();
  assert.equal(new URL(page.url()).searchParams.get('name'), child.repository);
  const usedBy = page.getByTestId('used-by');
  await usedBy.getByRole('link', { name: /team\/app\/ko-build@/ }).waitFor();
  assert.match(await usedBy.textContent() ?? '', /nested namespace/);
  await page.getByText('Config JSON').click();
  await page.locator('pre').filter({ hasText: '"architecture": "amd64"' }).waitFor();
  await axe('nested child');
});

test('the query builder suggests attributes, runs a query and puts it in the URL', async (t) => {
  if (!browser) return t.skip('no browser');
  await page.goto(`${reg.url}/ui/query`);
  // The suggestions arrive after the page: wait for them.
  await page.locator('datalist#attribute-names option[value="artifacttype"]').waitFor({ state: 'attached' });
  const suggestions = await page.locator('datalist#attribute-names option').evaluateAll((options) => options.map((o) => (o as unknown as { value: string }).value));
  assert.ok(suggestions.includes('annotations__org.opencontainers.image.version'), suggestions.join());
  assert.ok(suggestions.includes('repository') && suggestions.includes('artifacttype'));
  await page.getByTestId('attribute-0').fill('annotations__org.opencontainers.image.version');
  await page.getByTestId('comparison-0').selectOption('gte');
  await page.getByTestId('value-0').fill('1.4');
  await page.getByRole('button', { name: 'Add condition' }).click();
  await page.getByTestId('attribute-1').fill('annotations__org.opencontainers.image.vendor');
  await page.getByTestId('value-1').fill('acme');
  await page.getByRole('button', { name: 'Run query' }).click();
  const results = page.getByTestId('query-results');
  await results.getByRole('link', { name: /^demo\/app@/ }).waitFor();
  const url = new URL(page.url());
  assert.equal(url.searchParams.get('q_annotations__org.opencontainers.image.version__gte'), '1.4');
  assert.equal(url.searchParams.get('q_annotations__org.opencontainers.image.vendor__eq'), 'acme');
  assert.equal(await results.getByRole('row').count(), 2);
  await shot('query');
  await axe('query');
  // The URL alone reproduces the results (a shared link).
  const fresh = await openPage(browser);
  await fresh.goto(url.href);
  await fresh.getByTestId('query-results').getByRole('link', { name: /^demo\/app@/ }).waitFor();
  await fresh.context().close();
  // A refused query shows the registry's message.
  await page.goto(`${reg.url}/ui/query?q_nosuchattribute__eq=x&scope=search`);
  await page.getByRole('alert').filter({ hasText: 'nosuchattribute' }).waitFor();
});

test('components: the list, versions in semver order, a version with its resources', async (t) => {
  if (!browser) return t.skip('no browser');
  await page.goto(`${reg.url}/ui/components`);
  const table = page.getByTestId('components');
  await table.getByRole('link', { name: filled.component.name, exact: true }).click();
  const versions = page.getByTestId('component-versions');
  await versions.getByRole('link', { name: '1.0.0' }).waitFor();
  await axe('component');
  await versions.getByRole('link', { name: '1.0.0' }).click();
  await page.getByRole('heading', { name: `${filled.component.name} 1.0.0` }).waitFor();
  const resources = await page.getByTestId('resources').getByRole('row').allTextContents();
  assert.ok(resources.length >= 2, resources.join('\n'));
  await shot('component-version');
  await axe('component version');
  await page.goto(`${reg.url}/ui/components?q_provider__eq=acme.org`);
  await page.getByTestId('components').getByRole('link', { name: filled.component.name, exact: true }).waitFor();
  await shot('components');
  await axe('components');
  await page.goto(`${reg.url}/ui/components?q_provider__eq=nobody`);
  await page.getByText('No components.').waitFor();
});

test('signing in to a registry without access control says there are no accounts', async (t) => {
  if (!browser) return t.skip('no browser');
  await page.goto(`${reg.url}/ui/signin`);
  await page.getByLabel('User name').fill('someone');
  await page.getByLabel('Password').fill('anything');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'This registry has no accounts' }).waitFor();
});

test('the app raised no uncaught errors', (t) => {
  if (!browser) return t.skip('no browser');
  assert.deepEqual(errors, []);
});
