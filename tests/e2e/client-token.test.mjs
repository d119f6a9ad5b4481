// halley.js's `token` in a real browser (chromium) against a Halley with --auth-secret: each
// transport forced in turn receives with a token (WebSocket's `auth` command, the `token` query
// of SSE, JSONP and the iframe, the header of streaming and long-poll); without a token the page
// is told (an error with status 401, never `open`), the iframe and JSONP included, which cannot
// see a status themselves. Then the merchant demo with auth on (--demo): two merchants in two
// pages, each with a token from the demo-only /demo/token, each sees only its own orders and its
// unread badge, and a merchant page trying another merchant's topic is refused (403) while its
// own orders keep coming.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { browserSuite, openClientPage, screenshot, until } from './lib/client.mjs';
import { mintToken } from './lib/halley.mjs';
import { connected, openWebPage, texts } from './lib/web.mjs';

const SECRET = 'e2e-token-secret';
const TRANSPORTS = ['websocket', 'sse', 'stream', 'longpoll', 'jsonp', 'iframe'];
const KINDS = ['state', 'msg', 'error'];

const inSecs = (s) => Math.floor(Date.now() / 1000) + s;
const READER = mintToken({ exp: inSecs(3600), subscribe: ['/btok/**'] }, SECRET);
const PUBLISHER = mintToken({ exp: inSecs(3600), publish: ['/**'] }, SECRET);

/** Starts halley.js in the page on one transport (with `token`, or none), subscribed to `topic`. */
async function startClient(page, transport, topic, token) {
  await page.evaluate(
    ([transport, topic, token]) => {
      window.h = Halley.connect({ transports: [transport], token, shared: false, backoffBase: 50, backoffMax: 400 });
      h.on('state', (s) => report('state', s));
      h.on('error', (e) => report('error', { status: e.status ?? null, message: String(e.message) }));
      h.subscribe(topic, (m) => report('msg', m));
    },
    [transport, topic, token],
  );
}

describe('halley.js tokens in chromium (--auth-secret)', { timeout: 180_000 }, () => {
  const suite = browserSuite(['--auth-secret', SECRET, '--heartbeat-interval', '1']);
  const publish = (halley, topic, body) => halley.publish(topic, body, { Authorization: `Bearer ${PUBLISHER}` });

  for (const transport of TRANSPORTS) {
    test(`${transport}: with a token the page receives`, async (t) => {
      const { halley, browser } = suite();
      const topic = `/btok/${transport}`;
      const { page, boxes, errors } = await openClientPage(browser.context, halley.url, KINDS, t);
      await startClient(page, transport, topic, READER);
      await until(boxes.state, 'open');
      assert.equal(await page.evaluate(() => h.transport), transport);
      const acks = [];
      for (let i = 0; i < 3; i += 1) acks.push((await publish(halley, topic, `m${i}`)).id);
      const got = await boxes.msg.take(3, `${transport} message`);
      assert.deepEqual(got.map((m) => [m.id, m.data]), acks.map((id, i) => [id, `m${i}`]));
      assert.equal(boxes.error.pending, 0, 'no error');
      assert.deepEqual(errors, []);
    });
  }

  for (const transport of TRANSPORTS) {
    test(`${transport}: without a token the page gets a 401 error and never opens`, async (t) => {
      const { halley, browser } = suite();
      const { page, boxes } = await openClientPage(browser.context, halley.url, KINDS, t);
      await startClient(page, transport, `/btok/none/${transport}`, null);
      const err = await boxes.error.next('the refusal');
      assert.equal(err.status, 401, err.message);
      assert.notEqual(await page.evaluate(() => h.state), 'open');
      await publish(halley, `/btok/none/${transport}`, 'secret');
      assert.equal(boxes.msg.pending, 0);
    });
  }
});

describe('the merchant demo with auth on (--demo --auth-secret)', { timeout: 120_000 }, () => {
  const suite = browserSuite(['--demo', '--auth-secret', SECRET]);

  test('two merchants in two pages: each sees only its own orders; another merchant is 403', async (t) => {
    const { halley, browser } = suite();
    const publishOrder = (merchant, order) =>
      halley.publish(`/orders/${merchant}`, JSON.stringify({ order, item: 'anvil', qty: 1, total: 2 }), {
        'Content-Type': 'application/json',
        Authorization: `Bearer ${PUBLISHER}`,
      });
    // The demo-only endpoint: a token for one merchant's topic, not given without --demo.
    const res = await fetch(new URL('/demo/token?merchant=shop-a', halley.url));
    assert.equal(res.status, 200);
    assert.equal((await res.json()).topic, '/orders/shop-a');

    const a = await openWebPage(browser.context, halley, '/demo/orders?merchant=shop-a', t);
    const b = await openWebPage(browser.context, halley, '/demo/orders?merchant=shop-b', t);
    await connected(a.page);
    await connected(b.page);
    assert.match(await a.page.textContent('#auth'), /a token for \/orders\/shop-a only/);

    for (const n of [1, 2, 3]) await publishOrder('shop-a', `A-${n}`);
    await publishOrder('shop-b', 'B-1');
    await a.page.waitForSelector('#badge[data-count="3"]');
    await b.page.waitForSelector('#badge[data-count="1"]');
    assert.deepEqual(await texts(a.page, '#orders .order'), ['A-3 · 1 × anvil · 2.00', 'A-2 · 1 × anvil · 2.00', 'A-1 · 1 × anvil · 2.00']);
    assert.deepEqual(await texts(b.page, '#orders .order'), ['B-1 · 1 × anvil · 2.00']);
    assert.equal(await a.page.title(), '(3) Halley new orders');

    // shop-a's page asks for shop-b's topic with its own token: refused, shown, and its own
    // orders keep coming.
    await a.page.evaluate(() => window.HalleyOrders.client().subscribe('/orders/shop-b', () => {}));
    await a.page.waitForFunction(() => /403/.test(document.getElementById('error').textContent));
    assert.match(await a.page.textContent('#error'), /\/orders\/shop-b/);
    await publishOrder('shop-b', 'B-2');
    await publishOrder('shop-a', 'A-4');
    await a.page.waitForSelector('#badge[data-count="4"]');
    await b.page.waitForSelector('#badge[data-count="2"]');
    assert.ok(!(await texts(a.page, '#orders .order')).some((s) => s.startsWith('B-')), 'no shop-b order on shop-a');
    assert.ok(!(await texts(b.page, '#orders .order')).some((s) => s.startsWith('A-')), 'no shop-a order on shop-b');
    await screenshot(a.page, 'web-orders-auth', t);
    assert.deepEqual(a.errors, []);
    assert.deepEqual(b.errors, []);
    assert.deepEqual(a.external, []);
  });
});
