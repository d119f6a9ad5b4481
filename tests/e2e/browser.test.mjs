// A real browser (Debian's chromium, driven by playwright-core) against Halley: EventSource,
// the forever iframe, JSONP long-poll through script tags, and the browser's WebSocket.
//
// The test page comes from a tiny node server on another loopback port, so the page is
// cross-origin to Halley exactly as on a real site. The forever iframe is the exception: its
// scripts call `parent.<callback>`, which a browser only allows between same-origin frames,
// so that page reaches Halley through the page server's `/halley/` reverse proxy (as a site
// would put Halley behind its own origin). Chromium missing is a failure, never a skip.

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, describe, test } from 'node:test';

import { launchChromium } from './lib/client.mjs';
import { Mailbox, startHalley, suiteSetup } from './lib/halley.mjs';

/** Where the page server forwards to Halley (same origin as the page). */
const PROXY_PREFIX = '/halley';

/** Markup in a payload must arrive as text and never run or end a script element. */
const HOSTILE = '</script><script>window.pwned = true</script><!-- é 🚀';
const UNICODE = 'naïve café – 東京 🚀\nsecond line';

describe('a real browser (chromium + playwright-core)', { timeout: 120_000 }, () => {
  let halley;
  let pages;
  let browser;
  let context;

  const ready = suiteSetup(async () => {
    halley = await startHalley();
    pages = await startPageServer(halley.url);
    browser = await launchChromium();
    context = browser.context;
  });

  after(async () => {
    await browser?.close();
    await pages?.close();
    if (!halley) return;
    const exit = await halley.stop();
    assert.deepEqual(exit, { code: 0, signal: null, killed: false }, 'graceful exit on SIGTERM');
  });

  /**
   * A fresh tab on the test page; what its scripts `report(kind, value)` lands in the
   * mailbox named `kind`. The tab closes (dropping its connections) when the test ends.
   */
  async function openPage(t, kinds) {
    ready();
    const page = await context.newPage();
    t.after(() => page.close());
    const boxes = Object.fromEntries(kinds.map((kind) => [kind, new Mailbox(`browser ${kind}`)]));
    const errors = [];
    page.on('pageerror', (err) => errors.push(err.message));
    await page.exposeFunction('report', (kind, value) => {
      const box = boxes[kind];
      if (!box) throw new Error(`unexpected report ${kind}: ${JSON.stringify(value)}`);
      box.push(value);
    });
    await page.goto(pages.url);
    return { page, boxes, errors };
  }

  /** After the messages arrived: nothing in the payloads ran, and the page threw nothing. */
  async function assertNothingInjected(page, errors) {
    assert.equal(await page.evaluate(() => window.pwned), false, 'payload markup never ran');
    assert.deepEqual(errors, [], 'no script errors on the page');
  }

  test('EventSource (cross-origin) receives messages, markup and unicode intact', async (t) => {
    const { page, boxes, errors } = await openPage(t, ['sse']);
    await page.evaluate((topic) => window.startSse(topic), '/e2e/browser/sse');
    const p1 = await halley.publish('/e2e/browser/sse', HOSTILE);
    const p2 = await halley.publish('/e2e/browser/sse', UNICODE);
    const got = await boxes.sse.take(2, 'EventSource message');
    assert.deepEqual(got, [
      { data: HOSTILE, lastEventId: p1.id, origin: new URL(halley.url).origin },
      { data: UNICODE, lastEventId: p2.id, origin: new URL(halley.url).origin },
    ]);
    await assertNothingInjected(page, errors);
  });

  test('a forever iframe calls the page callback for each message', async (t) => {
    const { page, boxes, errors } = await openPage(t, ['iframe']);
    const since = await halley.cursor('/e2e/browser/frame');
    await page.evaluate(([topic, cursor]) => window.startIframe(topic, cursor), ['/e2e/browser/frame', since]);
    const p1 = await halley.publish('/e2e/browser/frame', HOSTILE);
    const p2 = await halley.publish('/e2e/browser/frame', '{"n":2}', { 'Content-Type': 'application/json' });
    const got = await boxes.iframe.take(2, 'iframe callback');
    assert.deepEqual(
      got.map((m) => [m.id, m.topic, m.data]),
      [
        [p1.id, '/e2e/browser/frame', HOSTILE],
        [p2.id, '/e2e/browser/frame', { n: 2 }],
      ],
    );
    // The frame is still streaming: a later message arrives through the same document.
    const p3 = await halley.publish('/e2e/browser/frame', UNICODE);
    const third = await boxes.iframe.next('third iframe callback');
    assert.deepEqual([third.id, third.data], [p3.id, UNICODE]);
    assert.equal(await page.evaluate(() => window.frames[0].pwned), undefined, 'nothing ran in the frame');
    await assertNothingInjected(page, errors);
  });

  test('JSONP long-poll through script tags follows the cursor', async (t) => {
    const { page, boxes, errors } = await openPage(t, ['jsonp']);
    const since = await halley.cursor('/e2e/browser/jsonp');
    await page.evaluate(([topic, cursor]) => window.startJsonp(topic, cursor), ['/e2e/browser/jsonp', since]);
    const p1 = await halley.publish('/e2e/browser/jsonp', HOSTILE);
    const first = await boxes.jsonp.next('first JSONP reply');
    assert.deepEqual(
      first.messages.map((m) => [m.id, m.data]),
      [[p1.id, HOSTILE]],
    );
    assert.equal(first.next, p1.id, 'the cursor to come back with');
    // The page re-polls from first.next by itself: whether its script tag reaches Halley
    // before or after this publish, the reply holds exactly the message after the cursor.
    const p2 = await halley.publish('/e2e/browser/jsonp', UNICODE);
    const second = await boxes.jsonp.next('second JSONP reply');
    assert.deepEqual(
      second.messages.map((m) => [m.id, m.data]),
      [[p2.id, UNICODE]],
    );
    assert.equal(second.next, p2.id);
    await assertNothingInjected(page, errors);
  });

  test('the browser WebSocket subscribes, receives, and may not publish cross-origin', async (t) => {
    const { page, boxes, errors } = await openPage(t, ['ws']);
    await page.evaluate((topic) => window.startWs(topic), '/e2e/browser/ws/*');
    assert.deepEqual(await boxes.ws.next('subscribe ack'), {
      type: 'ack',
      op: 'subscribe',
      id: 'browser-1',
      topics: ['/e2e/browser/ws/*'],
    });
    const p1 = await halley.publish('/e2e/browser/ws/room', HOSTILE);
    const p2 = await halley.publish('/e2e/browser/ws/room', UNICODE);
    const got = await boxes.ws.take(2, 'WebSocket message');
    assert.deepEqual(
      got.map((m) => [m.id, m.data]),
      [
        [p1.id, HOSTILE],
        [p2.id, UNICODE],
      ],
    );
    // Reading is open to any origin by default; publishing is not (--cors-publish-origins).
    await page.evaluate(() => window.wsSend({ op: 'publish', topic: '/e2e/browser/ws/room', data: 'x', id: 'p' }));
    const refused = await boxes.ws.next('publish refusal');
    assert.deepEqual([refused.type, refused.id], ['error', 'p']);
    assert.match(refused.reason, /origin/);
    await assertNothingInjected(page, errors);
  });
});

