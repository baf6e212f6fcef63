#!/bin/bash
# The long soak: tests/soak.rs with more cycles and clients than CI gives it (CI runs
# 200 cycles on 8 clients as part of scripts/test.sh). Parallel clients create, start,
# exec in, stop and remove machines on one test host; afterwards nothing of them may
# remain (units, machined entries, cgroups, processes, mounts, files, helpers, berthd's
# descriptors) and berthd's VmRSS may have grown by less than 10 %. The figures are in
# the output ("soak: ..."). Run as root with the Rust toolchain, like scripts/test.sh.
#
#   scripts/soak.sh [CYCLES [CLIENTS]]     default 2000 cycles on 16 clients
#   BERTH_SOAK_WARMUP=N                    cycles before berthd is measured (default 20)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cycles=${1:-2000}
clients=${2:-16}
[[ $cycles =~ ^[0-9]+$ && $clients =~ ^[1-9][0-9]*$ ]] || {
    echo "usage: scripts/soak.sh [CYCLES [CLIENTS]]" >&2
    exit 2
}
[[ $(id -u) -eq 0 ]] || { echo "soak.sh: run as root (the soak boots a systemd host)" >&2; exit 1; }
command -v cargo >/dev/null || { echo "soak.sh: cargo not found; install the Rust toolchain" >&2; exit 1; }
cargo nextest --version >/dev/null 2>&1 || { echo "soak.sh: needs cargo-nextest (scripts/test.sh installs it)" >&2; exit 1; }

echo "==> soak: $cycles cycles on $clients clients"
BERTH_SOAK_CYCLES=$cycles BERTH_SOAK_CLIENTS=$clients \
    exec cargo nextest run --locked --profile soak --test soak --no-capture
