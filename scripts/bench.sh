#!/bin/bash
# Runs berth's benchmarks (benches/machines.rs) on a test host, with the peers they are
# measured against installed first: LXC (lxc-copy, lxc-start, lxc-attach, lxc-execute),
# systemd-nspawn, tar with zstd. BERTH_BENCH=exec|start|scale|network picks one part.
# Prints a Markdown report; docs/benchmarks.md keeps one with the machine and date.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
[[ $(id -u) -eq 0 ]] || { echo "bench.sh: run as root (test hosts need it)" >&2; exit 1; }
scripts/deps.sh --test
missing=()
for p in lxc zstd; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) == installed ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
cargo bench --bench machines
