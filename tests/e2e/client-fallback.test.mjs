// halley.js picking its transport in chromium: with WebSocket blocked it falls back to SSE;
// with WebSocket blocked and the streams held back (a buffering proxy stand-in: the response
// never starts) it ends on long-poll; and a page reload mid-stream resumes from the cursor in
// sessionStorage without loss or duplicates.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { browserSuite, loadHalleyJs, openClientPage, until } from './lib/client.mjs';

const KINDS = ['state', 'msg', 'error'];
/** A short open bound keeps the fallback quick; the default is 10 s. */
const FIRST_BYTE_MS = 1500;

/** Starts halley.js with every transport allowed (the automatic order). */
async function startClient(page, topic) {
  await page.evaluate(
    ([topic, firstByteTimeout]) => {
      window.h = Halley.connect({ shared: false, firstByteTimeout, backoffBase: 50, backoffMax: 400 });
      h.on('state', (s) => report('state', s));
      h.on('error', (e) => report('error', String(e && e.message)));
      h.subscribe(topic, (m) => report('msg', m));
    },
    [topic, FIRST_BYTE_MS],
  );
}

describe('halley.js transport choice and resume in chromium', { timeout: 120_000 }, () => {
  const ready = browserSuite();
  let halley;
  let browser;

  test('the default order starts on WebSocket', async (t) => {
    ({ halley, browser } = ready());
    const { page, boxes } = await openClientPage(browser.context, halley.url, KINDS, t);
    await startClient(page, '/fallback/none');
    await until(boxes.state, 'open');
    assert.equal(await page.evaluate(() => h.transport), 'websocket');
  });

  test('WebSocket blocked -> SSE', async (t) => {
    ({ halley, browser } = ready());
    const { page, boxes, errors } = await openClientPage(browser.context, halley.url, KINDS, t);
    await page.routeWebSocket(/./, (ws) => ws.close({ code: 1011, reason: 'blocked by the test' }));
    await startClient(page, '/fallback/sse');
    await until(boxes.state, 'open');
    assert.equal(await page.evaluate(() => h.transport), 'sse');
    assert.match(boxes.error.seen[0], /^websocket/);
    const ids = await halley.publishTexts('/fallback/sse', 'm', 10);
    const got = await boxes.msg.take(10, 'message over SSE');
    assert.deepEqual(
      got.map((m) => [m.id, m.data]),
      ids.map((id, i) => [id, `m${i}`]),
    );
    assert.deepEqual(errors, []);
  });

  test('WebSocket blocked, streams held back by a buffering proxy -> long-poll', async (t) => {
    ({ halley, browser } = ready());
    const { page, boxes, errors } = await openClientPage(browser.context, halley.url, KINDS, t);
    await page.routeWebSocket(/./, (ws) => ws.close({ code: 1011, reason: 'blocked by the test' }));
    // The stand-in proxy holds every streaming response back (it never starts it).
    const held = [];
    await page.route(/transport=(sse|stream)/, (route) => held.push(route));
    t.after(() => Promise.all(held.map((r) => r.abort().catch(() => {}))));
    await startClient(page, '/fallback/poll');
    await until(boxes.state, 'open');
    assert.equal(await page.evaluate(() => h.transport), 'longpoll');
    assert.deepEqual(
      held.map((r) => new URL(r.request().url()).searchParams.get('transport')),
      ['sse', 'stream'],
    );
    const ids = await halley.publishTexts('/fallback/poll', 'p', 10);
    const got = await boxes.msg.take(10, 'message over long-poll');
    assert.deepEqual(
      got.map((m) => [m.id, m.data]),
      ids.map((id, i) => [id, `p${i}`]),
    );
    assert.deepEqual(errors, []);
  });

  test('SSE through EventSource where fetch cannot stream', async (t) => {
    ({ halley, browser } = ready());
    const topic = '/fallback/eventsource';
    const { page, boxes, errors } = await openClientPage(browser.context, halley.url, KINDS, t);
    const sse = [];
    page.on('request', (r) => {
      if (r.url().includes('transport=sse')) sse.push(r.resourceType());
    });
    // A browser without streaming fetch: the library must fall back to EventSource.
    await page.evaluate(() => {
      window.ReadableStream = undefined;
    });
    await page.evaluate((topic) => {
      window.h = Halley.connect({ transports: ['sse'], shared: false });
      h.on('state', (s) => report('state', s));
      h.subscribe(topic, (m) => report('msg', m));
    }, topic);
    await until(boxes.state, 'open');
    const ids = await halley.publishTexts(topic, 'e', 10);
    const json = await halley.publish(topic, '{"k":[1]}', { 'Content-Type': 'application/json' });
    const got = await boxes.msg.take(11, 'message over EventSource');
    assert.deepEqual(
      got.map((m) => [m.id, m.topic, m.data]),
      [...ids.map((id, i) => [id, topic, `e${i}`]), [json.id, topic, { k: [1] }]],
    );
    assert.deepEqual(sse, ['eventsource']);
    assert.deepEqual(errors, []);
  });

  test('the token rides in the first WebSocket command (not the URL), in the Authorization header for fetch', async (t) => {
    ({ halley, browser } = ready());
    const { page, boxes } = await openClientPage(browser.context, halley.url, KINDS, t);
    const seen = [];
    const frames = [];
    page.on('websocket', (ws) => {
      seen.push(['websocket', new URL(ws.url()).searchParams.get('token')]);
      ws.on('framesent', (f) => frames.push(JSON.parse(f.payload)));
    });
    const polls = [];
    page.on('request', (r) => {
      const url = new URL(r.url());
      if (!url.pathname.startsWith('/sub/')) return;
      polls.push(
        r.allHeaders().then((headers) => [
          url.searchParams.get('transport') ?? 'poll',
          url.searchParams.get('token'),
          headers.authorization ?? null,
        ]),
      );
    });
    await page.evaluate(() => {
      window.h = Halley.connect({ token: 's3cret', transports: ['websocket'], shared: false });
      h.on('state', (s) => report('state', s));
      h.subscribe('/fallback/token', () => {});
    });
    await until(boxes.state, 'open');
    seen.push(...(await Promise.all(polls)));
    assert.deepEqual(seen.sort(), [
      ['poll', null, 'Bearer s3cret'],
      ['websocket', null],
    ]);
    assert.deepEqual(frames[0], { op: 'auth', token: 's3cret', id: 'auth' });
    assert.equal(frames[1].op, 'subscribe');
  });

  test('a page reload mid-stream resumes from the stored cursor: no loss, no duplicates', async (t) => {
    ({ halley, browser } = ready());
    const topic = '/fallback/reload';
    const { page, boxes, errors } = await openClientPage(browser.context, halley.url, KINDS, t);
    await startClient(page, topic);
    await until(boxes.state, 'open');
    const first = await halley.publishTexts(topic, 'a', 10);
    assert.deepEqual((await boxes.msg.take(10, 'message before the reload')).map((m) => m.id), first);
    await page.reload();
    // Published while no page is connected: the cursor must bring these back.
    const during = await halley.publishTexts(topic, 'b', 10);
    await loadHalleyJs(page);
    await startClient(page, topic);
    const after = await halley.publishTexts(topic, 'c', 10);
    const got = await boxes.msg.take(20, 'message after the reload');
    assert.deepEqual(
      got.map((m) => m.id),
      [...during, ...after],
    );
    assert.equal(boxes.msg.pending, 0, 'nothing twice');
    assert.deepEqual(errors, []);
  });
});
