#!/usr/bin/env bash
# Interleaved A/B of two Halley builds with halley-load's broadcast scenario.
#
# For every round and every mode, a fresh server is started from each binary in turn (the order
# flips from one round to the next and from one mode to the next, so slow drifts and "who ran
# first" hit both sides), on a free loopback port, and the same halley-load binary runs
# `--scenario broadcast` against it with `--server-pid`, so the server CPU per delivery comes
# from halley-load's own /proc reading. Servers are started with serverproc.start_server and
# stopped by PID. Prints a Markdown table: per mode, ref and head medians (ranges) of server CPU
# µs per delivery and fan-out time, head/ref paired per round, and lost/duplicated totals.
#
# Usage: scripts/ab-server.sh [options] REF HEAD
#   REF, HEAD  the two `halley` binaries (e.g. a release build in a worktree of the old main)
# Options (defaults in brackets):
#   -m MODES   subscriber modes; "mode:N" overrides -n for that mode  [longpoll sse ws pushlet bayeux]
#   -n N       subscribers                                          [2000]
#   -k K       broadcasts per run                                   [50]
#   -r ROUNDS  rounds (each runs every mode against both servers)   [3]
#   -w W       server --workers                                     [2]
#   -o DIR     where the JSON reports and table.md go               [a new /tmp/ab-server.XXXXXX]
#   -t         only print the table from the reports already in DIR (needs -o; REF HEAD optional)
# Environment:
#   LOAD       halley-load binary, the same one for both sides      [target/release/halley-load]
#
# Example (10,000 subscribers where one server process fits them, 2,000 for the session modes):
#   scripts/ab-server.sh -r 3 -k 50 -o /tmp/ab \
#     -m "longpoll:10000 sse:10000 ws:10000 pushlet:2000 bayeux:2000" \
#     /work/wt-ref/target/release/halley target/release/halley
set -euo pipefail

SCRIPTS=$(cd "$(dirname "$0")" && pwd)
MODES="longpoll sse ws pushlet bayeux"
N=2000
MESSAGES=50
ROUNDS=3
WORKERS=2
OUT=
TABLE_ONLY=0
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while getopts "m:n:k:r:w:o:th" opt; do
    case $opt in
        m) MODES=$OPTARG ;;
        n) N=$OPTARG ;;
        k) MESSAGES=$OPTARG ;;
        r) ROUNDS=$OPTARG ;;
        w) WORKERS=$OPTARG ;;
        o) OUT=$OPTARG ;;
        t) TABLE_ONLY=1 ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[[ $# -eq 2 || ($# -eq 0 && $TABLE_ONLY == 1) ]] || usage
REF=$(realpath -m "${1:--}")
HEAD=$(realpath -m "${2:--}")
LOAD=$(realpath -m "${LOAD:-$SCRIPTS/../target/release/halley-load}")
[[ -f $SCRIPTS/serverproc.py ]] || { echo "no serverproc.py next to $0" >&2; exit 2; }
if [[ $TABLE_ONLY == 0 ]]; then
    for bin in "$REF" "$HEAD" "$LOAD"; do
        [[ -x $bin ]] || { echo "missing $bin (cargo build --release -p halley -p halley-load)" >&2; exit 2; }
    done
fi
if [[ -z $OUT ]]; then
    [[ $TABLE_ONLY == 0 ]] || { echo "-t needs -o DIR" >&2; exit 2; }
    OUT=$(mktemp -d /tmp/ab-server.XXXXXX)
fi
mkdir -p "$OUT"
echo "results in $OUT" >&2

# Progress goes to stderr, the table to stdout and $OUT/table.md.
PYTHONPATH=$SCRIPTS python3 - "$OUT" "$TABLE_ONLY" "$REF" "$HEAD" "$LOAD" "$MODES" "$N" \
    "$MESSAGES" "$ROUNDS" "$WORKERS" <<'PY' | tee "$OUT/table.md"
import json, os, statistics, subprocess, sys, time
from serverproc import free_port, median_cell, read_json, start_server

out, table_only, ref, head, load = sys.argv[1], sys.argv[2] == "1", *sys.argv[3:6]
modes_arg, n_default, messages, rounds, workers = sys.argv[6].split(), *map(int, sys.argv[7:11])
SIDES = {"ref": ref, "head": head}
# mode -> subscribers ("mode:N" overrides -n)
MODES = {m.partition(":")[0]: int(m.partition(":")[2] or n_default) for m in modes_arg}
# A run never takes this long; past it halley-load is killed and the run counts as failed.
RUN_DEADLINE_S = 600


def describe(binary):
    """`<path> (<git commit of the checkout it was built in>)`, so the table names what ran."""
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(binary)))
        sha = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return f"`{binary}` ({sha}{', uncommitted changes' if dirty else ''})"
    except (OSError, subprocess.CalledProcessError):
        return f"`{binary}`"


