#!/bin/bash
# Boots a throwaway systemd "test host" in fresh namespaces on top of this machine: a
# fresh cgroup in every hierarchy, an overlay of / (booting on the real / would let
# systemd-tmpfiles and sysusers change this machine), units that touch kernel-global
# state masked, then systemd as PID 1.
#
#   tests/host/boot.sh MODE STATEDIR        MODE: hybrid | unified
#
# This process ends up (via exec) as the `unshare` process; its only child is the host's
# PID 1 (systemd). Kill that child with SIGKILL to tear the host down, then rmdir the
# cgroup named in STATEDIR/cgroup in every hierarchy (the Rust harness in
# tests/common/host.rs and cgroups.rs does both).
#
# Environment:
#   BERTH_BIN_DIR      directory holding built berthd and berthctl; when set and both are
#                      there, berth is installed into the host with scripts/install.sh
#   BERTH_TEST_CGROUP  cgroup name to use; the harness passes berth-test-<its pid>-<n>-<its
#                      start time> so that leftovers can be traced to a dead owner. The
#                      harness's cleanup takes names not in that form for abandoned.
#   BERTH_HOST_BINDS   colon-separated absolute directories to bind live into the host at the
#                      same path (the overlay shows a stale view of files changed after boot)
#
# Never run the host's systemd without the overlay: it would empty the real /tmp and
# edit the real /etc/passwd. host-init.sh refuses to exec systemd unless / is the overlay.
set -euo pipefail

die() { echo "boot.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 hybrid|unified STATEDIR" >&2; exit 2; }

[[ $# -eq 2 ]] || usage
mode=$1
case $mode in hybrid|unified) ;; *) usage ;; esac
[[ $(id -u) -eq 0 ]] || die "must run as root (it creates cgroups and mounts)"
[[ -x /lib/systemd/systemd ]] || die "/lib/systemd/systemd not found; run scripts/deps.sh"
command -v unshare >/dev/null || die "unshare not found; run scripts/deps.sh"

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$2"
statedir=$(cd "$2" && pwd)

# Owner pid plus its start time (field 22 of /proc/PID/stat, after the parenthesised
# command name) tell the harness's cleanup whether the owner still lives, even if the pid
# has been reused. Run by hand, the owner is this process, which becomes unshare.
stat=$(</proc/$$/stat)
read -ra fields <<<"${stat##*) }"
name=${BERTH_TEST_CGROUP:-berth-test-$$-0-${fields[19]}}
[[ $name =~ ^berth-test-[A-Za-z0-9_.-]+$ ]] \
    || die "BERTH_TEST_CGROUP='$name' must match berth-test-[A-Za-z0-9_.-]+"

# Every cgroup hierarchy mounted here: "fstype mountpoint superoptions" per line. Taken
# from mountinfo rather than hard-coded because machines differ (cpu and cpuacct are
# separate mounts on some, co-mounted on others).
awk '{
        for (i = 7; i <= NF && $i != "-"; i++) ;
        fstype = $(i + 1); superopts = $(i + 3)
        if ((fstype == "cgroup" || fstype == "cgroup2") && !seen[$5]++)
            print fstype, $5, superopts
     }' /proc/self/mountinfo >"$statedir/hierarchies"
[[ -s $statedir/hierarchies ]] || die "no cgroup hierarchy is mounted on this machine"

case $mode in
hybrid)
    grep -q '^cgroup .*name=systemd' "$statedir/hierarchies" \
        || die "hybrid mode needs the v1 name=systemd hierarchy; this machine has: $(cut -d' ' -f2 "$statedir/hierarchies" | tr '\n' ' ')"
    ;;
unified)
    grep -q '^cgroup2 ' "$statedir/hierarchies" \
        || die "unified mode needs a cgroup2 hierarchy; none is mounted"
    ;;
esac

# Written before any cgroup exists so that a crash in between still leaves a trace the
# harness can clean up.
echo "$name" >"$statedir/cgroup"

# The cgroup namespace that unshare creates is rooted at the cgroup this process is in, in
# each hierarchy; joining a fresh one everywhere gives the host a tree of its own that can
# be removed as a whole afterwards.
while read -r fstype mnt _; do
    cg=$mnt/$name
    mkdir -p "$cg"
    if [[ $fstype == cgroup && -e $mnt/cpuset.cpus ]]; then
        # A new v1 cpuset has no CPUs or memory nodes and refuses tasks until given some.
        cat "$mnt/cpuset.cpus" >"$cg/cpuset.cpus"
        cat "$mnt/cpuset.mems" >"$cg/cpuset.mems"
    elif [[ $fstype == cgroup && -e $mnt/cpus ]]; then
        cat "$mnt/cpus" >"$cg/cpus"      # cpuset mounted with noprefix
        cat "$mnt/mems" >"$cg/mems"
    fi
    echo $$ >"$cg/cgroup.procs" || die "cannot move into $cg"
done <"$statedir/hierarchies"

# --kill-child: if this unshare process is killed (say, because the test process died and
# the harness set PR_SET_PDEATHSIG), the host goes with it.
exec unshare --pid --mount --cgroup --uts --ipc --net --fork --kill-child=SIGKILL \
    -- /bin/bash "$here/host-init.sh" "$mode" "$statedir"
