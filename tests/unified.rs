//! berth on a unified (cgroup v2 only) systemd host: the same command gets the modern
//! property names, and AllowedCPUs is accepted.

mod common;

use common::{CgroupMode, TestHost};
use std::path::Path;

#[test]
fn limits_map_to_unified_properties() {
    if !common::is_root() {
        eprintln!("skipped: integration tests boot a systemd host and need root");
        return;
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_berthd")).parent().unwrap();
    let host = TestHost::boot(CgroupMode::Unified, bin_dir).expect("test host boots");
    host.ok(&[
        "berthctl",
        "create",
        "box",
        "--template",
        "busybox",
        "--memory",
        "64M",
        "--cpu-shares",
        "256",
        "--tasks-max",
        "32",
        "--cpus",
        "0",
    ]);
    host.ok(&["berthctl", "start", "box"]);
    let show = host.ok(&[
        "systemctl",
        "show",
        "machine-box.scope",
        "-p",
        "MemoryMax",
        "-p",
        "CPUWeight",
        "-p",
        "TasksMax",
        "-p",
        "AllowedCPUs",
        "-p",
        "Slice",
        "-p",
        "Delegate",
    ]);
    for want in [
        "MemoryMax=67108864",
        // runc's mapping: 1 + (256 - 2) * 9999 / 262142
        "CPUWeight=10",
        "TasksMax=32",
        "AllowedCPUs=0",
        "Slice=machine.slice",
        "Delegate=yes",
    ] {
        assert!(show.contains(want), "missing {want} in:\n{show}");
    }
    let mode = host.ok(&[
        "busctl",
        "get-property",
        "org.berth.Berth1",
        "/org/berth/Berth1/Manager",
        "org.berth.Berth1.Manager",
        "CgroupMode",
    ]);
    assert_eq!(mode.trim(), "s \"unified\"");
    let cgroup = host.ok(&["berthctl", "exec", "box", "--", "cat", "/proc/self/cgroup"]);
    assert!(
        cgroup.lines().any(|l| l == "0::/"),
        "exec joins the machine's cgroup namespace: {cgroup}"
    );

    host.ok(&["berthctl", "set", "box", "--cpu-weight", "50"]);
    let show = host.ok(&["systemctl", "show", "machine-box.scope", "-p", "CPUWeight"]);
    assert_eq!(show.trim(), "CPUWeight=50");

    host.ok(&["berthctl", "stop", "box"]);
    host.ok(&["berthctl", "remove", "box"]);
    let units = host.ok(&[
        "systemctl",
        "list-units",
        "--all",
        "--no-legend",
        "machine-*",
    ]);
    assert!(units.trim().is_empty(), "{units}");
    assert!(
        !host
            .path("/sys/fs/cgroup/machine.slice/machine-box.scope")
            .exists()
    );
}
