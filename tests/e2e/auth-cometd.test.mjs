// Tokens with the real, unmodified CometD JavaScript client: the handshake carries the token in
// `ext.auth.token` (set by a client extension, as an application would), the session keeps it:
// a covered channel is subscribed and delivers, an uncovered one is refused with "403::", and a
// handshake without a token gets nothing it may not read ("401::"). The token is minted by
// `halley token`, so the CLI's output is checked by the server too.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, describe, test } from 'node:test';

import { CometD } from 'cometd';
import { adapt } from 'cometd-nodejs-client';

import { HALLEY_BIN, Mailbox, startHalley, stopCleanly, suiteSetup } from './lib/halley.mjs';

const SECRET = 'e2e-secret';
const REPLY_MS = 10_000;

adapt();

function mint(args) {
  return execFileSync(HALLEY_BIN, ['token', '--auth-secret', SECRET, ...args], { encoding: 'utf8' }).trim();
}

/** A long-polling client whose handshakes carry `token` (none: no extension). */
function client(halley, token) {
  const cometd = new CometD();
  for (const type of cometd.getTransportTypes()) {
    if (type !== 'long-polling') cometd.unregisterTransport(type);
  }
  if (token) {
    cometd.registerExtension('auth', {
      outgoing(message) {
        if (message.channel === '/meta/handshake') message.ext = { ...message.ext, auth: { token } };
        return message;
      },
    });
  }
  cometd.configure({ url: `${halley.url}/cometd`, logLevel: 'warn' });
  return cometd;
}

function handshake(cometd) {
  return new Promise((resolve) => cometd.handshake((reply) => resolve(reply)));
}

function subscribe(cometd, channel, onMessage) {
  return new Promise((resolve) => cometd.subscribe(channel, onMessage, (reply) => resolve(reply)));
}

function disconnect(cometd) {
  return new Promise((resolve) => cometd.disconnect(() => resolve()));
}

describe('Bayeux with ext.auth.token (cometd client)', () => {
  let halley;
  const ready = suiteSetup(async () => {
    halley = await startHalley(['--auth-secret', SECRET]);
  });
  after(() => stopCleanly(halley));

  test('a token covers its channels only, and its publishes', async () => {
    ready();
    const token = mint(['--publish', '/chat/*', '--subscribe', '/chat/*', '--ttl', '5m', '--sub', 'ann']);
    const cometd = client(halley, token);
    const hs = await handshake(cometd);
    assert.equal(hs.successful, true, JSON.stringify(hs));
    const messages = new Mailbox('messages on /chat/room', REPLY_MS);
    const ok = await subscribe(cometd, '/chat/room', (m) => messages.push(m.data));
    assert.equal(ok.successful, true, JSON.stringify(ok));
    const refused = await subscribe(cometd, '/news', () => {});
    assert.equal(refused.successful, false);
    assert.match(refused.error, /^403:/);
    cometd.publish('/chat/room', { text: 'hello' });
    assert.deepEqual(await messages.next('the published message'), { text: 'hello' });
    await disconnect(cometd);
  });

  test('without a token nothing private is readable (401)', async () => {
    ready();
    const cometd = client(halley, null);
    const hs = await handshake(cometd);
    assert.equal(hs.successful, true, JSON.stringify(hs));
    const refused = await subscribe(cometd, '/chat/room', () => {});
    assert.equal(refused.successful, false);
    assert.match(refused.error, /^401:/);
    await disconnect(cometd);
  });
});
