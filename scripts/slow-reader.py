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
import signal
import socket
import time

from serverproc import cpu_secs, http_get, rss_kib, start_server


def health_ms(port):
    start = time.monotonic()
    if not http_get(port, "/health", timeout=30):
        raise RuntimeError("no /health answer")
    return (time.monotonic() - start) * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=512 * 1024)
    ap.add_argument("--port", type=int, default=18090)
    ap.add_argument("--raw-port", type=int, default=18091)
    ap.add_argument("--binary", default="target/release/halley")
    args = ap.parse_args()

    server = start_server(args.binary, args.port, "--workers", "1", "--raw-listen", f"127.0.0.1:{args.raw_port}")
    try:
        cpu_before, rss_before = cpu_secs(server.pid), rss_kib(server.pid)
        peer = socket.create_connection(("127.0.0.1", args.raw_port))
        peer.sendall(b"x\n" * args.lines)
        worst = 0.0
        for _ in range(20):
            time.sleep(0.1)
            worst = max(worst, health_ms(args.port))
        print(f"lines={args.lines} server_cpu_s={cpu_secs(server.pid) - cpu_before:.2f} "
              f"worst_health_ms={worst:.0f} rss_growth_kib={rss_kib(server.pid) - rss_before}")
        peer.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
