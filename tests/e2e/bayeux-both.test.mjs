// Bayeux with both real clients at once, each in its own child process (CometD clients in
// one Node process share a cookie jar, so separate processes are what separate browsers
// are): one POST /pub reaches the cometd and the faye subscriber, and each client's publish
// reaches the other.
//
// A child speaks JSON lines: it prints {"ready":true} once subscribed, {"event":...} per
// message received, {"published":true} per acknowledged publish; it reads {"publish":data}
// lines, and disconnects and exits when its stdin closes.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { Mailbox, startHalley, suiteSetup, stopCleanly } from './lib/halley.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/**
 * The Bayeux transport both children use. 'websocket' once the server offers it (see
 * TRANSPORTS in bayeux-cometd.test.mjs and bayeux-faye.test.mjs).
 */
const TRANSPORT = 'long-polling';
/** How long a child may take to start, subscribe, or deliver, in milliseconds. */
const REPLY_MS = 10_000;
/** How long a child may take to disconnect and exit after its stdin closes, in milliseconds. */
const EXIT_MS = 5_000;

/** Shared by both children: the JSON-lines loop around `client`. */
const LINES = `
import { createInterface } from 'node:readline';
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\\n');
const input = createInterface({ input: process.stdin });
input.on('line', (line) => publish(JSON.parse(line).publish));
input.on('close', () => leave());
`;

const COMETD_CHILD = `
import { adapt } from 'cometd-nodejs-client';
import { CometD } from 'cometd';
${LINES}
adapt();
const { HALLEY_URL, CHANNEL, TRANSPORT } = process.env;
const cometd = new CometD();
for (const type of cometd.getTransportTypes()) if (type !== TRANSPORT) cometd.unregisterTransport(type);
cometd.configure({ url: HALLEY_URL + '/cometd', logLevel: 'warn' });
function publish(data) {
  cometd.publish(CHANNEL, data, (reply) => say({ published: reply.successful }));
}
function leave() {
  cometd.disconnect(() => process.exit(0));
}
cometd.addListener('/meta/handshake', (reply) => {
  if (!reply.successful) return;
  cometd.subscribe(CHANNEL, (m) => say({ event: m.data, channel: m.channel }),
    (s) => say(s.successful ? { ready: true, transport: cometd.getTransport().type } : { error: s.error }));
});
cometd.handshake();
`;

const FAYE_CHILD = `
import faye from 'faye';
${LINES}
const { HALLEY_URL, CHANNEL, TRANSPORT } = process.env;
const client = new faye.Client(HALLEY_URL + '/cometd');
for (const t of ['websocket', 'long-polling', 'callback-polling', 'cross-origin-long-polling', 'eventsource']) {
  if (t !== TRANSPORT) client.disable(t);
}
function publish(data) {
  client.publish(CHANNEL, data).then(() => say({ published: true }), (e) => say({ published: false, error: String(e) }));
}
function leave() {
  client.disconnect().then(() => process.exit(0), () => process.exit(1));
}
client.subscribe(CHANNEL, (data) => say({ event: data, channel: CHANNEL }))
  .then(() => say({ ready: true, transport: TRANSPORT }), (e) => say({ error: String(e) }));
`;

/** Starts a child running `code`; resolves once it is subscribed to `channel`. */
async function startChild(t, name, code, halley, channel) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', code], {
    cwd: HERE,
    env: { ...process.env, HALLEY_URL: halley.url, CHANNEL: channel, TRANSPORT },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-8_000);
  });
  const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  const lines = new Mailbox(`${name} child`, REPLY_MS);
  createInterface({ input: child.stdout }).on('line', (line) => lines.push(JSON.parse(line)));
  t.after(async () => {
    child.stdin.end();
    let timer;
    const late = new Promise((resolve) => {
      timer = setTimeout(() => resolve('late'), EXIT_MS);
    });
    const code = await Promise.race([exited, late]);
    clearTimeout(timer);
    if (code === 'late') child.kill('SIGKILL');
    assert.equal(code, 0, `${name} child disconnects and exits cleanly; stderr: ${stderr}`);
  });
  const first = await lines.next('ready line').catch((err) => {
    throw new Error(`${err.message}; stderr: ${stderr}`);
  });
  assert.deepEqual(first, { ready: true, transport: TRANSPORT }, `${name}: ${stderr}`);
  return {
    lines,
    publish: (data) => child.stdin.write(`${JSON.stringify({ publish: data })}\n`),
  };
}

describe('Bayeux with cometd and faye together', { timeout: 120_000 }, () => {
  let halley;
  const ready = suiteSetup(async () => {
    halley = await startHalley();
  });
  after(() => stopCleanly(halley));

  test('one POST /pub reaches both clients', async (t) => {
    ready();
    const cometd = await startChild(t, 'cometd', COMETD_CHILD, halley, '/e2e/both/news');
    const fayeChild = await startChild(t, 'faye', FAYE_CHILD, halley, '/e2e/both/news');
    const body = { headline: 'to every Bayeux client', unicode: 'naïve 東京 🚀' };
    await halley.publish('/e2e/both/news', JSON.stringify(body), { 'Content-Type': 'application/json' });
    for (const child of [cometd, fayeChild]) {
      assert.deepEqual(await child.lines.next('the POST /pub message'), { event: body, channel: '/e2e/both/news' });
    }
  });

  test("each client's publish reaches the other", async (t) => {
    ready();
    const channel = '/e2e/both/chat';
    const cometd = await startChild(t, 'cometd', COMETD_CHILD, halley, channel);
    const fayeChild = await startChild(t, 'faye', FAYE_CHILD, halley, channel);

    cometd.publish({ from: 'cometd' });
    // The publisher hears its ack and its own message (in either order); the other hears it.
    const fromCometd = await cometd.lines.take(2, 'ack and own message');
    assert.deepEqual(
      fromCometd.sort((a, b) => Object.keys(a)[0].localeCompare(Object.keys(b)[0])),
      [{ event: { from: 'cometd' }, channel }, { published: true }],
    );
    assert.deepEqual(await fayeChild.lines.next('message from cometd'), { event: { from: 'cometd' }, channel });

    fayeChild.publish({ from: 'faye' });
    const fromFaye = await fayeChild.lines.take(2, 'ack and own message');
    assert.deepEqual(
      fromFaye.sort((a, b) => Object.keys(a)[0].localeCompare(Object.keys(b)[0])),
      [{ event: { from: 'faye' }, channel }, { published: true }],
    );
    assert.deepEqual(await cometd.lines.next('message from faye'), { event: { from: 'faye' }, channel });
  });
});
