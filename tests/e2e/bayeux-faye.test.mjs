// Bayeux at /cometd with the real, unmodified Faye Node client (npm `faye`, Faye.Client):
// handshake, subscribe, publish, receive, unsubscribe and disconnect per transport (Faye
// batches its connect with subscribes and publishes, spec item 3); messages from POST /pub;
// a Faye publish reaching a native /sub long-poll; and the client's own transport choice when
// websocket is not served.
//
// One client at a time in this process, like the cometd suite.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import faye from 'faye';

import { Mailbox, startHalley, suiteSetup, stopCleanly } from './lib/halley.mjs';

/**
 * The transports Halley serves Bayeux over and this suite runs every case on. Add
 * 'websocket' once the server offers it; the default-transport case then expects Faye to
 * pick websocket.
 */
const TRANSPORTS = ['long-polling', 'websocket'];
/** Faye's transports other than the one under test are disabled by these names. */
const FAYE_TRANSPORTS = ['websocket', 'long-polling', 'callback-polling', 'cross-origin-long-polling', 'eventsource'];
/** How long any one reply may take, in milliseconds (a hang fails, it is not a wait). */
const REPLY_MS = 10_000;

// HALLEY_E2E_FAYE_LOG=1 prints Faye's own log (every message it sends and receives).
if (process.env.HALLEY_E2E_FAYE_LOG) {
  const log = (level) => (msg) => console.log(`faye ${level}: ${msg}`);
  faye.logger = { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
}

/**
 * A client for `${halley.url}/cometd`; `transport` disables every other one (null keeps
 * Faye's own choice). An extension (Faye's public hook on every message) records the meta
 * replies and the connection type of each connect the client sends.
 */
function makeClient(halley, transport = null) {
  const client = new faye.Client(`${halley.url}/cometd`, { timeout: 30 });
  if (transport) {
    // Faye always handshakes over a mandatory HTTP type (long-polling) and switches to
    // WebSocket after (spec note 9): a websocket client keeps long-polling for that.
    const keep = transport === 'websocket' ? ['websocket', 'long-polling'] : [transport];
    for (const other of FAYE_TRANSPORTS) if (!keep.includes(other)) client.disable(other);
  }
  const meta = new Mailbox('faye meta replies', REPLY_MS);
  const connectionTypes = [];
  client.addExtension({
    incoming(message, callback) {
      if (message.channel.startsWith('/meta/')) meta.push(message);
      callback(message);
    },
    outgoing(message, callback) {
      if (message.channel === '/meta/connect') connectionTypes.push(message.connectionType);
      callback(message);
    },
  });
  return { client, meta, connectionTypes };
}

/** The next meta reply on `channel` (earlier ones on other channels are skipped). */
async function nextMeta(meta, channel) {
  for (;;) {
    const reply = await meta.next(`${channel} reply`);
    if (reply.channel === channel) return reply;
  }
}

/** Resolves a Faye deferrable (Subscription, Publication) or fails after REPLY_MS. */
function settle(what, deferrable) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: not settled within ${REPLY_MS} ms`)), REPLY_MS);
    deferrable.then(
      () => {
        clearTimeout(timer);
        resolve();
      },
      (err) => {
        clearTimeout(timer);
        reject(new Error(`${what} failed: ${err?.message ?? err}`));
      },
    );
  });
}

/** Subscribes with events going to a new mailbox; resolves once the server acknowledged. */
async function subscribe(client, channel) {
  const events = new Mailbox(`faye events on ${channel}`, REPLY_MS);
  const subscription = client.subscribe(channel, (data) => events.push(data));
  await settle(`subscribe ${channel}`, subscription);
  return { events, subscription };
}

describe('Bayeux with the faye client', { timeout: 120_000 }, () => {
  let halley;
  const ready = suiteSetup(async () => {
    halley = await startHalley();
  });
  after(() => stopCleanly(halley));

  for (const transport of TRANSPORTS) {
    test(`${transport}: handshake, subscribe, publish, receive, unsubscribe, disconnect`, async (t) => {
      ready();
      const { client, meta, connectionTypes } = makeClient(halley, transport);
      t.after(() => client.disconnect());
      const room = `/e2e/faye/${transport}/room`;
      // Subscribing makes Faye handshake and connect first.
      const { events, subscription } = await subscribe(client, room);
      const hs = meta.seen.find((m) => m.channel === '/meta/handshake');
      assert.equal(hs?.successful, true, JSON.stringify(meta.seen));
      assert.match(hs.clientId, /^[A-Za-z0-9]{22,}$/);
      assert.ok(connectionTypes.length > 0 && connectionTypes.every((c) => c === transport), `${connectionTypes}`);

      // Faye's own publish comes back to it (it is subscribed).
      const data = { text: 'hello from faye', nested: { n: [1, 2] }, unicode: 'naïve 東京 🚀' };
      await settle('publish', client.publish(room, data));
      assert.deepEqual(await events.next('own message'), data);

      // A message from POST /pub arrives too.
      await halley.publish(room, JSON.stringify({ from: 'backend' }), { 'Content-Type': 'application/json' });
      assert.deepEqual(await events.next('POST /pub message'), { from: 'backend' });
      await halley.publish(room, 'plain text');
      assert.equal(await events.next('text message'), 'plain text');

      // Unsubscribe: the server acknowledges, later messages stop; a sentinel on a second
      // channel, published after them, proves the client kept listening.
      subscription.cancel();
      const unsub = await nextMeta(meta, '/meta/unsubscribe');
      assert.deepEqual([unsub.successful, unsub.subscription], [true, room]);
      const other = await subscribe(client, `${room}-sentinel`);
      await halley.publish(room, 'not for us');
      await halley.publish(`${room}-sentinel`, 'sentinel');
      assert.equal(await other.events.next('sentinel'), 'sentinel');
      assert.equal(events.pending, 0, `nothing after unsubscribe: ${JSON.stringify(events.seen)}`);

      const before = await halley.sessions();
      await settle('disconnect', client.disconnect());
      const bye = meta.seen.find((m) => m.channel === '/meta/disconnect');
      assert.equal(bye?.successful, true);
      assert.equal(await halley.sessions(), before - 1, 'the server dropped the session');
    });

    test(`${transport}: a Faye publish reaches a native /sub long-poll`, async (t) => {
      ready();
      const { client } = makeClient(halley, transport);
      t.after(() => client.disconnect());
      const topic = `/e2e/faye/${transport}/native`;
      const since = await halley.cursor(topic);
      await settle('publish', client.publish(topic, { text: 'to the native API' }));
      const res = await fetch(`${halley.url}/sub${topic}?since=${since}`, { signal: AbortSignal.timeout(REPLY_MS) });
      assert.equal(res.status, 200);
      const body = await res.json();
      assert.deepEqual(
        body.messages.map((m) => m.data),
        [{ text: 'to the native API' }],
      );
    });
  }

  test("with Faye's own transport choice it settles on one the server serves", async (t) => {
    ready();
    const { client, connectionTypes } = makeClient(halley);
    t.after(() => client.disconnect());
    const { events } = await subscribe(client, '/e2e/faye/default');
    await halley.publish('/e2e/faye/default', 'over the fallback');
    assert.equal(await events.next('message'), 'over the fallback');
    const expected = TRANSPORTS.includes('websocket') ? 'websocket' : 'long-polling';
    assert.equal(connectionTypes.at(-1), expected, `${connectionTypes}`);
  });
});
