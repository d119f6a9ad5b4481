#!/usr/bin/env bash
# halley-load smoke test for scripts/test.sh: starts a Halley of its own on a free loopback
# port, runs a small broadcast (200 subscribers, 20 messages) in every subscriber mode, and
# fails (exit 1, with halley-load's report on stderr) on any loss, duplicate, reordering or
# missed deadline. Takes a few seconds; hard-capped at 60 s. Stops only the Halley it started.
#
# Usage: loadtest/smoke.sh            (builds the debug binaries first)
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q -p halley -p halley-load
HALLEY=target/debug/halley
LOAD=target/debug/halley-load
DEADLINE=$((SECONDS + 60))

PORT=
HPID=
trap '[[ -n $HPID ]] && kill "$HPID" 2>/dev/null; wait 2>/dev/null || true' EXIT
# A free port: try a few at random in the dynamic range below the ephemeral one.
for _ in $(seq 20); do
    candidate=$((20000 + RANDOM % 10000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then
        "$HALLEY" serve --listen "127.0.0.1:$candidate" --workers 2 --log warn &
        HPID=$!
        for _ in $(seq 100); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$candidate") 2>/dev/null; then PORT=$candidate; break; fi
            kill -0 "$HPID" 2>/dev/null || break
            sleep 0.05
        done
        [[ -n $PORT ]] && break
        kill "$HPID" 2>/dev/null || true
        wait "$HPID" 2>/dev/null || true
        HPID=
    fi
done
[[ -n $PORT ]] || { echo "load smoke: could not start halley" >&2; exit 1; }

for mode in longpoll sse ws stream pushlet bayeux; do
    left=$((DEADLINE - SECONDS))
    ((left > 0)) || { echo "load smoke: out of time before --mode $mode" >&2; exit 1; }
    if ! out=$(timeout "$left" "$LOAD" --addr "127.0.0.1:$PORT" --server-pid "$HPID" --no-progress \
        -s broadcast --mode "$mode" -n 200 -k 20 --topic "smoke_$mode" \
        --connect-timeout 20 --drain-timeout 5 2>&1); then
        echo "load smoke FAILED (--mode $mode):" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "load smoke --mode $mode: $(grep -o 'deliveries .*' <<<"$out" | head -1)"
done
