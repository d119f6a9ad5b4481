#!/usr/bin/env bash
# The one test command (README, .ci/run): formatting, lints, and every test.
# Runs on a clean checkout on a fresh machine; installs what the tests need and fails loudly
# when something is missing. Nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
need() {
    command -v "$1" >/dev/null 2>&1 || { echo "test.sh: required tool '$1' is missing: $2" >&2; exit 1; }
}

need cargo "install a Rust toolchain (rustup) first"
cargo fmt --version >/dev/null 2>&1 || { echo "test.sh: rustfmt is missing (rustup component add rustfmt)" >&2; exit 1; }
cargo clippy --version >/dev/null 2>&1 || { echo "test.sh: clippy is missing (rustup component add clippy)" >&2; exit 1; }

step "cargo fmt --check"
cargo fmt --all -- --check

# incompatible_msrv (std items newer than each package's rust-version; clippy.toml extends it to
# test code) is on under -D warnings already; named so that it stays an error whatever else changes.
step "cargo clippy --all-targets -- -D warnings -D clippy::incompatible_msrv"
cargo clippy --workspace --all-targets -- -D warnings -D clippy::incompatible_msrv

need python3 "install python3 (scripts/msrv.py reads cargo metadata)"
step "rust-version covers every locked dependency's rust-version and edition (scripts/msrv.py)"
python3 scripts/msrv.py

need node "install Node.js 20 or newer with npm (the end-to-end tests drive real npm clients)"
need npm "install npm with Node.js"

# tests/tls.rs drives curl --cacert; tests/e2e/tls.test.mjs makes its test CA with openssl.
if ! command -v curl >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl openssl
fi
# tests/cluster.rs starts its own redis-server processes (and fails, never skips, without one).
if ! command -v redis-server >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
fi

# tests/nginx_proxy.rs runs deploy/nginx.conf in front of Halley.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx
fi

step "cargo test --workspace"
cargo test --workspace

# About a minute of fuzzing in all (9 targets), after building them with AddressSanitizer:
# a panic on the seed corpus or on what libFuzzer finds in that time fails the build.
step "fuzz targets, 7 s each (scripts/fuzz.sh: cargo-fuzz on the nightly toolchain)"
scripts/fuzz.sh 7

step "load generator smoke test (200 subscribers x 20 messages in every mode, zero loss)"
loadtest/smoke.sh

step "end-to-end tests (tests/e2e: real npm clients, Debian chromium via playwright-core)"
if [ ! -x /usr/bin/chromium ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi
bash tests/e2e/run.sh
