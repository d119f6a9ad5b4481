// The dashboard in chromium: fed by Halley itself (the server publishes its stats to
// /halley/stats while the page holds its lease, the page subscribes with halley.js), its
// figures move when load is applied (publishes/s, subscribers by transport, fan-out latency
// samples), and it draws its charts. A screenshot is saved under tests/e2e/artifacts/.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { browserSuite, screenshot } from './lib/client.mjs';
import { assertSafe, connected, openWebPage } from './lib/web.mjs';

/** A sample a second: a few of them must arrive within this, in milliseconds. */
const SAMPLES_MS = 15_000;
/** Publishes per round of the load; rounds go on until the figure shows them. */
const BURST = 200;
/** publishes/s the figure must exceed under load (idle, it shows about 1: the stats themselves). */
const LOADED_RATE = 50;

/** SSE subscribers opened from node while the load runs. */
const STREAMS = 3;

async function figure(page, id) {
  return Number(await page.textContent(`#${id}`));
}

/** The dashboard's count for one transport (its row in the transports table). */
async function transportCount(page, name) {
  return Number(await page.textContent(`#transports tr[data-transport="${name}"] td.num`));
}

/** Opens an SSE subscription on `topic` and keeps reading it; `close()` ends it. */
async function sseSubscriber(halley, topic) {
  const controller = new AbortController();
  const res = await fetch(`${halley.url}/sub${topic}?transport=sse`, { signal: controller.signal });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  const reading = (async () => {
    try {
      while (!(await reader.read()).done);
    } catch {
      // aborted by close()
    }
  })();
  return {
    close: async () => {
      controller.abort();
      await reading;
    },
  };
}

/** Pixels drawn on a canvas. */
async function ink(page, id) {
  return page.$eval(`#${id}`, (canvas) => {
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) n += 1;
    return n;
  });
}

describe('the dashboard (chromium)', { timeout: 120_000 }, () => {
  const ready = browserSuite();
  let halley;
  let browser;

  test('the figures come from /halley/stats and move under load', async (t) => {
    ({ halley, browser } = ready());
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
    // Idle: the page's own connection is the only subscriber; the stats messages it gets are
    // the only fan-out samples (about one a second).
    assert.equal(await page.$$eval('#transports tbody tr', (rows) => rows.length), 12);
    assert.equal(await transportCount(page, 'sse'), 0);
    const idleSamples = await figure(page, 'latency-samples');
    assert.ok(idleSamples < LOADED_RATE, `idle fan-out samples ${idleSamples}`);

    // Load: SSE subscribers, and bursts of publishes to them until the page reports both
    // (a sample a second).
    const streams = await Promise.all(Array.from({ length: STREAMS }, () => sseSubscriber(halley, '/load/burst')));
    const deadline = Date.now() + SAMPLES_MS;
    let rate = idle;
    let samples = idleSamples;
    let sent = 0;
    while (rate <= LOADED_RATE || samples <= idleSamples + LOADED_RATE) {
      assert.ok(Date.now() < deadline, `publishes/s ${rate}, fan-out samples ${samples} after ${sent} publishes`);
      await Promise.all(Array.from({ length: BURST }, (_, i) => halley.publish('/load/burst', `m${sent + i}`)));
      sent += BURST;
      rate = await figure(page, 'publishes-rate');
      samples = await figure(page, 'latency-samples');
    }
    await page.waitForFunction((n) => {
      const cell = document.querySelector('#transports tr[data-transport="sse"] td.num');
      return cell && Number(cell.textContent) >= n;
    }, STREAMS, { timeout: SAMPLES_MS });
    // The latency figures are numbers (in ms) in order, and the charts have something drawn.
    const p50 = await figure(page, 'latency-p50');
    const p99 = await figure(page, 'latency-p99');
    assert.ok(p50 >= 0 && p99 >= p50, `fan-out latency p50 ${p50} p99 ${p99}`);
    for (const chart of ['rates-chart', 'latency-chart']) {
      const inked = await ink(page, chart);
      assert.ok(inked > 100, `${chart} pixels drawn: ${inked}`);
    }
    await screenshot(page, 'web-dashboard', t);
    // The subscribers leave: their gauge goes back down.
    await Promise.all(streams.map((s) => s.close()));
    await page.waitForFunction(() => {
      const cell = document.querySelector('#transports tr[data-transport="sse"] td.num');
      return cell && Number(cell.textContent) === 0;
    }, null, { timeout: SAMPLES_MS });
    await assertSafe(tab, 'dashboard');
  });

  test('the no-JavaScript page shows the latest messages as text', async (t) => {
    ({ halley, browser } = ready());
    await halley.publish('/nojs/feed', '<b>bold?</b> <script>window.pwned=true</script>');
    const tab = await openWebPage(browser.context, halley, '/latest?topic=/nojs/feed', t);
    const shown = await tab.page.$$eval('ol.latest pre', (nodes) => nodes.map((n) => n.textContent));
    assert.deepEqual(shown, ['<b>bold?</b> <script>window.pwned=true</script>']);
    assert.equal(await tab.page.$$eval('main b', (n) => n.length), 0);
    await screenshot(tab.page, 'web-latest', t);
    await assertSafe(tab, 'latest');
  });
});
