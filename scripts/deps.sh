#!/bin/bash
# Installs the Debian packages berth needs at run and test time, only those missing:
#   systemd, dbus      what berth drives, and what the test hosts boot
#   systemd-container  systemd-machined, with which berth registers machines (machinectl)
#   util-linux         unshare, nsenter, mount (test hosts, machine setup)
#   busybox-static     the one-file userland of the busybox template
#   iproute2           veth pairs and bridges for machine networking
#   procps, kmod       ps/pkill and modprobe, expected by systemd units and the tests
#   debootstrap        the debootstrap template method
#   nftables           NAT and port forwards for machines (and for test hosts that must
#                      reach the archive)
#   dnsmasq-base       DHCP and DNS on berth's bridges (the binary only, as lxc-net uses it)
# With --test, also what only the tests need:
#   gcc, libc6-dev     the tests build a static system-call probe to run inside machines
#   g++                the fuzz targets link libFuzzer, which libfuzzer-sys builds from C++
#   polkitd            the authorization tests ask a real polkit about non-root callers
#                      (berth itself runs without it: then only root may change machines)
#   zstd, xz-utils     the archive tests check GNU tar reads and writes what berth does
#   python3            the archive tests write hostile tar files with Python's tarfile
#   btrfs-progs        the disk quota test makes a btrfs with quotas for machines
# Quick when everything is there: no apt-get update unless something must be installed.
set -euo pipefail

packages=(systemd systemd-container dbus util-linux busybox-static iproute2 procps kmod debootstrap nftables dnsmasq-base)
if [[ ${1:-} == --test ]]; then
    packages+=(gcc g++ libc6-dev polkitd zstd xz-utils python3 btrfs-progs)
fi

missing=()
for p in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
    echo "deps.sh: all present (${packages[*]})"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || { echo "deps.sh: missing ${missing[*]}; run as root to install them" >&2; exit 1; }
command -v apt-get >/dev/null || { echo "deps.sh: missing ${missing[*]} and no apt-get; install them by hand" >&2; exit 1; }

echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
