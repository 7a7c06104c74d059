// The web UI with access control on (token mode, the access tests' fixture): anonymous browsing of
// what policy opens to everyone, sign-in through the token flow, and a user without rights on a
// hidden team sees nothing of it: not in the tree, search, queries, attribute suggestions,
// components, nor as names in the graph.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Browser, Page } from 'playwright-core';
import { OCI_INDEX, OCI_MANIFEST, makeImage, makeReferrer } from '../helpers/oci-client.ts';
import { startAuthRegistry, PASSWORD } from '../auth/setup.ts';
import { launch, openPage, seriousViolations } from './browser.ts';

let browser: Browser | undefined;
after(() => browser?.close());

const HIDDEN_KEY = 'com.hidden-team.codename';

async function signIn(page: Page, user: string, password = PASSWORD): Promise<void> {
  await page.getByRole('link', { name: 'Sign in' }).click();
  await page.getByLabel('User name').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

async function treeNames(page: Page): Promise<string[]> {
  const tree = page.getByRole('tree', { name: 'Repositories' });
  await tree.getByRole('treeitem').first().waitFor();
  return tree.getByRole('treeitem').evaluateAll((items) => items.map((i) => i.getAttribute('data-name') ?? ''));
}

test('a user without rights sees nothing of a hidden team; anonymous sees only public', { timeout: 180_000 }, async (t) => {
  const r = await startAuthRegistry(t, {
    users: ['root', 'alice', 'carol'],
    auth: {
      admins: { users: ['root'] },
      policies: {
        '*': { authenticated: ['pull'] },
        'public/**': { anonymous: ['pull'] },
        'hidden-team': { users: { carol: ['pull', 'push'] } },
        'shared/vault': { users: { carol: ['pull'] } },
        // Admins only, so the listings below hold just the teams' and public repositories (read
        // by everyone signed in, it would list only versions all of them may pull).
        'component-index': { users: {} },
      },
      token: { service: 'trellis' },
    },
    settings: { queryRatePerSecond: 0, componentRepositoryPrefixes: 'hidden-team/,public/' },
  });
  const root = r.basic('root');
  const secret = makeImage({ annotations: { [HIDDEN_KEY]: 'falcon', 'org.opencontainers.image.version': '2.0.0' } });
  assert.equal((await r.push('hidden-team/secret-app', '2.0.0', root, secret)).status, 201);
  const sbom = makeReferrer(secret.descriptor, { artifactType: 'application/spdx+json' });
  assert.equal((await r.push('hidden-team/secret-app', sbom.digest, root, sbom)).status, 201);
  assert.equal((await r.push('public/base', '1.0.0', root)).status, 201);
  assert.equal((await r.push('shared/tool', 'v1', root)).status, 201);
  // An index in shared whose second child lives in shared/vault, which only carol may pull.
  const open = makeImage();
  const closed = makeImage();
  assert.equal((await r.push('shared/bundle/open', 'v1', root, open)).status, 201);
  assert.equal((await r.push('shared/vault', 'v1', root, closed)).status, 201);
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: OCI_INDEX, manifests: [
      { mediaType: OCI_MANIFEST, digest: open.digest, size: open.bytes.length, annotations: { 'dev.trellis.repository': 'bundle/open' } },
      { mediaType: OCI_MANIFEST, digest: closed.digest, size: closed.bytes.length, annotations: { 'dev.trellis.repository': 'vault' } },
    ],
  }));
  const put = await r.call('/v2/shared/manifests/v1', { method: 'PUT', body: index, auth: root, headers: { 'Content-Type': OCI_INDEX } });
  assert.equal(put.status, 201, put.body.toString());

  browser = await launch(t);
  if (!browser) return;
  const errors: string[] = [];
  const page = await openPage(browser, errors);

  await t.test('anonymous: only what policy opens to everyone', async () => {
    await page.goto(`${r.base}/ui/`);
    assert.deepEqual(await treeNames(page), ['public']);
    assert.deepEqual(await seriousViolations(page), []);
    await page.goto(`${r.base}/ui/repository?name=shared/tool`);
    await page.getByRole('alert').filter({ hasText: 'Sign in to see this.' }).waitFor();
  });

  await t.test('a wrong password is refused with the registry\'s message', async () => {
    await page.goto(`${r.base}/ui/`);
    await signIn(page, 'alice', 'wrong');
    await page.getByRole('alert').filter({ hasText: /wrong user name or password/ }).waitFor();
  });

  await t.test('alice signs in and sees nothing of the hidden team', async () => {
    await page.goto(`${r.base}/ui/`);
    await signIn(page, 'alice');
    await page.getByTestId('signed-in-user').filter({ hasText: 'alice' }).waitFor();
    assert.deepEqual(await treeNames(page), ['public', 'shared']);

    await page.goto(`${r.base}/ui/search?q=secret`);
    await page.getByText('No repository name contains it.').waitFor();
    await page.getByText('No tag contains it.').waitFor();
    await page.goto(`${r.base}/ui/search?q=${secret.digest}`);
    await page.getByText('No manifest digest matches.').waitFor();

    await page.goto(`${r.base}/ui/query?q_annotations__${encodeURIComponent(HIDDEN_KEY)}__eq=falcon&scope=search`);
    await page.getByRole('status').filter({ hasText: 'No matches.' }).waitFor();
    await page.locator('datalist#attribute-names option[value="repository"]').waitFor({ state: 'attached' });
    const suggestions = await page.locator('datalist#attribute-names option').evaluateAll((options) => options.map((o) => (o as unknown as { value: string }).value));
    assert.ok(suggestions.includes('annotations__org.opencontainers.image.version') === false, 'only the hidden image has that annotation');
    assert.ok(suggestions.length > 0 && !suggestions.some((s) => s.includes('hidden-team')), suggestions.join());

    await page.goto(`${r.base}/ui/query?q_artifacttype__eq=${encodeURIComponent('application/spdx+json')}&scope=references`);
    await page.getByRole('status').filter({ hasText: 'No matches.' }).waitFor();

    await page.goto(`${r.base}/ui/components`);
    await page.getByTestId('components').getByRole('link', { name: 'public/base', exact: true }).first().waitFor();
    assert.doesNotMatch(await page.locator('main').textContent() ?? '', /hidden/);

    await page.goto(`${r.base}/ui/repository?name=hidden-team/secret-app`);
    await page.getByRole('alert').filter({ hasText: 'You may not see this.' }).waitFor();
    assert.equal(await page.getByRole('link', { name: '2.0.0' }).count(), 0);

    // The shared index: the child in shared/vault is shown as forbidden, without name or digest.
    await page.goto(`${r.base}/ui/manifest?name=shared&ref=v1`);
    const uses = page.getByTestId('uses');
    await uses.getByText('forbidden').waitFor();
    const text = await uses.textContent() ?? '';
    assert.ok(!text.includes('vault') && !text.includes(closed.digest.slice(7, 19)), text);
    assert.match(text, /shared\/bundle\/open@/);
    assert.deepEqual(await seriousViolations(page), []);
  });

  await t.test('carol, who may pull the team, sees it', async () => {
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.goto(`${r.base}/ui/`);
    await signIn(page, 'carol');
    await page.getByTestId('signed-in-user').filter({ hasText: 'carol' }).waitFor();
    assert.deepEqual(await treeNames(page), ['hidden-team', 'public', 'shared']);
    await page.goto(`${r.base}/ui/repository?name=hidden-team/secret-app`);
    await page.getByRole('link', { name: '2.0.0' }).waitFor();
  });

  assert.deepEqual(errors, []);
});

