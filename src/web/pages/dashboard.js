/* The dashboard: this node's stats, published by the server itself to /halley/stats once a
 * second while a dashboard keeps its lease (GET /dashboard/watch), received with halley.js
 * like any other message. Rates come from the difference of two samples; subscribers by
 * transport and the fan-out latency (p50/p99/max over the server's 10 s window) are shown as
 * the server reports them; the charts are drawn on canvas here (no third-party code). */
(function () {
  'use strict';
  var P = window.HalleyPage;
  var TOPIC = '/halley/stats';
  var WATCH_EVERY_MS = 10000;
  var KEEP = 120; // samples in the charts: two minutes
  var h = Halley.connect(undefined, { name: 'dashboard' });
  P.showState(h, document.getElementById('state'));

  var previous = null;
  var samples = 0;
  var series = { deliveries: [], publishes: [], connections: [], p50: [], p99: [] };
  // The transport gauges of /stats, in the order shown, with what each waits as.
  var TRANSPORTS = [
    ['longpoll', 'long-poll', 'parked'], ['jsonp', 'JSONP', 'parked'],
    ['pushlet_pull', 'Pushlet pull', 'parked'], ['bayeux_http', 'Bayeux (HTTP)', 'parked'],
    ['sse', 'SSE', 'stream'], ['ndjson', 'ndjson (XHR streaming)', 'stream'],
    ['iframe', 'forever iframe', 'stream'], ['multipart', 'multipart', 'stream'],
    ['pushlet_stream', 'Pushlet stream', 'stream'], ['websocket', 'WebSocket', 'socket'],
    ['raw', 'raw TCP', 'socket'], ['bayeux_ws', 'Bayeux (WebSocket)', 'socket']
  ];

  // Ask the server to keep publishing the stats while this page is open.
  function watch() {
    fetch('/dashboard/watch', { cache: 'no-store' }).catch(function () { /* retried on the next round */ });
  }
  watch();
  setInterval(watch, WATCH_EVERY_MS);

  function sum(workers, key) {
    return workers.reduce(function (total, w) { return total + (Number(w[key]) || 0); }, 0);
  }

  function set(id, value) { document.getElementById(id).textContent = value; }

  function push(list, value) {
    list.push(value);
    if (list.length > KEEP) list.shift();
  }

  function rate(now, before, dt) { return dt > 0 ? Math.max(0, (now - before) / dt) : 0; }

  function mib(bytes) { return (bytes / (1024 * 1024)).toFixed(1) + ' MiB'; }

  /** A latency figure in ms, or '–' when the window holds no sample. */
  function ms(value) { return typeof value === 'number' ? value.toFixed(1) : '–'; }

  /** Each transport's gauge summed over the workers. */
  function transportTotals(workers) {
    var totals = {};
    TRANSPORTS.forEach(function (t) {
      totals[t[0]] = workers.reduce(function (n, w) { return n + (Number(w.transports && w.transports[t[0]]) || 0); }, 0);
    });
    return totals;
  }

  h.subscribe(TOPIC, function (msg) {
    var s = P.asObject(msg.data);
    if (!s || !Array.isArray(s.workers)) return;
    var workers = s.workers;
    var sample = { time: msg.time, published: Number(s.hub && s.hub.published) || 0,
      delivered: workers.map(function (w) { return Number(w.delivered) || 0; }) };
    samples += 1;
    set('samples', String(samples));
    var connections = sum(workers, 'connections');
    set('connections', String(connections));
    set('parked', String(sum(workers, 'parked')));
    set('streaming', String(sum(workers, 'streaming')));
    set('duplex', String(sum(workers, 'duplex')));
    set('sessions', String(sum(workers, 'sessions')));
    var latency = s.fanout_latency_ms || {};
    set('latency-p50', ms(latency.p50));
    set('latency-p99', ms(latency.p99));
    set('latency-max', ms(latency.max));
    set('latency-samples', String(Number(latency.samples) || 0));
    if (typeof latency.window_s === 'number') set('latency-window', String(latency.window_s));
    // An empty window draws as 0: nothing was waiting to be delivered.
    push(series.p50, Number(latency.p50) || 0);
    push(series.p99, Number(latency.p99) || 0);
    transports(transportTotals(workers));
    var rss = s.process && s.process.rss_bytes;
    set('rss', typeof rss === 'number' ? mib(rss) : 'n/a');
    if (s.store) set('store', String(s.store.messages) + ' messages on ' + String(s.store.topics) + ' topics, ' + mib(Number(s.store.bytes) || 0));

    var perWorker = workers.map(function () { return null; });
    if (previous && sample.time > previous.time) {
      var dt = (sample.time - previous.time) / 1000;
      var publishes = rate(sample.published, previous.published, dt);
      var deliveredNow = sample.delivered.reduce(function (a, b) { return a + b; }, 0);
      var deliveredBefore = previous.delivered.reduce(function (a, b) { return a + b; }, 0);
      var deliveries = rate(deliveredNow, deliveredBefore, dt);
      perWorker = sample.delivered.map(function (d, i) { return rate(d, previous.delivered[i] || 0, dt); });
      set('publishes-rate', publishes.toFixed(1));
      set('deliveries-rate', deliveries.toFixed(1));
      push(series.publishes, publishes);
      push(series.deliveries, deliveries);
    }
    previous = sample;
    push(series.connections, connections);
    table(workers, perWorker);
    chart('rates-chart', [{ values: series.deliveries, color: '#137333' }, { values: series.publishes, color: '#b3261e' }]);
    chart('connections-chart', [{ values: series.connections, color: '#3856d6' }]);
    chart('latency-chart', [{ values: series.p99, color: '#b3261e' }, { values: series.p50, color: '#137333' }]);
  });

  function transports(totals) {
    var body = document.querySelector('#transports tbody');
    body.textContent = '';
    TRANSPORTS.forEach(function (t) {
      var tr = P.el('tr');
      tr.dataset.transport = t[0];
      tr.appendChild(P.el('td', null, t[1]));
      tr.appendChild(P.el('td', 'muted', t[2]));
      tr.appendChild(P.el('td', 'num', String(totals[t[0]])));
      body.appendChild(tr);
    });
  }

  function table(workers, perWorker) {
    var body = document.querySelector('#workers tbody');
    body.textContent = '';
    workers.forEach(function (w, i) {
      var tr = P.el('tr');
      tr.appendChild(P.el('td', null, String(i)));
      ['connections', 'parked', 'streaming', 'duplex'].forEach(function (k) { tr.appendChild(P.el('td', 'num', String(Number(w[k]) || 0))); });
      tr.appendChild(P.el('td', 'num', perWorker[i] === null ? '–' : perWorker[i].toFixed(1)));
      var latency = w.fanout_latency_ms || {};
      tr.appendChild(P.el('td', 'num', ms(latency.p50)));
      tr.appendChild(P.el('td', 'num', ms(latency.p99)));
      tr.appendChild(P.el('td', 'num wide', String(Number(w.requests) || 0)));
      body.appendChild(tr);
    });
  }

  /** Line chart of each series on one scale, newest at the right, with the top value marked. */
  function chart(id, lines) {
    var canvas = document.getElementById(id);
    var ratio = window.devicePixelRatio || 1;
    var width = canvas.clientWidth || 600;
    var height = canvas.clientHeight || 160;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    var g = canvas.getContext('2d');
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, width, height);
    var top = 1;
    lines.forEach(function (line) { line.values.forEach(function (v) { if (v > top) top = v; }); });
    top = niceCeiling(top);
    var pad = { left: 4, right: 4, top: 14, bottom: 4 };
    var w = width - pad.left - pad.right;
    var hgt = height - pad.top - pad.bottom;
    g.strokeStyle = '#d9dee7';
    g.lineWidth = 1;
    for (var i = 0; i <= 4; i += 1) {
      var y = pad.top + (hgt * i) / 4;
      g.beginPath(); g.moveTo(pad.left, y); g.lineTo(pad.left + w, y); g.stroke();
    }
    g.fillStyle = '#667085';
    g.font = '11px system-ui, sans-serif';
    g.fillText(String(top), pad.left + 2, 11);
    lines.forEach(function (line) {
      var values = line.values;
      if (values.length < 2) return;
      g.strokeStyle = line.color;
      g.lineWidth = 2;
      g.beginPath();
      values.forEach(function (v, j) {
        var x = pad.left + w - ((values.length - 1 - j) * w) / (KEEP - 1);
        var y2 = pad.top + hgt - (v / top) * hgt;
        if (j === 0) g.moveTo(x, y2); else g.lineTo(x, y2);
      });
      g.stroke();
    });
  }

  /** 1, 2 or 5 times a power of ten, at least `x`. */
  function niceCeiling(x) {
    var p = Math.pow(10, Math.floor(Math.log10(x)));
    var steps = [1, 2, 5, 10];
    for (var i = 0; i < steps.length; i += 1) if (steps[i] * p >= x) return steps[i] * p;
    return 10 * p;
  }
})();
