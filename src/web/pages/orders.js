/* The new-order notifier demo: a merchant subscribes to its own topic /orders/<merchant> only,
 * and an unread badge counts what came in since the last "mark all as read".
 *
 * With auth on, the page's token comes from the application backend. For the demo that is
 * Halley's DEMO-ONLY /demo/token (served with --demo and an auth secret), which hands a
 * short-lived token for any merchant to anyone: a real application mints the token in its own
 * backend, after its own login. The token covers /orders/<merchant> only, so this page can read
 * nothing else; halley.js fetches a new one when it expires. */
(function () {
  'use strict';
  var P = window.HalleyPage;
  var MAX_ORDERS = 100;
  var h = null;

  var form = document.getElementById('merchant');
  var list = document.getElementById('orders');
  var badge = document.getElementById('badge');
  var badgeText = document.getElementById('badge-text');
  var title = document.title;
  var unread = 0;
  var authLine = document.getElementById('auth');
  var errorLine = document.getElementById('error');

  /** The token function for `merchant`: null (no token) when the server has auth off. */
  function tokenFor(merchant) {
    return function () {
      return fetch('/demo/token?merchant=' + encodeURIComponent(merchant), { cache: 'no-store' }).then(function (res) {
        if (res.status === 404) {
          authLine.textContent = 'auth: off (no token needed)';
          return null;
        }
        if (!res.ok) throw new Error('demo token: ' + res.status);
        return res.json().then(function (t) {
          authLine.textContent = 'auth: a token for ' + t.topic + ' only, until ' + P.clock(t.expires);
          return t.token;
        });
      });
    };
  }

  function setUnread(n) {
    unread = n;
    badge.textContent = String(n);
    badge.dataset.count = String(n);
    badgeText.textContent = n === 1 ? 'new order' : 'new orders';
    document.title = (n > 0 ? '(' + n + ') ' : '') + title;
  }

  function describe(msg) {
    var o = P.asObject(msg.data);
    if (!o) return String(msg.data);
    var parts = [];
    if (o.order !== undefined) parts.push(String(o.order));
    if (o.qty !== undefined || o.item !== undefined) parts.push(String(o.qty === undefined ? 1 : o.qty) + ' × ' + String(o.item === undefined ? '?' : o.item));
    if (o.total !== undefined) parts.push(Number(o.total).toFixed(2));
    return parts.length ? parts.join(' · ') : JSON.stringify(o);
  }

  function show(msg) {
    var li = P.el('li', 'unread');
    li.appendChild(P.el('span', 'meta', P.clock(msg.time) + ' '));
    li.appendChild(P.el('span', 'order', describe(msg)));
    list.insertBefore(li, list.firstChild);
    while (list.children.length > MAX_ORDERS) list.removeChild(list.lastChild);
    setUnread(unread + 1);
  }

  function watch(merchant) {
    // One connection per merchant: its token covers that merchant's topic only.
    if (h) h.close();
    h = Halley.connect(undefined, { name: 'demo-orders ' + merchant, token: tokenFor(merchant) });
    P.showState(h, document.getElementById('state'));
    errorLine.textContent = '';
    h.on('error', function (err) {
      if (err.status === 401 || err.status === 403) errorLine.textContent = 'refused: ' + err.message;
    });
    list.textContent = '';
    setUnread(0);
    document.getElementById('who').textContent = merchant;
    form.elements.merchant.value = merchant;
    history.replaceState(null, '', '?merchant=' + encodeURIComponent(merchant));
    h.subscribe('/orders/' + merchant, show);
  }

  form.addEventListener('submit', function (e) {
    e.preventDefault();
    watch(P.segment(form.elements.merchant.value, 'acme'));
  });
  document.getElementById('read').addEventListener('click', function () {
    setUnread(0);
    var items = list.querySelectorAll('li.unread');
    for (var i = 0; i < items.length; i += 1) items[i].classList.remove('unread');
  });

  watch(P.segment(P.param('merchant', 'acme'), 'acme'));
  // For the curious (and the tests): the page's connection, to try other topics with it.
  window.HalleyOrders = {
    client: function () {
      return h;
    },
  };
})();
