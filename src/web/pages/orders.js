/* The new-order notifier demo: a merchant subscribes to its own topic /orders/<merchant> only,
 * and an unread badge counts what came in since the last "mark all as read". */
(function () {
  'use strict';
  var P = window.HalleyPage;
  var MAX_ORDERS = 100;
  var h = Halley.connect(undefined, { name: 'demo-orders' });
  P.showState(h, document.getElementById('state'));

  var form = document.getElementById('merchant');
  var list = document.getElementById('orders');
  var badge = document.getElementById('badge');
  var badgeText = document.getElementById('badge-text');
  var title = document.title;
  var unread = 0;
  var unsubscribe = null;

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
    if (unsubscribe) unsubscribe();
    list.textContent = '';
    setUnread(0);
    document.getElementById('who').textContent = merchant;
    form.elements.merchant.value = merchant;
    history.replaceState(null, '', '?merchant=' + encodeURIComponent(merchant));
    unsubscribe = h.subscribe('/orders/' + merchant, show);
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
})();
