#!/usr/bin/env bash
# Halley vs nginx + Nchan vs the kernel floor, in one run, on loopback.
#
# Installs nginx and libnginx-mod-nchan from Debian if missing, starts nginx (private prefix,
# pid and logs under a temp dir, as many workers as Halley) and Halley on loopback ports, runs
# the same halley-load scenarios against both alternately (a fresh server per scenario, so
# memory figures start from a clean heap), runs the floor server in the same patterns, and
# prints a Markdown table with Halley/Nchan and Halley/floor ratios. Servers are stopped by PID.
#
# Usage: scripts/compare-nchan.sh [OUT_DIR]
# Environment (defaults in brackets):
#   HALLEY   Halley binary                        [target/release/halley]
#   LOAD     halley-load binary                   [target/release/halley-load]
#   N        subscribers                          [10000]
#   WORKERS  Halley workers = nginx workers       [2]
#   MESSAGES broadcasts per broadcast scenario    [50]
#   RATES    SSE publish rates tried, msgs/s, for the sustained-rate row [5 10 15 20 30 45 60]
#   DURATION seconds per rate step                [5]
#   HOLD     seconds the idle scenario holds      [3]
#   REPEAT   runs of each idle/broadcast scenario; the table shows medians [3]
#   MODES    broadcast subscriber modes           [longpoll sse ws]
#   TABLE_ONLY=1  only print the table from the reports already in OUT_DIR
set -euo pipefail

cd "$(dirname "$0")/.."
HALLEY=${HALLEY:-target/release/halley}
LOAD=${LOAD:-target/release/halley-load}
N=${N:-10000}
WORKERS=${WORKERS:-2}
MESSAGES=${MESSAGES:-50}
RATES=${RATES:-5 10 15 20 30 45 60}
DURATION=${DURATION:-5}
HOLD=${HOLD:-3}
REPEAT=${REPEAT:-3}
MODES=${MODES:-longpoll sse ws}
HPORT=${HPORT:-18080}
NPORT=${NPORT:-18090}

for bin in "$HALLEY" "$LOAD"; do
    [[ -x $bin ]] || { echo "missing $bin (cargo build --release --workspace)" >&2; exit 2; }
done
if ! command -v nginx >/dev/null || [[ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
    echo "installing nginx and libnginx-mod-nchan" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx libnginx-mod-nchan >/dev/null
fi

TMP=$(mktemp -d /tmp/compare-nchan.XXXXXX)
OUT=${1:-$TMP/results}
mkdir -p "$OUT"
HALLEY_PID=
NGINX_PID=

stop_servers() {
    if [[ -n $HALLEY_PID ]]; then
        kill "$HALLEY_PID" 2>/dev/null || true
        wait "$HALLEY_PID" 2>/dev/null || true
        HALLEY_PID=
    fi
    if [[ -n $NGINX_PID ]]; then
        kill "$NGINX_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
        NGINX_PID=
    fi
}
trap 'stop_servers; rm -rf "$TMP/nginx"' EXIT

wait_health() { # port
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listening on 127.0.0.1:$1" >&2
    return 1
}

start_halley() {
    "$HALLEY" serve --listen "127.0.0.1:$HPORT" --workers "$WORKERS" >"$TMP/halley.log" 2>&1 &
    HALLEY_PID=$!
    wait_health "$HPORT"
}

start_nginx() {
    rm -rf "$TMP/nginx" && mkdir -p "$TMP/nginx"
    sed -e "s#@DIR@#$TMP/nginx#g; s#@PORT@#$NPORT#g; s#@WORKERS@#$WORKERS#g" \
        scripts/nchan.conf.in >"$TMP/nginx/nginx.conf"
    nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log"
    wait_health "$NPORT"
    NGINX_PID=$(cat "$TMP/nginx/nginx.pid")
}

# run NAME SERVER ARGS...: one halley-load run against a fresh server; JSON to $OUT/NAME.json.
run() {
    local name=$1 server=$2
    shift 2
    local common=(--json --no-progress -n "$N" --drain-timeout 20)
    case $server in
        halley) start_halley
                "$LOAD" "${common[@]}" --addr "127.0.0.1:$HPORT" --target halley \
                    --server-pid "$HALLEY_PID" "$@" >"$OUT/$name.json" || true ;;
        nchan)  start_nginx
                "$LOAD" "${common[@]}" --addr "127.0.0.1:$NPORT" --target nchan \
                    --server-pid "$NGINX_PID" "$@" >"$OUT/$name.json" || true ;;
        floor)  "$LOAD" "${common[@]}" --scenario floor --floor-threads "$WORKERS" "$@" \
                    >"$OUT/$name.json" || true ;;
    esac
    stop_servers
    echo "  $name done" >&2
}

