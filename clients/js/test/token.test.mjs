// halley.js's `token` option against a real Halley with --auth-secret, in node: where each
// transport puts the token (seen by wrapping fetch and WebSocket, and proven by the server
// accepting it), what a missing token reports, a token function fetched again after a 401 and
// after the server's `expired` notice, and a 403 on one subscription that leaves the others
// working. WebSocket runs on the `ws` package of tests/e2e (node 20 has none); JSONP and the
// iframe need a DOM, so they run in chromium (tests/e2e/client-token.test.mjs).

import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { after, describe, test } from 'node:test';

import { FAST, Mailbox, mintToken, reach, startHalley, stopCleanly, suiteSetup } from '../../../tests/e2e/lib/halley.mjs';
import Halley from '../halley.mjs';

const requireE2e = createRequire(new URL('../../../tests/e2e/package.json', import.meta.url));
const WebSocket = requireE2e('ws');

const SECRET = 'token-tests-secret';
const mint = (claims, secret = SECRET) => mintToken(claims, secret);

const inSecs = (s) => Math.floor(Date.now() / 1000) + s;
const READ_ALL = mint({ exp: inSecs(3600), subscribe: ['/tok/**'], publish: [] });
const PUBLISHER = mint({ exp: inSecs(3600), publish: ['/**'], subscribe: [] });

/**
 * node's fetch, WebSocket (from `ws`) and streams, each request and socket recorded:
 * `requests` holds {url, authorization}, `sockets` {url, sent: [commands]}.
 */
function recordingEnv() {
  const requests = [];
  const sockets = [];
  class RecordingSocket extends WebSocket {
    constructor(url) {
      super(url);
      this.record = { url, sent: [] };
      sockets.push(this.record);
    }
    send(text) {
      this.record.sent.push(JSON.parse(text));
      super.send(text);
    }
  }
  const env = {
    WebSocket: RecordingSocket,
    EventSource: undefined,
    fetch: (url, init = {}) => {
      requests.push({ url: String(url), authorization: init.headers?.Authorization ?? null });
      return fetch(url, init);
    },
    ReadableStream,
    AbortController,
    TextDecoder,
    document: null,
    location: null,
    sessionStorage: null,
    BroadcastChannel: undefined,
    locks: null,
    random: Math.random,
  };
  return { env, requests, sockets };
}

