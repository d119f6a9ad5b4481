// Starts and stops a real `halley serve` for the end-to-end tests, and the few HTTP helpers
// every test needs (publish, cursor). The binary is never built here: run.sh builds it
// first, and a missing binary is an error, not a skip.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { before } from 'node:test';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** The debug binary `cargo build -p halley` leaves behind (honours CARGO_TARGET_DIR). */
export const HALLEY_BIN = process.env.CARGO_TARGET_DIR
  ? path.resolve(process.env.CARGO_TARGET_DIR, 'debug', 'halley')
  : path.resolve(HERE, '..', '..', '..', 'target', 'debug', 'halley');

/** How long the server may take to print its listening line, in milliseconds. */
const START_TIMEOUT_MS = 10_000;
/** How long SIGTERM may take before SIGKILL, in milliseconds. */
const STOP_GRACE_MS = 5_000;
/** Stderr kept for error messages, in characters (the tail is what matters). */
const MAX_LOG_CHARS = 64 * 1024;
/** How long any one helper request may take, in milliseconds. */
const REQUEST_TIMEOUT_MS = 10_000;

const LISTENING = /halley listening on (https?:\/\/\S+) with /;

/** Every child still running, so an aborted test run never leaves one behind. */
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * Starts `halley serve --listen 127.0.0.1:0 --workers 2 --log info ...extraArgs` (extraArgs may
 * bring its own `--listen`) and resolves
 * once it has printed the address it listens on. Throws when the binary is missing, the
 * process exits early, or the line does not come within START_TIMEOUT_MS.
 */
