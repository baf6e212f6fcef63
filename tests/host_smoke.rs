//! The test-host harness itself, on a real systemd: boots, resource limits reaching cgroup
//! files (hybrid) or unit properties (unified), and a teardown that leaves nothing behind.
//! Needs no berth binaries: the bin dir given does not exist, so nothing is installed.
//! Skipped (with a message) unless root; as root, any problem fails the test.

mod common;

use common::{CgroupMode, TestHost, cgroup_mounts, skip_unless_root};
use std::path::{Path, PathBuf};

fn no_binaries() -> PathBuf {
    PathBuf::from("/nonexistent/berth-bin")
}

fn boot(mode: CgroupMode) -> TestHost {
    match TestHost::boot(mode, &no_binaries()) {
        Ok(h) => h,
        Err(e) => panic!("{mode:?} test host did not boot:\n{e}"),
    }
}

fn assert_running(host: &TestHost) {
    let out = host.run(&["systemctl", "is-system-running"]);
    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        state == "running" || state == "degraded",
        "systemctl is-system-running says {state:?}; failed units:\n{}",
        host.ok(&["systemctl", "--failed", "--no-pager"])
    );
}

/// Drops the host and checks that nothing of it remains.
fn drop_and_assert_gone(host: TestHost) {
    let (pid, cgroup, statedir) = (
        host.pid(),
        host.cgroup().to_string(),
        host.statedir().to_path_buf(),
    );
    drop(host);
    assert_gone(pid, &cgroup, &statedir);
}

/// Every place where something of the host could remain on the machine after Drop.
fn assert_gone(pid: u32, cgroup: &str, statedir: &Path) {
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "host PID 1 ({pid}) still exists after drop"
    );
    let hierarchies = cgroup_mounts();
    assert!(
        !hierarchies.is_empty(),
        "no cgroup hierarchy found in mountinfo"
    );
    for hierarchy in hierarchies {
        let dir = hierarchy.join(cgroup);
        assert!(!dir.exists(), "{} remains after drop", dir.display());
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mountinfo.lines() {
        assert!(!line.contains(cgroup), "mount of the host remains: {line}");
    }
    assert!(
        !statedir.exists(),
        "{} remains after drop",
        statedir.display()
    );
}

#[test]
fn hybrid_host_boots_and_applies_v1_limits() {
    if skip_unless_root("hybrid_host_boots_and_applies_v1_limits") {
        return;
    }
    let host = boot(CgroupMode::Hybrid);
    assert_running(&host);
    assert!(
        host.path("/sys/fs/cgroup/memory").is_dir(),
        "no memory hierarchy inside"
    );
    assert_eq!(host.ok(&["hostname"]).trim(), "berth-test");

    host.ok(&[
        "systemd-run",
        "--unit=smoke",
        "-p",
        "MemoryLimit=64M",
        "-p",
        "CPUShares=256",
        "-p",
        "TasksMax=32",
        "sleep",
        "300",
    ]);
    let unit_file = |ctrl: &str, file: &str| {
        let p = format!("/sys/fs/cgroup/{ctrl}/system.slice/smoke.service/{file}");
        host.read(&p)
            .unwrap_or_else(|e| panic!("{p}: {e}\n{}", host.journal("smoke.service")))
    };
    assert_eq!(
        unit_file("memory", "memory.limit_in_bytes").trim(),
        "67108864"
    );
    assert_eq!(unit_file("cpu", "cpu.shares").trim(), "256");
    assert_eq!(unit_file("pids", "pids.max").trim(), "32");
    // The same file seen from inside, to be sure path() and run() look at one host.
    assert_eq!(
        host.ok(&[
            "cat",
            "/sys/fs/cgroup/pids/system.slice/smoke.service/pids.max"
        ])
        .trim(),
        "32"
    );

    drop_and_assert_gone(host);
}

#[test]
fn unified_host_boots_and_maps_properties() {
    if skip_unless_root("unified_host_boots_and_maps_properties") {
        return;
    }
    let host = boot(CgroupMode::Unified);
    assert_running(&host);
    assert_eq!(
        host.ok(&["stat", "-f", "-c", "%T", "/sys/fs/cgroup"])
            .trim(),
        "cgroup2fs"
    );

    host.ok(&[
        "systemd-run",
        "--unit=smoke",
        "-p",
        "MemoryMax=64M",
        "-p",
        "CPUWeight=50",
        "-p",
        "TasksMax=32",
        "sleep",
        "300",
    ]);
    assert_eq!(
        host.ok(&[
            "systemctl",
            "show",
            "-p",
            "MemoryMax",
            "--value",
            "smoke.service"
        ])
        .trim(),
        "67108864"
    );
    // Freezing works only on the unified hierarchy; berth's Freeze() depends on it.
    host.ok(&["systemctl", "freeze", "smoke.service"]);
    assert_eq!(
        host.read("/sys/fs/cgroup/system.slice/smoke.service/cgroup.freeze")
            .unwrap()
            .trim(),
        "1"
    );

    drop_and_assert_gone(host);
}

#[test]
fn host_bus_is_reachable_from_the_test_process() {
    if skip_unless_root("host_bus_is_reachable_from_the_test_process") {
        return;
    }
    let host = boot(CgroupMode::Hybrid);
    let addr = host.bus_address();
    assert!(
        host.path("/run/dbus/system_bus_socket").exists(),
        "no system bus socket in host"
    );
    // busctl stands in for zbus here: the host's bus is checked as any client sees it,
    // apart from berth's own D-Bus code.
    let out = std::process::Command::new("busctl")
        .args([
            &format!("--address={addr}"),
            "get-property",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "Virtualization",
        ])
        .output()
        .expect("run busctl");
    assert!(
        out.status.success(),
        "busctl on {addr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"s "container-other""#
    );
}

#[test]
fn hosts_boot_side_by_side_and_leave_nothing() {
    if skip_unless_root("hosts_boot_side_by_side_and_leave_nothing") {
        return;
    }
    let a = boot(CgroupMode::Hybrid);
    let b = boot(CgroupMode::Unified);
    assert_ne!(a.pid(), b.pid());
    // Separate network namespaces: a link made in one host is seen neither in the other
    // nor on the machine. (veth, not dummy: this kernel has no dummy driver.)
    a.ok(&[
        "ip", "link", "add", "smoke0", "type", "veth", "peer", "name", "smoke1",
    ]);
    assert!(b.run(&["ip", "link", "show", "smoke0"]).status.code() != Some(0));
    assert!(
        !std::path::Path::new("/sys/class/net/smoke0").exists(),
        "a host's link appeared on the machine"
    );
    let gone: Vec<_> = [a, b]
        .into_iter()
        .map(|h| (h.pid(), h.cgroup().to_string(), h.statedir().to_path_buf()))
        .collect();
    for (pid, cgroup, statedir) in &gone {
        assert_gone(*pid, cgroup, statedir);
    }
}
