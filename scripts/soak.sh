#!/bin/sh
# Soak run (issue 14; not CI): mixed churn on every transport for N minutes (default 30), with
# RSS and open fds every minute; see scripts/soak.py for what it does.
#   scripts/soak.sh [--minutes 30] [--binary target/release/halley] [--port 18480]
# Build first: cargo build --release --bin halley
set -eu
cd "$(dirname "$0")/.."
exec python3 scripts/soak.py "$@"
