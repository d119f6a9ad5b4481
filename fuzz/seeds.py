#!/usr/bin/env python3
"""Writes the seed corpus, fuzz/corpus/<target>/, from the real requests and frames below
(taken from tests/ and ../shared/specs). Run it after changing a seed; the files are committed.

Each target's input format is documented at the top of its fuzz_targets/<target>.rs: most take
one or two knob bytes, then the raw bytes.
"""
import hashlib
import json
import os
import shutil
import struct
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_ID = "fuzzclient0123456789abcd"  # fuzz_targets/bayeux.rs

def masked(opcode, payload, fin=True, key=b"\x37\xfa\x21\x3d"):
    """A client frame (RFC 6455 §5.2): masked, shortest length encoding."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))

def plain(opcode, payload, fin=True):
    """A server frame: unmasked."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([n]) if n < 126 else bytes([126]) + struct.pack(">H", n)
    return head + payload

def batch(*msgs):
    return json.dumps(list(msgs), separators=(",", ":")).encode()

HEADS = [
    b"GET /sub/pipe?since=all&timeout=0 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"POST /pub/pipe HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"POST /pub/chunky HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: y\r\n\r\n",
    b"POST /pub/cont HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://a.example\r\n\r\n",
    b"POST /pub/a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /he alth HTTP/1.1\r\nHost: t\r\n\r\n",
    b"\r\nGET http://h/p?q=1 HTTP/1.1\r\nHost: h\r\nConnection: close, upgrade\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: t\r\nAccess-Control-Request-Method: POST\r\n\r\n",
    b"GET /pushlet.srv?p_event=join-listen&p_format=xml-strict&p_mode=pull HTTP/1.1\r\nHost: t\r\n\r\n",
]

CHUNKED = [
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: y\r\n\r\nGET / HTTP/1.1\r\n",
    b"3;name=value;flag\r\nabc\r\n0;last=\"q;\\\" \"\r\n\r\n",
    b"3 ; ext\r\nabc\r\n0\r\n\r\n",
    b"A\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n",
    b"2\r\nhi\r\n0\r\nExpires: never\r\nX-Checksum: abc def\r\n\r\n",
    b"000\r\n\r\n",
    b"2\r\n\r\n\r\n0\r\nX:\r\n\r\n",
]

WS_CLIENT = [
    masked(0x1, json.dumps({"op": "subscribe", "topics": ["/chat/*"], "id": 1}).encode()),
    masked(0x1, b"frag", fin=False) + masked(0x9, b"ping") + masked(0x0, b"mented \xe2\x9c", fin=False) + masked(0x0, b"\x93", fin=True),
    masked(0x2, bytes(range(200))) + masked(0xA, b"") + masked(0x8, struct.pack(">H", 1000) + b"bye"),
    masked(0x1, b"x" * 300),
]
WS_SERVER = [
    plain(0x1, b'{"type":"ack","op":"subscribe","id":1,"topics":["/chat/*"]}') + plain(0x9, b"hb"),
    plain(0x8, struct.pack(">H", 1001) + b"going away"),
]

BAYEUX = [
    batch({"id": "1", "version": "1.0", "minimumVersion": "1.0", "channel": "/meta/handshake",
           "supportedConnectionTypes": ["long-polling", "callback-polling"], "advice": {"timeout": 60000, "interval": 0}}),
    batch({"id": "1", "channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"],
           "ext": {"ack": True}},
          {"id": "2", "channel": "/meta/subscribe", "subscription": "/chat/demo", "clientId": CLIENT_ID},
          {"id": "3", "channel": "/chat/demo", "data": {"text": "hello"}, "clientId": CLIENT_ID},
          {"id": "4", "channel": "/meta/connect", "connectionType": "long-polling", "advice": {"timeout": 0},
           "clientId": CLIENT_ID, "ext": {"ack": 0}},
          {"id": "5", "channel": "/meta/unsubscribe", "subscription": ["/chat/demo", "/chat/*"], "clientId": CLIENT_ID},
          {"id": "6", "channel": "/service/echo", "data": [1, 2], "clientId": CLIENT_ID},
          {"id": "7", "channel": "/meta/disconnect", "clientId": CLIENT_ID}),
    batch({"id": "3", "channel": "/meta/connect", "connectionType": "long-polling", "clientId": "unknown0123456789abcdef"}),
]
BAYEUX_QUERY = [
    "message=" + quote(BAYEUX[0].decode()) + "&jsonp=jQuery_123",
    "?jsonp=cb.x&message=" + quote(batch({"channel": "/meta/handshake", "version": "1.0",
                                          "supportedConnectionTypes": ["callback-polling"]}).decode()),
]

