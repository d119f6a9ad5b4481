#!/usr/bin/env python3
"""Soak run (issue 14, not CI): mixed churn on every transport for N minutes, RSS and open fds
every minute.

Starts `halley serve` (release build by default) with a raw TCP listener and a one-minute
history age (so one-off topics reach a steady state instead of filling history), then runs one
thread per kind of churn, each at a modest rate (the point is hours of varied traffic, not
load):

- publish: keep-alive POSTs to 50 steady topics and to fresh one-off topics (topic churn);
- long-poll: re-polls with a cursor on a new or kept connection;
- SSE: opens a stream on a pattern, reads for a while, drops it;
- WebSocket: subscribes fresh topics, unsubscribes, publishes, pings, reconnects
  (selector churn);
- raw TCP: the same commands over NUL-framed JSON (selector churn);
- Pushlet: join-listen in pull mode, refreshes, leave; join-only sessions left to expire
  (session churn);
- Bayeux: handshake, subscribe, connects, disconnect; handshakes never connected (session
  churn);
- history scans: `/sub/**?since=all` followed a few pages.

Every minute it prints one row: RSS, open fds, the server's connections, sessions and stored
topics, and the operations and errors of the minute. It ends by itself after `--minutes`,
stops only the server it started (by its PID) and prints the table in Markdown.

Usage: scripts/soak.py [--minutes 30] [--binary target/release/halley] [--port 18480]
"""
import argparse
import base64
import json
import os
import socket
import struct
import sys
import threading
import time

from serverproc import http_get, rss_kib, start_server

STOP = threading.Event()
LOCK = threading.Lock()
COUNTS = {"ops": 0, "errors": 0}
LAST_ERROR = {}


def count(ok=True, kind=""):
    with LOCK:
        COUNTS["ops" if ok else "errors"] += 1
        if not ok:
            LAST_ERROR[kind] = LAST_ERROR.get(kind, 0) + 1


def recv_more(sock, buf, what):
    """`buf` with the next bytes from `sock` appended; OSError(`what`) if the peer closed."""
    chunk = sock.recv(65536)
    if not chunk:
        raise OSError(what)
    return buf + chunk


def read_response(sock, buf=b""):
    """Reads one HTTP/1.1 response (Content-Length or chunked); returns (status, body, rest)."""
    while b"\r\n\r\n" not in buf:
        buf = recv_more(sock, buf, "closed before the head")
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            buf = recv_more(sock, buf, "closed in the body")
        return status, buf[:n], buf[n:]
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                buf = recv_more(sock, buf, "closed in a chunk")
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(buf) < size + 2:
                buf = recv_more(sock, buf, "closed in a chunk")
            body, buf = body + buf[:size], buf[size + 2:]
            if size == 0:
                return status, body, buf
    return status, b"", buf


def request(port, method, path, body=b"", headers="", sock=None, timeout=40):
    """One request; a fresh connection (closed after) unless `sock` is given."""
    own = sock is None
    if own:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: soak\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body)
        status, data, _ = read_response(sock)
        return status, data
    finally:
        if own:
            sock.close()


def pace(seconds):
    STOP.wait(seconds)


def guarded(kind, step):
    """Runs `step` until the soak ends; an exception counts as an error and the step starts over."""
    while not STOP.is_set():
        try:
            step()
        except (OSError, ValueError, KeyError, IndexError) as e:
            if STOP.is_set():
                return  # the run is over: a read waiting for the stopped publisher is no error
            count(False, f"{kind}: {type(e).__name__} {e}"[:120])
            pace(0.5)


def publisher(port):
    n = 0
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        while not STOP.is_set():
            n += 1
            topic = f"/soak/t{n % 50}" if n % 2 else f"/soak/once/{n}"
            status, _ = request(port, "POST", f"/pub{topic}", f'{{"n":{n}}}'.encode(), "Content-Type: application/json\r\n", sock)
            count(status == 201, f"publish {status}")
            pace(0.005)
    finally:
        sock.close()


