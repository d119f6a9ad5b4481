"""What the measuring scripts share: start `halley serve`, wait until it answers, talk plain
HTTP/1.1 to it, read its RSS and CPU time from /proc; and for the A/B tables, a free port, a
report file read back, and a cell with the median of the rounds and their range."""
import json
import os
import socket
import statistics
import subprocess
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_secs(pid):
    """User plus system CPU time of process `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_get(port, path, timeout=5):
    """The body of `GET path` on 127.0.0.1:`port` (one request, `Connection: close`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


def start_server(binary, port, *args):
    """Starts `binary serve --listen 127.0.0.1:port --log warn args...` and returns it once
    /health answers (or exits after 10 s)."""
    server = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--log", "warn", *args])
    deadline = time.time() + 10
    while True:
        try:
            http_get(port, "/health")
            return server
        except OSError:
            if time.time() > deadline:
                server.kill()
                sys.exit("server did not start")
            time.sleep(0.05)


def free_port():
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_json(path):
    """The JSON in file `path`, or None when it is missing or not JSON (a failed run)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(v):
    """A table number: thousands grouped, two decimals below 100, "n/a" for None."""
    return "n/a" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}")


def median_cell(vals):
    """The median of the rounds' values (None skipped) with their range when there are two or
    more; "n/a" when there are none."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return "n/a"
    m = statistics.median(vals)
    return fmt(m) if len(vals) < 2 else f"{fmt(m)} ({fmt(min(vals))}–{fmt(max(vals))})"
