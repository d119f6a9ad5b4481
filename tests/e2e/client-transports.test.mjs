// halley.js in a real browser (chromium via playwright-core) against the real server, each
// transport forced in turn: subscribe, 100 messages in order with their ids, a publish from
// the page; then the server stopped and restarted on the same port in the middle: without
// --state-dir the page reports the gap (a restarted memory store has a new epoch) and loses
// nothing published while a server runs; with --state-dir the history survives the restart,
// so the page gets every message exactly once, those published just before the stop included,
// and no gap. The page is at Halley's origin (lib/client.mjs).

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';

import { launchChromium, openClientPage, until } from './lib/client.mjs';
import { startHalley, stopCleanly, suiteSetup } from './lib/halley.mjs';

const TRANSPORTS = ['websocket', 'sse', 'stream', 'longpoll', 'jsonp', 'iframe'];
const KINDS = ['state', 'gap', 'msg', 'error'];

/** A free loopback port, so the restarted server comes back at the page's origin. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Starts halley.js in the page on one transport, subscribed to `topic`. */
async function startClient(page, transport, topic) {
  await page.evaluate(
    ([transport, topic]) => {
      window.h = Halley.connect({ transports: [transport], shared: false, backoffBase: 50, backoffMax: 400 });
      h.on('state', (s) => report('state', s));
      h.on('gap', (g) => report('gap', g));
      h.on('error', (e) => report('error', String(e && e.message)));
      h.subscribe(topic, (m) => report('msg', m));
    },
    [transport, topic],
  );
}

async function publishJson(halley, topic, from, count) {
  const ids = [];
  for (let i = from; i < from + count; i += 1) {
    ids.push((await halley.publish(topic, JSON.stringify({ n: i }), { 'Content-Type': 'application/json' })).id);
  }
  return ids;
}

