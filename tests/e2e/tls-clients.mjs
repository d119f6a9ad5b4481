// Child process of tls.test.mjs: the npm `eventsource` and `ws` clients and node's fetch
// against a Halley that terminates TLS, trusting the test CA only through NODE_EXTRA_CA_CERTS
// (which node reads at start, hence a process of its own). Prints one JSON line with what each
// client received, or `{"error": ...}` and exits 1.
//
// Usage: NODE_EXTRA_CA_CERTS=ca.pem node tls-clients.mjs https://localhost:PORT

import { EventSource } from 'eventsource';
import WebSocket from 'ws';

const TIMEOUT_MS = 10_000;
const base = process.argv[2];
const topic = '/e2e/tls';

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function main() {
  const es = new EventSource(`${base}/sub${topic}`);
  const sseMessage = new Promise((resolve) => es.addEventListener('message', (ev) => resolve(ev.data)));
  await within(
    new Promise((resolve, reject) => {
      es.addEventListener('open', resolve);
      es.addEventListener('error', (ev) => reject(new Error(`EventSource: ${ev.message ?? 'error'}`)));
    }),
    'the SSE stream to open',
  );

  const ws = new WebSocket(`${base.replace(/^https:/, 'wss:')}/ws`);
  const replies = [];
  let wake = () => {};
  ws.on('message', (data) => {
    replies.push(JSON.parse(data.toString('utf8')));
    wake();
  });
  const next = (match, what) =>
    within(
      new Promise((resolve) => {
        const look = () => {
          const found = replies.find(match);
          if (found) resolve(found);
          else wake = look;
        };
        look();
      }),
      what,
    );
  await within(
    new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    }),
    'the WebSocket to open',
  );
  ws.send(JSON.stringify({ op: 'subscribe', topics: [topic], id: 1 }));
  await next((r) => r.op === 'subscribe', 'the subscribe ack');

  const res = await fetch(`${base}/pub${topic}`, { method: 'POST', body: 'over tls' });
  const published = { status: res.status, body: await res.json() };
  const wsMessage = await next((r) => r.data === 'over tls', 'the message on the WebSocket');
  const sse = await within(sseMessage, 'the message on the SSE stream');
  es.close();
  ws.close();
  console.log(JSON.stringify({ published, sse, ws: wsMessage.data }));
}

main().then(
  () => process.exit(0),
  (err) => {
    console.log(JSON.stringify({ error: String(err?.cause?.message ?? err?.message ?? err) }));
    process.exit(1);
  },
);
