#!/usr/bin/env python3
"""Measures what Halley's RSS does after a burst of one-off topics (issue 14, item 7).

Starts `halley serve` (release build) with a short history age, publishes N messages to N
distinct topics (pipelined over a few keep-alive connections), waits until /stats says the
store is empty again, and then asks glibc to give back its free memory with `malloc_trim(0)`,
called in the server process through gdb. Prints RSS at each step:

- start: the idle server;
- peak: right after the burst (history holds every topic);
- empty: the store has expired every topic (Halley has freed what it held);
- trimmed: after `malloc_trim(0)`: what is left is what Halley still holds, the difference
  to `empty` is free memory that the allocator kept.

Usage: scripts/rss-burst.py [--topics 200000] [--binary target/release/halley] [--arenas N]
                            [--tunables glibc.malloc.trim_threshold=131072:...]
(`--arenas` sets MALLOC_ARENA_MAX and `--tunables` GLIBC_TUNABLES for the server, to compare.)
Needs gdb for the last step.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time

from serverproc import cpu_secs, http_get, rss_kib, start_server


def store_topics(port):
    return json.loads(http_get(port, "/stats"))["store"]["topics"]


def publish_burst(port, topics, conns=4, batch=1000):
    """Publishes one message to each of `topics` distinct topics; returns the seconds taken."""
    start = time.time()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    sent = 0
    while sent < topics:
        waiting = []
        for s in socks:
            n = min(batch, topics - sent)
            if n == 0:
                break
            reqs = b"".join(
                f"POST /pub/burst/{sent + i} HTTP/1.1\r\nHost: m\r\nContent-Length: 1\r\n\r\nx".encode()
                for i in range(n))
            s.sendall(reqs)
            waiting.append((s, n))
            sent += n
        for s, n in waiting:
            data = b""
            while data.count(b"HTTP/1.1 ") < n or not data.endswith(b"}"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    sys.exit("server closed a publishing connection")
                data += chunk
            if data.count(b"HTTP/1.1 201") != n:
                sys.exit(f"not every publish was accepted: {data[:200]!r}")
    for s in socks:
        s.close()
    return time.time() - start


def malloc_trim(pid):
    """Calls malloc_trim(0) inside `pid` through gdb; False if gdb is missing or fails."""
    if not shutil.which("gdb"):
        return False
    done = subprocess.run(["gdb", "-p", str(pid), "-batch", "-ex", "call (int) malloc_trim(0)"],
                          capture_output=True, text=True)
    return done.returncode == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--topics", type=int, default=200000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--port", type=int, default=18090)
    ap.add_argument("--binary", default="target/release/halley")
    ap.add_argument("--arenas", type=int, default=0, help="MALLOC_ARENA_MAX for the server (0: glibc default)")
    ap.add_argument("--tunables", default="", help="GLIBC_TUNABLES for the server (empty: none)")
    args = ap.parse_args()
    if args.arenas:
        os.environ["MALLOC_ARENA_MAX"] = str(args.arenas)
    if args.tunables:
        os.environ["GLIBC_TUNABLES"] = args.tunables

    server = start_server(args.binary, args.port, "--workers", str(args.workers), "--history-age", "3")
    try:
        rows = [("start", rss_kib(server.pid))]
        cpu_before = cpu_secs(server.pid)
        took = publish_burst(args.port, args.topics)
        burst_cpu = cpu_secs(server.pid) - cpu_before
        rows.append(("peak", rss_kib(server.pid)))
        deadline = time.time() + 60
        while store_topics(args.port) > 0:
            if time.time() > deadline:
                sys.exit("the store did not empty")
            time.sleep(0.2)
        time.sleep(1.5)  # a few more expiry passes and idle turns
        rows.append(("empty", rss_kib(server.pid)))
        if malloc_trim(server.pid):
            rows.append(("trimmed", rss_kib(server.pid)))
        else:
            print("gdb not available or failed: no malloc_trim row", file=sys.stderr)
        print(f"{args.topics} one-off topics published in {took:.1f} s ({burst_cpu:.2f} s server CPU); MALLOC_ARENA_MAX="
              f"{args.arenas or 'default'}; GLIBC_TUNABLES={args.tunables or 'none'}")
        print("| step | RSS MiB |\n|---|---|")
        for name, kib in rows:
            print(f"| {name} | {kib / 1024:.1f} |")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
