// halley.js against the real server over real sockets, in node: the transports node can run
// (long-poll and fetch streaming; node 20 has no WebSocket, EventSource or DOM, so those run
// in chromium in tests/e2e/client-*.test.mjs). Each transport forced in turn: 100 messages
// in order with their ids, a publish from the client, and a server restart on the same port
// in the middle, after which the client reports the gap (a new epoch) and loses nothing
// published while a server runs; and a stream gone silent is dropped by the heartbeat watchdog.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, test } from 'node:test';

import { FAST, Mailbox, reach, startHalley, stopCleanly, suiteSetup } from '../../../tests/e2e/lib/halley.mjs';
import Halley from '../halley.mjs';

/** A free loopback port, so the restarted server can come back on the same one. */
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

for (const transport of ['longpoll', 'stream']) {
  describe(`halley.js over ${transport} (node, real server)`, { timeout: 60_000 }, () => {
    let halley;
    let port;
    const ready = suiteSetup(async () => {
      port = await freePort();
      halley = await startHalley(['--listen', `127.0.0.1:${port}`, '--heartbeat-interval', '1']);
    });
    after(() => stopCleanly(halley));

    test('100 messages in order, then a publish from the client', async (t) => {
      ready();
      const h = Halley.connect(halley.url, { ...FAST, transports: [transport], name: `${transport}-100` });
      t.after(() => h.close());
      const box = new Mailbox(`${transport} messages`);
      h.subscribe(`/wire/${transport}/*`, (m) => box.push(m));
      await reach(h, 'open');
      assert.equal(h.transport, transport);
      const acks = [];
      for (let i = 0; i < 100; i += 1) {
        acks.push(await halley.publish(`/wire/${transport}/a`, JSON.stringify({ n: i }), { 'Content-Type': 'application/json' }));
      }
      const got = await box.take(100, 'message');
      assert.deepEqual(
        got.map((m) => [m.id, m.topic, m.data.n]),
        acks.map((a, i) => [a.id, `/wire/${transport}/a`, i]),
      );
      assert.equal(h.cursor, acks[99].id);
      const ack = await h.publish(`/wire/${transport}/b`, 'from the client', { event: 'note' });
      const mine = await box.next('the client publish');
      assert.deepEqual([mine.id, mine.topic, mine.event, mine.data], [ack.id, `/wire/${transport}/b`, 'note', 'from the client']);
      assert.equal(typeof mine.time, 'number');
      assert.equal(box.pending, 0, 'nothing twice');
    });

    test('a server restart in the middle: gap reported, nothing lost while a server runs', async (t) => {
      ready();
      const h = Halley.connect(halley.url, { ...FAST, transports: [transport], name: `${transport}-restart` });
      t.after(() => h.close());
      const box = new Mailbox(`${transport} messages`);
      const gaps = new Mailbox(`${transport} gaps`);
      const states = [];
      h.on('state', (s) => states.push(s));
      h.on('gap', (g) => gaps.push(g));
      h.subscribe(`/wire/${transport}/restart`, (m) => box.push(m));
      await reach(h, 'open');
      const before = [];
      for (let i = 0; i < 50; i += 1) before.push((await halley.publish(`/wire/${transport}/restart`, `a${i}`)).id);
      const first = await box.take(50, 'message before the restart');
      assert.deepEqual(first.map((m) => m.id), before);

      await stopCleanly(halley);
      halley = await startHalley(['--listen', `127.0.0.1:${port}`, '--heartbeat-interval', '1']);
      await reach(h, 'open');
      const gap = await gaps.next('gap after the restart');
      assert.equal(gap.cursor.split('-')[0], before[0].split('-')[0], 'the gap names the old cursor');
      assert.equal(gap.transport, transport);
      assert.ok(states.includes('reconnecting'), `states: ${states}`);

      const later = [];
      for (let i = 0; i < 50; i += 1) later.push((await halley.publish(`/wire/${transport}/restart`, `b${i}`)).id);
      const second = await box.take(50, 'message after the restart');
      assert.deepEqual(second.map((m) => m.id), later);
      assert.deepEqual(second.map((m) => m.data), later.map((_, i) => `b${i}`));
      assert.notEqual(later[0].split('-')[0], before[0].split('-')[0], 'a new epoch');
      assert.equal(box.pending, 0, 'nothing twice');
      assert.equal(gaps.pending, 0, 'one gap');
    });

    if (transport === 'stream') {
      test('a silent link (the server stopped, SIGSTOP) is dropped after heartbeatTimeout', async (t) => {
        ready();
        const h = Halley.connect(halley.url, { ...FAST, transports: [transport], heartbeatTimeout: 2500, name: 'dead' });
        t.after(() => h.close());
        const box = new Mailbox('messages');
        h.subscribe('/wire/stream/dead', (m) => box.push(m));
        await reach(h, 'open');
        const stopped = Date.now();
        process.kill(halley.pid, 'SIGSTOP');
        try {
          await reach(h, 'reconnecting', 10_000);
        } finally {
          process.kill(halley.pid, 'SIGCONT');
        }
        const waited = Date.now() - stopped;
        assert.ok(waited >= 2000, `dropped after ${waited} ms, not before the heartbeat timeout`);
        await reach(h, 'open');
        const ack = await halley.publish('/wire/stream/dead', 'after');
        assert.equal((await box.next('message after the stall')).id, ack.id);
      });
    }
  });
}
