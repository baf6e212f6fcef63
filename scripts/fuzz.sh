#!/bin/bash
# Fuzzes berth's parsers: each target in fuzz/ for SECONDS (default 20), starting from
# its seed corpus in fuzz/corpus/TARGET; fails if any target crashes. CI runs it from
# test.sh for 15 seconds a target; a longer run is `scripts/fuzz.sh 600`.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Works on the stable toolchain: cargo-fuzz's default AddressSanitizer needs nightly
# (-Zsanitizer), so the targets are built with --sanitizer none, which only uses stable
# flags (SanitizerCoverage through -Cpasses/-Cllvm-args); berth is safe Rust, and what
# the targets look for are panics, overflows (debug assertions are on) and broken
# properties. Installs cargo-fuzz if missing; libFuzzer is C++, so building it needs
# g++ (scripts/deps.sh --test). Inputs the fuzzer finds go to fuzz/target/corpus
# (not committed); a crashing input to fuzz/artifacts/TARGET/, and is replayed with
#   cd fuzz && cargo fuzz run --sanitizer none TARGET artifacts/TARGET/crash-...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
fuzz=$PWD

seconds=${1:-20}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2; }
shift $(($# > 0 ? 1 : 0))
targets=("$@")
((${#targets[@]})) || targets=(names limits options config users archive)

command -v cargo >/dev/null || { echo "fuzz.sh: cargo not found; install the Rust toolchain" >&2; exit 1; }
command -v c++ >/dev/null || { echo "fuzz.sh: no C++ compiler to build libFuzzer; install g++ (scripts/deps.sh --test)" >&2; exit 1; }
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

# cargo fuzz has no --locked: refuse a Cargo.lock that would have to change first.
cargo metadata --locked --format-version 1 >/dev/null
flags=(--sanitizer none --release --debug-assertions)
cargo fuzz build "${flags[@]}"

failed=()
for target in "${targets[@]}"; do
    echo "fuzz.sh: $target for ${seconds}s"
    mkdir -p "target/corpus/$target" "artifacts/$target"
    # New inputs go to the first directory, so the committed seeds stay as they are.
    if ! cargo fuzz run "${flags[@]}" "$target" "target/corpus/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -dict="$fuzz/dict/$target.dict" \
        -print_final_stats=1; then
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz.sh: crashed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: no crash in ${targets[*]} (${seconds}s each)"
