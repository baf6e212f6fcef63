//! berth on a unified (cgroup v2 only) systemd host: the same command gets the modern
//! property names, and AllowedCPUs is accepted.

mod common;

use common::{CgroupMode, boot_with_berth};

#[test]
fn limits_map_to_unified_properties() {
    let Some(host) = boot_with_berth(CgroupMode::Unified, "limits_map_to_unified") else {
        return;
    };
    host.okw(
        "berthctl create box --template busybox --memory 64M --cpu-shares 256 --tasks-max 32 \
         --cpus 0 --blkio-weight 300",
    );
    host.okw("berthctl start box");
    let show = host.okw(
        "systemctl show machine-box.scope -p MemoryMax -p CPUWeight -p TasksMax \
         -p AllowedCPUs -p IOWeight -p Slice -p Delegate -p IOAccounting",
    );
    for want in [
        "MemoryMax=67108864",
        // runc's mapping: 1 + (256 - 2) * 9999 / 262142
        "CPUWeight=10",
        "TasksMax=32",
        "AllowedCPUs=0",
        // systemd's mapping: 300 * 100 / 500
        "IOWeight=60",
        "Slice=machine.slice",
        "Delegate=yes",
        "IOAccounting=yes",
    ] {
        assert!(show.contains(want), "missing {want} in:\n{show}");
    }
    let mode = host.okw(
        "busctl get-property org.berth.Berth1 /org/berth/Berth1/Manager \
         org.berth.Berth1.Manager CgroupMode",
    );
    assert_eq!(mode.trim(), "s \"unified\"");
    let cgroup = host.okw("berthctl exec box -- cat /proc/self/cgroup");
    assert!(
        cgroup.lines().any(|l| l == "0::/"),
        "exec joins the machine's cgroup namespace: {cgroup}"
    );
    // Live figures come from the scope; cgroup2 counts CPU time even with no controllers.
    let status: serde_json::Value =
        serde_json::from_str(&host.okw("berthctl --json status box")).unwrap();
    assert!(status["cpu_usage_nsec"].as_u64().unwrap() > 0, "{status}");
    // Beside PID 1 only the resident exec helper the execs above were forked from.
    let procs = host.ok(&[
        "sh",
        "-c",
        "for p in $(cat /sys/fs/cgroup/machine.slice/machine-box.scope/cgroup.procs); do \
         tr '\\0' ' ' < /proc/$p/cmdline; echo; done",
    ]);
    let others: Vec<&str> = procs
        .lines()
        .filter(|l| !l.contains("__exec-helper"))
        .collect();
    assert_eq!(others.len(), 1, "only PID 1 is left: {procs}");
    assert_eq!(
        procs.lines().count(),
        2,
        "one resident exec helper: {procs}"
    );

    // Freezing goes through systemd's FreezeUnit and shows in the scope's cgroup.
    host.okw("berthctl freeze box");
    let frozen = host.okw("systemctl show machine-box.scope -p FreezerState");
    assert_eq!(frozen.trim(), "FreezerState=frozen");
    assert_eq!(
        host.read("/sys/fs/cgroup/machine.slice/machine-box.scope/cgroup.freeze")
            .unwrap()
            .trim(),
        "1"
    );
    assert!(host.okw("berthctl list").contains("frozen"));
    // The refusal says what to do in this state, not "start it first".
    let out = host.runw("berthctl exec box -- true");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is frozen; thaw it first (berthctl thaw box)") && !err.contains("start"),
        "{out:?}"
    );
    host.okw("berthctl thaw box");
    let thawed = host.okw("systemctl show machine-box.scope -p FreezerState");
    assert_eq!(thawed.trim(), "FreezerState=running");
    assert_eq!(host.okw("berthctl exec box -- echo alive").trim(), "alive");
    // A frozen machine still stops: berth thaws it so init can act on its halt signal.
    host.okw("berthctl freeze box");

    host.okw("berthctl set box --cpu-weight 50");
    let show = host.okw("systemctl show machine-box.scope -p CPUWeight");
    assert_eq!(show.trim(), "CPUWeight=50");

    host.okw("berthctl stop box");
    host.okw("berthctl remove box");
    let units = host.okw("systemctl list-units --all --no-legend machine-*");
    assert!(units.trim().is_empty(), "{units}");
    assert!(
        !host
            .path("/sys/fs/cgroup/machine.slice/machine-box.scope")
            .exists()
    );
}
