"""Redis-side cost of the publish script, old (one EVALSHA per publish, pipelined) vs new
(one EVALSHA per batch): a fresh redis-server (appendonly yes, everysec), raw RESP over
loopback, N publishes of a 100-byte payload per batch size; reports Redis process CPU per
publish (/proc utime+stime) and EVALSHA usec per call (INFO commandstats).
Usage, from a scratch dir: git show <before>:src/store/redis/link.rs > old_link.rs;
git show <after>:src/store/redis/link.rs > new_link.rs; python3 script-micro.py 51200"""
import os, re, socket, subprocess, sys, tempfile, time, hashlib

def script(path):
    src = open(path).read()
    m = re.search(r'pub\(super\) const PUBLISH: &str = r#"(.*?)"#;', src, re.S)
    return m.group(1)

def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)

class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port)); self.buf = b""
    def send(self, data): self.s.sendall(data)
    def _line(self):
        while b"\r\n" not in self.buf: self.buf += self.s.recv(1 << 20)
        line, self.buf = self.buf.split(b"\r\n", 1); return line
    def _n(self, n):
        while len(self.buf) < n + 2: self.buf += self.s.recv(1 << 20)
        d, self.buf = self.buf[:n], self.buf[n + 2:]; return d
    def read(self):
        l = self._line(); t = l[:1]
        if t in b"+-:": 
            if t == b"-": raise RuntimeError(l)
            return l[1:]
        if t == b"$": n = int(l[1:]); return None if n < 0 else self._n(n)
        if t == b"*": return [self.read() for _ in range(int(l[1:]))]
        raise RuntimeError(l)
    def cmd(self, *a): self.send(resp(*a)); return self.read()

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def run(kind, batch, total, port, pid):
    c = Conn(port)
    sha = c.cmd("SCRIPT", "LOAD", script(f"{kind}_link.rs")).decode()
    c.cmd("CONFIG", "RESETSTAT")
    data = b"x" * 100
    fp = hashlib.sha1(data).hexdigest()
    meta = c.cmd("HMGET", "{halley}:meta", "epoch", "seq")
    epoch = (meta[0] or b"").decode(); seen = (meta[1] or b"0").decode()
    now = str(int(time.time() * 1000)); cand = ("cand1", str(int(time.time() * 1e6)))
    k = 0; t0 = cpu(pid); w0 = time.time()
    for _ in range(total // batch):
        if kind == "old":
            msgs = []
            for i in range(batch):
                k += 1
                msgs.append(resp("EVALSHA", sha, 3, "{halley}:meta", "{halley}:log", f"{{halley}}:idem:{kind}{batch}-{k}",
                                 600000, 1000000, "/t", "", "", data, now, cand[0], cand[1], epoch, seen, fp))
            c.send(b"".join(msgs))
            for _ in range(batch): c.read()
        else:
            keys = []
            for i in range(batch):
                k += 1; keys.append(f"{{halley}}:idem:{kind}{batch}-{k}")
            args = ["EVALSHA", sha, 2 + batch, "{halley}:meta", "{halley}:log", *keys, 600000, 1000000, now,
                    cand[0], cand[1], epoch, seen]
            for i in range(batch): args += ["/t", "", "", data, fp]
            r = c.cmd(*args); assert len(r) == batch and b" " in r[0], r[:2]
    cpu_s = cpu(pid) - t0; wall = time.time() - w0
    stats = c.cmd("INFO", "commandstats").decode()
    ev = re.search(r"cmdstat_evalsha:calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)", stats)
    print(f"{kind:4} batch {batch:4}: {k} publishes, Redis CPU {cpu_s * 1e6 / k:6.2f} us/publish, "
          f"EVALSHA {ev.group(3)} us/call ({int(ev.group(2)) / k:.2f} us/publish), wall {wall:.1f} s", flush=True)

def main():
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 51200
    d = tempfile.mkdtemp(prefix="micro-redis.")
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", "",
                          "--appendonly", "yes", "--maxmemory-policy", "noeviction", "--loglevel", "warning"],
                         stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try: Conn(port).cmd("PING"); break
            except OSError: time.sleep(0.05)
        for rnd in (1, 2, 3):
            for kind, batch in (("old", 16), ("new", 16), ("old", 128), ("new", 128), ("new", 256), ("new", 512)):
                run(kind, batch, total, port, p.pid)
    finally:
        p.terminate(); p.wait()

main()