def run(name, side, mode, n):
    """One broadcast run against a fresh server from SIDES[side]; the report goes to NAME.json,
    halley-load's stderr to NAME.err, and what the script saw to NAME.meta.json."""
    port = free_port()
    meta = {"side": side, "binary": SIDES[side], "mode": mode, "subscribers": n, "port": port,
            "loadavg_before": open("/proc/loadavg").read().split()[:3]}
    try:
        server = start_server(SIDES[side], port, "--workers", str(workers))
    except SystemExit as e:  # start_server gives up after 10 s
        meta["error"] = str(e)
        json.dump(meta, open(f"{out}/{name}.meta.json", "w"))
        print(f"  {name}: {e}", file=sys.stderr)
        return
    t0 = time.time()
    try:
        with open(f"{out}/{name}.json", "w") as rep, open(f"{out}/{name}.err", "w") as err:
            gen = subprocess.Popen(
                [load, "--scenario", "broadcast", "--mode", mode, "-n", str(n), "-k", str(messages),
                 "--addr", f"127.0.0.1:{port}", "--server-pid", str(server.pid),
                 "--drain-timeout", "20", "--json", "--no-progress"],
                stdin=subprocess.DEVNULL, stdout=rep, stderr=err)
            try:
                meta["exit"] = gen.wait(timeout=RUN_DEADLINE_S)
            except subprocess.TimeoutExpired:
                gen.kill()  # its children follow it (PR_SET_PDEATHSIG)
                gen.wait()
                meta["exit"] = "killed after deadline"
    finally:
        meta["elapsed_s"] = round(time.time() - t0, 1)
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        meta["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
        json.dump(meta, open(f"{out}/{name}.meta.json", "w"))
    print(f"  {name}: exit {meta['exit']}, {meta['elapsed_s']} s", file=sys.stderr)


if not table_only:
    json.dump({"ref": describe(ref), "head": describe(head), "load": describe(load),
               "modes": MODES, "messages": messages, "rounds": rounds, "workers": workers,
               "started": time.strftime("%Y-%m-%d %H:%M:%S")}, open(f"{out}/setup.json", "w"))
    for r in range(1, rounds + 1):
        for i, (mode, n) in enumerate(MODES.items()):
            order = ("ref", "head") if (r + i) % 2 else ("head", "ref")
            for side in order:
                run(f"{mode}-{side}-r{r}", side, mode, n)


# ---- the table -------------------------------------------------------------------------------
def load_json(name):
    return read_json(f"{out}/{name}")


setup = load_json("setup.json") or {}
modes = setup.get("modes", MODES)
rounds = setup.get("rounds", rounds)
print("## Server A/B: halley-load broadcast, ref vs head")
print()
print(f"- ref: {setup.get('ref', ref)}")
print(f"- head: {setup.get('head', head)}")
print(f"- halley-load (both sides): {setup.get('load', load)}")
print(f"- {os.cpu_count()} cores, `--workers {setup.get('workers', workers)}`, "
      f"{setup.get('messages', messages)} broadcasts per run, {rounds} round{'s' if rounds != 1 else ''}, started {setup.get('started', '?')}; "
      "a fresh server per run, ref and head alternated (order flipped every run pair)")
print()
print("| mode | N | ref CPU µs/delivery | head CPU µs/delivery | head/ref (median of per-round ratios) "
      "| per-round head/ref | ref fan-out mean ms | head fan-out mean ms | lost+dup ref / head | runs ok ref / head |")
print("|---|---|---|---|---|---|---|---|---|---|")
problems = []
for mode, n in modes.items():
    cpu = {"ref": {}, "head": {}}
    fan = {"ref": [], "head": []}
    bad = {"ref": 0, "head": 0}
    ok = {"ref": 0, "head": 0}
    for r in range(1, rounds + 1):
        for side in ("ref", "head"):
            name = f"{mode}-{side}-r{r}"
            rep, meta = load_json(name + ".json"), load_json(name + ".meta.json") or {}
            if meta.get("error"):
                problems.append(f"{name}: {meta['error']}")
            elif meta.get("exit") not in (0, None):
                problems.append(f"{name}: halley-load exit {meta['exit']} (see {name}.err)")
            if rep is None:
                problems.append(f"{name}: no report")
                continue
            for p in rep.get("problems", []):
                problems.append(f"{name}: {p}")
            bad[side] += rep.get("lost", 0) + rep.get("checks", {}).get("duplicates", 0)
            if not rep.get("delivered_unique"):
                continue
            ok[side] += 1
            c = (rep.get("server") or {}).get("cpu_us_per_delivery")
            if c is not None:
                cpu[side][r] = c
            f = (rep.get("fanout") or {}).get("mean_ms")
            if f is not None:
                fan[side].append(f)
    paired = [cpu["head"][r] / cpu["ref"][r] for r in range(1, rounds + 1)
              if r in cpu["head"] and r in cpu["ref"] and cpu["ref"][r]]
    print(f"| {mode} | {n:,} | {median_cell(list(cpu['ref'].values()))} | {median_cell(list(cpu['head'].values()))} "
          f"| {f'{statistics.median(paired):.3f}x' if paired else 'n/a'} "
          f"| {', '.join(f'{p:.3f}' for p in paired) or 'n/a'} "
          f"| {median_cell(fan['ref'])} | {median_cell(fan['head'])} | {bad['ref']} / {bad['head']} "
          f"| {ok['ref']}/{rounds} / {ok['head']}/{rounds} |")
print()
print("CPU is the server's own utime+stime over all its threads (halley-load, `--server-pid`) "
      "divided by deliveries; long-poll and the session modes include the re-poll a delivery causes.")
if problems:
    print()
    print("Problems reported:")
    for p in problems:
        print(f"- {p}")
PY