PUSHLET_REQUESTS = [
    b"p_event=join-listen&p_format=xml-strict&p_mode=pull&p_subject=/pushlet/ping",
    b"p_event=publish&p_id=hymurasoji&p_subject=/chat&msg=tom%20&%20jerry",
    b"p_event=refresh&p_id=vurocyjalo",
    b"p_event=subscribe&p_id=s1&p_subject=/a,/b/&p_label=lbl",
    b"p_event=leave&p_id=s1",
    b"p_id=s1\0<?xml version=\"1.0\"?>\n<event p_event=\"publish\" p_subject=\"/chat\" msg=\"a &amp; b&#10;&lt;c&gt;\" p_to=\"x\"/>",
    b"\0<event p_event=\"join\" p_format='js'></event>",
]
PUSHLET_EVENTS = [
    b"data\0msg\0hi there\0p_from\0hymurasoji\0p_subject\0/pushlet/ping",
    b"data\0x\" onload=\"evil\0</script><script>alert(1)</script>\0ok\0line\nbreak\u2028".replace(b"\\u2028", "\u2028".encode()),
    b"hb",
]
PUSHLET_PAYLOADS = [
    json.dumps({"msg": "hi there", "n": 1, "nested": {"a": [1, 2]}}).encode(),
    json.dumps({"bad name": "x", "msg": "</script>"}).encode(),
]

COMMANDS = [
    json.dumps({"op": "subscribe", "topics": ["/a", "/b/*", "/a", "/c/**"], "since": "all", "id": 7}).encode(),
    json.dumps({"op": "publish", "topic": "/chat/room", "data": {"text": "hi"}, "id": "p1"}).encode(),
    json.dumps({"op": "publish", "topic": "/t", "data": "line 1\nligne 2", "event": "note"}).encode(),
    json.dumps({"op": "unsubscribe", "id": 2}).encode(),
    json.dumps({"op": "ping", "id": [1, {"a": None}]}).encode(),
    json.dumps({"op": "auth", "token": "eyJhbGciOiJIUzI1NiJ9.e30.c2ln", "id": "a1"}).encode(),
    b'{"op":"auth","token":""}',
    b'{"op":"subscribe","topic":"/typo","id":1e400}',
    b'{"op":"publish","topic":"/a","data":' + b"[" * 70 + b"]" * 70 + b',"id":1}',
]

JSON_DOCS = [
    b'{"a":[1,{"b":[]}]}',
    b'{"a":"[[[[{{{{","b":"\\"[[[","c":"\\\\","d":[]}',
    b"[" * 64 + b"]" * 64,
    b"]]]][[[",
]

def selector_ops():
    # Seven 3-byte operations (insert x3, match, remove, match, get); see fuzz_targets/selector_index.rs.
    return bytes([0, 1, 0o40, 0, 1, 0o10, 0, 1, 0o50, 3, 1, 0o10, 1, 1, 0o40, 3, 2, 0o210, 2, 1, 0o50])

def write(target, seeds):
    folder = os.path.join(HERE, "corpus", target)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for seed in seeds:
        name = hashlib.sha1(seed).hexdigest()[:16]
        with open(os.path.join(folder, name), "wb") as f:
            f.write(seed)

def main():
    write("http_head", [bytes([k]) + h for h in HEADS for k in (0x00, 0x15)])
    write("chunked", [bytes([0x00, s]) + c for c in CHUNKED for s in (0, 7)]
          + [bytes([0x45, 3]) + b"hello" + b"GET"])
    write("websocket_decode", [bytes([0x03, s]) + f for f in WS_CLIENT for s in (0, 9)]
          + [bytes([0x13, 0]) + f for f in WS_SERVER])
    # Structured (arbitrary) input: a few frames' bytes make as good a start as any.
    write("websocket_roundtrip", WS_CLIENT[:2] + COMMANDS[:1])
    write("bayeux", [b"\x00" + b for b in BAYEUX] + [b"\x01" + q.encode() for q in BAYEUX_QUERY])
    write("pushlet", [b"\x00" + r for r in PUSHLET_REQUESTS] + [b"\x01" + e for e in PUSHLET_EVENTS]
          + [b"\x02" + p for p in PUSHLET_PAYLOADS] + [b"\x03caf\xc3\xa9 \xff\xfe"])
    write("commands", COMMANDS)
    write("json_depth", [bytes([k]) + d for d in JSON_DOCS for k in (64, 3)] + [bytes([129]) + COMMANDS[-1]])
    write("selector_index", [selector_ops()])

if __name__ == "__main__":
    main()
