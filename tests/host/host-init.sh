#!/bin/bash
# PID 1 of a test host until it execs systemd. Started by boot.sh inside fresh pid, mount,
# cgroup, uts, ipc and net namespaces:  host-init.sh MODE STATEDIR
# Builds an overlay root (lowerdir=/, upper on a tmpfs), the API file systems systemd
# expects of a container, installs berth into it and execs systemd there.
set -euo pipefail

die() { echo "host-init: $*" >&2; exit 1; }

[[ $# -eq 2 ]] || die "usage: $0 hybrid|unified STATEDIR (run by boot.sh, not by hand)"
mode=$1 statedir=$2
[[ $$ -eq 1 ]] || die "must be PID 1 of a new pid namespace (run tests/host/boot.sh instead)"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Nothing mounted from here on may leak to the real machine.
mount --make-rprivate /

# All writes of the host land on this tmpfs and vanish with the mount namespace.
fs=$statedir/fs
mkdir -p "$fs"
mount -t tmpfs -o mode=755 berth-test-fs "$fs"
mkdir "$fs/upper" "$fs/work" "$fs/root" "$fs/proc"
mount -t overlay berth-test-root -o "lowerdir=/,upperdir=$fs/upper,workdir=$fs/work" "$fs/root"
root=$fs/root

# A /dev of its own (as systemd-nspawn builds one) rather than a bind of the real one:
# systemd would create /dev/hugepages and /dev/mqueue on the real devtmpfs, and journald
# would read and write the real kernel log through /dev/kmsg.
mount -t tmpfs -o mode=755,nosuid,size=4m berth-test-dev "$root/dev"
for node in null zero full random urandom tty fuse net/tun kvm loop-control; do
    if [[ -e /dev/$node ]]; then
        mkdir -p "$(dirname "$root/dev/$node")"
        cp -a "/dev/$node" "$root/dev/$node"
    fi
done
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mkdir -m 755 "$root/dev/pts"
mkdir "$root/dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
# systemd writes boot status to /dev/console: a file in STATEDIR, for post-mortems.
touch "$statedir/console" "$root/dev/console"
mount --bind "$statedir/console" "$root/dev/console"

mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
# Kernel-global sysctls stay read-only; net ones are per network namespace, so give those
# back writable from a second proc instance (a read-only bind can't be undone below it).
mount --bind "$root/proc/sys" "$root/proc/sys"
mount -o remount,bind,ro "$root/proc/sys"
mount -t proc -o nosuid,nodev,noexec proc "$fs/proc"
mount --bind "$fs/proc/sys/net" "$root/proc/sys/net"
umount "$fs/proc"
# The kernel lets a user namespace (berth's unprivileged machines) mount a new proc only
# where some proc is mounted with nothing hidden under it; the one above hides /proc/sys.
# A real host's /proc is like that; give this host one too, where nothing looks.
mkdir -p "$root/.host-proc"
mount -t proc -o nosuid,nodev,noexec proc "$root/.host-proc"

mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"

# Mounted inside the cgroup namespace, each hierarchy shows only the host's own subtree.
cgroot=$root/sys/fs/cgroup
case $mode in
hybrid)
    mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup-root "$cgroot"
    while read -r fstype mnt opts; do
        [[ $mnt == /sys/fs/cgroup/* ]] || die "cgroup hierarchy outside /sys/fs/cgroup: $mnt"
        dir=$cgroot/${mnt#/sys/fs/cgroup/}
        mkdir -p "$dir"
        if [[ $fstype == cgroup2 ]]; then
            mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$dir"
        else
            # Keep the options naming the hierarchy (controllers, name=, flags); rw/ro is
            # ours to choose and release_agent belongs to the real machine.
            keep=() named=0 ctrl=0
            IFS=, read -ra all <<<"$opts"
            for o in "${all[@]}"; do
                case $o in
                rw | ro | release_agent=*) ;;
                name=*) named=1; keep+=("$o") ;;
                noprefix | xattr | clone_children | cpuset_v2_mode) keep+=("$o") ;;
                *) ctrl=1; keep+=("$o") ;;
                esac
            done
            # A named hierarchy without controllers must say "none", or the kernel would
            # look for one with every controller.
            if ((named && !ctrl)); then keep=(none "${keep[@]}"); fi
            mount -t cgroup -o "nosuid,nodev,noexec,$(IFS=,; echo "${keep[*]}")" cgroup "$dir"
        fi
    done <"$statedir/hierarchies"
    # Co-mounted controllers usually come with symlinks (cpu -> cpu,cpuacct); keep them.
    for l in /sys/fs/cgroup/*; do
        if [[ -L $l ]]; then cp -P "$l" "$cgroot/"; fi
    done
    ;;
unified)
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$cgroot"
    ;;
esac

mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$root/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"

if [[ -n ${BERTH_HOST_BINDS:-} ]]; then
    IFS=: read -ra binds <<<"$BERTH_HOST_BINDS"
    for b in "${binds[@]}"; do
        [[ $b == /* && -d $b ]] || die "BERTH_HOST_BINDS entry '$b' is not an absolute directory"
        mkdir -p "$root$b"
        mount --rbind "$b" "$root$b"
    done
fi

# Units that would change kernel-global state (binfmt, sysctl, modules, udev) or that
# have no business in a container. modprobe@.service too: it loads kernel modules.
for unit in systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
    systemd-sysctl.service systemd-modules-load.service modprobe@.service systemd-udevd.service \
    systemd-udev-trigger.service getty.target console-getty.service \
    systemd-networkd.service systemd-timesyncd.service systemd-logind.service; do
    ln -sfn /dev/null "$root/etc/systemd/system/$unit"
done

# The machine's own enabled services and periodic jobs (databases, apt timers, ...) only
# slow the boot and make it depend on what happens to be installed; tests start what they
# need. systemd's and dbus's own units are enabled under /lib and stay.
rm -f "$root"/etc/systemd/system/{multi-user,graphical}.target.wants/*.service \
    "$root"/etc/systemd/system/timers.target.wants/*.timer

hostname berth-test
echo berth-test >"$root/etc/hostname"
# A machine id of its own, so concurrent hosts don't share journal directories.
tr -d - </proc/sys/kernel/random/uuid >"$root/etc/machine-id"

bin_dir=${BERTH_BIN_DIR:-}
if [[ -n $bin_dir && -x $bin_dir/berthd && -x $bin_dir/berthctl ]]; then
    "$repo/scripts/install.sh" "$root" "$bin_dir"
else
    echo "host-init: BERTH_BIN_DIR='$bin_dir' has no berthd and berthctl; berth not installed" >&2
fi

cd "$root"
mkdir -p .berth-oldroot
pivot_root . .berth-oldroot
cd /
umount -l /.berth-oldroot
rmdir /.berth-oldroot

# The one safety check that matters: systemd must only ever run on the throwaway overlay.
[[ $(stat -f -c %T /) == overlayfs ]] || die "refusing to exec systemd: / is not the overlay"

exec env -i container=berth-test /lib/systemd/systemd
