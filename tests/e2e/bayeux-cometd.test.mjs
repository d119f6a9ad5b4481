// Bayeux at /cometd with the real, unmodified CometD JavaScript client (npm `cometd` with
// `cometd-nodejs-client`, which supplies XMLHttpRequest and WebSocket in Node): handshake,
// subscribe, publish, receive, unsubscribe and disconnect per transport; the AckExtension
// (reliable delivery); a /service/echo remote call; messages from POST /pub; and the client's
// fallback when its preferred transport (websocket) is not served.
//
// One client at a time in this process: CometD clients in one Node process share a cookie jar.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import { CometD } from 'cometd';
import { AckExtension } from 'cometd/AckExtension.js';
import { adapt } from 'cometd-nodejs-client';

import { Mailbox, startHalley, suiteSetup, stopCleanly } from './lib/halley.mjs';

/**
 * The transports Halley serves Bayeux over and this suite runs every case on. Add
 * 'websocket' once the server offers it: the same cases then run over WebSocket too, and the
 * fallback case expects the client to keep websocket.
 */
const TRANSPORTS = ['long-polling', 'websocket'];
/** Every transport the CometD client registers by default, in its order of preference. */
const CLIENT_DEFAULT_TRANSPORTS = ['websocket', 'long-polling', 'callback-polling'];
/** How long any one reply may take, in milliseconds (a hang fails, it is not a wait). */
const REPLY_MS = 10_000;

adapt();

/**
 * A configured client whose meta replies, events and connect replies land in mailboxes.
 * `transport` keeps only that transport registered (null keeps the defaults); `ack` enables
 * the AckExtension.
 */
function makeClient(halley, { transport = null, ack = false } = {}) {
  const cometd = new CometD();
  if (transport) {
    for (const type of cometd.getTransportTypes()) {
      if (type !== transport) cometd.unregisterTransport(type);
    }
  }
  if (ack) cometd.registerExtension('ack', new AckExtension());
  cometd.configure({ url: `${halley.url}/cometd`, logLevel: 'warn' });
  const meta = {};
  for (const channel of ['/meta/handshake', '/meta/connect', '/meta/subscribe', '/meta/unsubscribe', '/meta/disconnect']) {
    meta[channel] = new Mailbox(`cometd ${channel} replies`, REPLY_MS);
    cometd.addListener(channel, (m) => meta[channel].push(pick(m)));
  }
  return { cometd, meta };
}

/** The fields of a message the tests look at (CometD's messages also point at its internals). */
function pick(m) {
  const out = {};
  for (const key of ['id', 'channel', 'clientId', 'successful', 'error', 'data', 'subscription', 'ext', 'advice']) {
    if (m[key] !== undefined) out[key] = m[key];
  }
  return out;
}

/** Handshakes and resolves with the first successful handshake reply. */
async function handshake({ cometd, meta }) {
  cometd.handshake();
  for (;;) {
    const reply = await meta['/meta/handshake'].next('successful handshake');
    if (reply.successful) return reply;
  }
}

