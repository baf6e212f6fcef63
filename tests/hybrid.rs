//! berth on a hybrid (cgroup v1 + v2) systemd host: the whole life of a machine, driven
//! only through berthctl, busctl and D-Bus, checked in the cgroup files systemd wrote.

mod common;

use common::{CgroupMode, TestHost};
use std::path::Path;

fn bin_dir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_berthd")).parent().unwrap()
}

fn boot() -> Option<TestHost> {
    if !common::is_root() {
        eprintln!("skipped: integration tests boot a systemd host and need root");
        return None;
    }
    Some(TestHost::boot(CgroupMode::Hybrid, bin_dir()).expect("test host boots"))
}

fn scope_file(host: &TestHost, controller: &str, file: &str) -> String {
    host.read(&format!(
        "/sys/fs/cgroup/{controller}/machine.slice/machine-box.scope/{file}"
    ))
    .unwrap_or_else(|e| panic!("{controller}/{file}: {e}"))
    .trim()
    .to_string()
}

#[test]
fn machine_lifecycle() {
    let Some(host) = boot() else { return };
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
    ]);
    let listed = host.ok(&["berthctl", "list"]);
    assert!(
        listed.contains("box") && listed.contains("stopped"),
        "{listed}"
    );
    host.ok(&["berthctl", "start", "box"]);

    // systemd holds the machine in its scope with the limits, in the v1 files.
    assert_eq!(
        scope_file(&host, "memory", "memory.limit_in_bytes"),
        "67108864"
    );
    assert_eq!(scope_file(&host, "cpu", "cpu.shares"), "256");
    assert_eq!(scope_file(&host, "pids", "pids.max"), "32");
    let show = host.ok(&[
        "systemctl",
        "show",
        "machine-box.scope",
        "-p",
        "Slice",
        "-p",
        "ActiveState",
    ]);
    assert!(show.contains("Slice=machine.slice"), "{show}");
    assert!(show.contains("ActiveState=active"), "{show}");

    // berthctl's table and JSON agree with what systemd says.
    let listed = host.ok(&["berthctl", "list"]);
    let header = listed.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("STATE"),
        "{listed}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&host.ok(&["berthctl", "list", "--json"])).unwrap();
    let entry = &json.as_array().unwrap()[0];
    assert_eq!(entry["name"], "box");
    assert_eq!(entry["state"], "running");
    let leader = entry["leader"].as_u64().unwrap();
    assert!(leader > 1);
    // Read inside the host: cgroup.procs shows PIDs in the reader's PID namespace.
    let procs = host.ok(&[
        "cat",
        "/sys/fs/cgroup/systemd/machine.slice/machine-box.scope/cgroup.procs",
    ]);
    assert!(procs.lines().any(|p| p == leader.to_string()), "{procs}");
    let status: serde_json::Value =
        serde_json::from_str(&host.ok(&["berthctl", "status", "box", "--json"])).unwrap();
    assert_eq!(status["unit"], "machine-box.scope");
    assert_eq!(status["template"], "busybox");

    // Inside: PID 1 is busybox init, the hostname is the name, the host is invisible.
    assert_eq!(
        host.ok(&["berthctl", "exec", "box", "--", "cat", "/proc/1/comm"])
            .trim(),
        "init"
    );
    assert_eq!(
        host.ok(&["berthctl", "exec", "box", "--", "hostname"])
            .trim(),
        "box"
    );
    let ps = host.ok(&["berthctl", "exec", "box", "--", "ps", "-o", "pid,comm"]);
    assert!(
        !ps.contains("systemd") && !ps.contains("dbus"),
        "host processes leak:\n{ps}"
    );
    assert!(ps.lines().count() <= 4, "{ps}");
    let mounts = host.ok(&["berthctl", "exec", "box", "--", "cat", "/proc/mounts"]);
    // Only the machine's own mounts: no cgroup trees, no berth state, no host /run.
    assert!(
        !mounts.contains("/var/lib/berth") && !mounts.contains("cgroup"),
        "{mounts}"
    );
    assert!(
        !mounts.contains("/run/dbus") && mounts.lines().count() < 25,
        "{mounts}"
    );
    assert!(mounts.contains("sysfs /sys sysfs ro"), "{mounts}");
    let cgroup = host.ok(&["berthctl", "exec", "box", "--", "cat", "/proc/1/cgroup"]);
    assert!(
        cgroup.lines().any(|l| l.ends_with(":/")),
        "cgroup namespace: {cgroup}"
    );
    let out = host.run(&[
        "berthctl",
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "err");
    let out = host.run(&["berthctl", "exec", "box", "--", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127));

    // Live limits go through systemd and stay for the next start.
    host.ok(&[
        "berthctl",
        "set",
        "box",
        "--memory",
        "128M",
        "--tasks-max",
        "64",
    ]);
    assert_eq!(
        scope_file(&host, "memory", "memory.limit_in_bytes"),
        "134217728"
    );
    assert_eq!(scope_file(&host, "pids", "pids.max"), "64");

    // berthd restarts; the machine keeps running and is found again.
    host.ok(&["systemctl", "restart", "berthd"]);
    let json: serde_json::Value =
        serde_json::from_str(&host.ok(&["berthctl", "list", "--json"])).unwrap();
    assert_eq!(json[0]["state"], "running", "{json}");
    assert_eq!(json[0]["leader"].as_u64(), Some(leader));

    host.ok(&["berthctl", "stop", "box"]);
    let json: serde_json::Value =
        serde_json::from_str(&host.ok(&["berthctl", "list", "--json"])).unwrap();
    assert_eq!(json[0]["state"], "stopped");
    assert!(
        !host
            .path("/sys/fs/cgroup/memory/machine.slice/machine-box.scope")
            .exists()
    );
    let units = host.ok(&[
        "systemctl",
        "list-units",
        "--all",
        "--no-legend",
        "machine-box.scope",
    ]);
    assert!(units.trim().is_empty(), "scope left behind: {units}");

    // A second start after stop works and gets the stored limits.
    host.ok(&["berthctl", "start", "box"]);
    assert_eq!(
        scope_file(&host, "memory", "memory.limit_in_bytes"),
        "134217728"
    );
    host.ok(&["berthctl", "remove", "box", "--force"]);
    assert_eq!(host.ok(&["berthctl", "list", "--json"]).trim(), "[]");
    assert!(!host.path("/var/lib/berth/machines/box").exists());
    assert_no_leftovers(&host);
}

