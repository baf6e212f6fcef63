#!/bin/bash
# berth doing its main job, on a fresh Debian machine, as root: build it, bring up a
# systemd host if this machine does not boot one (a throwaway host in namespaces, as the
# tests use), create and start a busybox machine with limits (unprivileged, as every
# machine is by default), and show it.
#
#   scripts/demo.sh            BERTH_DEMO_KEEP=1 keeps the throwaway host running
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

[[ $(id -u) -eq 0 ]] || { echo "demo.sh: run as root" >&2; exit 1; }
command -v cargo >/dev/null || { echo "demo.sh: cargo not found; install the Rust toolchain" >&2; exit 1; }

scripts/deps.sh
echo "==> building berth"
cargo build --release --locked
bin=$repo/target/release

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

# Runs the demo with "$@" as the prefix that reaches the systemd host.
demo() {
    local in=("$@")
    "${in[@]}" berthctl remove demo --force >/dev/null 2>&1 || true
    say berthctl create demo --template busybox --network bridge --memory 64M --cpu-shares 256 --tasks-max 32
    "${in[@]}" berthctl create demo --template busybox --network bridge --memory 64M --cpu-shares 256 --tasks-max 32
    say berthctl start demo
    "${in[@]}" berthctl start demo
    say berthctl list
    "${in[@]}" berthctl list
    say berthctl status demo
    "${in[@]}" berthctl status demo
    say berthctl exec demo -- sh -c 'hostname; ip -4 -o addr show eth0; cat /proc/self/uid_map; ps; cat /proc/1/cgroup'
    "${in[@]}" berthctl exec demo -- sh -c 'hostname; ip -4 -o addr show eth0; cat /proc/self/uid_map; ps; cat /proc/1/cgroup'
    say systemctl status machine-demo.scope
    "${in[@]}" systemctl status machine-demo.scope --no-pager || true
    say machinectl list
    "${in[@]}" machinectl list --no-pager || true
    say busctl call org.berth.Berth1 /org/berth/Berth1/Manager org.berth.Berth1.Manager ListMachines
    "${in[@]}" busctl call org.berth.Berth1 /org/berth/Berth1/Manager org.berth.Berth1.Manager ListMachines
}

if [[ $(cat /proc/1/comm) == systemd ]]; then
    echo "==> installing berth into this systemd machine"
    scripts/install.sh / "$bin"
    systemctl daemon-reload
    systemctl reload dbus || true
    systemctl restart berthd
    demo env
    echo
    echo "The machine 'demo' keeps running; remove it with: berthctl remove demo --force"
    exit 0
fi

echo "==> PID 1 is not systemd: booting a throwaway systemd host in namespaces"
state=$(mktemp -d /tmp/berth-demo.XXXXXX)
BERTH_BIN_DIR=$bin setsid tests/host/boot.sh hybrid "$state" >"$state/boot.log" 2>&1 &
boot_pid=$!
host_pid=
teardown() {
    if [[ -n ${BERTH_DEMO_KEEP:-} && -n $host_pid ]]; then
        echo "host kept: nsenter -t $host_pid -a bash   (state in $state)"
        return
    fi
    [[ -n $host_pid ]] && kill -9 "$host_pid" 2>/dev/null || true
    wait "$boot_pid" 2>/dev/null || true
    if [[ -f $state/cgroup && -f $state/hierarchies ]]; then
        local name mnt
        name=$(cat "$state/cgroup")
        while read -r _ mnt _; do
            for _try in 1 2 3 4 5 6 7 8 9 10; do
                [[ -d $mnt/$name ]] || break
                find "$mnt/$name" -depth -type d -exec rmdir {} + 2>/dev/null || sleep 0.2
            done
        done <"$state/hierarchies"
    fi
    rm -rf "$state"
}
trap teardown EXIT
# boot.sh becomes unshare, whose one child ends up exec'ing systemd: that is the host.
host_pid=
for _ in $(seq 300); do
    child=$(cat /proc/"$boot_pid"/task/*/children 2>/dev/null | awk '{print $1}')
    if [[ -n $child && $(readlink /proc/"$child"/exe 2>/dev/null) == */systemd ]]; then
        host_pid=$child
        break
    fi
    sleep 0.1
done
[[ -n $host_pid ]] || { cat "$state/boot.log" >&2; echo "demo.sh: the host did not start" >&2; exit 1; }
in_host=(nsenter -t "$host_pid" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
state_now=
for _ in $(seq 600); do
    state_now=$("${in_host[@]}" systemctl is-system-running 2>/dev/null || true)
    [[ $state_now == running || $state_now == degraded ]] && break
    sleep 0.1
done
[[ $state_now == running || $state_now == degraded ]] \
    || { echo "demo.sh: the host's systemd did not finish booting ($state_now)" >&2; exit 1; }
demo "${in_host[@]}"
say berthctl stop demo '&&' berthctl remove demo
"${in_host[@]}" berthctl stop demo
"${in_host[@]}" berthctl remove demo
"${in_host[@]}" berthctl list
