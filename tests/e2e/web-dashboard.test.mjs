// The dashboard in chromium: fed by Halley itself (the server publishes its stats to
// /halley/stats while the page holds its lease, the page subscribes with halley.js), its
// figures move when load is applied, and it draws its charts. A screenshot is saved under
// tests/e2e/artifacts/.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import { launchChromium, screenshot } from './lib/client.mjs';
import { startHalley, stopCleanly, suiteSetup } from './lib/halley.mjs';
import { assertSafe, connected, openWebPage } from './lib/web.mjs';

/** A sample a second: a few of them must arrive within this, in milliseconds. */
const SAMPLES_MS = 15_000;
/** Publishes per round of the load; rounds go on until the figure shows them. */
const BURST = 200;
/** publishes/s the figure must exceed under load (idle, it shows about 1: the stats themselves). */
const LOADED_RATE = 50;

async function figure(page, id) {
  return Number(await page.textContent(`#${id}`));
}

describe('the dashboard (chromium)', { timeout: 120_000 }, () => {
  let halley;
  let browser;
  const ready = suiteSetup(async () => {
    halley = await startHalley();
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await stopCleanly(halley);
  });

  test('the figures come from /halley/stats and move under load', async (t) => {
    ready();
    const tab = await openWebPage(browser.context, halley, '/dashboard', t);
    const { page } = tab;
    await connected(page);
    await page.waitForFunction(() => Number(document.getElementById('samples').textContent) >= 3, null, {
      timeout: SAMPLES_MS,
    });
    // Two workers in the table; the page's own connection is counted; memory is shown.
    assert.equal(await page.$$eval('#workers tbody tr', (rows) => rows.length), 2);
    assert.ok((await figure(page, 'connections')) >= 1);
    assert.match(await page.textContent('#rss'), /^\d+\.\d MiB$/);
    const idle = await figure(page, 'publishes-rate');
    assert.ok(idle < LOADED_RATE, `idle publishes/s ${idle}`);

    // Load: bursts of publishes until the page reports them (a sample a second).
    const deadline = Date.now() + SAMPLES_MS;
    let rate = idle;
    let sent = 0;
    while (rate <= LOADED_RATE) {
      assert.ok(Date.now() < deadline, `publishes/s stayed at ${rate} after ${sent} publishes`);
      await Promise.all(Array.from({ length: BURST }, (_, i) => halley.publish('/load/burst', `m${sent + i}`)));
      sent += BURST;
      rate = await figure(page, 'publishes-rate');
    }
    // The chart has something drawn in it.
    const inked = await page.$eval('#rates-chart', (canvas) => {
      const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      let n = 0;
      for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) n += 1;
      return n;
    });
    assert.ok(inked > 100, `chart pixels drawn: ${inked}`);
    await screenshot(page, 'web-dashboard', t);
    await assertSafe(tab, 'dashboard');
  });

  test('the no-JavaScript page shows the latest messages as text', async (t) => {
    ready();
    await halley.publish('/nojs/feed', '<b>bold?</b> <script>window.pwned=true</script>');
    const tab = await openWebPage(browser.context, halley, '/latest?topic=/nojs/feed', t);
    const shown = await tab.page.$$eval('ol.latest pre', (nodes) => nodes.map((n) => n.textContent));
    assert.deepEqual(shown, ['<b>bold?</b> <script>window.pwned=true</script>']);
    assert.equal(await tab.page.$$eval('main b', (n) => n.length), 0);
    await screenshot(tab.page, 'web-latest', t);
    await assertSafe(tab, 'latest');
  });
});
