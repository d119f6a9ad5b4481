// Pure logic of halley.js with injected fakes: backoff, cursors, topic patterns, parsing,
// the transport order and fallback decisions. Nothing here touches the network; the wire is
// tested against the real server in wire.test.mjs and in a real browser in tests/e2e.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import Halley from '../halley.mjs';

const { parseId, isAfter, matches, backoff, buildUrl, LineSplitter, SseParser, sseData, CursorStore, Picker } = Halley._internal;

describe('backoff', () => {
  test('full jitter stays within [0, min(max, base * 2^(attempt-1)))', () => {
    for (let attempt = 1; attempt <= 20; attempt += 1) {
      const ceiling = Math.min(30_000, 500 * 2 ** (attempt - 1));
      assert.equal(backoff(attempt, 500, 30_000, () => 0), 0);
      const top = backoff(attempt, 500, 30_000, () => 0.999999);
      assert.ok(top < ceiling && top >= ceiling - 1, `attempt ${attempt}: ${top} vs ${ceiling}`);
    }
    assert.equal(backoff(3, 500, 30_000, () => 0.5), 1000);
    assert.equal(backoff(50, 500, 30_000, () => 0.5), 15_000, 'capped at max');
  });

  test('Math.random by default, never negative', () => {
    for (let i = 0; i < 1000; i += 1) {
      const d = backoff(4, 100, 1000);
      assert.ok(d >= 0 && d < 800);
    }
  });
});

describe('cursors', () => {
  test('parseId splits at the last dash and rejects junk', () => {
    assert.deepEqual(parseId('3du2219u-42'), { epoch: '3du2219u', seq: '42' });
    assert.deepEqual(parseId('a-b-007'), { epoch: 'a-b', seq: '7' });
    for (const bad of ['', '42', '-3', 'abc-', 'abc-x1', null, 7]) assert.equal(parseId(bad), null, String(bad));
  });

  test('isAfter orders by seq within an epoch, numerically', () => {
    assert.equal(isAfter('e-10', 'e-9'), true);
    assert.equal(isAfter('e-9', 'e-10'), false);
    assert.equal(isAfter('e-10', 'e-10'), false);
    assert.equal(isAfter('e-123456789012345678901', 'e-123456789012345678900'), true, 'beyond 2^53');
    assert.equal(isAfter('f-1', 'e-100'), true, 'another epoch (a restart) is always after');
    assert.equal(isAfter('e-1', null), true);
  });

  test('CursorStore keeps the cursor in storage, and in memory when storage throws', () => {
    const map = new Map();
    const storage = { getItem: (k) => (map.has(k) ? map.get(k) : null), setItem: (k, v) => map.set(k, v) };
    const store = new CursorStore(storage, 'k');
    assert.equal(store.get(), null);
    store.set('e-5');
    assert.equal(map.get('k'), 'e-5');
    assert.equal(new CursorStore(storage, 'k').get(), 'e-5', 'a reload finds it');
    map.set('k', 'garbage');
    assert.equal(new CursorStore(storage, 'k').get(), null, 'an invalid stored cursor is ignored');
    const broken = {
      getItem() {
        throw new Error('denied');
      },
      setItem() {
        throw new Error('quota');
      },
    };
    const mem = new CursorStore(broken, 'k');
    mem.set('e-9');
    assert.equal(mem.get(), 'e-9');
  });
});

describe('topic patterns (the server rules: * one segment, final ** one or more)', () => {
  const table = [
    ['/a', ['/a'], ['/a/b', '/ab', '/']],
    ['/a/*', ['/a/b', '/a/c'], ['/a', '/a/b/c', '/b/c', '/a/']],
    ['/a/**', ['/a/b', '/a/b/c', '/a/b/c/d'], ['/a', '/ab', '/ab/c', '/b/a']],
    ['/**', ['/a', '/a/b/c'], []],
    ['/a/*/c/**', ['/a/x/c/d', '/a/y/c/d/e'], ['/a/x/c', '/a/x/d/e', '/b/x/c/d']],
  ];
  for (const [pattern, yes, no] of table) {
    test(pattern, () => {
      for (const t of yes) assert.equal(matches(pattern, t), true, `${pattern} ~ ${t}`);
      for (const t of no) assert.equal(matches(pattern, t), false, `${pattern} !~ ${t}`);
    });
  }
});

