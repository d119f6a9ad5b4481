/*! halley.js: the browser client for Halley, the Comet server (docs/CLIENT.md).
 *
 * One file, no build step, no dependencies. As a plain <script> it defines the global
 * `Halley`; halley.mjs re-exports it as an ES module. What it owns:
 * - picking a transport (WebSocket, SSE, XHR streaming, long-poll, JSONP, forever iframe),
 *   dropping one that fails or never opens for the next, and reconnecting with backoff;
 * - the cursor: every message id moves it, it is kept in sessionStorage, and every
 *   (re)connection resumes from it, so nothing is lost and nothing arrives twice;
 * - reporting history gaps through on('gap') instead of hiding them;
 * - the token: put where each transport can carry it, fetched again (when it is a function)
 *   after a 401 or an expiry notice, and a 403 on one subscription reported for that one only;
 * - sharing one connection between the tabs of an origin (see Shared below).
 */
(function (root) {
  'use strict';

  /** Every transport, in the order they are tried (docs/CLIENT.md says why). */
  var TRANSPORTS = ['websocket', 'sse', 'stream', 'longpoll', 'jsonp', 'iframe'];

  var DEFAULTS = {
    // A token (docs/AUTH.md): a string, or a function returning one (or a Promise of one),
    // called before the first connection and again after a 401 or an expiry notice.
    token: null,
    transports: TRANSPORTS,
    // A transport that has not opened (WebSocket open, response head, first long-poll reply)
    // after this long is dropped for the next one: a buffering proxy looks exactly like this.
    firstByteTimeout: 10000,
    // Server heartbeats come every 15 s (--heartbeat-interval); silence this long on a
    // stream whose heartbeats the page can see means the link is dead.
    heartbeatTimeout: 40000,
    // Long-poll hold asked of the server, in seconds (the server caps it).
    longpollTimeout: 30,
    // Exponential backoff with full jitter between these bounds, in ms.
    backoffBase: 500,
    backoffMax: 30000,
    // EventSource hides the server's `retry:` hint (Halley's default, --sse-retry, is 2 s):
    // reconnecting SSE ourselves, we wait at least this long.
    sseRetry: 2000,
    // How long publish() waits for the server's acknowledgement, in ms.
    publishTimeout: 10000,
    // Share one connection between the tabs of this origin (Web Locks + BroadcastChannel).
    shared: true,
    // Names the cursor and the shared channel; two clients on one page need two names.
    name: 'default',
  };

  // ---------------------------------------------------------------- pure helpers

  /** `<epoch>-<seq>` -> {epoch, seq} (seq as its decimal string), or null. */
  function parseId(id) {
    if (typeof id !== 'string') return null;
    var dash = id.lastIndexOf('-');
    if (dash <= 0 || dash === id.length - 1) return null;
    var seq = id.slice(dash + 1);
    if (!/^[0-9]+$/.test(seq)) return null;
    return { epoch: id.slice(0, dash), seq: seq.replace(/^0+(?=.)/, '') };
  }

  /** True when message id `id` comes after cursor `cursor` (ids of another epoch always do). */
  function isAfter(id, cursor) {
    var a = parseId(id);
    var b = parseId(cursor);
    if (!a || !b || a.epoch !== b.epoch) return true;
    if (a.seq.length !== b.seq.length) return a.seq.length > b.seq.length;
    return a.seq > b.seq;
  }

  /** Halley's topic patterns: `*` is exactly one segment, a final `**` one or more. */
  function matches(pattern, topic) {
    if (pattern === topic) return true;
    if (typeof topic !== 'string' || pattern.indexOf('*') < 0) return false;
    var p = pattern.split('/');
    var t = topic.split('/');
    for (var i = 0; i < p.length; i += 1) {
      if (p[i] === '**') return t.length > i && t.slice(i).every(Boolean);
      if (i >= t.length) return false;
      if (p[i] === '*') {
        if (t[i] === '') return false;
      } else if (p[i] !== t[i]) {
        return false;
      }
    }
    return p.length === t.length;
  }

  /** Normalises `news` and `/news` to `/news`. */
  function topicName(topic) {
    if (typeof topic !== 'string' || topic === '') throw new TypeError('a topic is a non-empty string');
    return topic.charAt(0) === '/' ? topic : '/' + topic;
  }

  /** Delay before reconnect attempt `attempt` (1, 2, ...): full jitter, capped. */
  function backoff(attempt, base, max, random) {
    var ceiling = Math.min(max, base * Math.pow(2, Math.max(0, attempt - 1)));
    return Math.floor((random || Math.random)() * ceiling);
  }

  /** base + path + ?query from an object (undefined/null values left out). */
  function buildUrl(base, path, query) {
    var parts = [];
    Object.keys(query || {}).forEach(function (k) {
      var v = query[k];
      if (v !== undefined && v !== null) parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(v));
    });
    return base + path + (parts.length ? '?' + parts.join('&') : '');
  }

  /** `/sub/a,/b/*` for the server: one subscription request carries every pattern. */
  function subPath(patterns) {
    return '/sub' + patterns.join(',');
  }

  /**
   * Splits a byte stream's text into lines as chunks arrive (ndjson). push(text) returns
   * the complete lines; a partial line waits for the next chunk.
   */
  function LineSplitter() {
    this.rest = '';
  }
  LineSplitter.prototype.push = function (text) {
    var lines = (this.rest + text).split('\n');
    this.rest = lines.pop();
    return lines.filter(function (l) {
      return l.trim() !== '';
    });
  };

  /**
   * An SSE payload back to a value. The server sends JSON payloads as their JSON text and
   * text as text, without saying which: objects and arrays that parse are taken as JSON.
   */
  function sseData(text) {
    var c = text.charAt(0);
    if (c === '{' || c === '[') {
      try {
        return JSON.parse(text);
      } catch (e) {
        return text;
      }
    }
    return text;
  }

  /**
   * The text/event-stream format (HTML Living Standard 9.2.6) as chunks arrive. push(text)
   * returns what completed: {event, id, data} for each dispatched event (id alone, with no
   * data, only moves the cursor), {retry} for a reconnect hint, {comment} for a heartbeat.
   */
  function SseParser() {
    this.rest = '';
    this.reset();
  }
  SseParser.prototype.reset = function () {
    this.event = null;
    this.id = null;
    this.data = null;
  };
  SseParser.prototype.push = function (text) {
    var lines = (this.rest + text).split(/\r\n|\r|\n/);
    this.rest = lines.pop();
    var out = [];
    for (var i = 0; i < lines.length; i += 1) {
      var line = lines[i];
      if (line === '') {
        if (this.data !== null || this.id !== null) out.push({ event: this.event || 'message', id: this.id, data: this.data });
        this.reset();
        continue;
      }
      var colon = line.indexOf(':');
      if (colon === 0) {
        out.push({ comment: line.slice(1).trim() });
        continue;
      }
      var field = colon < 0 ? line : line.slice(0, colon);
      var value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
      if (field === 'data') this.data = this.data === null ? value : this.data + '\n' + value;
      else if (field === 'event') this.event = value;
      else if (field === 'id') this.id = value;
      else if (field === 'retry' && /^[0-9]+$/.test(value)) out.push({ retry: Number(value) });
    }
    return out;
  };

  /** Where the cursor lives: sessionStorage when there is one, memory otherwise. */
  function CursorStore(storage, key) {
    this.storage = storage || null;
    this.key = key;
    this.memory = null;
  }
  CursorStore.prototype.get = function () {
    if (this.storage) {
      try {
        var v = this.storage.getItem(this.key);
        if (v !== null && parseId(v)) return v;
      } catch (e) {
        // Storage can throw (privacy modes); memory still holds the cursor.
      }
    }
    return this.memory;
  };
  CursorStore.prototype.set = function (cursor) {
    this.memory = cursor;
    if (!this.storage) return;
    try {
      this.storage.setItem(this.key, cursor);
    } catch (e) {
      // Quota or privacy mode: the in-memory copy is enough for this page's lifetime.
    }
  };

  /**
   * The transport order and fallback rule. A transport that fails before it ever opened is
   * dropped for the next (wrapping around, with backoff, after the last); one that has
   * opened and later fails is retried with backoff, since the link, not the transport, broke.
   */
  function Picker(list) {
    this.list = list.slice();
    this.index = 0;
    this.opened = {};
  }
  Picker.prototype.current = function (eligible) {
    for (var n = 0; n < this.list.length; n += 1) {
      var name = this.list[(this.index + n) % this.list.length];
      if (!eligible || eligible(name)) {
        this.index = (this.index + n) % this.list.length;
        return name;
      }
    }
    return null;
  };
  /** Records a failure; returns true when the next try should wait (backoff). */
  Picker.prototype.failed = function (name, hadOpened) {
    if (hadOpened || this.opened[name]) {
      // Proven here before: the server or the link is down, not the transport.
      this.opened[name] = true;
      return true;
    }
    var i = this.list.indexOf(name);
    this.index = (i + 1) % this.list.length;
    return this.index === 0 || this.list.length === 1;
  };

  // ---------------------------------------------------------------- the client

  function Client(url, options, env) {
    var opts = {};
    Object.keys(DEFAULTS).forEach(function (k) {
      opts[k] = options && options[k] !== undefined ? options[k] : DEFAULTS[k];
    });
    this.env = env || defaultEnv();
    this.opts = opts;
    this.base = resolveBase(url, this.env);
    opts.transports.forEach(function (t) {
      if (TRANSPORTS.indexOf(t) < 0) throw new Error('unknown transport ' + t + '; use: ' + TRANSPORTS.join(', '));
    });
    this.picker = new Picker(opts.transports);
    this.store = new CursorStore(this.env.sessionStorage, 'halley.cursor ' + opts.name + ' ' + this.base);
    this.cursor = this.store.get();
    this.subs = new Map(); // pattern -> Set of handlers
    // The token in use; a function's result is fetched before the first connection.
    this.token = typeof opts.token === 'function' ? null : opts.token || null;
    this.tokenStale = typeof opts.token === 'function';
    this.refused = new Set(); // patterns the token does not cover (403), left out until it changes
    this.listeners = { state: [], gap: [], error: [] };
    this.state = 'connecting';
    this.transport = null; // the live transport instance
    this.attempt = 0;
    this.timer = null;
    this.pending = {}; // WebSocket publish acks by command id
    this.seq = 0;
    this.shared = null;
    if (opts.shared && this.env.BroadcastChannel && this.env.locks) this.shared = new Shared(this);
  }

  Client.prototype.on = function (event, fn) {
    if (!this.listeners[event]) throw new Error('unknown event ' + event + '; use state, gap or error');
    var list = this.listeners[event];
    list.push(fn);
    return function () {
      var i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    };
  };

  Client.prototype.emit = function (event, value) {
    this.listeners[event].slice().forEach(function (fn) {
      try {
        fn(value);
      } catch (e) {
        if (root.console) root.console.error(e);
      }
    });
  };

  Client.prototype.subscribe = function (topic, onMessage) {
    if (typeof onMessage !== 'function') throw new TypeError('subscribe(topic, onMessage): onMessage is a function');
    var pattern = topicName(topic);
    var self = this;
    var before = this.patterns();
    var set = this.subs.get(pattern);
    if (!set) {
      set = new Set();
      this.subs.set(pattern, set);
      this.refused.delete(pattern); // asked for again: the server decides again
    }
    var entry = function (msg) {
      onMessage(msg);
    };
    set.add(entry);
    this.changedSince(before);
    return function unsubscribe() {
      var s = self.subs.get(pattern);
      if (!s || !s.delete(entry)) return;
      if (s.size === 0) {
        var was = self.patterns();
        self.subs.delete(pattern);
        self.changedSince(was);
      }
    };
  };

  /** What the connection carries: this tab's patterns, and the followers' when leading. */
  Client.prototype.patterns = function () {
    var all = new Set(this.subs.keys());
    if (this.shared) this.shared.patterns(all);
    return Array.from(all);
  };

  /** What the connection asks the server for: the patterns minus those refused (403). */
  Client.prototype.wanted = function () {
    var refused = this.refused;
    return this.patterns().filter(function (p) {
      return !refused.has(p);
    });
  };

  /**
   * Compares what the connection carries with `before` (a leader also carries its followers'
   * patterns, so one tab dropping a pattern another still wants changes nothing).
   */
  Client.prototype.changedSince = function (before) {
    var after = this.patterns();
    var added = after.filter(function (p) {
      return before.indexOf(p) < 0;
    });
    var removed = before.filter(function (p) {
      return after.indexOf(p) < 0;
    });
    if (added.length || removed.length || (this.shared && this.shared.follower())) this.topicsChanged(added, removed);
  };

  /** A subscription set change: the WebSocket takes commands, everything else reconnects. */
  Client.prototype.topicsChanged = function (added, removed) {
    if (this.state === 'closed') return;
    if (this.shared && this.shared.follower()) return this.shared.announce();
    var t = this.transport;
    if (t && t.update && t.update(added, removed)) return;
    var self = this;
    // Many subscribe() calls in one task make one reconnect.
    if (this.changeQueued) return;
    this.changeQueued = true;
    Promise.resolve().then(function () {
      self.changeQueued = false;
      if (self.state === 'closed') return;
      self.restart();
    });
  };

  /** Stops the current transport (if any) and starts again from the cursor, at once. */
  Client.prototype.restart = function () {
    this.stopTransport();
    clearTimeout(this.timer);
    this.timer = null;
    this.start();
  };

  Client.prototype.stopTransport = function () {
    var t = this.transport;
    this.transport = null;
    if (t) t.close();
  };

  Client.prototype.eligible = function (name) {
    var env = this.env;
    var single = this.wanted().length === 1;
    switch (name) {
      case 'websocket':
        return !!env.WebSocket;
      case 'sse':
        // SSE events carry no topic: with several patterns the page could not route them.
        return !!(env.EventSource || (env.fetch && env.ReadableStream)) && single;
      case 'stream':
        return !!env.fetch && !!env.ReadableStream;
      case 'longpoll':
        return !!env.fetch;
      case 'jsonp':
      case 'iframe':
        return !!env.document;
      default:
        return false;
    }
  };

  Client.prototype.start = function () {
    if (this.state === 'closed' || this.transport || this.timer || this.priming || this.waiting) return;
    if (this.shared && this.shared.follower()) return;
    if (this.wanted().length === 0) return; // nothing to carry yet: connect on the first subscribe
    if (this.tokenStale) return this.refreshToken();
    var self = this;
    var name = this.picker.current(function (n) {
      return self.eligible(n);
    });
    if (!name) {
      this.emit('error', new Error('no usable transport among ' + this.opts.transports.join(', ')));
      return;
    }
    if (!this.cursor && name !== 'longpoll' && name !== 'jsonp' && !this.primed && this.env.fetch) {
      return this.prime();
    }
    this.primed = false;
    var t = new Transports[name](this, this.wanted());
    t.name = name;
    t.opened = false;
    this.transport = t;
    t.openTimer = setTimeout(function () {
      if (!t.opened) self.failed(t, new Error(name + ' did not open within ' + self.opts.firstByteTimeout + ' ms'));
    }, this.opts.firstByteTimeout);
    t.start();
  };

  /**
   * Without a cursor a stream would start "from now" and only learn a cursor with its first
   * message; a break before that would lose what came in between. A zero-timeout poll fixes
   * the cursor first. If it fails (CORS, a blocked fetch), the transport starts anyway.
   */
  Client.prototype.prime = function () {
    var self = this;
    this.priming = true;
    this.probe(this.wanted()).then(function (r) {
      if (r.status === 200 && !self.cursor) {
        try {
          self.advance(JSON.parse(r.text).next);
        } catch (e) {
          // not a poll reply: the transport starts without a cursor
        }
      }
      self.priming = false;
      self.primed = true;
      self.start();
    });
  };

  /**
   * A zero-timeout poll for `patterns` with the token in the header: resolves {status, text}
   * (status 0 when the request itself failed). It fixes a first cursor, and it tells why a
   * transport that cannot see statuses (a script, a frame, EventSource) failed: 401 or 403.
   */
  Client.prototype.probe = function (patterns) {
    if (!this.env.fetch) return Promise.resolve({ status: 0, text: '' });
    return this.env
      .fetch(buildUrl(this.base, subPath(patterns), { timeout: 0 }), { headers: this.headers({}), cache: 'no-store' })
      .then(function (res) {
        return res.text().then(function (text) {
          return { status: res.status, text: text.trim() };
        });
      })
      .catch(function () {
        return { status: 0, text: '' };
      });
  };

  /**
   * Calls the `token` function and starts again with what it gives. A function that throws
   * or rejects is reported and asked again after a backoff.
   */
  Client.prototype.refreshToken = function () {
    var self = this;
    var fn = this.opts.token;
    this.waiting = true;
    Promise.resolve()
      .then(function () {
        return fn();
      })
      .then(
        function (token) {
          self.token = token ? String(token) : null;
          self.tokenStale = false;
          self.refused.clear(); // another token may cover what the last one did not
        },
        function (err) {
          self.emit('error', new Error('token: ' + (err && err.message ? err.message : String(err))));
          self.attempt += 1;
          return backoff(self.attempt, self.opts.backoffBase, self.opts.backoffMax, self.env.random);
        }
      )
      .then(function (delay) {
        self.waiting = false;
        if (self.state === 'closed') return;
        if (!delay) return self.start();
        self.timer = setTimeout(function () {
          self.timer = null;
          self.start();
        }, delay);
      });
  };

  /** A transport reached the server (first byte): the connection is open. */
  Client.prototype.opened = function (t) {
    if (t !== this.transport || t.opened) return;
    t.opened = true;
    clearTimeout(t.openTimer);
    this.attempt = 0;
    this.setState('open');
  };

  Client.prototype.setState = function (state) {
    if (this.state === state) return;
    this.state = state;
    if (this.shared && this.shared.leader) this.shared.post({ kind: 'state', state: state });
    this.emit('state', state);
  };

  /**
   * A transport broke. A 401 refreshes the token and a 403 drops the refused subscriptions,
   * on the same transport; anything else drops the transport for the next one, or backs off
   * and retries it. A script, a frame or an EventSource cannot see why it failed: a probe
   * asks the server before the transport is blamed.
   */
  Client.prototype.failed = function (t, err, minDelay) {
    if (t !== this.transport) return;
    clearTimeout(t.openTimer);
    this.stopTransport();
    if (this.state === 'closed') {
      if (err) this.emit('error', err);
      return;
    }
    var blind = t.name === 'jsonp' || t.name === 'iframe' || (t.name === 'sse' && t.es);
    if (!blind || t.opened || !err || err.status) return this.afterFailure(t, err, minDelay);
    var self = this;
    this.waiting = true;
    this.probe(this.wanted()).then(function (r) {
      self.waiting = false;
      if (self.state === 'closed') return;
      if (r.status === 401 || r.status === 403) err = httpError(t.name, r.status, r.text);
      self.afterFailure(t, err, minDelay);
    });
  };

  Client.prototype.afterFailure = function (t, err, minDelay) {
    var status = err && err.status;
    if (status !== 403 && err) this.emit('error', err);
    this.setState(this.state === 'open' || this.state === 'reconnecting' ? 'reconnecting' : 'connecting');
    if (status === 403) return this.forbidden(this.wanted(), err.reason, false);
    var wait;
    if (status === 401) {
      // Not the transport's fault: fetch a fresh token (if we can) and retry the same one.
      if (typeof this.opts.token === 'function') this.tokenStale = true;
      wait = true;
    } else {
      wait = this.picker.failed(t.name, t.opened);
    }
    var delay = 0;
    if (wait) {
      this.attempt += 1;
      delay = backoff(this.attempt, this.opts.backoffBase, this.opts.backoffMax, this.env.random);
    }
    this.retryIn(Math.max(delay, minDelay || 0));
  };

  Client.prototype.retryIn = function (delay) {
    var self = this;
    clearTimeout(this.timer);
    this.timer = setTimeout(function () {
      self.timer = null;
      self.start();
    }, delay);
  };

  /**
   * The token does not cover one of `patterns` (403). With one pattern, that is the one;
   * with several, a probe each tells which. Each refused one is reported through
   * on('error') (`status` 403, `topic`) and left out; the others go on. `live`: the
   * connection still runs (a WebSocket whose later subscribe was refused).
   */
  Client.prototype.forbidden = function (patterns, reason, live) {
    var self = this;
    var found =
      patterns.length === 1 || !this.env.fetch
        ? Promise.resolve(
            patterns.map(function (p) {
              return { pattern: p, status: 403, text: reason };
            })
          )
        : Promise.all(
            patterns.map(function (p) {
              return self.probe([p]).then(function (r) {
                return { pattern: p, status: r.status, text: r.text };
              });
            })
          );
    this.waiting = !live;
    found.then(function (list) {
      self.waiting = false;
      if (self.state === 'closed') return;
      var any = false;
      list.forEach(function (r) {
        if (r.status !== 403 || !self.subs.has(r.pattern)) return;
        any = true;
        self.refused.add(r.pattern);
        var e = httpError('subscribe ' + r.pattern, 403, r.text || reason);
        e.topic = r.pattern;
        self.emit('error', e);
      });
      if (live && list.length === 1) return;
      if (live) return self.restart();
      // Nothing refused on its own (the token changed meanwhile?): try again after a backoff.
      var delay = 0;
      if (!any) {
        self.attempt += 1;
        delay = backoff(self.attempt, self.opts.backoffBase, self.opts.backoffMax, self.env.random);
      }
      self.retryIn(delay);
    });
  };

  /** The stream ended cleanly (recycled): resume at `next` on the same transport. */
  Client.prototype.ended = function (t, next) {
    if (t !== this.transport) return;
    if (next) this.advance(next);
    this.stopTransport();
    this.start();
  };

  Client.prototype.advance = function (id) {
    if (!id || (this.cursor && !isAfter(id, this.cursor))) return;
    this.cursor = id;
    this.store.set(id);
  };

  /** A message from any transport: drop it if the cursor is past it, else route it. */
  Client.prototype.message = function (t, msg) {
    if (t !== this.transport) return; // a replaced transport, or (null) a follower's relay
    if (!msg || typeof msg.id !== 'string') return;
    if (this.cursor && !isAfter(msg.id, this.cursor)) return; // already delivered
    this.advance(msg.id);
    var out = {
      id: msg.id,
      topic: msg.topic === undefined ? null : msg.topic,
      time: msg.time === undefined ? null : msg.time,
      event: msg.event === undefined ? null : msg.event,
      data: msg.data,
    };
    if (msg.encoding) out.encoding = msg.encoding;
    if (this.shared && this.shared.leader) this.shared.post({ kind: 'message', msg: out });
    this.dispatch(out);
  };

  /** Calls each handler whose pattern matches (each handler once per message). */
  Client.prototype.dispatch = function (msg) {
    var called = new Set();
    var single = this.subs.size === 1;
    this.subs.forEach(function (handlers, pattern) {
      // A topic-less message (SSE) belongs to the only subscription.
      if (msg.topic === null ? !single : !matches(pattern, msg.topic)) return;
      handlers.forEach(function (fn) {
        if (called.has(fn)) return;
        called.add(fn);
        try {
          fn(msg);
        } catch (e) {
          if (root.console) root.console.error(e);
        }
      });
    });
  };

  /** The server says messages after the cursor fell out of history (or it restarted). */
  Client.prototype.gap = function (t, info) {
    if (t !== this.transport) return;
    // The cursor is the last message delivered: what the connection resumed from.
    var g = { oldest: info.oldest || null, next: info.next || null, cursor: this.cursor, transport: t ? t.name : null };
    if (this.shared && this.shared.leader) this.shared.post({ kind: 'gap', gap: g });
    this.emit('gap', g);
  };

  /** A control object from a stream: heartbeat, end, overflow or gap. */
  Client.prototype.control = function (t, obj) {
    switch (obj.type) {
      case 'gap':
        this.gap(t, obj);
        break;
      case 'end':
      case 'overflow':
        this.ended(t, obj.next);
        break;
      case 'expired':
        // The token ran out: come back with a fresh one (a fixed token will get its 401).
        if (typeof this.opts.token === 'function') this.tokenStale = true;
        this.ended(t, obj.next);
        break;
      case 'error':
        this.emit('error', new Error(obj.reason || 'server error'));
        break;
      default:
        break; // heartbeat: the watchdog already saw the bytes
    }
  };

  /** Request headers with the token, for everything fetch sends (streaming, long-poll, publish). */
  Client.prototype.headers = function (extra) {
    var h = extra || {};
    if (this.token) h.Authorization = 'Bearer ' + this.token;
    return h;
  };

  /**
   * Query parameters for a subscription request: the cursor, and the token for the
   * transports that cannot set a header (SSE, JSONP, iframe; fetch ones drop it).
   */
  Client.prototype.query = function (extra) {
    var q = { since: this.cursor || undefined, token: this.token || undefined };
    Object.keys(extra || {}).forEach(function (k) {
      q[k] = extra[k];
    });
    return q;
  };

  /**
   * Publishes `data` to `topic`; resolves with the server's ack {id, topic, delivered}.
   * Strings go as text, anything else as JSON. Over an open WebSocket the socket carries it,
   * otherwise a POST /pub.
   */
  Client.prototype.publish = function (topic, data, options) {
    var name = topicName(topic);
    var event = options && options.event;
    if (this.state === 'closed') return Promise.reject(new Error('the client is closed'));
    var t = this.transport;
    if (t && t.opened && t.publish) return t.publish(name, data, event);
    var self = this;
    return this.httpPublish(name, data, event).catch(function (err) {
      // A stale token: fetch a fresh one and try once more.
      if (err.status !== 401 || typeof self.opts.token !== 'function') throw err;
      return Promise.resolve(self.opts.token()).then(function (token) {
        self.token = token ? String(token) : null;
        return self.httpPublish(name, data, event);
      });
    });
  };

  Client.prototype.httpPublish = function (topic, data, event) {
    var fetch = this.env.fetch;
    if (!fetch) return Promise.reject(new Error('publish needs fetch or an open WebSocket'));
    var isText = typeof data === 'string';
    var ctl = this.env.AbortController ? new this.env.AbortController() : null;
    var timer = ctl &&
      setTimeout(function () {
        ctl.abort();
      }, this.opts.publishTimeout);
    return fetch(buildUrl(this.base, '/pub' + topic, { event: event }), {
      method: 'POST',
      body: isText ? data : JSON.stringify(data),
      headers: this.headers({ 'Content-Type': isText ? 'text/plain; charset=utf-8' : 'application/json' }),
      signal: ctl ? ctl.signal : undefined,
    })
      .then(function (res) {
        return res.text().then(function (text) {
          if (res.status !== 201) throw httpError('publish to ' + topic, res.status, text.trim());
          var ack = JSON.parse(text);
          return { id: ack.id, topic: ack.topic, time: ack.time, delivered: ack.delivered };
        });
      })
      .finally(function () {
        clearTimeout(timer);
      });
  };

  Client.prototype.close = function () {
    if (this.state === 'closed') return;
    clearTimeout(this.timer);
    this.timer = null;
    this.stopTransport();
    if (this.shared) this.shared.close();
    this.setState('closed');
  };

  // ---------------------------------------------------------------- transports
  // Each is constructed with (client, patterns) and has start() and close(); it reports
  // through client.opened / message / control / gap / failed / ended, passing itself so the
  // client can ignore a transport it already replaced.

  var Transports = {};

  /** An Error for a refusal, with the HTTP `status` and the server's one-line `reason`. */
  function httpError(what, status, reason) {
    var e = new Error(what + ': ' + status + (reason ? ' ' + reason : ''));
    e.status = status;
    e.reason = reason || '';
    return e;
  }

  /** Arms a watchdog: no sign of life for `ms` means a dead link. */
  function watchdog(client, t, ms) {
    var timer = null;
    return function poke() {
      clearTimeout(timer);
      if (client.transport !== t) return;
      timer = setTimeout(function () {
        client.failed(t, new Error(t.name + ': no heartbeat for ' + ms + ' ms'));
      }, ms);
      t.stopWatchdog = function () {
        clearTimeout(timer);
      };
    };
  }

  function stopWatchdog(t) {
    if (t.stopWatchdog) t.stopWatchdog();
  }

  Transports.websocket = function (client, patterns) {
    this.client = client;
    this.patterns = patterns;
    this.more = {}; // later subscribe command ids -> their patterns, until answered
  };
  Transports.websocket.prototype.start = function () {
    var c = this.client;
    var self = this;
    // A browser cannot set headers on the upgrade, and a URL ends up in logs: the token goes
    // in the first command instead (docs/AUTH.md), before the subscribe it authorises.
    var url = buildUrl(c.base.replace(/^http/, 'ws'), '/ws', {});
    var ws;
    try {
      ws = new c.env.WebSocket(url);
    } catch (e) {
      return c.failed(this, e);
    }
    this.ws = ws;
    var poke = watchdog(c, this, c.opts.heartbeatTimeout);
    ws.onopen = function () {
      if (c.token) self.send({ op: 'auth', token: c.token, id: 'auth' });
      // Subscribed once the server acknowledges; then nothing can be missed.
      self.send({ op: 'subscribe', topics: self.patterns, since: c.cursor || undefined, id: 'sub' });
      poke();
      // The server's pings are invisible to pages: ask for an ack now and then instead.
      self.pinger = setInterval(function () {
        self.send({ op: 'ping', id: 'ping' });
      }, Math.max(1000, Math.floor(c.opts.heartbeatTimeout / 3)));
    };
    ws.onmessage = function (e) {
      poke();
      var obj;
      try {
        obj = JSON.parse(e.data);
      } catch (err) {
        return c.emit('error', new Error('websocket: bad frame'));
      }
      if (obj.type === 'ack') {
        delete self.more[obj.id];
        if (obj.id === 'sub') c.opened(self);
        else if (obj.op === 'publish') self.settle(obj.id, null, obj);
        return;
      }
      if (obj.type === 'error') {
        var what = obj.id === 'auth' ? 'websocket auth' : 'websocket ' + (obj.id === 'sub' || self.more[obj.id] ? 'subscribe' : 'command');
        var err = obj.status ? httpError(what, obj.status, obj.reason) : new Error(what + ': ' + obj.reason);
        if (obj.id !== undefined && self.settle(obj.id, err, null)) return;
        if (obj.id === 'auth') return undefined; // the subscribe after it fails with 401 and says so
        var added = self.more[obj.id];
        delete self.more[obj.id];
        if (added && obj.status === 403) return c.forbidden(added, obj.reason, true);
        if (obj.id === 'sub' || (added && obj.status === 401)) return c.failed(self, err, 0);
        return c.emit('error', err);
      }
      if (obj.type) return c.control(self, obj);
      c.message(self, obj);
    };
    ws.onclose = function (e) {
      c.failed(self, new Error('websocket closed (' + e.code + ')'));
    };
  };
  Transports.websocket.prototype.send = function (cmd) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(JSON.stringify(cmd));
  };
  Transports.websocket.prototype.update = function (added, removed) {
    if (!this.opened) return false;
    if (added.length) {
      var c = this.client;
      c.seq += 1;
      var id = 'more' + c.seq;
      this.more[id] = added;
      this.send({ op: 'subscribe', topics: added, since: c.cursor || undefined, id: id });
    }
    if (removed.length) this.send({ op: 'unsubscribe', topics: removed, id: 'less' });
    return true;
  };
  Transports.websocket.prototype.publish = function (topic, data, event) {
    var c = this.client;
    var self = this;
    c.seq += 1;
    var id = 'pub' + c.seq;
    return new Promise(function (resolve, reject) {
      var timer = setTimeout(function () {
        self.settle(id, new Error('publish to ' + topic + ': no acknowledgement'), null);
      }, c.opts.publishTimeout);
      c.pending[id] = { resolve: resolve, reject: reject, timer: timer, topic: topic };
      self.send({ op: 'publish', topic: topic, data: data, event: event || undefined, id: id });
    });
  };
  /** Resolves or rejects a pending publish; false when `id` was not one. */
  Transports.websocket.prototype.settle = function (id, err, ack) {
    var p = this.client.pending[id];
    if (!p) return false;
    delete this.client.pending[id];
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve({ id: ack.message_id, topic: p.topic, delivered: ack.delivered });
    return true;
  };
  Transports.websocket.prototype.close = function () {
    clearInterval(this.pinger);
    stopWatchdog(this);
    var ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close();
    } catch (e) {
      // already closed
    }
    var pending = this.client.pending;
    Object.keys(pending).forEach(function (id) {
      clearTimeout(pending[id].timer);
      pending[id].reject(new Error('publish to ' + pending[id].topic + ': the socket closed before the ack'));
      delete pending[id];
    });
  };

  /**
   * Reads a streaming response with fetch: opened at the response head, every chunk is a
   * sign of life (heartbeats included), the text goes to `onText`. The end of the body is a
   * failure unless the transport already moved on (an `end` control object).
   */
  function fetchStream(c, t, query, onText) {
    var ctl = new c.env.AbortController();
    t.ctl = ctl;
    var poke = watchdog(c, t, c.opts.heartbeatTimeout);
    var decoder = new c.env.TextDecoder();
    // The header carries the token, unless the query already does (SSE keeps one URL form
    // whether fetch or EventSource reads it).
    var headers = query.token ? {} : c.headers({});
    c.env
      .fetch(buildUrl(c.base, subPath(t.patterns), query), { headers: headers, signal: ctl.signal, cache: 'no-store' })
      .then(function (res) {
        if (res.status !== 200 || !res.body) {
          return res.text().then(function (text) {
            throw httpError(t.name, res.status, text.trim());
          });
        }
        c.opened(t);
        poke();
        var reader = res.body.getReader();
        var pump = function () {
          return reader.read().then(function (step) {
            if (c.transport !== t) return reader.cancel();
            if (step.done) throw new Error(t.name + ': the server closed the stream');
            poke();
            onText(decoder.decode(step.value, { stream: true }));
            if (c.transport === t) return pump();
            return reader.cancel();
          });
        };
        return pump();
      })
      .catch(function (err) {
        c.failed(t, err, t.retryDelay ? t.retryDelay() : 0);
      });
  }

  function closeFetchStream(t) {
    stopWatchdog(t);
    if (t.ctl) t.ctl.abort();
  }

  /**
   * SSE. Where fetch can stream, the page reads `?transport=sse` itself: the same
   * text/event-stream that proxies pass through, but every event name, the `retry:` hint and
   * the heartbeat comments are visible (EventSource hides all three). EventSource is the
   * fallback, and it only sees unnamed messages and the control events.
   */
  Transports.sse = function (client, patterns) {
    this.client = client;
    this.patterns = patterns;
    this.retry = client.opts.sseRetry;
  };
  Transports.sse.prototype.start = function () {
    var c = this.client;
    var only = this.patterns[0];
    // SSE events carry no topic: the one subscription names it unless it is a pattern.
    this.topic = only.indexOf('*') < 0 ? only : null;
    if (c.env.fetch && c.env.ReadableStream && c.env.AbortController && c.env.TextDecoder) return this.startFetch();
    this.startEventSource();
  };
  Transports.sse.prototype.retryDelay = function () {
    return this.opened ? this.retry : 0;
  };
  Transports.sse.prototype.event = function (type, id, data) {
    var c = this.client;
    if (type === 'end' || type === 'overflow' || type === 'gap') {
      var obj;
      try {
        obj = JSON.parse(data);
      } catch (err) {
        obj = { type: type, next: id };
      }
      return c.control(this, obj);
    }
    c.message(this, { id: id, topic: this.topic, event: type === 'message' ? null : type, data: sseData(data) });
  };
  Transports.sse.prototype.startFetch = function () {
    var c = this.client;
    var self = this;
    var parser = new SseParser();
    fetchStream(c, this, c.query({ transport: 'sse' }), function (text) {
      parser.push(text).forEach(function (item) {
        if (c.transport !== self) return;
        if (item.retry !== undefined) self.retry = Math.max(item.retry, 0);
        else if (item.comment !== undefined) return;
        else if (item.data === null) {
          // The stream's starting cursor: only needed when priming found none.
          if (!c.cursor) c.advance(item.id);
        } else self.event(item.event, item.id, item.data);
      });
    });
  };
  Transports.sse.prototype.startEventSource = function () {
    var c = this.client;
    var self = this;
    var es = new c.env.EventSource(buildUrl(c.base, subPath(this.patterns), c.query({ transport: 'sse' })));
    this.es = es;
    es.onopen = function () {
      c.opened(self);
    };
    es.onmessage = function (e) {
      self.event('message', e.lastEventId, e.data);
    };
    ['end', 'overflow', 'gap'].forEach(function (kind) {
      es.addEventListener(kind, function (e) {
        self.event(kind, e.lastEventId, e.data);
      });
    });
    es.onerror = function () {
      // The browser would reconnect with this URL's stale since=: reconnect ourselves from
      // the cursor instead, no sooner than the server's retry hint.
      c.failed(self, new Error('sse: the stream failed'), self.retryDelay());
    };
  };
  Transports.sse.prototype.close = function () {
    closeFetchStream(this);
    if (!this.es) return;
    this.es.onopen = this.es.onmessage = this.es.onerror = null;
    this.es.close();
  };

  /** XHR streaming: one JSON object per line (ndjson), read with fetch. */
  Transports.stream = function (client, patterns) {
    this.client = client;
    this.patterns = patterns;
  };
  Transports.stream.prototype.start = function () {
    var c = this.client;
    var self = this;
    var lines = new LineSplitter();
    fetchStream(c, this, c.query({ transport: 'stream', token: undefined }), function (text) {
      lines.push(text).forEach(function (line) {
        if (c.transport !== self) return;
        var obj = JSON.parse(line);
        if (obj.type) c.control(self, obj);
        else c.message(self, obj);
      });
    });
  };
  Transports.stream.prototype.close = function () {
    closeFetchStream(this);
  };

  /** Long-poll and JSONP share the loop; only how one request is made differs. */
  function Poller(client, patterns, request) {
    this.client = client;
    this.patterns = patterns;
    this.request = request;
    this.live = true;
  }
  Poller.prototype.start = function () {
    var c = this.client;
    var self = this;
    // Each poller's first request answers at once (it proves the server answers within the
    // open bound, and without a cursor it fixes one); from then on requests are held.
    var hold = this.polled && c.cursor ? c.opts.longpollTimeout : 0;
    this.polled = true;
    this.request(this, c.query({ timeout: hold }), (hold + 10) * 1000 + hold * 100)
      .then(function (reply) {
        if (!self.live) return;
        c.opened(self);
        if (reply.gap) c.gap(self, reply);
        (reply.messages || []).forEach(function (m) {
          c.message(self, m);
        });
        c.advance(reply.next);
        if (self.live && c.transport === self) self.start();
      })
      .catch(function (err) {
        if (self.live) c.failed(self, err);
      });
  };
  Poller.prototype.close = function () {
    this.live = false;
    if (this.abort) this.abort();
  };

  Transports.longpoll = function (client, patterns) {
    return new Poller(client, patterns, function (t, query, deadline) {
      var ctl = new client.env.AbortController();
      t.abort = function () {
        ctl.abort();
      };
      var timer = setTimeout(function () {
        ctl.abort();
      }, deadline);
      query.token = undefined; // the header carries it
      return client.env
        .fetch(buildUrl(client.base, subPath(t.patterns), query), {
          headers: client.headers({}),
          signal: ctl.signal,
          cache: 'no-store',
        })
        .then(function (res) {
          return res.text().then(function (text) {
            if (res.status !== 200) throw httpError('longpoll', res.status, text.trim());
            return JSON.parse(text);
          });
        })
        .finally(function () {
          clearTimeout(timer);
        });
    });
  };

  var callbacks = 0;

  /** A global function the server's script can call; never deleted, only disarmed. */
  function globalCallback(fn) {
    callbacks += 1;
    var name = '__halley' + callbacks;
    root[name] = fn;
    return {
      name: name,
      disarm: function () {
        root[name] = function () {};
      },
    };
  }

  Transports.jsonp = function (client, patterns) {
    return new Poller(client, patterns, function (t, query, deadline) {
      var doc = client.env.document;
      return new Promise(function (resolve, reject) {
        var script = doc.createElement('script');
        var timer;
        var done = function () {
          clearTimeout(timer);
          cb.disarm();
          script.onerror = null;
          if (script.parentNode) script.parentNode.removeChild(script);
        };
        var cb = globalCallback(function (reply) {
          done();
          resolve(reply);
        });
        t.abort = function () {
          done();
        };
        timer = setTimeout(function () {
          done();
          reject(new Error('jsonp: no reply within ' + deadline + ' ms'));
        }, deadline);
        script.onerror = function () {
          done();
          reject(new Error('jsonp: the script failed to load'));
        };
        query.transport = 'jsonp';
        query.callback = cb.name;
        script.src = buildUrl(client.base, subPath(t.patterns), query);
        (doc.head || doc.documentElement).appendChild(script);
      });
    });
  };

  Transports.iframe = function (client, patterns) {
    this.client = client;
    this.patterns = patterns;
  };
  Transports.iframe.prototype.start = function () {
    var c = this.client;
    var self = this;
    var doc = c.env.document;
    var poke = watchdog(c, this, c.opts.heartbeatTimeout);
    this.cb = globalCallback(function (obj) {
      if (c.transport !== self) return;
      c.opened(self); // a script from the stream ran: it is open, whatever the poll saw yet
      poke();
      if (obj && obj.type) c.control(self, obj);
      else c.message(self, obj);
    });
    var frame = doc.createElement('iframe');
    frame.style.display = 'none';
    frame.setAttribute('aria-hidden', 'true');
    var src = buildUrl(c.base, subPath(this.patterns), c.query({ transport: 'iframe', callback: this.cb.name }));
    frame.src = src;
    this.frame = frame;
    // The padding arrives first; heartbeats are comments: watch the document grow.
    var seen = -1;
    this.poll = setInterval(function () {
      var d;
      try {
        d = frame.contentDocument;
      } catch (e) {
        d = null; // another origin: the scripts could not call us either
      }
      if (!d || !d.body || d.URL === 'about:blank') return;
      if (!self.opened && d.contentType && d.contentType !== 'text/html') {
        // A refusal (401, 403, 400) is a text/plain page, not the stream.
        return c.failed(self, new Error('iframe: ' + (d.body.textContent || '').trim()));
      }
      c.opened(self);
      var n = d.body.childNodes.length;
      if (n !== seen) {
        seen = n;
        poke();
      }
      // Delivered scripts are kept out of memory; the page would otherwise grow forever.
      if (n > 200) {
        Array.prototype.slice.call(d.body.childNodes, 0, n - 10).forEach(function (node) {
          d.body.removeChild(node);
        });
        seen = -1;
      }
    }, 250);
    frame.onload = function () {
      // The document ended: after an `end` the client has moved on, otherwise it broke.
      if (c.transport === self) c.failed(self, new Error('iframe: the stream ended'));
    };
    (doc.body || doc.documentElement).appendChild(frame);
  };
  Transports.iframe.prototype.close = function () {
    clearInterval(this.poll);
    stopWatchdog(this);
    if (this.cb) this.cb.disarm();
    if (this.frame) {
      this.frame.onload = null;
      this.frame.src = 'about:blank';
      if (this.frame.parentNode) this.frame.parentNode.removeChild(this.frame);
    }
  };


  // ---------------------------------------------------------------- cross-tab sharing

  /**
   * One connection per origin (and client name), shared by every tab. The tabs queue for a
   * Web Lock; the holder is the leader and runs the transport for the union of every tab's
   * patterns, posting each message, gap and state on a BroadcastChannel. The others follow:
   * they post their patterns, dispatch what the leader posts, and advance their own cursor
   * (in their own sessionStorage) with every message. When the leader's tab closes, its lock
   * is released and the next tab in the queue leads, resuming from its own cursor, which is
   * where the old leader got to: nothing is lost. Without Web Locks or BroadcastChannel each
   * tab simply has its own connection.
   */
  function Shared(client) {
    var self = this;
    this.client = client;
    this.leader = false;
    this.closed = false;
    this.tab = Math.random().toString(36).slice(2) + Date.now().toString(36);
    this.others = new Map(); // tab -> its patterns (leader only)
    var name = 'halley ' + client.opts.name + ' ' + client.base;
    this.channel = new client.env.BroadcastChannel(name);
    this.channel.onmessage = function (e) {
      self.receive(e.data);
    };
    client.env.locks.request(name, function () {
      if (self.closed) return undefined;
      return new Promise(function (release) {
        self.release = release;
        self.lead();
      });
    });
    this.announce();
    if (root.addEventListener) {
      this.onHide = function () {
        self.post({ kind: 'bye', tab: self.tab });
      };
      root.addEventListener('pagehide', this.onHide);
    }
  }
  Shared.prototype.follower = function () {
    return !this.leader;
  };
  Shared.prototype.post = function (m) {
    if (!this.closed) this.channel.postMessage(m);
  };
  /** Adds the followers' patterns to `set` (leader only). */
  Shared.prototype.patterns = function (set) {
    if (!this.leader) return;
    this.others.forEach(function (patterns) {
      patterns.forEach(function (p) {
        set.add(p);
      });
    });
  };
  /** A follower tells the leader what it wants. */
  Shared.prototype.announce = function () {
    if (!this.leader) this.post({ kind: 'subs', tab: this.tab, patterns: Array.from(this.client.subs.keys()) });
  };
  Shared.prototype.lead = function () {
    this.leader = true;
    // Followers answer with their patterns; each answer widens the connection.
    this.post({ kind: 'leader', tab: this.tab });
    this.client.start();
  };
  Shared.prototype.receive = function (m) {
    var c = this.client;
    if (!m || this.closed) return;
    if (this.leader) {
      var before = c.patterns();
      if (m.kind === 'subs') this.others.set(m.tab, m.patterns);
      else if (m.kind === 'bye') this.others.delete(m.tab);
      else return;
      if (m.kind === 'subs') this.post({ kind: 'state', state: c.state });
      return c.changedSince(before);
    }
    switch (m.kind) {
      case 'leader':
        return this.announce();
      case 'message':
        return c.message(null, m.msg);
      case 'gap':
        return c.emit('gap', m.gap);
      case 'state':
        if (m.state !== 'closed') c.setState(m.state);
        return undefined;
      default:
        return undefined;
    }
  };
  Shared.prototype.close = function () {
    if (!this.leader) this.post({ kind: 'bye', tab: this.tab });
    this.closed = true;
    this.leader = false;
    if (this.release) this.release();
    this.channel.close();
    if (this.onHide) root.removeEventListener('pagehide', this.onHide);
  };

  // ---------------------------------------------------------------- environment

  function defaultEnv() {
    var g = root;
    var storage = null;
    try {
      storage = g.sessionStorage || null;
    } catch (e) {
      storage = null; // sandboxed frames throw on access
    }
    return {
      WebSocket: g.WebSocket,
      EventSource: g.EventSource,
      fetch: g.fetch ? g.fetch.bind(g) : null,
      ReadableStream: g.ReadableStream,
      AbortController: g.AbortController,
      TextDecoder: g.TextDecoder,
      document: g.document || null,
      location: g.location || null,
      sessionStorage: storage,
      BroadcastChannel: g.BroadcastChannel,
      locks: g.navigator && g.navigator.locks ? g.navigator.locks : null,
      random: Math.random,
    };
  }

  /** The server's base URL, without a trailing slash; the page's origin by default. */
  function resolveBase(url, env) {
    if (!url) {
      if (!env.location) throw new Error('Halley.connect(url): no url and no page location');
      return env.location.origin;
    }
    var base = env.location ? new URL(url, env.location.href) : new URL(url);
    var path = base.pathname.replace(/\/+$/, '');
    return base.protocol.replace(/^ws/, 'http') + '//' + base.host + path;
  }

  function connect(url, options, env) {
    if (url && typeof url === 'object') {
      env = options;
      options = url;
      url = undefined;
    }
    var client = new Client(url, options, env);
    return {
      subscribe: client.subscribe.bind(client),
      publish: client.publish.bind(client),
      on: client.on.bind(client),
      close: client.close.bind(client),
      get state() {
        return client.state;
      },
      get cursor() {
        return client.cursor;
      },
      get transport() {
        return client.transport ? client.transport.name : null;
      },
      get leader() {
        return !client.shared || client.shared.leader;
      },
      _client: client,
    };
  }

  var Halley = root.Halley || {};
  Halley.connect = connect;
  Halley.TRANSPORTS = TRANSPORTS.slice();
  Halley.version = '0.1.0';
  // For tests and the curious: the pure pieces, each small enough to check on its own.
  Halley._internal = {
    parseId: parseId,
    isAfter: isAfter,
    matches: matches,
    backoff: backoff,
    buildUrl: buildUrl,
    LineSplitter: LineSplitter,
    sseData: sseData,
    SseParser: SseParser,
    CursorStore: CursorStore,
    Picker: Picker,
    Client: Client,
    Transports: Transports,
    DEFAULTS: DEFAULTS,
  };
  root.Halley = Halley;
})(typeof globalThis !== 'undefined' ? globalThis : this);