/// Nothing of any machine remains: no scope, no cgroup, no files, no runtime state,
/// no mount namespace holding the rootfs.
fn assert_no_leftovers(host: &TestHost) {
    let units = host.ok(&[
        "systemctl",
        "list-units",
        "--all",
        "--no-legend",
        "machine-*",
    ]);
    assert!(units.trim().is_empty(), "units left: {units}");
    for ctrl in ["memory", "pids", "cpu", "systemd"] {
        let slice = host.path(&format!("/sys/fs/cgroup/{ctrl}/machine.slice"));
        if let Ok(entries) = std::fs::read_dir(&slice) {
            let scopes: Vec<_> = entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("machine-"))
                .map(|e| e.path())
                .collect();
            assert!(scopes.is_empty(), "cgroups left: {scopes:?}");
        }
    }
    let machines: Vec<_> = std::fs::read_dir(host.path("/var/lib/berth/machines"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(machines.is_empty(), "files left: {machines:?}");
    let runtime: Vec<_> = std::fs::read_dir(host.path("/run/berth/machines"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(runtime.is_empty(), "runtime state left: {runtime:?}");
    let mounts =
        host.sh("cat /proc/[0-9]*/mountinfo 2>/dev/null | grep -c /var/lib/berth/machines || true");
    assert_eq!(
        String::from_utf8_lossy(&mounts.stdout).trim(),
        "0",
        "mounts left"
    );
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let Some(host) = boot() else { return };
    let fails = |argv: &[&str], needle: &str| {
        let out = host.run(argv);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{argv:?} should fail: {err}");
        assert!(err.contains(needle), "{argv:?}: {err:?} lacks {needle:?}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    };
    let long = "a".repeat(65);
    for bad in ["", ".hidden", "a..b", "a/b", long.as_str(), "sp ace"] {
        fails(
            &["berthctl", "create", bad, "--template", "busybox"],
            "invalid machine name",
        );
    }
    fails(
        &["berthctl", "create", "x", "--template", "nope"],
        "no template named",
    );
    for (flag, value, needle) in [
        ("--memory", "64Q", "64Q"),
        ("--memory", "0", "MemoryMax"),
        ("--memory", "-5", "MemoryMax"),
        ("--memory", "99999999999T", "too large"),
        ("--tasks-max", "0", "TasksMax"),
        ("--cpu-shares", "1", "CPUShares"),
        ("--cpu-shares", "18446744073709551616", "CPUShares"),
        ("--cpu-quota", "0", "CPUQuota"),
        ("--cpus", "0-1", "AllowedCPUs"),
    ] {
        fails(
            &[
                "berthctl",
                "create",
                "x",
                "--template",
                "busybox",
                flag,
                value,
            ],
            needle,
        );
    }
    fails(&["berthctl", "start", "ghost"], "no machine named");

    host.ok(&["berthctl", "create", "x", "--template", "busybox"]);
    fails(
        &["berthctl", "create", "x", "--template", "busybox"],
        "already exists",
    );
    fails(&["berthctl", "stop", "x"], "not running");
    fails(&["berthctl", "set", "x", "--memory", "12X"], "12X");
    host.ok(&["berthctl", "start", "x"]);
    fails(&["berthctl", "start", "x"], "already running");
    fails(&["berthctl", "remove", "x"], "running");
    fails(&["berthctl", "exec", "x", "--", ""], "no command");

    // A payload that cannot start leaves the machine failed, with no scope behind.
    host.ok(&[
        "berthctl",
        "create",
        "broken",
        "--template",
        "busybox",
        "--",
        "/no/such/init",
    ]);
    fails(&["berthctl", "start", "broken"], "/no/such/init");
    let units = host.ok(&[
        "systemctl",
        "list-units",
        "--all",
        "--no-legend",
        "machine-broken.scope",
    ]);
    assert!(units.trim().is_empty(), "{units}");

    host.ok(&["berthctl", "remove", "x", "--force"]);
    host.ok(&["berthctl", "remove", "broken"]);
    assert_no_leftovers(&host);
}

#[test]
fn dbus_api_matches_the_contract() {
    let Some(host) = boot() else { return };
    // Error names, as scripts see them through busctl.
    let out = host.run(&[
        "busctl",
        "call",
        "org.berth.Berth1",
        "/org/berth/Berth1/Manager",
        "org.berth.Berth1.Manager",
        "CreateMachine",
        "ssa{sv}",
        "a..b",
        "busybox",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid machine name"));
    let out = host.run(&[
        "busctl",
        "call",
        "--json=short",
        "org.berth.Berth1",
        "/org/berth/Berth1/Manager",
        "org.berth.Berth1.Manager",
        "CreateMachine",
        "ssa{sv}",
        "web",
        "busybox",
        "2",
        "MemoryMax",
        "s",
        "64Q",
        "TasksMax",
        "t",
        "16",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("64Q"));

    host.ok(&[
        "busctl",
        "call",
        "org.berth.Berth1",
        "/org/berth/Berth1/Manager",
        "org.berth.Berth1.Manager",
        "CreateMachine",
        "ssa{sv}",
        "web",
        "busybox",
        "2",
        "MemoryMax",
        "t",
        "67108864",
        "TasksMax",
        "t",
        "16",
    ]);
    let objects = host.ok(&[
        "busctl",
        "call",
        "--json=short",
        "org.berth.Berth1",
        "/org/berth/Berth1",
        "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects",
    ]);
    assert!(
        objects.contains("/org/berth/Berth1/machine/web"),
        "{objects}"
    );
    assert!(objects.contains("org.berth.Berth1.Machine"), "{objects}");
    let state = host.ok(&[
        "busctl",
        "get-property",
        "org.berth.Berth1",
        "/org/berth/Berth1/machine/web",
        "org.berth.Berth1.Machine",
        "State",
    ]);
    assert_eq!(state.trim(), "s \"stopped\"");
    let mode = host.ok(&[
        "busctl",
        "get-property",
        "org.berth.Berth1",
        "/org/berth/Berth1/Manager",
        "org.berth.Berth1.Manager",
        "CgroupMode",
    ]);
    assert_eq!(mode.trim(), "s \"hybrid\"");

    // The introspection files users install describe the live daemon exactly.
    for (iface, path) in [
        ("org.berth.Berth1.Manager", "/org/berth/Berth1/Manager"),
        ("org.berth.Berth1.Machine", "/org/berth/Berth1/machine/web"),
    ] {
        let live = host.ok(&[
            "busctl",
            "introspect",
            "--xml-interface",
            "org.berth.Berth1",
            path,
        ]);
        let live = common::interface_xml(&live, iface).expect("interface in live XML");
        let file = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("dbus/{iface}.xml")),
        )
        .unwrap();
        let file = common::interface_xml(&file, iface).expect("interface in file");
        assert_eq!(live, file, "dbus/{iface}.xml differs from the live daemon");
    }
    host.ok(&[
        "busctl",
        "call",
        "org.berth.Berth1",
        "/org/berth/Berth1/machine/web",
        "org.berth.Berth1.Machine",
        "Remove",
    ]);
    assert_no_leftovers(&host);
}
