//! Freeze and thaw in both cgroup modes: systemd's FreezeUnit on unified hosts, berth's
//! own use of the v1 freezer on hybrid ones. Both must look the same to a user: a busy
//! machine stops using CPU, shows `frozen`, thaws, and still stops, dies and goes away.

mod common;

use common::{CgroupMode, TestHost, assert_no_leftovers, boot_with_berth, wait_until};
use std::time::{Duration, Instant};

const SHORTLY: Duration = Duration::from_secs(5);
/// The machine's init traps the halt signal, so a stop that takes the whole default stop
/// timeout (10s) means its init never ran the trap: it was still frozen.
const QUICK_STOP: Duration = Duration::from_secs(8);

#[test]
fn freeze_on_hybrid() {
    if let Some(host) = boot_with_berth(CgroupMode::Hybrid, "freeze_on_hybrid") {
        freeze_cycle(&host);
    }
}

#[test]
fn freeze_on_unified() {
    if let Some(host) = boot_with_berth(CgroupMode::Unified, "freeze_on_unified") {
        freeze_cycle(&host);
    }
}

fn freeze_cycle(host: &TestHost) {
    host.ok(&[
        "berthctl",
        "create",
        "f",
        "--template",
        "busybox",
        // The busy loop is the leader itself, whose CPU time the checks read.
        "--no-init",
        "--",
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM; while :; do :; done",
    ]);
    host.okw("berthctl start f");
    assert_busy(host, true);

    host.okw("berthctl freeze f");
    assert_state(host, "frozen");
    assert!(host.okw("berthctl list").contains("frozen"));
    assert_busy(host, false);
    assert_kernel_frozen(host, true);
    let e = host.failsw("berthctl freeze f");
    assert!(
        e.contains("machine f is frozen; only a running machine"),
        "{e}"
    );
    let e = host.failsw("berthctl exec f -- true");
    assert!(e.contains("thaw it first"), "{e}");

    // A berthd that restarts finds the machine as it left it.
    host.okw("systemctl restart berthd");
    assert_state(host, "frozen");
    assert_busy(host, false);

    host.okw("berthctl thaw f");
    assert_state(host, "running");
    assert_busy(host, true);
    assert_kernel_frozen(host, false);
    let e = host.failsw("berthctl thaw f");
    assert!(
        e.contains("machine f is running; only a frozen machine"),
        "{e}"
    );
    // A command run in a thawed machine joins it (on v1, its freezer cgroup too).
    assert_eq!(host.okw("berthctl exec f -- echo alive").trim(), "alive");
    // Freezing twice works the same (on v1 the processes are already in place).
    host.okw("berthctl freeze f");
    assert_busy(host, false);
    host.okw("berthctl thaw f");
    assert_busy(host, true);

    // A frozen machine stops: berth thaws it first, so its init acts on the halt signal.
    host.okw("berthctl freeze f");
    let began = Instant::now();
    host.okw("berthctl stop f");
    assert!(
        began.elapsed() < QUICK_STOP,
        "stopping a frozen machine took {:?}: its init never saw the halt signal",
        began.elapsed()
    );
    assert_state(host, "stopped");
    assert_freezer_gone(host);
    let e = host.failsw("berthctl freeze f");
    assert!(e.contains("machine f is stopped"), "{e}");
    let e = host.failsw("berthctl thaw f");
    assert!(e.contains("machine f is stopped"), "{e}");

    // SIGKILL ends a frozen machine in both modes (v1 kills frozen tasks only once thawed).
    host.okw("berthctl start f");
    host.okw("berthctl freeze f");
    host.okw("berthctl kill f --whom all --signal KILL");
    assert!(
        wait_until("the killed machine to stop", SHORTLY, || state(host)
            == "stopped"),
        "a frozen machine survived SIGKILL: {}",
        host.okw("berthctl list")
    );
    assert_freezer_gone(host);

    // A forced removal of a frozen machine stops it and leaves nothing.
    host.okw("berthctl start f");
    host.okw("berthctl freeze f");
    host.okw("berthctl remove --force f");
    assert_no_leftovers(host);
}

fn state(host: &TestHost) -> String {
    let out = host.okw(
        "busctl get-property org.berth.Berth1 /org/berth/Berth1/machine/f \
         org.berth.Berth1.Machine State",
    );
    out.trim()
        .trim_start_matches("s ")
        .trim_matches('"')
        .to_string()
}

/// The state over D-Bus and in `berthctl list --json` agree on `want`.
fn assert_state(host: &TestHost, want: &str) {
    assert_eq!(state(host), want);
    let list: serde_json::Value = serde_json::from_str(&host.okw("berthctl --json list")).unwrap();
    assert_eq!(list[0]["state"], want, "{list}");
}

/// CPU time (utime + stime, in clock ticks) of the machine's busy PID 1, read inside the
/// host, where its leader PID means something.
fn cpu_ticks(host: &TestHost) -> u64 {
    let list: serde_json::Value = serde_json::from_str(&host.okw("berthctl --json list")).unwrap();
    let leader = list[0]["leader"]
        .as_u64()
        .expect("the machine has a leader");
    let stat = host.ok(&["cat", &format!("/proc/{leader}/stat")]);
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    // Fields 14 and 15 of stat, counted from the state (field 3) here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Whether the busy loop's CPU time grows over a second.
fn assert_busy(host: &TestHost, busy: bool) {
    let before = cpu_ticks(host);
    std::thread::sleep(Duration::from_secs(1));
    let after = cpu_ticks(host);
    if busy {
        assert!(after > before, "CPU time stayed at {before} ticks");
    } else {
        assert_eq!(after, before, "CPU time grew while frozen");
    }
}

/// The kernel's own word: FreezerState of the scope on unified hosts, freezer.state of
/// berth's freezer cgroup on v1 ones.
fn assert_kernel_frozen(host: &TestHost, frozen: bool) {
    match host.mode() {
        CgroupMode::Unified => {
            let show = host.okw("systemctl show machine-f.scope -p FreezerState");
            let want = if frozen { "frozen" } else { "running" };
            assert_eq!(show.trim(), format!("FreezerState={want}"));
        }
        _ => {
            let file = "/sys/fs/cgroup/freezer/machine.slice/machine-f.scope/freezer.state";
            let want = if frozen { "FROZEN" } else { "THAWED" };
            assert_eq!(host.read(file).unwrap().trim(), want);
            // Every process of the scope is in the freezer cgroup.
            let scope = "/sys/fs/cgroup/systemd/machine.slice/machine-f.scope/cgroup.procs";
            let procs = host.ok(&["cat", scope]);
            let frozen_procs = host.ok(&[
                "cat",
                "/sys/fs/cgroup/freezer/machine.slice/machine-f.scope/cgroup.procs",
            ]);
            for pid in procs.split_whitespace() {
                assert!(
                    frozen_procs.split_whitespace().any(|p| p == pid),
                    "{pid} is outside the freezer cgroup: {frozen_procs}"
                );
            }
        }
    }
}

fn assert_freezer_gone(host: &TestHost) {
    let dir = host.path("/sys/fs/cgroup/freezer/machine.slice/machine-f.scope");
    assert!(!dir.exists(), "{} is left", dir.display());
}