echo "results in $OUT" >&2
if [[ ${TABLE_ONLY:-0} != 1 ]]; then
# Alternate servers inside every repeat so slow drifts (other jobs on the box) hit both.
for r in $(seq "$REPEAT"); do
    for s in halley nchan; do
        run "idle-longpoll-$s-r$r" "$s" --scenario idle --duration "$HOLD"
    done
    for mode in $MODES; do
        for s in halley nchan; do
            run "broadcast-$mode-$s-r$r" "$s" --scenario broadcast --mode "$mode" -k "$MESSAGES"
        done
        # The floor server speaks long-poll and SSE only.
        if [[ $mode == longpoll || $mode == sse ]]; then
            run "broadcast-$mode-floor-r$r" floor --pattern broadcast --mode "$mode" -k "$MESSAGES"
        fi
    done
done
for rate in $RATES; do
    for s in halley nchan; do
        run "rate-sse-$rate-$s" "$s" --scenario rate --mode sse --rate "$rate" --duration "$DURATION"
    done
done
fi

{
    echo "## halley-load: Halley vs nginx + Nchan vs floor"
    echo
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr);" \
        "nginx $(nginx -v 2>&1 | sed 's#.*/##'), Nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?')"
    echo "Command: N=$N WORKERS=$WORKERS MESSAGES=$MESSAGES RATES=\"$RATES\" DURATION=$DURATION REPEAT=$REPEAT MODES=\"$MODES\" scripts/compare-nchan.sh"
    echo
    python3 - "$OUT" "$RATES" "$REPEAT" "$MODES" <<'PY'
import json, os, statistics, sys
out, rates, repeat, modes = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), sys.argv[4].split()

def load(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def get(report, *path):
    for key in path:
        if report is None:
            return None
        report = report.get(key)
    return report

def fmt(v):
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}"

def ratio(a, b):
    return "n/a" if a is None or b in (None, 0) else f"{a / b:.2f}x"

def sustained(server):
    """Best delivered/s of a loss-free rate step, and the server CPU per delivery there. The
    generator shares the cores, so past saturation publishes run late ("behind") while every
    message still arrives: the peak loss-free delivery rate is what the box sustains."""
    best, cpu = None, None
    for r in rates:
        rep = load(f"rate-sse-{r}-{server}")
        if rep and not rep.get("lost") and not get(rep, "checks", "duplicates"):
            d = get(rep, "rate", "delivered_per_s") or 0
            if best is None or d > best:
                best, cpu = d, get(rep, "server", "cpu_us_per_delivery")
    return best, cpu

def losses(server):
    names = [f"broadcast-{m}-{server}-r{i}" for m in modes for i in range(1, repeat + 1)]
    names += [f"rate-sse-{r}-{server}" for r in rates]
    reps = [load(n) for n in names]
    reps = [r for r in reps if r]
    return sum(r["lost"] + r["checks"]["duplicates"] for r in reps) if reps else None

def count(v):
    return "n/a" if v is None else str(v)

