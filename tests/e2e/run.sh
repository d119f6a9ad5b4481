#!/usr/bin/env bash
# End-to-end tests: Halley against real third-party clients (the npm `eventsource` and `ws`
# packages) and a real browser (Debian's chromium driven by playwright-core).
#
# Builds the debug server, installs the locked npm packages, and runs every *.test.mjs with
# node's test runner, one file at a time. A missing tool is an error with the command that
# installs it; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")"

fail() {
    echo "tests/e2e/run.sh: $*" >&2
    exit 1
}

command -v node >/dev/null 2>&1 || fail "node is missing: install Node.js 20 or newer with npm"
command -v npm >/dev/null 2>&1 || fail "npm is missing: install it with Node.js (Debian: apt-get install -y --no-install-recommends npm)"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || fail "Node.js $(node --version) is too old: the tests need Node.js 20 or newer"
[ -x /usr/bin/chromium ] || fail "/usr/bin/chromium is missing: apt-get update && apt-get install -y --no-install-recommends chromium"

echo "==> cargo build -p halley (debug)"
cargo build -p halley

echo "==> npm ci (tests/e2e)"
npm ci --no-audit --no-fund

echo "==> node --test (tests/e2e)"
node --test --test-concurrency=1 ./*.test.mjs

# halley.js, the browser client (clients/js): its own node tests (pure logic, and long-poll
# and streaming against the binary built above). Its browser tests are client-*.test.mjs above.
echo "==> node --test (clients/js)"
(cd ../../clients/js && node --test --test-concurrency=1 test/)
