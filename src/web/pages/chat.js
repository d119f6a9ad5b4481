/* The chat demo: rooms (/chat/<room>), nicknames, join and leave notices. Every browser
 * publishes its own lines; everything shown is set as text. */
(function () {
  'use strict';
  var P = window.HalleyPage;
  var MAX_LINES = 200;
  var h = Halley.connect(undefined, { name: 'demo-chat' });
  P.showState(h, document.getElementById('state'));

  var lines = document.getElementById('lines');
  var joinForm = document.getElementById('join');
  var sayForm = document.getElementById('say');
  var nick = sessionStorage.getItem('halley-demo-nick') || 'guest-' + Math.floor(Math.random() * 1000);
  var room = null;
  var unsubscribe = null;

  joinForm.elements.nick.value = nick;
  joinForm.elements.room.value = P.segment(P.param('room', 'lobby'), 'lobby');

  function topic(r) { return '/chat/' + r; }

  function show(msg) {
    var data = P.asObject(msg.data);
    var who = data && data.nick !== undefined ? String(data.nick) : '?';
    var text = data ? (data.text === undefined ? '' : String(data.text)) : String(msg.data);
    var li;
    if (msg.event === 'join' || msg.event === 'leave') {
      li = P.el('li', 'notice', who + (msg.event === 'join' ? ' joined' : ' left'));
    } else {
      li = P.el('li', 'line');
      li.appendChild(P.el('span', 'meta', P.clock(msg.time) + ' '));
      li.appendChild(P.el('span', 'nick', who));
      li.appendChild(P.el('span', 'text', text));
    }
    lines.appendChild(li);
    while (lines.children.length > MAX_LINES) lines.removeChild(lines.firstChild);
    lines.scrollTop = lines.scrollHeight;
  }

  function say(event, text) {
    return h.publish(topic(room), { nick: nick, text: text || '' }, { event: event }).catch(function (err) {
      lines.appendChild(P.el('li', 'notice', 'not sent: ' + err.message));
    });
  }

  function join(newNick, newRoom) {
    if (room !== null && room !== newRoom) say('leave');
    if (unsubscribe && room !== newRoom) unsubscribe();
    var changed = room !== newRoom;
    nick = newNick;
    room = newRoom;
    sessionStorage.setItem('halley-demo-nick', nick);
    document.getElementById('room').textContent = room;
    document.getElementById('me').textContent = nick;
    if (changed) {
      lines.textContent = '';
      unsubscribe = h.subscribe(topic(room), show);
    }
    say('join');
  }

  joinForm.addEventListener('submit', function (e) {
    e.preventDefault();
    var newNick = String(joinForm.elements.nick.value).trim().slice(0, 24) || nick;
    join(newNick, P.segment(joinForm.elements.room.value, 'lobby'));
  });

  sayForm.addEventListener('submit', function (e) {
    e.preventDefault();
    var text = String(sayForm.elements.text.value);
    if (!text.trim() || room === null) return;
    sayForm.elements.text.value = '';
    say('say', text);
  });

  // Leaving: a beacon survives the page going away, where a fetch or the socket may not.
  window.addEventListener('pagehide', function () {
    if (room === null || !navigator.sendBeacon) return;
    var body = new Blob([JSON.stringify({ nick: nick, text: '' })], { type: 'application/json' });
    navigator.sendBeacon('/pub' + topic(room) + '?event=leave', body);
  });

  join(nick, joinForm.elements.room.value);
})();
