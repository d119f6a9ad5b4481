// Browser-side helpers for every chromium test (browser, client-*, web-*): launch Debian's
// chromium through playwright-core, open a page at the Halley origin, and load halley.js
// into it from Halley itself (`/halley.js`, so the tests exercise the file the server serves).
// Everything a page's scripts `report(kind, value)` lands in a Mailbox per kind.

import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { after } from 'node:test';

import { chromium } from 'playwright-core';

import { Mailbox, startHalley, stopCleanly, suiteSetup } from './halley.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** Where the web tests save their screenshots (gitignored). */
export const ARTIFACTS = path.resolve(HERE, '..', 'artifacts');

export const CHROMIUM = process.env.HALLEY_E2E_CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
/** Playwright's own deadline for launching and for each page action, in milliseconds. */
export const BROWSER_TIMEOUT_MS = 30_000;
/**
 * A page Halley itself serves, so the document really comes from Halley's loopback origin
 * (a document made up by playwright counts as a public one, and chromium's local network
 * access checks would then block its WebSocket to 127.0.0.1).
 */
const PAGE_PATH = '/health';

/** A fresh chromium profile; `close()` removes it. A missing chromium is an error. */
export async function launchChromium() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(
      `chromium is not installed at ${CHROMIUM}; the browser tests need it: apt-get update && apt-get install -y --no-install-recommends chromium`,
    );
  }
  const profile = mkdtempSync(path.join(os.tmpdir(), 'halley-e2e-client-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    timeout: BROWSER_TIMEOUT_MS,
  });
  context.setDefaultTimeout(BROWSER_TIMEOUT_MS);
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Loads halley.js into `page` (which is at Halley's origin) from Halley's `/halley.js`. */
export async function loadHalleyJs(page) {
  await page.addScriptTag({ url: '/halley.js' });
}

/**
 * Saves a full-page screenshot of `page` as `tests/e2e/artifacts/<name>.png`, prints its path
 * for the test output, and returns it.
 */
export async function screenshot(page, name, t) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  const line = `screenshot: ${file}`;
  if (t) t.diagnostic(line);
  console.log(line);
  return file;
}

/**
 * One Halley (started with `halleyArgs`) and one chromium for the tests of a `describe` block:
 * started before them, stopped after. Returns the function each test calls first: it rethrows
 * a failed setup and returns `{ halley, browser }`.
 */
export function browserSuite(halleyArgs = []) {
  const suite = {};
  const ready = suiteSetup(async () => {
    suite.halley = await startHalley(halleyArgs);
    suite.browser = await launchChromium();
  });
  after(async () => {
    await suite.browser?.close();
    await stopCleanly(suite.halley);
  });
  return () => {
    ready();
    return suite;
  };
}

/**
 * A new tab in `context` on a page at `baseUrl`'s origin (same origin as Halley, so
 * the page may publish and use the forever iframe), with halley.js loaded and `report` wired
 * to one Mailbox per kind. Pass `t` to close the tab when the test ends.
 */
export async function openClientPage(context, baseUrl, kinds, t) {
  const page = await context.newPage();
  if (t) t.after(() => page.close());
  const boxes = Object.fromEntries(kinds.map((kind) => [kind, new Mailbox(`page ${kind}`)]));
  const errors = [];
  page.on('pageerror', (err) => errors.push(err.message));
  await page.exposeFunction('report', (kind, value) => {
    const box = boxes[kind];
    if (!box) throw new Error(`unexpected report ${kind}: ${JSON.stringify(value)}`);
    box.push(value);
  });
  await page.goto(new URL(PAGE_PATH, baseUrl).href);
  await loadHalleyJs(page);
  return { page, boxes, errors };
}

/** Reads `box` until `value` comes (states arrive in order; earlier ones are skipped). */
export async function until(box, value, what = JSON.stringify(value)) {
  for (;;) {
    if ((await box.next(what)) === value) return;
  }
}