export async function startHalley(extraArgs = []) {
  if (!existsSync(HALLEY_BIN)) {
    throw new Error(
      `halley binary not found at ${HALLEY_BIN}: build it first (cargo build -p halley), or use tests/e2e/run.sh`,
    );
  }
  // A test that restarts the server on the same port passes its own --listen.
  const listen = extraArgs.includes('--listen') ? [] : ['--listen', '127.0.0.1:0'];
  const args = ['serve', ...listen, '--workers', '2', '--log', 'info', ...extraArgs];
  // RUST_LOG would override --log and could hide the listening line.
  const env = { ...process.env };
  delete env.RUST_LOG;
  const child = spawn(HALLEY_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
  running.add(child);
  const halley = new Halley(child, args);
  try {
    await halley.started;
  } catch (err) {
    await halley.stop();
    throw err;
  }
  return halley;
}

/** A running server: its base URL, HTTP helpers, and `stop()`. */
export class Halley {
  constructor(child, args) {
    this.child = child;
    this.pid = child.pid;
    this.args = args;
    this.log = '';
    this.url = null;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        running.delete(child);
        resolve({ code, signal });
      });
    });
    this.started = new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`halley did not report its address within ${START_TIMEOUT_MS} ms:\n${this.log}`)),
        START_TIMEOUT_MS,
      );
      child.once('error', (err) => {
        clearTimeout(timer);
        reject(new Error(`could not start ${HALLEY_BIN}: ${err.message}`));
      });
      this.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`halley exited early (code ${code}, signal ${signal}):\n${this.log}`));
      });
      child.stderr.setEncoding('utf8');
      // Keep reading stderr for the whole run so the pipe never fills and blocks the server.
      child.stderr.on('data', (chunk) => {
        this.log = (this.log + chunk).slice(-MAX_LOG_CHARS);
        const found = this.url === null && LISTENING.exec(this.log);
        if (found) {
          this.url = found[1];
          clearTimeout(timer);
          resolve();
        }
      });
    });
    // Rejections after a successful start are reported through stop(), not as unhandled.
    this.started.catch(() => {});
  }

  /** `host:port`, for ws:// URLs. */
  get host() {
    return new URL(this.url).host;
  }

  /**
   * Publishes `body` to `topic` (with its leading '/') and returns the 201 reply
   * (`{id, topic, time, delivered}`). Any other status throws with the server's reason.
   */
  async publish(topic, body, headers = {}) {
    const res = await fetch(`${this.url}/pub${topic}`, {
      method: 'POST',
      body,
      headers: { 'Content-Type': 'text/plain; charset=utf-8', ...headers },
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const text = await res.text();
    if (res.status !== 201) throw new Error(`publish to ${topic}: ${res.status} ${text}`);
    return JSON.parse(text);
  }

  /** Publishes `<prefix>0` .. `<prefix><count - 1>` to `topic` in order; returns their ids. */
  async publishTexts(topic, prefix, count) {
    const ids = [];
    for (let i = 0; i < count; i += 1) ids.push((await this.publish(topic, `${prefix}${i}`)).id);
    return ids;
  }

  /** The Pushlet and Bayeux sessions the server holds right now (the /stats gauge). */
  async sessions() {
    const res = await fetch(`${this.url}/stats`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    const stats = await res.json();
    return stats.workers.reduce((sum, w) => sum + w.sessions, 0);
  }

  /** The current cursor for `topics` (a plain poll's `next`): later messages come after it. */
  async cursor(topics) {
    const res = await fetch(`${this.url}/sub${topics}?timeout=0`, { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`cursor for ${topics}: ${res.status} ${text}`);
    return JSON.parse(text).next;
  }

  /**
   * Stops the server by PID: SIGTERM, then SIGKILL if it has not exited after STOP_GRACE_MS.
   * Resolves to `{code, signal, killed}`.
   */
  async stop() {
    if (this.pid === undefined) return { code: null, signal: null, killed: false }; // never started
    if (this.child.exitCode !== null || this.child.signalCode !== null) {
      return { ...(await this.exited), killed: false };
    }
    process.kill(this.pid, 'SIGTERM');
    let timer;
    const grace = new Promise((resolve) => {
      timer = setTimeout(() => resolve('timeout'), STOP_GRACE_MS);
    });
    const first = await Promise.race([this.exited, grace]);
    clearTimeout(timer);
    if (first !== 'timeout') return { ...first, killed: false };
    process.kill(this.pid, 'SIGKILL');
    return { ...(await this.exited), killed: true };
  }
}

/** Stops a suite's server and checks it shut down gracefully (exit code 0 on SIGTERM). */
export async function stopCleanly(halley) {
  if (!halley) return;
  const exit = await halley.stop();
  assert.deepEqual(exit, { code: 0, signal: null, killed: false }, 'graceful exit on SIGTERM');
}

/**
 * Runs `setup` in a `before` hook of the current suite and returns `ready()`, which every
 * test calls first: it throws setup's error, if any. A missing prerequisite (binary,
 * browser) thus fails each test with its own message; thrown from the hook itself, node's
 * runner would count the tests as cancelled, not failed.
 */
export function suiteSetup(setup) {
  let error = null;
  before(async () => {
    try {
      await setup();
    } catch (err) {
      error = err;
    }
  });
  return () => {
    if (error) throw error;
  };
}

/**
 * A queue of events from a callback-based client, read with `await next()`. A read that
 * waits longer than `timeoutMs` fails with a message naming what was expected: the deadline
 * turns a hang into a failure, it is not how the test synchronises.
 */
export class Mailbox {
  constructor(name, timeoutMs = 10_000) {
    this.name = name;
    this.timeoutMs = timeoutMs;
    this.items = [];
    this.waiters = [];
    this.seen = [];
  }

  push(item) {
    this.seen.push(item);
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.items.push(item);
  }

  /** The next item, or a rejection after the deadline. */
  next(what = 'an item') {
    if (this.items.length > 0) return Promise.resolve(this.items.shift());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== deliver);
        const seen = JSON.stringify(this.seen);
        reject(new Error(`${this.name}: no ${what} within ${this.timeoutMs} ms; seen so far: ${seen}`));
      }, this.timeoutMs);
      const deliver = (item) => {
        clearTimeout(timer);
        resolve(item);
      };
      this.waiters.push(deliver);
    });
  }

  /** The next `n` items, in order. */
  async take(n, what) {
    const out = [];
    for (let i = 0; i < n; i += 1) out.push(await this.next(what));
    return out;
  }

  /** Items that arrived and were not read yet. */
  get pending() {
    return this.items.length;
  }
}

/** halley.js options for node tests: fast reconnects, so a restart test need not wait out
 * production backoff. */
export const FAST = { shared: false, backoffBase: 50, backoffMax: 400, firstByteTimeout: 5000 };

/** Resolves when halley.js client `h` reaches `state` (at once if it is there). */
export function reach(h, state, timeoutMs = 10_000) {
  if (h.state === state) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`state ${state} not reached; still ${h.state}`)), timeoutMs);
    const off = h.on('state', (s) => {
      if (s !== state) return;
      clearTimeout(timer);
      off();
      resolve();
    });
  });
}

/** Resolves with the first `event` from `emitter`, or rejects after `timeoutMs`. */
export function once(emitter, event, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no '${event}' event within ${timeoutMs} ms`));
    }, timeoutMs);
    const handler = (...args) => {
      clearTimeout(timer);
      off();
      resolve(args.length > 1 ? args : args[0]);
    };
    const off = () => (emitter.off ? emitter.off(event, handler) : emitter.removeEventListener(event, handler));
    if (emitter.on) emitter.on(event, handler);
    else emitter.addEventListener(event, handler);
  });
}

/**
 * An HS256 JWT with `claims` signed with `secret`, as an application's backend mints them
 * for a Halley started with `--auth-secret secret` (docs/AUTH.md).
 */
export function mintToken(claims, secret) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}