describe('halley.js tokens (node, real server with --auth-secret)', { timeout: 60_000 }, () => {
  let halley;
  const ready = suiteSetup(async () => {
    halley = await startHalley(['--auth-secret', SECRET, '--heartbeat-interval', '1']);
  });
  after(() => stopCleanly(halley));

  const publish = (topic, body) => halley.publish(topic, body, { Authorization: `Bearer ${PUBLISHER}` });

  for (const transport of ['websocket', 'sse', 'stream', 'longpoll']) {
    test(`${transport}: the token goes where the transport carries it, and messages flow`, async (t) => {
      ready();
      const { env, requests, sockets } = recordingEnv();
      const h = Halley.connect(halley.url, { ...FAST, transports: [transport], token: READ_ALL, name: transport }, env);
      t.after(() => h.close());
      const box = new Mailbox(`${transport} messages`);
      h.subscribe(`/tok/${transport}`, (m) => box.push(m));
      await reach(h, 'open');
      const ack = await publish(`/tok/${transport}`, 'hello');
      assert.equal((await box.next('the message')).id, ack.id);

      const subs = requests.filter((r) => r.url.includes('/sub/'));
      if (transport === 'websocket') {
        assert.equal(sockets.length, 1);
        assert.ok(!sockets[0].url.includes('token'), `no token in the URL: ${sockets[0].url}`);
        assert.deepEqual(sockets[0].sent[0], { op: 'auth', token: READ_ALL, id: 'auth' }, 'auth is the first command');
        assert.equal(sockets[0].sent[1].op, 'subscribe');
      } else if (transport === 'sse') {
        const stream = subs.find((r) => r.url.includes('transport=sse'));
        assert.ok(stream, `an SSE request: ${JSON.stringify(subs)}`);
        assert.equal(new URL(stream.url).searchParams.get('token'), READ_ALL, 'SSE: the token query parameter');
        assert.equal(stream.authorization, null, 'SSE: no header (EventSource could not send one)');
      } else {
        assert.ok(subs.length > 0);
        for (const r of subs) {
          assert.equal(r.authorization, `Bearer ${READ_ALL}`, `${transport}: the header`);
          assert.equal(new URL(r.url).searchParams.get('token'), null, `${transport}: no token in ${r.url}`);
        }
      }
    });
  }

  test('publish over HTTP carries the token in the header; without publish rights it is a 403', async (t) => {
    ready();
    const { env, requests } = recordingEnv();
    const token = mint({ exp: inSecs(600), publish: ['/tok/pub/*'], subscribe: [] });
    const h = Halley.connect(halley.url, { ...FAST, token, name: 'pub' }, env);
    t.after(() => h.close());
    const ack = await h.publish('/tok/pub/a', 'from the client');
    assert.match(ack.id, /^[0-9a-z]+-[0-9]+$/);
    const post = requests.find((r) => r.url.includes('/pub/tok/pub/a'));
    assert.equal(post.authorization, `Bearer ${token}`);
    await assert.rejects(h.publish('/tok/other', 'x'), (err) => err.status === 403);
  });

  for (const transport of ['websocket', 'longpoll']) {
    test(`${transport}: no token is an error with status 401, and the client never opens`, async (t) => {
      ready();
      const { env } = recordingEnv();
      const h = Halley.connect(halley.url, { ...FAST, transports: [transport], name: `none-${transport}` }, env);
      t.after(() => h.close());
      const errors = new Mailbox('errors');
      h.on('error', (e) => errors.push(e));
      h.subscribe('/tok/secret', () => assert.fail('no message without a token'));
      const err = await errors.next('the refusal');
      assert.equal(err.status, 401, err.message);
      assert.notEqual(h.state, 'open');
    });
  }

  test('a token function is asked again after a 401 (a bad token) and the client then opens', async (t) => {
    ready();
    const calls = [];
    const token = () => {
      calls.push(Date.now());
      // The first one is signed with another secret: the server answers 401.
      return Promise.resolve(calls.length === 1 ? mint({ exp: inSecs(600), subscribe: ['/tok/**'] }, 'wrong') : READ_ALL);
    };
    const { env } = recordingEnv();
    const h = Halley.connect(halley.url, { ...FAST, transports: ['stream'], token, name: 'refresh' }, env);
    t.after(() => h.close());
    const errors = [];
    h.on('error', (e) => errors.push(e.status));
    const box = new Mailbox('messages');
    h.subscribe('/tok/refresh', (m) => box.push(m));
    await reach(h, 'open');
    assert.equal(calls.length, 2);
    assert.deepEqual(errors, [401]);
    const ack = await publish('/tok/refresh', 'after the refresh');
    assert.equal((await box.next('the message')).id, ack.id);
  });

  for (const transport of ['websocket', 'stream']) {
    test(`${transport}: the server's expired notice makes the client fetch a fresh token, losing nothing`, async (t) => {
      ready();
      let calls = 0;
      const freshTokens = new Mailbox('token calls', 15_000);
      const token = () => {
        calls += 1;
        freshTokens.push(calls);
        // The first expires in two seconds; the next ones last.
        return mint({ exp: inSecs(calls === 1 ? 2 : 600), subscribe: ['/tok/**'] });
      };
      const { env } = recordingEnv();
      const h = Halley.connect(halley.url, { ...FAST, transports: [transport], token, name: `exp-${transport}` }, env);
      t.after(() => h.close());
      const errors = [];
      h.on('error', (e) => errors.push(e.message));
      const box = new Mailbox('messages', 15_000);
      h.subscribe(`/tok/exp/${transport}`, (m) => box.push(m));
      await reach(h, 'open');
      assert.equal(await freshTokens.next('the first token'), 1);
      const before = await publish(`/tok/exp/${transport}`, 'before');
      assert.equal((await box.next('before')).id, before.id);
      assert.equal(await freshTokens.next('the token after the expiry'), 2);
      const afterAck = await publish(`/tok/exp/${transport}`, 'after');
      assert.equal((await box.next('after')).id, afterAck.id);
      assert.equal(box.pending, 0, 'nothing twice');
      assert.deepEqual(errors, [], 'the notice, not a 401, brought the new token');
    });
  }

  for (const transport of ['websocket', 'longpoll']) {
    test(`${transport}: a 403 on one subscription is reported for it, the others keep working`, async (t) => {
      ready();
      const token = mint({ exp: inSecs(600), subscribe: ['/tok/mine/*'] });
      const { env } = recordingEnv();
      const h = Halley.connect(halley.url, { ...FAST, transports: [transport], token, name: `forbid-${transport}` }, env);
      t.after(() => h.close());
      const errors = new Mailbox('errors');
      h.on('error', (e) => errors.push(e));
      const box = new Mailbox('messages');
      h.subscribe('/tok/mine/a', (m) => box.push(m));
      h.subscribe('/tok/theirs/a', () => assert.fail('a refused subscription receives nothing'));
      const err = await errors.next('the refusal');
      assert.equal(err.status, 403, err.message);
      assert.equal(err.topic, '/tok/theirs/a');
      await reach(h, 'open');
      await publish('/tok/theirs/a', 'not for us');
      const ack = await publish('/tok/mine/a', 'for us');
      assert.equal((await box.next('the message')).id, ack.id);
      // Subscribed later, on the running connection: refused alone.
      h.subscribe('/tok/other/b', () => assert.fail('refused'));
      const later = await errors.next('the later refusal');
      assert.deepEqual([later.status, later.topic], [403, '/tok/other/b']);
      const ack2 = await publish('/tok/mine/a', 'still flowing');
      assert.equal((await box.next('the second message')).id, ack2.id);
      assert.equal(errors.pending, 0);
    });
  }
});
