#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for a bounded time:
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Default 60 s per target, every target. scripts/test.sh runs it with a few seconds per target,
# so a panic on the seed corpus or on what the fuzzer finds in that time fails the build.
#
# Needs the nightly toolchain (libFuzzer's instrumentation is nightly-only) and cargo-fuzz,
# which it installs from crates.io when missing. Each target starts from its committed seeds
# (fuzz/corpus/<target>, read-only) plus what earlier local runs found (fuzz/work/<target>,
# not committed). A crash, a timeout (10 s on one input) or an out-of-memory (2 GB) fails the
# run; the input is saved under fuzz/artifacts/<target>/ and the command to replay it is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
case "$seconds" in
    '' | *[!0-9]*) echo "fuzz.sh: SECONDS_PER_TARGET must be a whole number, not '$seconds'" >&2; exit 2 ;;
esac

step() { printf '\n==> %s\n' "$*"; }
fail() { echo "fuzz.sh: $*" >&2; exit 1; }

command -v cargo >/dev/null 2>&1 || fail "cargo is missing: install a Rust toolchain (rustup) first"
cargo +nightly --version >/dev/null 2>&1 \
    || fail "the nightly toolchain is missing (rustup toolchain install nightly): libFuzzer needs it"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    step "installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked || fail "could not install cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo +nightly fuzz --version >/dev/null 2>&1 || fail "cargo-fuzz installed but 'cargo +nightly fuzz' does not run"
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi
[ ${#targets[@]} -gt 0 ] || fail "no fuzz targets found in fuzz/"

step "fuzz/ is formatted (cargo fmt --check)"
(cd fuzz && cargo fmt --check)

# One build for every target: release, debug assertions and overflow checks on, AddressSanitizer.
step "building ${#targets[@]} fuzz targets (cargo +nightly fuzz build)"
build_start=$SECONDS
(cd fuzz && cargo +nightly fuzz build)
echo "built in $((SECONDS - build_start)) s"

dict_for() {
    case "$1" in
        http_head | chunked) echo fuzz/dict/http.dict ;;
        bayeux | commands | json_depth) echo fuzz/dict/json.dict ;;
        pushlet) echo fuzz/dict/pushlet.dict ;;
    esac
}

bin_dir=fuzz/target/x86_64-unknown-linux-gnu/release
failed=()
for target in "${targets[@]}"; do
    step "fuzzing $target for ${seconds} s"
    [ -d "fuzz/corpus/$target" ] || fail "no seed corpus fuzz/corpus/$target"
    mkdir -p "fuzz/work/$target" "fuzz/artifacts/$target"
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="fuzz/artifacts/$target/")
    dict=$(dict_for "$target")
    [ -z "$dict" ] || args+=(-dict="$dict")
    log="fuzz/work/$target.log"
    started=$(date +%s)
    if "$bin_dir/$target" "${args[@]}" "fuzz/work/$target" "fuzz/corpus/$target" >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
        echo "ok: ${runs:-?} inputs, ${cov:-cov: ?}, $(($(date +%s) - started)) s"
    else
        failed+=("$target")
        echo "FAILED: $target (full log: $log)" >&2
        # The panic message (or libFuzzer's reason: timeout, out-of-memory) without the stack.
        grep -A3 -E "panicked at|^==[0-9]+== ERROR|^SUMMARY" "$log" | grep -v -E '^ +(#|[0-9]+:|at )' | head -20 >&2
        for input in $(find "fuzz/artifacts/$target" -type f -newermt "@$started" 2>/dev/null); do
            echo "crashing input: $input" >&2
            echo "replay it with: (cd fuzz && cargo +nightly fuzz run $target ${input#fuzz/})" >&2
        done
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    fail "${#failed[@]} fuzz target(s) failed: ${failed[*]}"
fi
step "every fuzz target ran ${seconds} s without a crash"