/** Calls a CometD method whose last argument is a reply callback; resolves with the reply. */
function call(what, fn) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no reply within ${REPLY_MS} ms`)), REPLY_MS);
    fn((reply) => {
      clearTimeout(timer);
      resolve(pick(reply));
    });
  });
}

/** Subscribes `channel` with events going to a new mailbox; resolves with both. */
async function subscribe(cometd, channel) {
  const events = new Mailbox(`cometd events on ${channel}`, REPLY_MS);
  let handle;
  const reply = await call(`subscribe ${channel}`, (cb) => {
    handle = cometd.subscribe(channel, (m) => events.push(pick(m)), cb);
  });
  return { reply, events, handle };
}

async function disconnect(cometd) {
  if (cometd.isDisconnected()) return null;
  return call('disconnect', (cb) => cometd.disconnect(cb));
}

describe('Bayeux with the cometd client', { timeout: 120_000 }, () => {
  let halley;
  const ready = suiteSetup(async () => {
    halley = await startHalley();
  });
  after(() => stopCleanly(halley));

  for (const transport of TRANSPORTS) {
    test(`${transport}: handshake, subscribe, publish, receive, unsubscribe, disconnect`, async (t) => {
      ready();
      const client = makeClient(halley, { transport });
      const { cometd, meta } = client;
      t.after(() => disconnect(cometd));
      const hs = await handshake(client);
      assert.match(hs.clientId, /^[A-Za-z0-9]{22,}$/);
      assert.equal(cometd.getTransport().type, transport);
      const connected = await meta['/meta/connect'].next('first connect reply');
      assert.equal(connected.successful, true);

      const room = `/e2e/cometd/${transport}/room`;
      const { reply, events, handle } = await subscribe(cometd, room);
      assert.deepEqual([reply.successful, reply.subscription], [true, room]);

      // The publisher is subscribed, so it receives its own message (spec item 5); the
      // publish acknowledgement carries no data.
      const data = { text: 'hello from cometd', n: 1, nested: { list: [1, 'two', null] }, unicode: 'naïve 東京 🚀' };
      const ack = await call('publish', (cb) => cometd.publish(room, data, cb));
      assert.equal(ack.successful, true);
      assert.equal(ack.data, undefined, 'a publish acknowledgement is not an event');
      const got = await events.next('own message');
      assert.equal(got.channel, room);
      assert.deepEqual(got.data, data);

      // A message from the backend's HTTP API arrives the same way, with its message id.
      const posted = await halley.publish(room, JSON.stringify({ from: 'backend' }), {
        'Content-Type': 'application/json',
      });
      const fromBackend = await events.next('POST /pub message');
      assert.deepEqual(fromBackend.data, { from: 'backend' });
      assert.equal(fromBackend.id, posted.id);

      // Unsubscribed: later messages on the room are not delivered; a sentinel on a second
      // channel, published after them, proves the client kept listening.
      const unsub = await call('unsubscribe', (cb) => cometd.unsubscribe(handle, cb));
      assert.deepEqual([unsub.successful, unsub.subscription], [true, room]);
      const other = await subscribe(cometd, `${room}-sentinel`);
      await halley.publish(room, 'not for us');
      await halley.publish(`${room}-sentinel`, 'sentinel');
      assert.equal((await other.events.next('sentinel')).data, 'sentinel');
      assert.equal(events.pending, 0, `nothing after unsubscribe: ${JSON.stringify(events.seen)}`);

      const before = await halley.sessions();
      const bye = await disconnect(cometd);
      assert.equal(bye.successful, true);
      assert.equal(await halley.sessions(), before - 1, 'the server dropped the session');
    });

    test(`${transport}: ack extension delivers every message once, in order`, async (t) => {
      ready();
      const client = makeClient(halley, { transport, ack: true });
      const { cometd, meta } = client;
      t.after(() => disconnect(cometd));
      const hs = await handshake(client);
      assert.deepEqual(hs.ext, { ack: true }, 'the server enabled the extension');
      const room = `/e2e/cometd/${transport}/ack`;
      const { events } = await subscribe(cometd, room);

      const sent = [];
      for (let i = 0; i < 20; i += 1) {
        sent.push((await halley.publish(room, JSON.stringify({ i }), { 'Content-Type': 'application/json' })).id);
      }
      const got = await events.take(sent.length, 'acknowledged message');
      assert.deepEqual(
        got.map((m) => m.id),
        sent,
        'every message once, in order',
      );
      // Connect replies carry increasing batch numbers (ext.ack), which the client echoes.
      const numbers = meta['/meta/connect'].seen.map((m) => m.ext?.ack).filter((n) => n !== undefined);
      assert.ok(numbers.length >= 2, `connect replies with ext.ack: ${JSON.stringify(numbers)}`);
      for (let i = 1; i < numbers.length; i += 1) assert.ok(numbers[i] > numbers[i - 1], JSON.stringify(numbers));
      assert.equal(events.pending, 0, 'no duplicates');
    });

    test(`${transport}: /service/echo answers a remote call`, async (t) => {
      ready();
      const client = makeClient(halley, { transport });
      const { cometd } = client;
      t.after(() => disconnect(cometd));
      await handshake(client);
      const content = { question: 'ping', list: [1, 2, 3], text: '</script> é' };
      const reply = await call('remoteCall', (cb) => cometd.remoteCall('echo', content, REPLY_MS, cb));
      assert.equal(reply.successful, true, JSON.stringify(reply));
      assert.deepEqual(reply.data, content);
      const unknown = await call('remoteCall', (cb) => cometd.remoteCall('nope', {}, REPLY_MS, cb));
      assert.equal(unknown.successful, false);
    });
  }

  test('with its default transports the client settles on one the server serves', async (t) => {
    ready();
    const client = makeClient(halley);
    const { cometd, meta } = client;
    assert.deepEqual(cometd.getTransportTypes(), CLIENT_DEFAULT_TRANSPORTS);
    t.after(() => disconnect(cometd));
    const hs = await handshake(client);
    const expected = TRANSPORTS.includes('websocket') ? 'websocket' : 'long-polling';
    assert.equal(cometd.getTransport().type, expected);
    assert.ok(hs.clientId);
    // And it works there: a message round-trips.
    assert.equal((await meta['/meta/connect'].next('connect reply')).successful, true);
    const { events } = await subscribe(cometd, '/e2e/cometd/default');
    await halley.publish('/e2e/cometd/default', 'over the fallback');
    assert.equal((await events.next('message')).data, 'over the fallback');
  });
});
