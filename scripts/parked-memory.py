#!/usr/bin/env python3
"""Measures Halley's user-space memory per parked long-poll connection.

Starts `halley serve` (release build), reads its RSS, opens N long-poll subscribers from this
process (spread over 127.0.0.1..127.0.0.K source addresses), waits until /stats says all N are
parked, reads the RSS again and prints the delta per connection. Kernel socket memory is not
in RSS; this is the figure the design budget (<= 512 bytes) is about.

Usage: scripts/parked-memory.py [--conns 10000] [--workers 2] [--binary target/release/halley]
"""
import argparse
import json
import signal
import socket
import sys
import time

from serverproc import http_get, rss_kib, start_server


def parked(port):
    stats = json.loads(http_get(port, "/stats"))
    return sum(w["parked"] for w in stats["workers"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--binary", default="target/release/halley")
    args = ap.parse_args()
    if args.conns > 19000:
        sys.exit("one process holds at most ~19,900 sockets here; use halley-load for more")

    server = start_server(args.binary, args.port, "--workers", str(args.workers),
                          "--longpoll-timeout", "600", "--longpoll-max-timeout", "600")
    socks = []
    try:
        before = rss_kib(server.pid)
        for i in range(args.conns):
            s = socket.socket()
            s.bind((f"127.0.0.{1 + i % 50}", 0))
            s.connect(("127.0.0.1", args.port))
            s.sendall(b"GET /sub/parked/%d?timeout=600 HTTP/1.1\r\nHost: m\r\n\r\n" % (i % 100))
            socks.append(s)
        deadline = time.time() + 60
        while parked(args.port) < args.conns:
            if time.time() > deadline:
                sys.exit(f"only {parked(args.port)} of {args.conns} parked")
            time.sleep(0.1)
        after = rss_kib(server.pid)
        delta = (after - before) * 1024
        print(f"connections={args.conns} workers={args.workers} rss_before_kib={before} "
              f"rss_after_kib={after} bytes_per_parked_connection={delta / args.conns:.0f}")
    finally:
        for s in socks:
            s.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
