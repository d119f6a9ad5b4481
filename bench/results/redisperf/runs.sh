#!/usr/bin/env bash
# Interleaved before/after throughput runs (same halley-load; HALLEY switches): /tmp/redisperf-before/halley
# is main (1b34eb0) built release, /tmp/redisperf-after/halley this branch; rate20k used -R 20000.
set -u
cd /work/wt-bench
for r in 1 2 3; do
  for side in before after; do
    HALLEY=/tmp/redisperf-$side/halley scripts/bench-cluster.sh -R 40000 -P 2 -o bench/results/redisperf/rate40k/$side-r$r throughput > /dev/null 2>/tmp/redisperf-bench/$side-r$r.log
    echo "$side r$r done $(uptime)"
  done
done
