/* The monitoring console demo: a card per host of /monitor/* with its temperature, voltage
 * and LED, and a list of alarms. */
(function () {
  'use strict';
  var P = window.HalleyPage;
  var MAX_HOSTS = 100;
  var MAX_ALARMS = 50;
  var LEDS = ['green', 'amber', 'red'];
  var h = Halley.connect(undefined, { name: 'demo-monitor' });
  P.showState(h, document.getElementById('state'));

  var grid = document.getElementById('hosts');
  var alarms = document.getElementById('alarms');
  var alarmCount = document.getElementById('alarm-count');
  var hosts = new Map();
  var alarmTotal = 0;

  function card(name) {
    var found = hosts.get(name);
    if (found) return found;
    if (hosts.size >= MAX_HOSTS) return null;
    var node = P.el('div', 'host');
    node.dataset.host = name;
    var title = P.el('h3');
    var led = P.el('span', 'led');
    title.appendChild(led);
    title.appendChild(P.el('span', 'name', name));
    node.appendChild(title);
    var temperature = P.el('div', 'temperature', '');
    var voltage = P.el('div', 'voltage', '');
    var seen = P.el('div', 'meta', '');
    node.appendChild(temperature);
    node.appendChild(voltage);
    node.appendChild(seen);
    var entry = { node: node, led: led, temperature: temperature, voltage: voltage, seen: seen };
    hosts.set(name, entry);
    var waiting = document.getElementById('waiting');
    if (waiting) waiting.remove();
    grid.appendChild(node);
    return entry;
  }

  h.subscribe('/monitor/*', function (msg) {
    var data = P.asObject(msg.data) || {};
    var name = String(msg.topic || '').split('/').pop() || String(data.host || '?');
    var entry = card(name);
    if (!entry) return;
    var t = Number(data.temperature);
    var v = Number(data.voltage);
    entry.temperature.textContent = 'temperature ' + (isFinite(t) ? t.toFixed(1) + ' °C' : '–');
    entry.voltage.textContent = 'voltage ' + (isFinite(v) ? v.toFixed(2) + ' V' : '–');
    entry.seen.textContent = 'at ' + P.clock(msg.time);
    // Only known LED states become a class; anything else shows as unknown (grey).
    var led = LEDS.indexOf(data.led) >= 0 ? data.led : 'unknown';
    entry.led.className = 'led ' + led;
    entry.led.title = 'LED ' + led;
    entry.node.classList.toggle('alarm', Boolean(data.alarm));
    if (data.alarm) {
      alarmTotal += 1;
      alarmCount.textContent = String(alarmTotal);
      alarmCount.dataset.count = String(alarmTotal);
      alarms.insertBefore(P.el('li', null, P.clock(msg.time) + ' ' + name + ': ' + String(data.alarm)), alarms.firstChild);
      while (alarms.children.length > MAX_ALARMS) alarms.removeChild(alarms.lastChild);
    }
  });
})();
