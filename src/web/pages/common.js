/* Shared by Halley's own pages: tiny DOM helpers, the connection status line and the curl
 * examples. Message data only ever reaches the page through textContent (never innerHTML),
 * so markup or script in a message shows as text. */
(function () {
  'use strict';

  /** A new element with an optional class and text (set as text, never parsed). */
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  /** Shows the connection's state (and transport) in `node`, e.g. "open (websocket)". */
  function showState(h, node) {
    function update(state) {
      var how = h.transport ? ' (' + h.transport + ')' : (state === 'open' && !h.leader ? ' (shared with another tab)' : '');
      node.textContent = state + how;
      node.dataset.state = state;
    }
    update(h.state || 'connecting');
    h.on('state', update);
  }

  /** The payload as an object: JSON payloads already are; text that holds JSON is parsed. */
  function asObject(data) {
    if (data && typeof data === 'object') return data;
    if (typeof data === 'string') {
      try {
        var parsed = JSON.parse(data);
        if (parsed && typeof parsed === 'object') return parsed;
      } catch (e) { /* plain text */ }
    }
    return null;
  }

  /** HH:MM:SS of a unix time in ms (the browser's time zone). */
  function clock(ms) {
    var d = typeof ms === 'number' ? new Date(ms) : new Date();
    function two(n) { return (n < 10 ? '0' : '') + n; }
    return two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds());
  }

  /** Fills every <pre class="curl"> with its commands, with this server's address in them. */
  function fillCurl() {
    var nodes = document.querySelectorAll('pre.curl');
    for (var i = 0; i < nodes.length; i += 1) {
      nodes[i].textContent = nodes[i].textContent.split('$HALLEY').join(location.origin);
    }
  }

  /** A value of the page's query string, or `fallback`. */
  function param(name, fallback) {
    var value = new URLSearchParams(location.search).get(name);
    return value === null || value === '' ? fallback : value;
  }

  /** A topic segment from user input: lower case letters, digits, '-' and '_'. */
  function segment(text, fallback) {
    var s = String(text || '').toLowerCase().replace(/[^a-z0-9_-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40);
    return s || fallback;
  }

  window.HalleyPage = { el: el, showState: showState, asObject: asObject, clock: clock, fillCurl: fillCurl,
    param: param, segment: segment };
  document.addEventListener('DOMContentLoaded', fillCurl);
})();