rows = [
    ("server bytes per parked long-poll connection", "idle-longpoll", ("server", "bytes_per_connection"), False),
    ("server anon bytes per parked long-poll connection", "idle-longpoll", ("server", "anon_bytes_per_connection"), False),
    ("server CPU µs per accepted connection (idle set-up)", "idle-longpoll", ("server", "cpu_us_per_connection"), False),
    ("accepted connections/s (idle set-up)", "idle-longpoll", ("connections_per_s",), False),
]
for mode in modes:
    floor = mode in ("longpoll", "sse")
    extra = " (re-poll incl.)" if mode == "longpoll" else ""
    rows += [
        (f"server CPU µs per {mode} delivery{extra}", f"broadcast-{mode}", ("server", "cpu_us_per_delivery"), floor),
        (f"broadcast fan-out, {mode}, median of means, ms", f"broadcast-{mode}", ("fanout", "mean_ms"), floor),
        (f"broadcast fan-out, {mode}, p99 ms", f"broadcast-{mode}", ("fanout", "p99_ms"), floor),
        (f"{mode} latency p50 ms", f"broadcast-{mode}", ("latency", "p50_us"), floor),
        (f"{mode} latency p99 ms", f"broadcast-{mode}", ("latency", "p99_us"), floor),
        (f"{mode} latency p99.9 ms", f"broadcast-{mode}", ("latency", "p999_us"), floor),
    ]

def value(base, server, path):
    """Median over the repeats; a run that delivered nothing has no per-delivery figures."""
    vals = []
    for i in range(1, repeat + 1):
        rep = load(f"{base}-{server}-r{i}")
        if rep is None or (base != "idle-longpoll" and not rep.get("delivered_unique")):
            continue
        v = get(rep, *path)
        if v is not None:
            vals.append(v)
    return (statistics.median(vals), vals) if vals else (None, [])

def spread(vals, scale):
    return "" if len(vals) < 2 else f" ({fmt(min(vals) * scale)}–{fmt(max(vals) * scale)})"

print("| metric | Halley | Nchan | Halley/Nchan | floor | Halley/floor |")
print("|---|---|---|---|---|---|")
for label, base, path, has_floor in rows:
    scale = 1e-3 if path[0] == "latency" else 1.0
    (h, hv), (n, nv) = value(base, "halley", path), value(base, "nchan", path)
    f, fv = value(base, "floor", path) if has_floor else (None, [])
    h, n, f = (None if v is None else v * scale for v in (h, n, f))
    print(f"| {label} | {fmt(h)}{spread(hv, scale)} | {fmt(n)}{spread(nv, scale)} | {ratio(h, n)} "
          f"| {fmt(f)}{spread(fv, scale)} | {ratio(h, f)} |")
(h, hc), (n, nc) = sustained("halley"), sustained("nchan")
print(f"| peak loss-free SSE deliveries/s (rates {' '.join(rates)} msgs/s) | {fmt(h)} | {fmt(n)} | {ratio(h, n)} | | |")
print(f"| server CPU µs per SSE delivery at that rate | {fmt(hc)} | {fmt(nc)} | {ratio(hc, nc)} | | |")
h, n = losses("halley"), losses("nchan")
print(f"| lost + duplicated deliveries (all runs) | {count(h)} | {count(n)} | | | |")
print()
print("Rate steps (delivered/s, kept up, server CPU µs per delivery):")
print()
print("| msgs/s | Halley | Nchan |")
print("|---|---|---|")
for r in rates:
    cells = []
    for server in ("halley", "nchan"):
        rep = load(f"rate-sse-{r}-{server}")
        if rep is None:
            cells.append("n/a")
            continue
        cells.append(f"{fmt(get(rep, 'rate', 'delivered_per_s'))}/s, "
                     f"{'kept up' if get(rep, 'rate', 'kept_up') else 'behind'}, "
                     f"{fmt(get(rep, 'server', 'cpu_us_per_delivery'))} µs, lost {rep.get('lost')}")
    print(f"| {r} | {cells[0]} | {cells[1]} |")
print()
problems = []
for name in sorted(os.listdir(out)):
    rep = load(name[:-5]) if name.endswith(".json") else None
    if name.endswith(".json") and rep is None:
        problems.append(f"{name}: no report")
    for p in (rep or {}).get("problems", []):
        problems.append(f"{name}: {p}")
if problems:
    print()
    print("Problems reported:")
    for p in problems:
        print(f"- {p}")
PY
} | tee "$OUT/table.md"
