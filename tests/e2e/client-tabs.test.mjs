// halley.js sharing one connection between the tabs of an origin, in chromium: three tabs
// in one browser context open one WebSocket to Halley (counted on the server through
// /stats), all three receive every message, and when the leader's tab closes another tab
// takes over from its cursor without losing a message.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { browserSuite, openClientPage, until } from './lib/client.mjs';

const KINDS = ['state', 'msg', 'error'];
const TOPIC = '/tabs/feed';
/** How long the connection count may take to settle after a change, in milliseconds. */
const SETTLE_MS = 10_000;

/** WebSockets open on the server right now, across workers. */
async function sockets(halley) {
  const res = await fetch(`${halley.url}/stats`);
  const stats = await res.json();
  return stats.workers.reduce((sum, w) => sum + w.duplex, 0);
}

/** Waits until the server counts `n` WebSockets; fails with the last count. */
async function expectSockets(halley, n) {
  const deadline = Date.now() + SETTLE_MS;
  let count;
  for (;;) {
    count = await sockets(halley);
    if (count === n || Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(count, n, 'WebSockets open on the server');
}

describe('halley.js shares one connection between tabs (chromium)', { timeout: 120_000 }, () => {
  const ready = browserSuite();
  let halley;
  let browser;

  test('three tabs, one WebSocket; every tab gets every message; closing the leader hands over', async (t) => {
    ({ halley, browser } = ready());
    const tabs = [];
    for (let i = 0; i < 3; i += 1) {
      const tab = await openClientPage(browser.context, halley.url, KINDS, t);
      await tab.page.evaluate((topic) => {
        window.h = Halley.connect({ transports: ['websocket'], backoffBase: 50, backoffMax: 400 });
        h.on('state', (s) => report('state', s));
        h.on('error', (e) => report('error', String(e && e.message)));
        h.subscribe(topic, (m) => report('msg', m));
      }, TOPIC);
      await until(tab.boxes.state, 'open');
      tabs.push(tab);
    }
    const leaders = await Promise.all(tabs.map((tab) => tab.page.evaluate(() => h.leader)));
    assert.deepEqual(leaders, [true, false, false], 'the first tab leads');
    await expectSockets(halley, 1);

    const first = await halley.publishTexts(TOPIC, 'a', 20);
    for (const [i, tab] of tabs.entries()) {
      const got = await tab.boxes.msg.take(20, `tab ${i} message`);
      assert.deepEqual(got.map((m) => [m.id, m.topic, m.data]), first.map((id, n) => [id, TOPIC, `a${n}`]), `tab ${i}`);
    }

    // The leader goes; published at once, before anyone took over: the cursor covers it.
    await tabs[0].page.close();
    const second = await halley.publishTexts(TOPIC, 'b', 20);
    for (const [i, tab] of tabs.slice(1).entries()) {
      const got = await tab.boxes.msg.take(20, `tab ${i + 1} message after the handover`);
      assert.deepEqual(got.map((m) => m.id), second, `tab ${i + 1}`);
    }
    const after = await Promise.all(tabs.slice(1).map((tab) => tab.page.evaluate(() => h.leader)));
    assert.equal(after.filter(Boolean).length, 1, 'exactly one new leader');
    await expectSockets(halley, 1);
    for (const tab of tabs.slice(1)) {
      assert.equal(tab.boxes.msg.pending, 0, 'nothing twice');
      assert.deepEqual(tab.errors, []);
    }
  });
});
