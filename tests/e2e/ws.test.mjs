// WebSocket with the npm `ws` client: Halley's JSON command protocol on /ws (subscribe with an
// id and its ack, publish over the socket and over HTTP, error replies) and the server's
// heartbeat pings, which `ws` answers by itself.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import WebSocket from 'ws';

import { Mailbox, once, startHalley, suiteSetup, stopCleanly } from './lib/halley.mjs';

/** Heartbeat interval given to the server, in seconds; pings come this often. */
const HEARTBEAT_SECS = 0.5;

/** Opens a client on `/ws` whose JSON replies and pings land in mailboxes. */
async function connect(halley, t) {
  const ws = new WebSocket(`ws://${halley.host}/ws`);
  t.after(() => ws.terminate());
  const replies = new Mailbox('ws replies');
  const pings = new Mailbox('ws pings');
  ws.on('message', (data, isBinary) => {
    assert.equal(isBinary, false, 'the server sends text frames');
    replies.push(JSON.parse(data.toString('utf8')));
  });
  ws.on('ping', (payload) => pings.push(payload));
  await once(ws, 'open');
  const send = (value) => ws.send(typeof value === 'string' ? value : JSON.stringify(value));
  return { ws, replies, pings, send };
}

describe('WebSocket with the ws package', { timeout: 60_000 }, () => {
  let halley;
  const ready = suiteSetup(async () => {
    halley = await startHalley(['--heartbeat-interval', String(HEARTBEAT_SECS)]);
  });
  after(() => stopCleanly(halley));

  test('subscribe with an id, publish over the socket and over HTTP', async (t) => {
    ready();
    const { replies, send } = await connect(halley, t);
    send({ op: 'subscribe', topics: ['/e2e/ws/*'], id: 'sub-1' });
    assert.deepEqual(await replies.next('subscribe ack'), {
      type: 'ack',
      op: 'subscribe',
      id: 'sub-1',
      topics: ['/e2e/ws/*'],
    });

    // Over the socket: the ack and the message itself (we are subscribed), in either order.
    send({ op: 'publish', topic: '/e2e/ws/room', data: { text: 'hi', n: 1 }, id: 7 });
    const two = await replies.take(2, 'publish ack and message');
    const ack = two.find((r) => r.type === 'ack');
    const msg = two.find((r) => r.type === undefined);
    assert.ok(ack && msg, `one ack and one message: ${JSON.stringify(two)}`);
    assert.equal(ack.op, 'publish');
    assert.equal(ack.id, 7, 'the request id is echoed as sent');
    assert.equal(msg.topic, '/e2e/ws/room');
    assert.deepEqual(msg.data, { text: 'hi', n: 1 });
    assert.equal(ack.message_id, msg.id, 'the ack names the message it published');

    // Over HTTP: multi-line unicode text and JSON, each with the id the publish reply gave.
    const text = 'line 1\nligne 2 – ✓ 東京';
    const p1 = await halley.publish('/e2e/ws/room', text);
    const p2 = await halley.publish('/e2e/ws/other', '{"price":101.5}', { 'Content-Type': 'application/json' });
    const [r1, r2] = await replies.take(2, 'HTTP-published message');
    assert.deepEqual([r1.id, r1.topic, r1.data], [p1.id, '/e2e/ws/room', text]);
    assert.deepEqual([r2.id, r2.topic, r2.data], [p2.id, '/e2e/ws/other', { price: 101.5 }]);
    assert.equal(p1.delivered, 1);
  });

  test('invalid JSON gets an error reply and the socket stays usable', async (t) => {
    ready();
    const { ws, replies, send } = await connect(halley, t);
    send('this is not json');
    const error = await replies.next('error reply');
    assert.equal(error.type, 'error');
    assert.equal(typeof error.reason, 'string');
    assert.ok(error.reason.length > 0, 'the error says why');

    send({ op: 'subscribe', topics: ['no-leading-slash'], id: 9 });
    const bad = await replies.next('error for a bad topic');
    assert.deepEqual([bad.type, bad.id], ['error', 9]);

    send({ op: 'ping', id: 'still-there' });
    assert.deepEqual(await replies.next('ping ack'), { type: 'ack', op: 'ping', id: 'still-there' });
    assert.equal(ws.readyState, WebSocket.OPEN);

    // A clean close: the server echoes the code (RFC 6455 §5.5.1).
    ws.close(1000, 'bye');
    const [code] = await once(ws, 'close');
    assert.equal(code, 1000);
  });

  test('server pings are answered automatically and keep the connection alive', async (t) => {
    ready();
    const { ws, replies, pings, send } = await connect(halley, t);
    // Halley drops a peer that has not answered a ping by the next heartbeat, so a third ping
    // on the same connection means the first two were answered (by `ws`, not by this test).
    await pings.take(3, 'server ping');
    assert.equal(ws.readyState, WebSocket.OPEN);
    send({ op: 'ping', id: 'alive' });
    assert.deepEqual(await replies.next('ping ack'), { type: 'ack', op: 'ping', id: 'alive' });
  });
});
