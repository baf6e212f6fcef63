//! A machine's network mode, seen from inside real (unprivileged, the default) machines:
//! `host` shares the test host's network namespace — its links, through its own /sys
//! too, with the host's net sysctls read-only — and still gets its own cgroup view;
//! `none` has a namespace of its own with only a loopback, up, and its own writable net
//! sysctls.
//!
//! Each host gets a link of its own first (a bridge: this kernel may lack the dummy
//! driver) that a machine sees only when it shares the host's namespace.

mod common;

use common::{CgroupMode, TestHost, boot_with_berth};

/// A link made in the test host, in no machine's own namespace.
const HOST_LINK: &str = "berthtestbr";

fn add_host_link(host: &TestHost) {
    host.ok(&["ip", "link", "add", HOST_LINK, "type", "bridge"]);
}

/// The interface names /proc/net/dev lists, as the machine's processes see it.
fn proc_net_links(host: &TestHost, name: &str) -> Vec<String> {
    host.shell_ok(name, "cat /proc/net/dev")
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
        .collect()
}

fn sys_links(host: &TestHost, name: &str) -> Vec<String> {
    host.shell_ok(name, "ls /sys/class/net")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// One line of /proc/PID/mountinfo: where, its per-mount options, its file system type.
#[derive(Debug, PartialEq)]
struct Mount {
    target: String,
    options: String,
    fstype: String,
}

impl Mount {
    fn parse(line: &str) -> Option<Mount> {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        Some(Mount {
            target: fields.get(4)?.to_string(),
            options: fields.get(5)?.to_string(),
            fstype: fields.get(sep + 1)?.to_string(),
        })
    }

    fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// The mount in view at `target`: the last one mounted there.
fn top_mount(mountinfo: &str, target: &str) -> Option<Mount> {
    mountinfo
        .lines()
        .rev()
        .filter_map(Mount::parse)
        .find(|m| m.target == target)
}

/// The machine runs in a user namespace of its own (the harder case for /sys).
fn assert_unprivileged(host: &TestHost, name: &str) {
    let map = host.shell_ok(name, "cat /proc/self/uid_map");
    let fields: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "{map}");
    assert_ne!(
        fields[1], "0",
        "machine {name} should be unprivileged: {map}"
    );
}

fn host_mode(mode: CgroupMode, test: &str) {
    let Some(host) = boot_with_berth(mode, test) else {
        return;
    };
    add_host_link(&host);
    host.okw("berthctl create h --template busybox --network host");
    host.okw("berthctl start h");
    assert_unprivileged(&host, "h");

    let links = proc_net_links(&host, "h");
    assert!(links.iter().any(|l| l == HOST_LINK), "{links:?}");
    // /sys is the host's (bound, as a user namespace may not mount a sysfs for a network
    // namespace it does not own), so it names the host's links as well.
    let links = sys_links(&host, "h");
    assert!(links.iter().any(|l| l == HOST_LINK), "{links:?}");
    let mounts = host.shell_ok("h", "cat /proc/self/mountinfo");
    let sys = top_mount(&mounts, "/sys").unwrap_or_else(|| panic!("no /sys: {mounts}"));
    assert_eq!(sys.fstype, "sysfs", "{mounts}");
    assert!(sys.read_only(), "/sys is read-only: {mounts}");
    // Submounts the host has below /sys come with the bind: read-only as well. (Below
    // /sys/fs/cgroup are the machine's own cgroup mounts, some writable on purpose.)
    for m in mounts.lines().filter_map(Mount::parse) {
        if m.target.starts_with("/sys/") && !m.target.starts_with("/sys/fs/cgroup") {
            assert!(m.read_only(), "{m:?} in {mounts}");
        }
    }

    // The host's net sysctls are not the machine's to change: no writable /proc/sys/net
    // over the read-only /proc/sys, as a machine with its own namespace gets.
    let before = host.okw("cat /proc/sys/net/ipv4/ip_forward");
    let out = host.shell("h", "echo 1 > /proc/sys/net/ipv4/ip_forward");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        top_mount(&mounts, "/proc/sys").unwrap().read_only(),
        "{mounts}"
    );
    assert_eq!(top_mount(&mounts, "/proc/sys/net"), None, "{mounts}");
    assert_eq!(host.okw("cat /proc/sys/net/ipv4/ip_forward"), before);

    // What setup_root puts on top of /sys works on the host's too: the machine's own
    // cgroup view and the firmware mask.
    let cgroup = host.shell_ok("h", "cat /proc/self/cgroup");
    assert!(cgroup.lines().any(|l| l == "0::/"), "{cgroup}");
    let want = match mode {
        CgroupMode::Unified => "cgroup2",
        _ => "tmpfs",
    };
    let cgroups = top_mount(&mounts, "/sys/fs/cgroup").unwrap();
    assert_eq!(cgroups.fstype, want, "{mounts}");
    if host.shell("h", "test -d /sys/firmware").status.success() {
        let firmware = top_mount(&mounts, "/sys/firmware").unwrap();
        assert_eq!(firmware.fstype, "tmpfs", "{mounts}");
    }

    host.okw("berthctl stop h");
    host.okw("berthctl remove h");
    // The host's network is as it was: the machine's stop took no link with it.
    assert!(host.okw("ip -o link show").contains(HOST_LINK));
}

#[test]
fn host_mode_shares_the_hosts_network_unified() {
    host_mode(
        CgroupMode::Unified,
        "host_mode_shares_the_hosts_network_unified",
    );
}

#[test]
fn host_mode_shares_the_hosts_network_hybrid() {
    host_mode(
        CgroupMode::Hybrid,
        "host_mode_shares_the_hosts_network_hybrid",
    );
}

#[test]
fn none_mode_has_its_own_loopback_up() {
    let Some(host) = boot_with_berth(CgroupMode::Unified, "none_mode_has_its_own_loopback_up")
    else {
        return;
    };
    add_host_link(&host);
    host.okw("berthctl create n --template busybox --network none");
    host.okw("berthctl start n");
    assert_unprivileged(&host, "n");

    assert_eq!(proc_net_links(&host, "n"), ["lo"]);
    assert_eq!(sys_links(&host, "n"), ["lo"]);
    let flags = host.shell_ok("n", "cat /sys/class/net/lo/flags");
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("lo's flags {flags:?}: {e}"));
    assert_eq!(flags & libc::IFF_UP as u32, libc::IFF_UP as u32, "lo is up");

    // Its net sysctls are its own namespace's: writable, and the host's stay as they were.
    let before = host.okw("cat /proc/sys/net/ipv4/ip_forward");
    host.shell_ok("n", "echo 1 > /proc/sys/net/ipv4/ip_forward");
    assert_eq!(
        host.shell_ok("n", "cat /proc/sys/net/ipv4/ip_forward"),
        "1\n"
    );
    assert_eq!(host.okw("cat /proc/sys/net/ipv4/ip_forward"), before);

    host.okw("berthctl stop n");
}