describe('parsing', () => {
  test('LineSplitter joins lines split across chunks and skips blank ones', () => {
    const s = new LineSplitter();
    assert.deepEqual(s.push('{"a":1}\n{"b"'), ['{"a":1}']);
    assert.deepEqual(s.push(':2}\n\n{"type":"heartbeat"}'), ['{"b":2}']);
    assert.deepEqual(s.push('\n'), ['{"type":"heartbeat"}']);
  });

  test('sseData takes objects and arrays as JSON, everything else as text', () => {
    assert.deepEqual(sseData('{"n":1}'), { n: 1 });
    assert.deepEqual(sseData('[1,2]'), [1, 2]);
    assert.equal(sseData('42'), '42');
    assert.equal(sseData('{not json'), '{not json');
    assert.equal(sseData('a\nb'), 'a\nb');
  });

  test('SseParser: events split across chunks, multi-line data, retry, comments, id-only events', () => {
    const p = new SseParser();
    assert.deepEqual(p.push('retry: 2000\nid: e-0\n\nid: e-1\nev'), [{ retry: 2000 }, { event: 'message', id: 'e-0', data: null }]);
    assert.deepEqual(p.push('ent: tick\ndata: one\ndata: two\n\n: hb\n\n'), [
      { event: 'tick', id: 'e-1', data: 'one\ntwo' },
      { comment: 'hb' },
    ]);
    assert.deepEqual(p.push('event: end\nid: e-9\ndata: {"type":"end","next":"e-9"}\r\n\r\n'), [
      { event: 'end', id: 'e-9', data: '{"type":"end","next":"e-9"}' },
    ]);
    assert.deepEqual(p.push('data:no space\n\n'), [{ event: 'message', id: null, data: 'no space' }]);
  });

  test('buildUrl encodes and leaves out missing values', () => {
    assert.equal(
      buildUrl('http://h:1', '/sub/a,/b/*', { since: 'e-1', timeout: 0, access_token: undefined, x: 'a b&' }),
      'http://h:1/sub/a,/b/*?since=e-1&timeout=0&x=a%20b%26',
    );
    assert.equal(buildUrl('http://h', '/ws', {}), 'http://h/ws');
  });
});

describe('transport order and fallback', () => {
  test('a transport that never opened is dropped for the next; wrapping around backs off', () => {
    const p = new Picker(['websocket', 'sse', 'longpoll']);
    assert.equal(p.current(), 'websocket');
    assert.equal(p.failed('websocket', false), false, 'next one at once');
    assert.equal(p.current(), 'sse');
    assert.equal(p.failed('sse', false), false);
    assert.equal(p.current(), 'longpoll');
    assert.equal(p.failed('longpoll', false), true, 'all failed: wait before starting over');
    assert.equal(p.current(), 'websocket');
  });

  test('a transport that opened once is kept and retried with backoff', () => {
    const p = new Picker(['websocket', 'sse']);
    p.failed('websocket', false);
    assert.equal(p.current(), 'sse');
    assert.equal(p.failed('sse', true), true);
    assert.equal(p.current(), 'sse');
    assert.equal(p.failed('sse', false), true, 'the server is down, not the transport');
    assert.equal(p.current(), 'sse');
  });

  test('ineligible transports are skipped in order', () => {
    const p = new Picker(['websocket', 'sse', 'stream']);
    assert.equal(p.current((n) => n !== 'websocket' && n !== 'sse'), 'stream');
    assert.equal(p.current(() => false), null);
  });
});
