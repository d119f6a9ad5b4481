#!/usr/bin/env bash
# Cluster benchmark (not CI): one redis-server and N Halley nodes on loopback, loaded by
# halley-load with several --server targets. Bounded (every run has a deadline), loopback only,
# and it stops only the processes it started, by PID.
#
# For every run it starts a fresh redis-server (temporary dir, free port, `appendonly yes`,
# `maxmemory-policy noeviction`) and fresh nodes (`halley serve --redis`, each its own process
# on a free port), runs halley-load with `--server-pid` per node and `--redis-pid`, then stops
# everything. Reports (JSON) go to DIR; a Markdown table to stdout and DIR/table.md.
#
# Usage: scripts/bench-cluster.sh [options] SCENARIO...
# Scenarios:
#   single       one node, -n subscribers (default 10,000), broadcast -k messages, with and
#                without --redis, alternated for -r rounds: CPU per delivery and per publish,
#                and the ratio redis/plain per round
#   throughput   -N nodes (default 2), 10 subscribers per node, `rate` at --rate msgs/s for 5 s
#                from 64 publisher connections spread over the nodes, in -P parallel halley-load
#                processes (each its own topic): acknowledged publishes per second through Redis
#   wide         6 nodes, 100,000 SSE subscribers over them, broadcast -k messages, then a
#                `rate` run with one publisher per node (the global-order check)
# Options (defaults in brackets):
#   -m MODE    subscriber mode for single and wide                      [sse]
#   -n N       subscribers for single                                   [10000]
#   -k K       broadcasts per run                                       [20]
#   -r ROUNDS  rounds of single                                         [3]
#   -w W       --workers per node                                       [1 for clusters, 2 single]
#   -N NODES   nodes for throughput                                     [2]
#   -P PROCS   parallel halley-load processes for throughput            [2]
#   -R RATE    target publishes/s per halley-load process (throughput)  [40000]
#   -o DIR     where reports and table.md go                            [a new /tmp/bench-cluster.XXXXXX]
# Environment: HALLEY, LOAD (binaries) [target/release/halley, target/release/halley-load]
set -euo pipefail

SCRIPTS=$(cd "$(dirname "$0")" && pwd)
MODE=sse; N=10000; K=20; ROUNDS=3; WORKERS=; NODES=2; PROCS=2; RATE=40000; OUT=
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while getopts "m:n:k:r:w:N:P:R:o:h" opt; do
    case $opt in
        m) MODE=$OPTARG ;; n) N=$OPTARG ;; k) K=$OPTARG ;; r) ROUNDS=$OPTARG ;; w) WORKERS=$OPTARG ;;
        N) NODES=$OPTARG ;; P) PROCS=$OPTARG ;; R) RATE=$OPTARG ;; o) OUT=$OPTARG ;; *) usage ;;
    esac
done
shift $((OPTIND - 1))
[[ $# -ge 1 ]] || usage
HALLEY=$(realpath -m "${HALLEY:-$SCRIPTS/../target/release/halley}")
LOAD=$(realpath -m "${LOAD:-$SCRIPTS/../target/release/halley-load}")
for bin in "$HALLEY" "$LOAD"; do
    [[ -x $bin ]] || { echo "missing $bin (cargo build --release -p halley -p halley-load)" >&2; exit 2; }
done
command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install redis-server)" >&2; exit 2; }
[[ -n $OUT ]] || OUT=$(mktemp -d /tmp/bench-cluster.XXXXXX)
mkdir -p "$OUT"
echo "results in $OUT" >&2

PYTHONPATH=$SCRIPTS python3 - "$OUT" "$HALLEY" "$LOAD" "$MODE" "$N" "$K" "$ROUNDS" "${WORKERS:-0}" \
    "$NODES" "$PROCS" "$RATE" "$@" <<'PY' | tee "$OUT/table.md"
import os, shutil, socket, statistics, subprocess, sys, tempfile, time
from serverproc import fmt, free_port, median_cell, read_json, start_server

out, halley, load, mode = sys.argv[1:5]
n, k, rounds, workers, nodes_n, procs, rate = map(int, sys.argv[5:12])
scenarios = sys.argv[12:]
RUN_DEADLINE_S = 900  # past this a halley-load is killed and the run counts as failed


def stop(proc):
    """Stop a process this script started, by its PID: SIGTERM, then SIGKILL after 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Cluster:
    """A redis-server (optional) and `count` Halley nodes, stopped together."""

    def __init__(self, count, redis, node_workers):
        self.procs, self.nodes, self.redis, self.dir = [], [], None, None
        try:
            url = []
            if redis:
                self.dir = tempfile.mkdtemp(prefix="bench-redis.")
                port = free_port()
                self.redis = subprocess.Popen(
                    ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", self.dir,
                     "--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction",
                     "--daemonize", "no", "--loglevel", "warning"],
                    stdout=subprocess.DEVNULL)
                self.procs.append(self.redis)
                self.redis_port = port
                deadline = time.time() + 10
                while not self.ping(port):
                    if time.time() > deadline or self.redis.poll() is not None:
                        raise RuntimeError("redis-server did not start")
                    time.sleep(0.05)
                url = ["--redis", f"redis://127.0.0.1:{port}/0"]
            for _ in range(count):
                port = free_port()
                node = start_server(halley, port, "--workers", str(node_workers), *url)
                self.procs.append(node)
                self.nodes.append((f"127.0.0.1:{port}", node))
        except BaseException:
            self.close()
            raise

    @staticmethod
    def ping(port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def load_args(self):
        args = ["--server", ",".join(a for a, _ in self.nodes),
                "--server-pid", ",".join(str(p.pid) for _, p in self.nodes)]
        if self.redis:
            args += ["--redis-pid", str(self.redis.pid)]
        return args

    def commandstats(self, name):
        """Save Redis's `INFO commandstats` (calls and µs per command) to NAME.redis.txt."""
        if not self.redis:
            return
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=2) as s:
                s.sendall(b"INFO commandstats\r\n")
                data, deadline = b"", time.time() + 2
                while not data.endswith(b"\r\n\r\n") and time.time() < deadline:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            with open(f"{out}/{name}.redis.txt", "wb") as f:
                f.write(data)
        except OSError as e:
            print(f"  {name}: no commandstats: {e}", file=sys.stderr)

    def close(self):
        for p in reversed(self.procs):
            stop(p)
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def run_load(name, args):
    """Run one halley-load; the report goes to NAME.json, its stderr to NAME.err."""
    t0 = time.time()
    with open(f"{out}/{name}.json", "w") as rep, open(f"{out}/{name}.err", "w") as err:
        gen = subprocess.Popen([load, *args, "--json", "--no-progress"], stdin=subprocess.DEVNULL,
                               stdout=rep, stderr=err)
        try:
            code = gen.wait(timeout=RUN_DEADLINE_S)
        except subprocess.TimeoutExpired:
            gen.kill()  # its children follow it (PR_SET_PDEATHSIG)
            gen.wait()
            code = "killed after deadline"
    print(f"  {name}: exit {code}, {time.time() - t0:.1f} s", file=sys.stderr)
    return read_json(f"{out}/{name}.json")


