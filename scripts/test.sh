#!/bin/bash
# The whole test suite, as CI runs it: formatting, lints, unit tests and the
# integration tests that boot real systemd hosts (hybrid and unified), then a short
# fuzzing run of the parsers (scripts/fuzz.sh, 15 s a target). Run as root on
# a fresh Debian machine with the Rust toolchain; it installs the Debian packages it
# needs itself.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[[ $(id -u) -eq 0 ]] || { echo "test.sh: run as root (the tests boot systemd hosts)" >&2; exit 1; }
command -v cargo >/dev/null || { echo "test.sh: cargo not found; install the Rust toolchain" >&2; exit 1; }

scripts/deps.sh --test
if ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo nextest run --locked --no-fail-fast "$@"
scripts/fuzz.sh 15