/**
 * Serves the test page on `127.0.0.1:<random port>` and forwards `/halley/*` to Halley
 * without buffering. Resolves to `{url, close()}`.
 */
async function startPageServer(halleyUrl) {
  const target = new URL(halleyUrl);
  const html = testPage(halleyUrl);
  const server = http.createServer((req, res) => {
    if (req.url === '/' || req.url === '/index.html') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(html);
    } else if (req.url.startsWith(`${PROXY_PREFIX}/`)) {
      forward(req, res, target);
    } else {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found\n');
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded; node frames the reply itself. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'te']);

/** A streaming reverse proxy for one request: bytes go on as they arrive. */
function forward(req, res, target) {
  const headers = Object.fromEntries(Object.entries(req.headers).filter(([name]) => !HOP_BY_HOP.has(name)));
  headers.host = target.host;
  const upstream = http.request(
    {
      host: target.hostname,
      port: target.port,
      method: req.method,
      path: req.url.slice(PROXY_PREFIX.length),
      headers,
    },
    (reply) => {
      const out = Object.fromEntries(Object.entries(reply.headers).filter(([name]) => !HOP_BY_HOP.has(name)));
      res.writeHead(reply.statusCode, out);
      res.flushHeaders();
      reply.pipe(res);
    },
  );
  upstream.on('error', () => res.destroy());
  // The page closing its frame ends the upstream stream too, so Halley sees the disconnect.
  res.on('close', () => upstream.destroy());
  req.pipe(upstream);
}

/** The page: small helpers the tests call with `page.evaluate`, reporting through `report`. */
function testPage(halleyUrl) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>halley e2e</title></head>
<body>
<script>
'use strict';
const HALLEY = ${JSON.stringify(halleyUrl)};
const PROXY = ${JSON.stringify(PROXY_PREFIX)};
window.pwned = false;

// Server-Sent Events, cross-origin: resolves when the stream is open.
window.startSse = (topic) => new Promise((resolve, reject) => {
  const es = new EventSource(HALLEY + '/sub' + topic);
  es.onopen = () => resolve();
  es.onerror = () => reject(new Error('EventSource error, readyState ' + es.readyState));
  es.onmessage = (e) => report('sse', { data: e.data, lastEventId: e.lastEventId, origin: e.origin });
});

// Forever iframe, same origin through the proxy: each message calls parent.onMsg(msg).
window.onMsg = (msg) => report('iframe', msg);
window.startIframe = (topic, since) => {
  const frame = document.createElement('iframe');
  frame.src = PROXY + '/sub' + topic + '?transport=iframe&callback=onMsg&since=' + encodeURIComponent(since);
  document.body.append(frame);
};

// JSONP long-poll: each reply calls cb(reply); the next script tag polls from reply.next.
let jsonpTopic = null;
function jsonpPoll(since) {
  const script = document.createElement('script');
  script.src = HALLEY + '/sub' + jsonpTopic + '?transport=jsonp&callback=cb&since=' + encodeURIComponent(since);
  script.onload = () => script.remove();
  script.onerror = () => { throw new Error('JSONP script failed to load'); };
  document.head.append(script);
}
window.cb = (reply) => {
  report('jsonp', reply);
  jsonpPoll(reply.next);
};
window.startJsonp = (topic, since) => {
  jsonpTopic = topic;
  jsonpPoll(since);
};

// The browser's own WebSocket, cross-origin: resolves once the subscribe command is sent.
let socket = null;
window.startWs = (topic) => new Promise((resolve, reject) => {
  socket = new WebSocket(HALLEY.replace(/^http/, 'ws') + '/ws');
  socket.onmessage = (e) => report('ws', JSON.parse(e.data));
  socket.onerror = () => reject(new Error('WebSocket error'));
  socket.onopen = () => {
    socket.send(JSON.stringify({ op: 'subscribe', topics: [topic], id: 'browser-1' }));
    resolve();
  };
});
window.wsSend = (command) => socket.send(JSON.stringify(command));
</script>
</body></html>
`;
}
