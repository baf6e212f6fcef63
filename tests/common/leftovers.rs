//! What a test host must look like once every machine is gone: the one check, shared by
//! the lifecycle tests (tests/hybrid.rs) and the soak (tests/soak.rs), so that "nothing
//! left" means the same everywhere.

use super::TestHost;
use std::fs;
use std::path::{Path, PathBuf};

/// Nothing of any machine remains in `host`: no machine-* unit, no machined entry, no
/// machine-* cgroup and no process in machine.slice in any hierarchy, no machine files or
/// runtime state or console log, no console pty in systemd's file descriptor store, no
/// mount of a machine's files in any process, no berth helper process, no machine veth
/// and no port forward.
/// Panics naming what it found.
pub fn assert_no_leftovers(host: &TestHost) {
    let units = host.okw("systemctl list-units --all --no-legend machine-*");
    assert!(units.trim().is_empty(), "units left: {units}");
    let registered = host.okw("machinectl list --no-legend");
    assert!(
        registered.trim().is_empty(),
        "machined still lists: {registered}"
    );

    // Every hierarchy the host mounts (v1 controllers, name=systemd, the v2 one), as the
    // host's own mount table lists them, not a fixed list of controllers.
    let hierarchies = host.okw("findmnt -rn -t cgroup,cgroup2 -o TARGET");
    assert!(
        !hierarchies.trim().is_empty(),
        "no cgroup hierarchy mounted?"
    );
    for mount in hierarchies.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let slice = host.path(&format!("{mount}/machine.slice"));
        let scopes: Vec<_> = fs::read_dir(&slice)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("machine-"))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        assert!(scopes.is_empty(), "cgroups left: {scopes:?}");
        // PIDs as seen from outside the host: only whether there are any matters.
        let pids = tree_pids(&slice);
        assert!(
            pids.is_empty(),
            "processes left in {mount}/machine.slice (outside PIDs): {pids:?}"
        );
    }

    let machines: Vec<_> = fs::read_dir(host.path("/var/lib/berth/machines"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(machines.is_empty(), "files left: {machines:?}");
    let runtime: Vec<_> = fs::read_dir(host.path("/run/berth/machines"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(runtime.is_empty(), "runtime state left: {runtime:?}");
    let logs: Vec<_> = fs::read_dir(host.path("/run/berth/console"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(logs.is_empty(), "console logs left: {logs:?}");
    // systemd (the host's PID 1) holds what is in berthd's descriptor store.
    let stored = host.sh("ls -l /proc/1/fd | grep -e ptmx -e /dev/pts/ || true");
    let stored = String::from_utf8_lossy(&stored.stdout);
    assert!(
        stored.trim().is_empty(),
        "console ptys left in systemd's store:\n{stored}"
    );
    let mounts = host.sh(
        "grep -l /var/lib/berth/machines /proc/[0-9]*/mountinfo 2>/dev/null | head -20; \
         grep -h /var/lib/berth/machines /proc/[0-9]*/mountinfo 2>/dev/null | head -5",
    );
    let mounts = String::from_utf8_lossy(&mounts.stdout);
    assert!(mounts.trim().is_empty(), "mounts left:\n{mounts}");

    // No machine's veth: berth's host-side names start with vb-.
    let links = host.okw("ip -o link show");
    let veths: Vec<&str> = links.lines().filter(|l| l.contains(": vb-")).collect();
    assert!(veths.is_empty(), "veths left: {veths:?}");
    let table = host.run(&["nft", "list", "table", "inet", "berth"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(!table.contains(" dport "), "port forwards left:\n{table}");

    // `[_]_` matches the helpers' argv without matching this pgrep's own wrappers
    // (timeout's argv holds the pattern, not the name).
    for helper in ["[_]_spawn-helper", "[_]_exec-helper"] {
        let out = host.run(&["pgrep", "-af", helper]);
        let found = String::from_utf8_lossy(&out.stdout);
        assert!(found.trim().is_empty(), "helper processes left:\n{found}");
    }
}

/// PIDs in the cgroup `dir` and every cgroup below it.
fn tree_pids(dir: &Path) -> Vec<String> {
    let mut pids = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(s.split_whitespace().map(String::from));
        }
        if let Ok(entries) = fs::read_dir(&d) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    pids
}
