// Helpers for the tests of the pages Halley serves itself (web-*.test.mjs): open a page on a
// phone-size screen, collect its script errors and any request that leaves Halley's origin,
// wait for its connection, and check that hostile message data stayed text.

import assert from 'node:assert/strict';

/** A phone-size viewport (CSS pixels). */
export const PHONE = { width: 390, height: 844 };

/**
 * Opens `path` of Halley in a new tab of `context` on a phone-size screen. Returns the page,
 * its script errors and the requests it made to other origins (there must be none).
 */
export async function openWebPage(context, halley, path, t) {
  const page = await context.newPage();
  if (t) t.after(() => page.close());
  await page.setViewportSize(PHONE);
  const errors = [];
  const external = [];
  const origin = new URL(halley.url).origin;
  page.on('pageerror', (err) => errors.push(err.message));
  page.on('request', (req) => {
    const url = new URL(req.url());
    if (url.protocol !== 'data:' && url.origin !== origin && url.origin.replace(/^ws/, 'http') !== origin) {
      external.push(req.url());
    }
  });
  await page.goto(new URL(path, halley.url).href);
  return { page, errors, external };
}

/** Waits until the page's connection is open (its `#state` says so). */
export async function connected(page) {
  await page.waitForSelector('#state[data-state="open"]');
}

/** Markup that would run or show up as an element if a page put message data in as HTML. */
export const HOSTILE = '<img src=x onerror="window.pwned=true"><script>window.pwned=true</script>';

/**
 * The page's invariants after it showed hostile data: the text is there literally, no element
 * came from it, nothing ran, no script error, no request to another origin, and nothing is
 * wider than the phone screen.
 */
export async function assertSafe({ page, errors, external }, what) {
  const state = await page.evaluate(() => ({
    pwned: window.pwned,
    imgs: document.querySelectorAll('img').length,
    // Every script is a file from this origin (no inline script, none from elsewhere).
    scripts: [...document.scripts]
      .filter((s) => !s.getAttribute('src') || new URL(s.src, location.href).origin !== location.origin)
      .map((s) => s.outerHTML),
    overflow: document.documentElement.scrollWidth - window.innerWidth,
  }));
  assert.equal(state.pwned, undefined, `${what}: payload markup ran`);
  assert.equal(state.imgs, 0, `${what}: payload markup became an element`);
  assert.deepEqual(state.scripts, [], `${what}: scripts that are not files of this origin`);
  assert.ok(state.overflow <= 1, `${what}: wider than a phone screen by ${state.overflow}px`);
  assert.deepEqual(errors, [], `${what}: script errors`);
  assert.deepEqual(external, [], `${what}: requests to other origins`);
}

/** The text content of every element matching `selector`. */
export function texts(page, selector) {
  return page.$$eval(selector, (nodes) => nodes.map((n) => n.textContent));
}