describe('halley.js in chromium, each transport forced', { timeout: 240_000 }, () => {
  let halley;
  let port;
  let browser;
  const args = () => ['--listen', `127.0.0.1:${port}`, '--heartbeat-interval', '1'];
  const ready = suiteSetup(async () => {
    port = await freePort();
    halley = await startHalley(args());
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await stopCleanly(halley);
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: 100 messages in order, and a publish from the page`, async (t) => {
      ready();
      const topic = `/client/${transport}/feed`;
      const { page, boxes, errors } = await openClientPage(browser.context, halley.url, KINDS, t);
      await startClient(page, transport, topic);
      await until(boxes.state, 'open');
      assert.equal(await page.evaluate(() => h.transport), transport);
      const ids = await publishJson(halley, topic, 0, 100);
      const got = await boxes.msg.take(100, `${transport} message`);
      assert.deepEqual(
        got.map((m) => [m.id, m.topic, m.data]),
        ids.map((id, n) => [id, topic, { n }]),
      );
      const ack = await page.evaluate((topic) => h.publish(topic, 'from the page'), topic);
      const mine = await boxes.msg.next('the page publish');
      assert.deepEqual([mine.id, mine.data], [ack.id, 'from the page']);
      assert.equal(await page.evaluate(() => h.cursor), ack.id, 'the cursor follows');
      assert.equal(await page.evaluate(() => sessionStorage.length), 1, 'kept in sessionStorage');
      assert.equal(boxes.msg.pending, 0, 'nothing twice');
      assert.equal(boxes.gap.pending, 0, 'no gap');
      assert.deepEqual(errors, []);
    });
  }

  for (const transport of ['websocket', 'stream', 'longpoll']) {
    test(`${transport}: subscribing later and unsubscribing`, async (t) => {
      ready();
      const base = `/client/${transport}/later`;
      const { page, boxes, errors } = await openClientPage(browser.context, halley.url, KINDS, t);
      await startClient(page, transport, `${base}/a`);
      await until(boxes.state, 'open');
      // Published right after subscribe() returns: the cursor makes the new topic's
      // messages come whether the server already had the subscription or not.
      await page.evaluate((topic) => {
        window.offB = h.subscribe(topic, (m) => report('msg', m));
      }, `${base}/b`);
      const b1 = await halley.publish(`${base}/b`, 'b1');
      const a1 = await halley.publish(`${base}/a`, 'a1');
      assert.deepEqual(
        (await boxes.msg.take(2, 'message')).map((m) => [m.id, m.data]),
        [
          [b1.id, 'b1'],
          [a1.id, 'a1'],
        ],
      );
      await page.evaluate(() => window.offB());
      await halley.publish(`${base}/b`, 'b2 (unsubscribed)');
      const a2 = await halley.publish(`${base}/a`, 'a2');
      const next = await boxes.msg.next('message after unsubscribing');
      assert.deepEqual([next.id, next.data], [a2.id, 'a2']);
      assert.equal(boxes.msg.pending, 0);
      assert.deepEqual(errors, []);
    });
  }

  for (const transport of TRANSPORTS) {
    test(`${transport}: the server restarts mid-stream: gap reported, nothing lost`, async (t) => {
      ready();
      const topic = `/client/${transport}/restart`;
      const { page, boxes, errors } = await openClientPage(browser.context, halley.url, KINDS, t);
      await startClient(page, transport, topic);
      await until(boxes.state, 'open');
      const before = await publishJson(halley, topic, 0, 50);
      assert.deepEqual(
        (await boxes.msg.take(50, 'message before the restart')).map((m) => m.id),
        before,
      );
      await stopCleanly(halley);
      halley = await startHalley(args());
      // The page may or may not see the break as 'reconnecting': a browser retries a request
      // that failed on a reused keep-alive socket by itself. The gap is what it must see.
      const gap = await boxes.gap.next('gap after the restart');
      assert.equal(gap.cursor, before[49], 'the gap names the cursor it resumed from');
      const later = await publishJson(halley, topic, 50, 50);
      assert.notEqual(later[0].split('-')[0], before[0].split('-')[0], 'a new epoch');
      const got = await boxes.msg.take(50, 'message after the restart');
      assert.deepEqual(
        got.map((m) => [m.id, m.data.n]),
        later.map((id, i) => [id, 50 + i]),
      );
      assert.equal(await page.evaluate(() => h.state), 'open');
      assert.equal(boxes.msg.pending, 0, 'nothing twice');
      assert.equal(boxes.gap.pending, 0, 'one gap');
      assert.deepEqual(errors, []);
    });
  }
});

describe('halley.js in chromium, each transport forced, restarts with --state-dir', { timeout: 240_000 }, () => {
  let halley;
  let port;
  let browser;
  let stateDir;
  const args = () => ['--listen', `127.0.0.1:${port}`, '--heartbeat-interval', '1', '--state-dir', stateDir];
  const ready = suiteSetup(async () => {
    port = await freePort();
    stateDir = await mkdtemp(path.join(os.tmpdir(), 'halley-e2e-state-'));
    halley = await startHalley(args());
    browser = await launchChromium();
  });
  after(async () => {
    await browser?.close();
    await stopCleanly(halley);
    if (stateDir) await rm(stateDir, { recursive: true, force: true });
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: restart with --state-dir: nothing lost, no gap`, async (t) => {
      ready();
      const topic = `/client/${transport}/durable`;
      const { page, boxes, errors } = await openClientPage(browser.context, halley.url, KINDS, t);
      await startClient(page, transport, topic);
      await until(boxes.state, 'open');
      const first = await publishJson(halley, topic, 0, 50);
      assert.deepEqual(
        (await boxes.msg.take(50, 'message before the restart')).map((m) => m.id),
        first,
      );
      // Published just before the stop: the page may or may not have them when the server
      // goes; the saved history gives it whatever it missed.
      const racing = await publishJson(halley, topic, 50, 10);
      await stopCleanly(halley);
      halley = await startHalley(args());
      assert.match(halley.log, /restored epoch/, 'the history was restored');
      const later = await publishJson(halley, topic, 60, 40);
      const epoch = (id) => id.split('-')[0];
      assert.equal(epoch(later[0]), epoch(first[0]), 'the same epoch');
      assert.equal(Number(later[0].split('-')[1]), Number(racing[9].split('-')[1]) + 1, 'the sequence continues');
      const got = await boxes.msg.take(50, 'message across the restart');
      assert.deepEqual(
        got.map((m) => [m.id, m.data.n]),
        [...racing, ...later].map((id, i) => [id, 50 + i]),
      );
      assert.equal(await page.evaluate(() => h.state), 'open');
      assert.equal(boxes.msg.pending, 0, 'nothing twice');
      assert.equal(boxes.gap.pending, 0, 'no gap');
      assert.deepEqual(boxes.gap.seen, [], 'no gap, ever');
      assert.deepEqual(errors, []);
    });
  }
});