def longpoll(port):
    since = "now"
    for i in range(50):
        if STOP.is_set():
            return
        status, body = request(port, "GET", f"/sub/soak/t{i % 50},/soak/t{(i + 7) % 50}?since={since}&timeout=2")
        count(status == 200, f"long-poll {status}")
        if status == 200:
            since = json.loads(body)["next"]


def sse(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /sub/soak/**?transport=sse HTTP/1.1\r\nHost: soak\r\n\r\n")
        deadline, got = time.time() + 3, b""
        while time.time() < deadline and not STOP.is_set():
            chunk = s.recv(65536)
            if not chunk:
                break
            got = got[:64] if got else chunk[:64]
        count(got.startswith(b"HTTP/1.1 200"), "sse")


def ws_frame(text):
    payload, mask = text.encode(), os.urandom(4)
    n = len(payload)
    head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_read(sock, buf):
    """One frame: (opcode, payload, rest)."""
    def need(n):
        nonlocal buf
        while len(buf) < n:
            buf = recv_more(sock, buf, "websocket closed")
    need(2)
    op, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
    if n == 126:
        need(4)
        n, at = struct.unpack(">H", buf[2:4])[0], 4
    elif n == 127:
        need(10)
        n, at = struct.unpack(">Q", buf[2:10])[0], 10
    need(at + n)
    return op, buf[at:at + n], buf[at + n:]


def ws_until_ack(sock, buf, want_id):
    while True:
        op, payload, buf = ws_read(sock, buf)
        if op == 0x9:  # ping: answer it, masked
            mask = os.urandom(4)
            sock.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        elif op == 0x8:
            raise OSError(f"websocket closed by the server: {payload[:2].hex()}")
        elif op == 0x1:
            msg = json.loads(payload)
            if msg.get("id") == want_id:
                return msg, buf


def websocket(port, serial=[0]):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(f"GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf = recv_more(s, buf, "closed during the websocket upgrade")
        head, _, buf = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            return count(False, "ws upgrade")
        for i in range(20):
            if STOP.is_set():
                return
            serial[0] += 1
            topics = [f"/soak/ws/{serial[0]}/{j}" for j in range(4)] + ["/soak/t1"]
            for cmd in ({"op": "subscribe", "topics": topics}, {"op": "unsubscribe", "topics": topics[:4]},
                        {"op": "publish", "topic": f"/soak/t{i}", "data": {"ws": i}}, {"op": "ping"}):
                cmd["id"] = i * 10 + len(cmd)
                s.sendall(ws_frame(json.dumps(cmd)))
                msg, buf = ws_until_ack(s, buf, cmd["id"])
                count(msg.get("type") == "ack", f"ws {msg.get('reason')}")
            pace(0.25)
        s.sendall(bytes([0x88, 0x82]) + b"\0\0\0\0" + b"\x03\xe8")


def raw(port, serial=[0]):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        buf = b""

        def until_ack(want):
            nonlocal buf
            while True:
                while b"\0" not in buf:
                    buf = recv_more(s, buf, "raw closed")
                line, _, buf = buf.partition(b"\0")
                msg = json.loads(line)
                if msg.get("id") == want:
                    return msg
        for i in range(20):
            if STOP.is_set():
                return
            serial[0] += 1
            topics = [f"/soak/raw/{serial[0]}/{j}" for j in range(4)]
            for n, cmd in enumerate(({"op": "subscribe", "topics": topics + ["/soak/t2"]}, {"op": "unsubscribe", "topics": topics})):
                cmd["id"] = i * 2 + n
                s.sendall(json.dumps(cmd).encode() + b"\n")
                msg = until_ack(cmd["id"])
                count(msg.get("type") == "ack", f"raw {msg.get('reason')}")
            pace(0.25)


def pushlet(port):
    status, body = request(port, "GET", "/pushlet.srv?p_event=join-listen&p_mode=pull&p_format=xml&p_subject=/soak/t3")
    count(status == 200, f"pushlet join-listen {status}")
    pid = body.split(b'p_id="', 1)[1].split(b'"', 1)[0].decode()
    for _ in range(5):
        if STOP.is_set():
            break
        status, _ = request(port, "GET", f"/pushlet.srv?p_event=refresh&p_id={pid}&p_format=xml")
        count(status == 200, f"pushlet refresh {status}")
    status, _ = request(port, "GET", f"/pushlet.srv?p_event=leave&p_id={pid}&p_format=xml")
    count(status == 200, f"pushlet leave {status}")


def sessions_churn(port):
    """Sessions that never listen: Pushlet joins and Bayeux handshakes, left to expire."""
    status, _ = request(port, "GET", "/pushlet.srv?p_event=join&p_format=xml")
    count(status == 200, f"join {status}")
    hs = b'[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]'
    status, _ = request(port, "POST", "/cometd", hs, "Content-Type: application/json\r\n")
    count(status == 200, f"handshake {status}")
    pace(0.05)


def bayeux(port):
    def post(batch, sock):
        status, body = request(port, "POST", "/cometd", json.dumps(batch).encode(), "Content-Type: application/json\r\n", sock)
        count(status == 200, f"bayeux {status}")
        return json.loads(body)
    with socket.create_connection(("127.0.0.1", port), timeout=40) as s:
        hs = post([{"channel": "/meta/handshake", "version": "1.0", "supportedConnectionTypes": ["long-polling"]}], s)
        cid = hs[0]["clientId"]
        post([{"channel": "/meta/subscribe", "clientId": cid, "subscription": "/soak/t4"},
              {"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling", "advice": {"timeout": 0}}], s)
        for _ in range(5):
            if STOP.is_set():
                break
            post([{"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling"}], s)
        post([{"channel": "/meta/disconnect", "clientId": cid}], s)


def history(port):
    since = "all"
    for _ in range(5):
        status, body = request(port, "GET", f"/sub/**?since={since}&timeout=0")
        count(status == 200, f"history {status}")
        if status != 200:
            break
        since = json.loads(body)["next"]
    pace(0.5)


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--binary", default="target/release/halley")
    parser.add_argument("--port", type=int, default=18480)
    args = parser.parse_args()
    raw_port = args.port + 1
    server = start_server(args.binary, args.port, "--raw-listen", f"127.0.0.1:{raw_port}", "--history-age", "60s")
    steps = [("publish", lambda: publisher(args.port)), ("long-poll", lambda: longpoll(args.port)),
             ("long-poll", lambda: longpoll(args.port)), ("sse", lambda: sse(args.port)),
             ("websocket", lambda: websocket(args.port)), ("raw", lambda: raw(raw_port)),
             ("pushlet", lambda: pushlet(args.port)), ("sessions", lambda: sessions_churn(args.port)),
             ("bayeux", lambda: bayeux(args.port)), ("history", lambda: history(args.port))]
    threads = [threading.Thread(target=guarded, args=step, daemon=True) for step in steps]
    for t in threads:
        t.start()
    rows = []
    start = time.time()
    print("| minute | RSS MiB | open fds | connections | sessions | stored topics | ops | errors |", flush=True)
    print("|---|---|---|---|---|---|---|---|", flush=True)
    try:
        for minute in range(0, int(args.minutes) + 1):
            if minute:
                STOP.wait(max(0.0, start + 60 * minute - time.time()))
            stats = json.loads(http_get(args.port, "/stats"))
            with LOCK:
                ops, errors = COUNTS["ops"], COUNTS["errors"]
                COUNTS["ops"] = COUNTS["errors"] = 0
            conns = sum(w["connections"] for w in stats["workers"])
            sessions = sum(w["sessions"] for w in stats["workers"])
            row = (f"| {minute} | {rss_kib(server.pid) / 1024:.1f} | {fds(server.pid)} | {conns} | {sessions} "
                   f"| {stats['store']['topics']} | {ops} | {errors} |")
            rows.append(row)
            print(row, flush=True)
    finally:
        STOP.set()
        for t in threads:
            t.join(timeout=45)
        server.terminate()
        server.wait(timeout=30)
    if LAST_ERROR:
        print("errors by kind:", json.dumps(LAST_ERROR, indent=1))
    print(f"server exit status {server.returncode}")


if __name__ == "__main__":
    sys.exit(main())