def bad(rep):
    return None if rep is None else rep["lost"] + rep["checks"]["duplicates"]


def problems(name, rep):
    if rep is None:
        return [f"{name}: no report"]
    return [f"{name}: {p}" for p in rep.get("problems", [])]


print(f"## Cluster benchmark ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
      f"`{halley}`, `{load}`)\n")
issues = []

if "single" in scenarios:
    w = workers or 2
    rows = {"plain": [], "redis": []}
    for r in range(1, rounds + 1):
        for side in (("plain", "redis") if r % 2 else ("redis", "plain")):
            c = Cluster(1, side == "redis", w)
            try:
                name = f"single-{side}-r{r}"
                rep = run_load(name, ["-s", "broadcast", "--mode", mode, "-n", str(n), "-k", str(k),
                                      "--drain-timeout", "30", *c.load_args()])
                c.commandstats(name)
            finally:
                c.close()
            issues += problems(name, rep)
            rows[side].append((r, rep))
    print(f"### One node, {n:,} {mode} subscribers, {k} broadcasts, `--workers {w}`, {rounds} rounds\n")
    print("| | CPU µs/delivery | CPU µs/publish | fan-out mean ms | Redis CPU µs/publish | lost+dup |")
    print("|---|---|---|---|---|---|")
    per = {}
    for side in ("plain", "redis"):
        reps = [rep for _, rep in rows[side] if rep and rep.get("server")]
        per[side] = {r: rep["server"]["cpu_us_per_delivery"] for r, rep in rows[side] if rep and rep.get("server")}
        print(f"| {'`--redis`' if side == 'redis' else 'in-memory'} "
              f"| {median_cell([x['server']['cpu_us_per_delivery'] for x in reps])} "
              f"| {median_cell([x['server']['cpu_us_per_publish'] for x in reps])} "
              f"| {median_cell([(x.get('fanout') or {}).get('mean_ms') for x in reps])} "
              f"| {median_cell([(x.get('redis') or {}).get('cpu_us_per_publish') for x in reps]) if side == 'redis' else ''} "
              f"| {sum(bad(x) or 0 for _, x in rows[side])} |")
    ratios = [per["redis"][r] / per["plain"][r] for r in per["redis"] if r in per["plain"] and per["plain"][r]]
    print(f"\nCPU per delivery, `--redis` / in-memory, per round: {', '.join(f'{x:.3f}' for x in ratios) or 'n/a'}"
          f"; median {statistics.median(ratios):.3f}x\n" if ratios else "\nno ratio (runs failed)\n")

