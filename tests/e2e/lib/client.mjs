// Browser-side helpers for the halley.js tests (tests/e2e/client-*.test.mjs): launch Debian's
// chromium through playwright-core, open a page at the Halley origin, and load halley.js
// into it. Everything a page's scripts `report(kind, value)` lands in a Mailbox per kind.

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { Mailbox } from './halley.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** The library under test (one source; no build step). */
export const HALLEY_JS = path.resolve(HERE, '..', '..', '..', 'clients', 'js', 'halley.js');

const CHROMIUM = process.env.HALLEY_E2E_CHROMIUM ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
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
const BROWSER_TIMEOUT_MS = 30_000;
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
      `chromium is not installed at ${CHROMIUM}; the browser tests need it: apt-get update && apt-get install -y chromium`,
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

/**
 * Loads halley.js into `page`. The one place to change when Halley serves `/halley.js`
 * itself: `page.addScriptTag({ url: '/halley.js' })`.
 */
export async function loadHalleyJs(page) {
  await page.addScriptTag({ path: HALLEY_JS });
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
