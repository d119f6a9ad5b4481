// The demo apps Halley serves itself, in chromium, against `halley serve --demo`: each page
// comes alive with the built-in publisher (DOM assertions), works on a phone-size screen,
// makes no request to another origin, and shows hostile message data as text. A screenshot
// of each is saved under tests/e2e/artifacts/ and its path printed.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import { launchChromium, screenshot } from './lib/client.mjs';
import { startHalley, stopCleanly, suiteSetup } from './lib/halley.mjs';
import { HOSTILE, assertSafe, connected, openWebPage, texts } from './lib/web.mjs';

/** How long the demo publisher may take to show something, in milliseconds. */
const DEMO_MS = 20_000;

async function publishJson(halley, topic, value, event) {
  const query = event ? `?event=${event}` : '';
  return halley.publish(`${topic}${query}`, JSON.stringify(value), { 'Content-Type': 'application/json' });
}

describe('the demo pages with --demo (chromium)', { timeout: 180_000 }, () => {
  let halley;
  let browser;
  let other;
  const ready = suiteSetup(async () => {
    halley = await startHalley(['--demo']);
    browser = await launchChromium();
  });
  after(async () => {
    await other?.close();
    await browser?.close();
    await stopCleanly(halley);
  });

  test('the landing page links every demo and the dashboard', async (t) => {
    ready();
    const tab = await openWebPage(browser.context, halley, '/', t);
    const links = await tab.page.$$eval('a', (as) => as.map((a) => a.getAttribute('href')));
    for (const href of ['/demo/chat', '/demo/stocks', '/demo/monitor', '/demo/orders', '/dashboard', '/halley.js']) {
      assert.ok(links.includes(href), `link to ${href}`);
    }
    const curl = (await texts(tab.page, 'pre.curl')).join('\n');
    assert.ok(curl.includes(`${halley.url}/pub/stocks/ACME`), curl);
    await screenshot(tab.page, 'web-landing', t);
    await assertSafe(tab, 'landing');
  });

  test('stocks: rows for the symbols, prices change and flash', async (t) => {
    ready();
    const tab = await openWebPage(browser.context, halley, '/demo/stocks', t);
    const { page } = tab;
    await page.waitForFunction(() => document.querySelectorAll('#quotes tbody tr').length >= 5, null, {
      timeout: DEMO_MS,
    });
    const before = await page.$$eval('#quotes tbody tr', (rows) =>
      Object.fromEntries(rows.map((r) => [r.dataset.symbol, r.querySelector('.price').textContent])),
    );
    await page.waitForFunction(
      (seen) =>
        [...document.querySelectorAll('#quotes tbody tr')].some(
          (r) => seen[r.dataset.symbol] !== undefined && r.querySelector('.price').textContent !== seen[r.dataset.symbol],
        ),
      before,
      { timeout: DEMO_MS },
    );
    await page.waitForSelector('#quotes tr.flash-up, #quotes tr.flash-down', { timeout: DEMO_MS });
    const changes = await texts(page, '#quotes .change.up, #quotes .change.down');
    assert.ok(changes.some((c) => /^[+-]\d+\.\d\d$/.test(c)), `signed changes: ${changes}`);
    await screenshot(page, 'web-stocks', t);
    // Text where a number belongs is dropped, never rendered.
    await publishJson(halley, '/stocks/ZZHOSTILE', { price: HOSTILE });
    await publishJson(halley, '/stocks/ZZSAFE', { price: 12.5, symbol: HOSTILE });
    await page.waitForSelector('#quotes tr[data-symbol="ZZSAFE"]');
    assert.equal(await page.$('#quotes tr[data-symbol="ZZHOSTILE"]'), null);
    await assertSafe(tab, 'stocks');
  });

  test('chat: two browsers talk, join and leave notices, the bots, hostile text', async (t) => {
    ready();
    other = await launchChromium();
    const alice = await openWebPage(browser.context, halley, '/demo/chat', t);
    const bob = await openWebPage(other.context, halley, '/demo/chat', t);
    for (const [tab, nick] of [
      [alice, 'alice'],
      [bob, 'bob'],
    ]) {
      await connected(tab.page);
      await tab.page.fill('#join input[name="nick"]', nick);
      await tab.page.click('#join button');
      await tab.page.waitForFunction((n) => document.getElementById('me').textContent === n, nick);
    }
    await alice.page.waitForFunction(() =>
      [...document.querySelectorAll('#lines li.notice')].some((li) => li.textContent === 'bob joined'),
    );
    await alice.page.fill('#say input[name="text"]', 'hello from alice');
    await alice.page.click('#say button');
    await bob.page.waitForFunction(() =>
      [...document.querySelectorAll('#lines li.line')].some(
        (li) => li.querySelector('.nick').textContent === 'alice' && li.querySelector('.text').textContent === 'hello from alice',
      ),
    );
    // A line from the demo's bots reaches both.
    for (const tab of [alice, bob]) {
      await tab.page.waitForFunction(
        () => [...document.querySelectorAll('#lines li .nick')].some((n) => n.textContent.endsWith('-bot')),
        null,
        { timeout: DEMO_MS },
      );
    }
    // Markup typed by a user, or published by anyone, is shown as typed.
    await bob.page.fill('#say input[name="text"]', HOSTILE);
    await bob.page.click('#say button');
    await publishJson(halley, '/chat/lobby', { nick: HOSTILE, text: HOSTILE }, 'say');
    await halley.publish('/chat/lobby?event=say', HOSTILE);
    await alice.page.waitForFunction(
      (h) => [...document.querySelectorAll('#lines li .text')].filter((n) => n.textContent === h).length >= 3,
      HOSTILE,
    );
    assert.ok((await texts(alice.page, '#lines .nick')).includes(HOSTILE));
    await screenshot(alice.page, 'web-chat', t);
    // Bob moves to another room: alice sees him leave.
    await bob.page.fill('#join input[name="room"]', 'elsewhere');
    await bob.page.click('#join button');
    await alice.page.waitForFunction(() =>
      [...document.querySelectorAll('#lines li.notice')].some((li) => li.textContent === 'bob left'),
    );
    await assertSafe(alice, 'chat (alice)');
    await assertSafe(bob, 'chat (bob)');
  });

  test('monitor: a card per host with readings and LEDs; alarms are listed', async (t) => {
    ready();
    const tab = await openWebPage(browser.context, halley, '/demo/monitor', t);
    const { page } = tab;
    await page.waitForFunction(() => document.querySelectorAll('#hosts .host').length >= 6, null, { timeout: DEMO_MS });
    const leds = await page.$$eval('#hosts .led', (nodes) => nodes.map((n) => n.className));
    assert.ok(leds.every((c) => /^led (green|amber|red)$/.test(c)), `LEDs: ${leds}`);
    const temperatures = await texts(page, '#hosts .temperature');
    assert.ok(temperatures.every((s) => /^temperature \d+\.\d °C$/.test(s)), `${temperatures}`);
    const count = Number(await page.textContent('#alarm-count'));
    await publishJson(
      halley,
      '/monitor/test-host',
      { host: 'test-host', temperature: 99.5, voltage: 12, led: `red ${HOSTILE}`, alarm: HOSTILE },
      'alarm',
    );
    await page.waitForSelector('#hosts .host.alarm[data-host="test-host"]');
    assert.equal(await page.getAttribute('#hosts .host[data-host="test-host"] .led', 'class'), 'led unknown');
    await page.waitForFunction((n) => Number(document.getElementById('alarm-count').textContent) > n, count);
    assert.ok((await texts(page, '#alarms li')).some((s) => s.endsWith(`test-host: ${HOSTILE}`)));
    await screenshot(page, 'web-monitor', t);
    await assertSafe(tab, 'monitor');
  });

  test('orders: each merchant sees its own orders, with an unread badge', async (t) => {
    ready();
    // A merchant of the demo gets orders from the built-in publisher.
    const acme = await openWebPage(browser.context, halley, '/demo/orders?merchant=acme', t);
    await acme.page.waitForFunction(() => Number(document.getElementById('badge').textContent) >= 1, null, {
      timeout: DEMO_MS,
    });
    // A merchant of its own: exactly the orders on its topic are counted.
    const shop = await openWebPage(browser.context, halley, '/demo/orders?merchant=test-shop', t);
    await connected(shop.page);
    assert.equal(await shop.page.textContent('#badge'), '0');
    for (let i = 1; i <= 3; i += 1) {
      await publishJson(halley, '/orders/test-shop', { order: `T-${i}`, item: i === 3 ? HOSTILE : 'anvil', qty: 1, total: 9.5 }, 'order');
    }
    await publishJson(halley, '/orders/someone-else', { order: 'X-1', item: 'not yours', qty: 1, total: 1 }, 'order');
    await shop.page.waitForFunction(() => document.getElementById('badge').textContent === '3');
    assert.equal(await shop.page.textContent('#badge-text'), 'new orders');
    assert.equal(await shop.page.title(), '(3) Halley new orders');
    const orders = await texts(shop.page, '#orders .order');
    assert.deepEqual(orders, [`T-3 · 1 × ${HOSTILE} · 9.50`, 'T-2 · 1 × anvil · 9.50', 'T-1 · 1 × anvil · 9.50']);
    await screenshot(shop.page, 'web-orders', t);
    await shop.page.click('#read');
    assert.equal(await shop.page.textContent('#badge'), '0');
    assert.equal(await shop.page.$$eval('#orders li.unread', (n) => n.length), 0);
    await assertSafe(shop, 'orders (test-shop)');
    await assertSafe(acme, 'orders (acme)');
  });
});
