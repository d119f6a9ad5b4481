/* The stock ticker demo: one row per symbol of /stocks/*, the price flashing green when it
 * rises and red when it falls. */
(function () {
  'use strict';
  var P = window.HalleyPage;
  var MAX_SYMBOLS = 100;
  var h = Halley.connect(undefined, { name: 'demo-stocks' });
  P.showState(h, document.getElementById('state'));

  var body = document.querySelector('#quotes tbody');
  var rows = new Map();

  function row(symbol) {
    var found = rows.get(symbol);
    if (found) return found;
    if (rows.size >= MAX_SYMBOLS) return null;
    var tr = P.el('tr');
    tr.dataset.symbol = symbol;
    var cells = { symbol: P.el('td', 'symbol', symbol), price: P.el('td', 'num price', '–'),
      change: P.el('td', 'num change', ''), ticks: P.el('td', 'num ticks wide', '0'), time: P.el('td', 'num time wide', '') };
    Object.keys(cells).forEach(function (k) { tr.appendChild(cells[k]); });
    var entry = { tr: tr, cells: cells, price: null, ticks: 0 };
    rows.set(symbol, entry);
    // Keep the table sorted by symbol.
    var before = null;
    rows.forEach(function (other, name) { if (name > symbol && (!before || name < before.dataset.symbol)) before = other.tr; });
    body.insertBefore(tr, before);
    document.getElementById('waiting').hidden = true;
    return entry;
  }

  h.subscribe('/stocks/*', function (msg) {
    var symbol = String(msg.topic || '').split('/').pop() || '?';
    var data = P.asObject(msg.data);
    var price = Number(data ? data.price : msg.data);
    if (!isFinite(price)) return;
    var entry = row(symbol);
    if (!entry) return;
    var old = entry.price;
    entry.price = price;
    entry.ticks += 1;
    entry.cells.price.textContent = price.toFixed(2);
    entry.cells.ticks.textContent = String(entry.ticks);
    entry.cells.time.textContent = P.clock(msg.time);
    if (old !== null && price !== old) {
      var up = price > old;
      entry.cells.change.textContent = (up ? '+' : '') + (price - old).toFixed(2);
      entry.cells.change.className = 'num change ' + (up ? 'up' : 'down');
      // Restart the flash animation: drop the class, force a style pass, set it again.
      entry.tr.classList.remove('flash-up', 'flash-down');
      void entry.tr.offsetWidth;
      entry.tr.classList.add(up ? 'flash-up' : 'flash-down');
    }
  });
})();
