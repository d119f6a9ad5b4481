// Server-Sent Events with the npm `eventsource` client (a WHATWG EventSource over fetch):
// payloads, ids and event names as a real client parses them, and the client's own
// reconnect after the server recycles a stream, resuming with Last-Event-ID.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import { EventSource } from 'eventsource';

import { Mailbox, once, startHalley, suiteSetup, stopCleanly } from './lib/halley.mjs';

const TEXT = 'hello, world';
const MULTILINE = 'first line\nsecond line\r\nthird';
const UNICODE = 'naïve café – 東京 🚀';
const JSON_BODY = '{"price":101.5,"tags":["a","b"],"nested":{"ok":true}}';

/** Feeds every dispatched event of `types` into one mailbox, in arrival order. */
function collect(es, name, types) {
  const box = new Mailbox(name);
  for (const type of types) {
    es.addEventListener(type, (ev) => box.push({ type: ev.type, data: ev.data, lastEventId: ev.lastEventId }));
  }
  return box;
}

describe('SSE with the eventsource package', { timeout: 60_000 }, () => {
  let halley;
  const ready = suiteSetup(async () => {
    halley = await startHalley();
  });
  after(() => stopCleanly(halley));

  test('receives text, multi-line, unicode and JSON in order with ids and event names', async (t) => {
    ready();
    const es = new EventSource(`${halley.url}/sub/e2e/sse`);
    t.after(() => es.close());
    const events = collect(es, 'sse events', ['message', 'greeting']);
    await once(es, 'open');

    const sent = [];
    sent.push(await halley.publish('/e2e/sse', TEXT));
    sent.push(await halley.publish('/e2e/sse', MULTILINE));
    sent.push(await halley.publish('/e2e/sse', UNICODE, { 'X-Event': 'greeting' }));
    sent.push(await halley.publish('/e2e/sse', JSON_BODY, { 'Content-Type': 'application/json' }));

    const got = await events.take(4, 'event');
    assert.deepEqual(
      got.map((e) => e.lastEventId),
      sent.map((r) => r.id),
      'each event carries its message id',
    );
    assert.deepEqual(got[0], { type: 'message', data: TEXT, lastEventId: sent[0].id });
    // CRLF inside a payload ends an SSE line like LF does; the client rejoins lines with LF.
    assert.equal(got[1].type, 'message');
    assert.equal(got[1].data, 'first line\nsecond line\nthird');
    assert.equal(got[2].type, 'greeting', 'the event name set with X-Event');
    assert.equal(got[2].data, UNICODE);
    assert.equal(got[3].type, 'message');
    assert.deepEqual(JSON.parse(got[3].data), JSON.parse(JSON_BODY), 'JSON arrives as its JSON text');
    for (const reply of sent) assert.equal(reply.delivered, 1, 'one subscriber got each message');
    assert.equal(es.readyState, EventSource.OPEN);
  });
});

describe('SSE stream recycling with the eventsource package', { timeout: 60_000 }, () => {
  let halley;
  const ready = suiteSetup(async () => {
    // Streams end (with a resume cursor) after 1 s; the client is told to come back after 0.2 s.
    halley = await startHalley(['--stream-max-age', '1', '--sse-retry', '0.2']);
  });
  after(() => stopCleanly(halley));

  test('the client reconnects by itself with Last-Event-ID and gets a message from the gap exactly once', async (t) => {
    ready();
    // Every request the client makes goes through here, so the test sees the Last-Event-ID it
    // sends and can hold the first reconnect until the gap's message has been published.
    const requests = [];
    let openGap;
    const gapPublished = new Promise((resolve) => {
      openGap = resolve;
    });
    const recordingFetch = async (url, init) => {
      const n = requests.push({ lastEventId: init.headers['Last-Event-ID'] ?? null });
      if (n === 2) await gapPublished;
      return fetch(url, init);
    };
    const es = new EventSource(`${halley.url}/sub/e2e/recycle`, { fetch: recordingFetch });
    t.after(() => {
      es.close();
      openGap();
    });
    const messages = collect(es, 'messages', ['message']);
    const ends = collect(es, 'end events', ['end']);
    await once(es, 'open');

    const m1 = await halley.publish('/e2e/recycle', 'before the recycle');
    assert.deepEqual(await messages.next('first message'), {
      type: 'message',
      data: 'before the recycle',
      lastEventId: m1.id,
    });

    // The server ends the stream after 1 s with `event: end` carrying the resume cursor.
    const end = await ends.next('end event');
    assert.equal(JSON.parse(end.data).type, 'end');
    assert.equal(JSON.parse(end.data).next, end.lastEventId, 'the end event moves the last event id');
    assert.equal(end.lastEventId, m1.id, 'resume cursor is the last message delivered');

    // The stream is over and the client's reconnect is held: this message falls in the gap.
    const m2 = await halley.publish('/e2e/recycle', 'published during the gap');
    assert.equal(m2.delivered, 0, 'no subscriber was connected when it was published');
    openGap();

    assert.deepEqual(await messages.next('gap message'), {
      type: 'message',
      data: 'published during the gap',
      lastEventId: m2.id,
    });
    assert.equal(requests.length >= 2, true, 'the client reconnected');
    assert.equal(requests[0].lastEventId, null, 'the first request has no Last-Event-ID');
    assert.equal(requests[1].lastEventId, m1.id, 'the reconnect resumes from the end cursor');

    // A message after the gap: anything repeated would have arrived before it.
    const m3 = await halley.publish('/e2e/recycle', 'after the gap');
    assert.deepEqual(await messages.next('message after the gap'), {
      type: 'message',
      data: 'after the gap',
      lastEventId: m3.id,
    });
    assert.deepEqual(
      messages.seen.map((m) => m.data),
      ['before the recycle', 'published during the gap', 'after the gap'],
      'every message exactly once, in order',
    );
  });
});
