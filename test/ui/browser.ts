// A real Chromium (Debian's, installed by .ci/run) driven by playwright-core: headless, no
// sandbox (CI runs as root), no network beyond 127.0.0.1, a fresh temporary profile per launch.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = process.env.TRELLIS_CHROMIUM ?? '/usr/bin/chromium';
export const BUNDLE = join(import.meta.dirname, '../../dist/ui/index.html');

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'];

/** Launches Chromium, or skips the test (fails it under CI=true) when it or the bundle is missing. */
export async function launch(t: TestContext): Promise<Browser | undefined> {
  for (const [path, what] of [[CHROMIUM, 'chromium is not installed (apt-get install chromium)'], [BUNDLE, 'the web UI is not built (npm run build)']] as const) {
    if (existsSync(path)) continue;
    if (process.env.CI === 'true') throw new Error(`${what}; CI must have it`);
    t.skip(what);
    return undefined;
  }
  // launch() gives every browser a fresh temporary profile (--user-data-dir) and removes it on
  // close; the caller closes it when its file's tests are done.
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true, timeout: 60_000 });
}

/** A page that fails the test on uncaught errors in the app and allows only 127.0.0.1. */
export async function openPage(browser: Browser, errors: string[] = [], viewport = { width: 1280, height: 900 }): Promise<Page> {
  const context = await browser.newContext({ viewport });
  await context.route((url) => !['127.0.0.1', 'localhost'].includes(url.hostname), (route) => route.abort());
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  page.on('pageerror', (err) => errors.push(err.message));
  return page;
}

/** Runs axe-core in the page; the violations of impact serious or critical. */
export async function seriousViolations(page: Page): Promise<{ id: string; impact: string; help: string; nodes: string[] }[]> {
  const source = await readFile(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
  await page.evaluate(source);
  const results = await page.evaluate("axe.run(document, { resultTypes: ['violations'] })") as { violations: { id: string; impact: string; help: string; nodes: { target: string[] }[] }[] };
  return results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(' ')).slice(0, 5) }));
}
