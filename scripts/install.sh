#!/bin/bash
# Installs berth into DESTDIR (use / for a real install; the test harness passes a test
# host's root):  scripts/install.sh DESTDIR BINDIR
# BINDIR holds built berthd and berthctl (e.g. target/release). The unit, D-Bus policy,
# activation file and interface XML come from this repository; those not written yet are
# skipped with a note, so the script works while the project grows.
set -euo pipefail

die() { echo "install.sh: $*" >&2; exit 1; }

[[ $# -eq 2 ]] || { echo "usage: $0 DESTDIR BINDIR" >&2; exit 2; }
destdir=$1 bindir=$2
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

[[ -d $destdir ]] || die "DESTDIR '$destdir' is not a directory"
for b in berthd berthctl; do
    [[ -f $bindir/$b && -x $bindir/$b ]] || die "$bindir/$b missing or not executable; build first (cargo build --release)"
done

# DESTDIR=/ must not turn into //usr/...; harmless, but it reads badly in messages.
dest=${destdir%/}

# install(1) with a temporary name and mv, so a running berthd is replaced atomically
# rather than overwritten in place ("Text file busy").
put() { # mode source target-directory
    local mode=$1 src=$2 dir=$3 base
    base=$(basename "$src")
    install -d -m 755 "$dir"
    install -m "$mode" "$src" "$dir/.$base.new"
    mv -f "$dir/.$base.new" "$dir/$base"
    echo "installed $dir/$base"
}
optional() { # mode source target-directory
    if [[ -f $2 ]]; then put "$@"; else echo "skipped ${2#"$repo"/} (not in the repository yet)"; fi
}

put 755 "$bindir/berthd" "$dest/usr/local/bin"
put 755 "$bindir/berthctl" "$dest/usr/local/bin"
optional 644 "$repo/units/berthd.service" "$dest/etc/systemd/system"
optional 644 "$repo/dbus/org.berth.Berth1.conf" "$dest/usr/share/dbus-1/system.d"
optional 644 "$repo/dbus/org.berth.Berth1.service" "$dest/usr/share/dbus-1/system-services"

shopt -s nullglob
xml=("$repo"/dbus/org.berth.Berth1.*.xml)
if ((${#xml[@]})); then
    for f in "${xml[@]}"; do put 644 "$f" "$dest/usr/share/dbus-1/interfaces"; done
else
    echo "skipped dbus/org.berth.Berth1.*.xml (not in the repository yet)"
fi