test('without the token flow, the UI signs in with Basic credentials', { timeout: 120_000 }, async (t) => {
  const r = await startAuthRegistry(t, {
    users: ['root', 'dave'],
    auth: { admins: { users: ['root'] }, policies: { 'mine/**': { users: { dave: ['pull'] } } } },
  });
  assert.equal((await r.push('mine/app', 'v1', r.basic('root'))).status, 201);
  assert.equal((await r.push('theirs/app', 'v1', r.basic('root'))).status, 201);
  browser ??= await launch(t);
  if (!browser) return;
  const page = await openPage(browser);
  await page.goto(`${r.base}/ui/`);
  await page.getByRole('alert').filter({ hasText: 'Sign in to see this.' }).waitFor();
  await signIn(page, 'dave');
  await page.getByTestId('signed-in-user').filter({ hasText: 'dave' }).waitFor();
  assert.deepEqual(await treeNames(page), ['mine']);
  await page.goto(`${r.base}/ui/repository?name=mine/app`);
  await page.getByRole('link', { name: 'v1' }).waitFor();
  await page.context().close();
});

test('signing out while a token request is under way does not leave the old account\'s token in the tab', { timeout: 120_000 }, async (t) => {
  const r = await startAuthRegistry(t, {
    users: ['root', 'carol'],
    auth: {
      admins: { users: ['root'] },
      policies: { 'public/**': { anonymous: ['pull'] }, 'hidden-team/**': { users: { carol: ['pull'] } } },
      token: { service: 'trellis' },
    },
  });
  assert.equal((await r.push('hidden-team/secret-app', '2.0.0', r.basic('root'))).status, 201);
  assert.equal((await r.push('public/base', '1.0.0', r.basic('root'))).status, 201);
  browser ??= await launch(t);
  if (!browser) return;
  const page = await openPage(browser);
  await page.goto(`${r.base}/ui/`);
  await signIn(page, 'carol');
  await page.getByTestId('signed-in-user').filter({ hasText: 'carol' }).waitFor();
  assert.deepEqual(await treeNames(page), ['hidden-team', 'public']);

  // Hold carol's refresh-token exchange (the reload below needs one) until she has signed out.
  let release!: () => void;
  const held = new Promise<void>((resolve) => { release = resolve; });
  let seen!: () => void;
  const requested = new Promise<void>((resolve) => { seen = resolve; });
  await page.route('**/v2/_trellis/token*', async (route) => {
    if ((route.request().postData() ?? '').includes('grant_type=refresh_token')) {
      seen();
      await held;
    }
    await route.continue();
  });
  await page.goto(`${r.base}/ui/repository?name=hidden-team/secret-app`);
  await requested;
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('link', { name: 'Sign in' }).waitFor();
  release();
  // Signed out: the repository is refused and the tree (reached in the app, without a reload) is
  // what anonymous may see, not what carol's late token opens.
  await page.getByRole('alert').filter({ hasText: 'Sign in to see this.' }).waitFor();
  assert.equal(await page.getByRole('link', { name: '2.0.0' }).count(), 0);
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Repositories' }).click();
  assert.deepEqual(await treeNames(page), ['public']);
  await page.context().close();
});
