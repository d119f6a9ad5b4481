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
#   RATES    SSE publish rates tried, msgs/s, for the sustained-rate row [5 10 15 20 30]
#   DURATION seconds per rate step                [5]
#   HOLD     seconds the idle scenario holds      [3]
set -euo pipefail

cd "$(dirname "$0")/.."
HALLEY=${HALLEY:-target/release/halley}
LOAD=${LOAD:-target/release/halley-load}
N=${N:-10000}
WORKERS=${WORKERS:-2}
MESSAGES=${MESSAGES:-50}
RATES=${RATES:-5 10 15 20 30}
DURATION=${DURATION:-5}
HOLD=${HOLD:-3}
HPORT=${HPORT:-18080}
NPORT=${NPORT:-18090}

for bin in "$HALLEY" "$LOAD"; do
    [[ -x $bin ]] || { echo "missing $bin (cargo build --release --workspace)" >&2; exit 2; }
done
if ! command -v nginx >/dev/null || [[ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
    echo "installing nginx and libnginx-mod-nchan" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-nchan >/dev/null
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
for s in halley nchan; do
    run "idle-longpoll-$s" "$s" --scenario idle --duration "$HOLD"
done
for mode in longpoll sse; do
    for s in halley nchan; do
        run "broadcast-$mode-$s" "$s" --scenario broadcast --mode "$mode" -k "$MESSAGES"
    done
    run "broadcast-$mode-floor" floor --pattern broadcast --mode "$mode" -k "$MESSAGES"
done
for rate in $RATES; do
    for s in halley nchan; do
        run "rate-sse-$rate-$s" "$s" --scenario rate --mode sse --rate "$rate" --duration "$DURATION"
    done
done

{
    echo "## halley-load: Halley vs nginx + Nchan vs floor"
    echo
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr);" \
        "nginx $(nginx -v 2>&1 | sed 's#.*/##'), Nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?')"
    echo "Command: N=$N WORKERS=$WORKERS MESSAGES=$MESSAGES RATES=\"$RATES\" DURATION=$DURATION scripts/compare-nchan.sh"
    echo
    python3 - "$OUT" "$RATES" <<'PY'
import json, os, sys
out, rates = sys.argv[1], sys.argv[2].split()

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
    best = None
    for r in rates:
        rep = load(f"rate-sse-{r}-{server}")
        if rep and get(rep, "rate", "kept_up"):
            best = max(best or 0, get(rep, "rate", "delivered_per_s") or 0)
    return best

def losses(server):
    names = [f"broadcast-{m}-{server}" for m in ("longpoll", "sse")]
    names += [f"rate-sse-{r}-{server}" for r in rates]
    reps = [load(n) for n in names]
    reps = [r for r in reps if r]
    return sum(r["lost"] + r["checks"]["duplicates"] for r in reps) if reps else None

rows = [
    ("server bytes per parked long-poll connection", "idle-longpoll", ("server", "bytes_per_connection"), False),
    ("server CPU µs per long-poll delivery (re-poll incl.)", "broadcast-longpoll", ("server", "cpu_us_per_delivery"), True),
    ("server CPU µs per SSE delivery", "broadcast-sse", ("server", "cpu_us_per_delivery"), True),
    ("broadcast fan-out, long-poll, mean ms", "broadcast-longpoll", ("fanout", "mean_ms"), True),
    ("broadcast fan-out, SSE, mean ms", "broadcast-sse", ("fanout", "mean_ms"), True),
    ("long-poll latency p50 ms", "broadcast-longpoll", ("latency", "p50_us"), True),
    ("long-poll latency p99 ms", "broadcast-longpoll", ("latency", "p99_us"), True),
    ("long-poll latency p99.9 ms", "broadcast-longpoll", ("latency", "p999_us"), True),
    ("SSE latency p99 ms", "broadcast-sse", ("latency", "p99_us"), True),
    ("accepted connections/s (idle set-up)", "idle-longpoll", ("connections_per_s",), False),
]
print("| metric | Halley | Nchan | Halley/Nchan | floor | Halley/floor |")
print("|---|---|---|---|---|---|")
for label, base, path, has_floor in rows:
    scale = 1e-3 if path[0] == "latency" else 1.0
    def value(server):
        rep = load(f"{base}-{server}")
        # A run that delivered nothing has no per-delivery figures, only zeros.
        if rep is None or (base != "idle-longpoll" and not rep.get("delivered_unique")):
            return None
        return get(rep, *path)
    h, n = value("halley"), value("nchan")
    f = value("floor") if has_floor else None
    h, n, f = (None if v is None else v * scale for v in (h, n, f))
    print(f"| {label} | {fmt(h)} | {fmt(n)} | {ratio(h, n)} | {fmt(f)} | {ratio(h, f)} |")
h, n = sustained("halley"), sustained("nchan")
print(f"| max sustained SSE deliveries/s (rates {' '.join(rates)}) | {fmt(h)} | {fmt(n)} | {ratio(h, n)} | | |")
h, n = losses("halley"), losses("nchan")
print(f"| lost + duplicated deliveries (all runs) | {fmt(h)} | {fmt(n)} | | | |")
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