if "throughput" in scenarios:
    w = workers or 1
    c = Cluster(nodes_n, True, w)
    reps = []
    try:
        gens = []
        for p in range(procs):
            name = f"throughput-p{p}"
            args = ["-s", "rate", "--mode", "sse", "-n", str(10 * nodes_n), "--topic", f"tp{p}",
                    "--rate", str(rate), "--duration", "5", "--publishers", "64", "--drain-timeout", "20",
                    *c.load_args()]
            rep_f, err_f = open(f"{out}/{name}.json", "w"), open(f"{out}/{name}.err", "w")
            gens.append((name, subprocess.Popen([load, *args, "--json", "--no-progress"],
                                                stdin=subprocess.DEVNULL, stdout=rep_f, stderr=err_f), rep_f, err_f))
        for name, g, rep_f, err_f in gens:
            try:
                g.wait(timeout=RUN_DEADLINE_S)
            except subprocess.TimeoutExpired:
                g.kill()
                g.wait()
            rep_f.close()
            err_f.close()
            reps.append((name, read_json(f"{out}/{name}.json")))
        c.commandstats("throughput")
    finally:
        c.close()
    print(f"### Publish throughput through one Redis: {nodes_n} nodes (`--workers {w}`), {procs} halley-load "
          f"processes x 64 publisher connections, target {rate:,}/s each for 5 s\n")
    print("| process | published/s | failed | late | publish RTT p50 / p99 ms | node CPU µs/publish (all nodes) | Redis CPU µs/publish | lost+dup |")
    print("|---|---|---|---|---|---|---|---|")
    total = 0
    for name, rep in reps:
        issues += problems(name, rep)
        if not rep or not rep.get("rate"):
            print(f"| {name} | failed | | | | | | |")
            continue
        r = rep["rate"]
        total += r["published_per_s"]
        rtt = rep["publish_rtt"]
        print(f"| {name} | {fmt(r['published_per_s'])} | {r['publish']['failed']} | {r['publish']['late']} "
              f"| {rtt['p50_us'] / 1e3:.2f} / {rtt['p99_us'] / 1e3:.2f} "
              f"| {fmt((rep.get('server') or {}).get('cpu_us_per_publish'))} "
              f"| {fmt((rep.get('redis') or {}).get('cpu_us_per_publish'))} | {bad(rep)} |")
    print(f"\nTotal acknowledged publishes/s (the processes ran at the same time): {total:,.0f}. "
          "Each process divides the nodes' and Redis's CPU by its own publishes only: with -P "
          "processes, divide those columns by P for the cost per publish of the total.\n")

if "wide" in scenarios:
    w = workers or 1
    runs = [("wide-broadcast", ["-s", "broadcast", "-k", str(k), "--drain-timeout", "60"]),
            ("wide-rate", ["-s", "rate", "--rate", "6", "--duration", "5", "--publishers", "6",
                           "--drain-timeout", "60"])]
    print(f"### 100,000 {mode} subscribers over 6 nodes sharing one Redis (`--workers {w}` each)\n")
    for name, extra in runs:
        c = Cluster(6, True, w)
        try:
            rep = run_load(name, [*extra, "--mode", mode, "-n", "100000", "--processes", "6",
                                  "--source-addrs", "32", "--connect-timeout", "180", *c.load_args()])
            c.commandstats(name)
        finally:
            c.close()
        issues += problems(name, rep)
        if rep is None:
            print(f"{name}: no report\n")
            continue
        f = rep.get("fanout") or {}
        o = rep.get("order") or {}
        print(f"**{name}**: {rep['parked']:,} parked in {rep['setup_s']:.1f} s; {rep['published']} published, "
              f"{rep['delivered_unique']:,} of {rep['expected_deliveries']:,} deliveries, lost {rep['lost']}, "
              f"duplicates {rep['checks']['duplicates']}; delivery orders seen: {o.get('distinct', 'n/a')}"
              + (f"; fan-out mean {f['mean_ms']:.0f} ms, p99 {f['p99_ms']:.0f} ms" if f else "") + "\n")
        print("| process | subscribers | CPU ms measured | CPU µs/delivery | CPU µs/publish | RSS before -> connected -> end KiB |")
        print("|---|---|---|---|---|---|")
        for node in rep.get("nodes", []):
            print(f"| node {node['addr']} | {node['subscribers']:,} | {fmt(node['cpu_ms_measured'])} "
                  f"| {fmt(node['cpu_us_per_delivery'])} | {fmt(node['cpu_us_per_publish'])} "
                  f"| {node['rss_before_kb']:,} -> {node['rss_connected_kb']:,} -> {node['rss_end_kb']:,} |")
        s = rep.get("server") or {}
        if s:
            print(f"| all nodes | {rep['parked']:,} | {fmt(s['cpu_ms_measured'])} | {fmt(s['cpu_us_per_delivery'])} "
                  f"| {fmt(s['cpu_us_per_publish'])} | {s['rss_before_kb']:,} -> {s['rss_connected_kb']:,} -> {s['rss_end_kb']:,} |")
        rd = rep.get("redis") or {}
        if rd:
            print(f"| redis | | {fmt(rd['cpu_ms_measured'])} | {rd['cpu_us_per_delivery']:.4f} | {fmt(rd['cpu_us_per_publish'])} "
                  f"| {rd['rss_before_kb']:,} -> {rd['rss_connected_kb']:,} -> {rd['rss_end_kb']:,} |")
        print()

if issues:
    print("Problems reported:")
    for p in issues:
        print(f"- {p}")
PY
