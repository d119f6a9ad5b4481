/* The dashboard: this node's stats, published by the server itself to /halley/stats once a
 * second while a dashboard keeps its lease (GET /dashboard/watch), received with halley.js
 * like any other message. Rates come from the difference of two samples; the charts are
 * drawn on canvas here (no third-party code). */
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
  var series = { deliveries: [], publishes: [], connections: [] };

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
  });

  function table(workers, perWorker) {
    var body = document.querySelector('#workers tbody');
    body.textContent = '';
    workers.forEach(function (w, i) {
      var tr = P.el('tr');
      tr.appendChild(P.el('td', null, String(i)));
      ['connections', 'parked', 'streaming', 'duplex'].forEach(function (k) { tr.appendChild(P.el('td', 'num', String(Number(w[k]) || 0))); });
      tr.appendChild(P.el('td', 'num', perWorker[i] === null ? '–' : perWorker[i].toFixed(1)));
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
