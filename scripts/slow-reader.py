#!/usr/bin/env python3
"""Measures what one raw TCP peer that writes commands but never reads costs the server.

Starts `halley serve` (release build) with one worker and a raw TCP listener, has one peer send
`--lines` invalid command lines without reading a byte of the replies, and meanwhile asks the
same worker for /health every 100 ms. Prints the server's CPU time and RSS growth over the run
and the slowest /health answer. A server that bounds what it queues for a peer stops decoding
once that peer's replies reach the high-water mark, so all three stay small.

Usage: scripts/slow-reader.py [--lines 524288] [--binary target/release/halley]
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def health_ms(port):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        if not s.recv(4096):
            raise RuntimeError("no /health answer")
    return (time.monotonic() - start) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=512 * 1024)
    ap.add_argument("--port", type=int, default=18090)
    ap.add_argument("--raw-port", type=int, default=18091)
    ap.add_argument("--binary", default="target/release/halley")
    args = ap.parse_args()

    server = subprocess.Popen(
        [args.binary, "serve", "--listen", f"127.0.0.1:{args.port}", "--workers", "1",
         "--raw-listen", f"127.0.0.1:{args.raw_port}", "--log", "warn"],
    )
    try:
        deadline = time.time() + 10
        while True:
            try:
                health_ms(args.port)
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("server did not start")
                time.sleep(0.05)
        cpu_before, rss_before = cpu_secs(server.pid), rss_kib(server.pid)
        peer = socket.create_connection(("127.0.0.1", args.raw_port))
        peer.sendall(b"x\n" * args.lines)
        worst = max(health_ms(args.port) for _ in range(20) if time.sleep(0.1) is None)
        print(f"lines={args.lines} server_cpu_s={cpu_secs(server.pid) - cpu_before:.2f} "
              f"worst_health_ms={worst:.0f} rss_growth_kib={rss_kib(server.pid) - rss_before}")
        peer.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
