#!/bin/bash
# Gives a test host a way out to the Debian archive, for the tests that run debootstrap:
# a veth pair from this machine into the host's network namespace and NAT out of this
# machine's own route. Everything else a test does stays inside the host's namespace.
#   uplink.sh up HOSTPID INDEX     INDEX (0-255) picks 10.253.INDEX.0/30 and the names
#   uplink.sh down HOSTPID INDEX   removes the pair and its NAT table (idempotent)
set -euo pipefail

die() { echo "uplink: $*" >&2; exit 1; }
[[ $# -eq 3 ]] || die "usage: $0 up|down HOSTPID INDEX"
action=$1 pid=$2 index=$3
[[ $index =~ ^[0-9]+$ && $index -le 255 ]] || die "INDEX must be 0-255"
outer=bt-up$index
table=berth_test_up$index
net=10.253.$index

case $action in
up)
    # Configuring "the host" in this machine's own namespace would replace this
    # machine's default route: refuse unless HOSTPID really is elsewhere.
    theirs=$(readlink "/proc/$pid/ns/net") || die "no process $pid"
    [[ $theirs != "$(readlink /proc/self/ns/net)" ]] || die "process $pid shares this network namespace"
    ip link del "$outer" 2>/dev/null || true
    ip link add "$outer" type veth peer name uplink0 netns "/proc/$pid/ns/net"
    ip addr add "$net.1/30" dev "$outer"
    ip link set "$outer" up
    nsenter --net="/proc/$pid/ns/net" sh -ec "
        ip addr add $net.2/30 dev uplink0
        ip link set uplink0 up
        [ \"\$(readlink /proc/self/ns/net)\" = \"$theirs\" ] || exit 1
        ip route add default via $net.1"
    # Routing for the host's packets is a machine-wide switch; it is left on.
    sysctl -qw net.ipv4.ip_forward=1
    nft delete table ip "$table" 2>/dev/null || true
    nft -f - <<NFT
table ip $table {
    chain masq {
        type nat hook postrouting priority srcnat;
        ip saddr $net.0/30 oifname != "$outer" masquerade
    }
}
NFT
    ;;
down)
    ip link del "$outer" 2>/dev/null || true
    nft delete table ip "$table" 2>/dev/null || true
    ;;
*) die "unknown action $action" ;;
esac
