// TLS with real third-party clients: Halley started with --tls-cert/--tls-key (a test CA and a
// certificate for localhost made here with openssl), the npm `eventsource` and `ws` clients and
// node's fetch trusting that CA through NODE_EXTRA_CA_CERTS (in a child process,
// tls-clients.mjs, since node reads the variable at start). Without the CA the same clients are
// refused.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';

import { startHalley, suiteSetup, stopCleanly } from './lib/halley.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHILD_TIMEOUT_MS = 30_000;

/** A test CA and a certificate for localhost and 127.0.0.1 signed by it, in `dir`. */
function makeCertificates(dir) {
  const run = (args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  run(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=Halley e2e CA']);
  run(['req', ...ec, '-keyout', 'key.pem', '-out', 'csr.pem', '-subj', '/CN=localhost']);
  writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  run(['x509', '-req', '-in', 'csr.pem', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'cert.pem', '-days', '1', '-extfile', 'ext.cnf']);
  return { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
}

/** Runs tls-clients.mjs against `base` with `env`; resolves with its exit code and JSON line. */
function runClients(base, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(HERE, 'tls-clients.mjs'), base], {
      env,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => (out += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS);
    child.once('error', reject);
    child.once('exit', (code) => {
      clearTimeout(timer);
      try {
        resolve({ code, result: JSON.parse(out.trim().split('\n').pop()) });
      } catch {
        reject(new Error(`tls-clients.mjs exited ${code} without a JSON line: ${out}`));
      }
    });
  });
}

describe('TLS with the eventsource and ws packages', { timeout: 90_000 }, () => {
  let halley;
  let files;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'halley-e2e-tls-'));
  const ready = suiteSetup(async () => {
    files = makeCertificates(dir);
    halley = await startHalley(['--tls-cert', files.cert, '--tls-key', files.key]);
  });
  after(async () => {
    await stopCleanly(halley);
    rmSync(dir, { recursive: true, force: true });
  });

  test('SSE, WebSocket and publish over https/wss with the test CA', async () => {
    ready();
    assert.match(halley.url, /^https:\/\//, 'the server says it listens on https');
    const base = `https://localhost:${new URL(halley.url).port}`;
    const env = { ...process.env, NODE_EXTRA_CA_CERTS: files.ca };
    const { code, result } = await runClients(base, env);
    assert.equal(code, 0, JSON.stringify(result));
    assert.equal(result.published.status, 201);
    assert.equal(result.published.body.delivered, 2, 'one SSE and one WebSocket subscriber');
    assert.equal(result.sse, 'over tls');
    assert.equal(result.ws, 'over tls');
  });

  test('without the CA the clients refuse the certificate', async () => {
    ready();
    const base = `https://localhost:${new URL(halley.url).port}`;
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const { code, result } = await runClients(base, env);
    assert.equal(code, 1);
    assert.match(result.error, /certificate|self.signed|issuer/i, result.error);
  });
});
