//! Templates and Jobs: building (busybox; debootstrap for real, through an uplink to the
//! Debian archive; the directory method from that tree), listing, removing, Jobs on the
//! bus, cancel, and the bad inputs, each leaving nothing behind.

mod common;

use common::{CgroupMode, TestHost, boot_with_berth, debian, wait_until};
use std::time::Duration;

fn templates_json(host: &TestHost) -> serde_json::Value {
    serde_json::from_str(&host.okw("berthctl template list --json")).expect("JSON")
}

/// Nothing of a build is left: no staging directory, no Job object.
fn assert_no_build_leftovers(host: &TestHost) {
    let dir = host.path("/var/lib/berth/templates");
    let dots: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    assert!(dots.is_empty(), "staging left in templates/: {dots:?}");
    let tree = host.okw("busctl --system tree org.berth.Berth1 --list");
    assert!(!tree.contains("/job/"), "a Job object is left: {tree}");
}

/// A mirror at 127.0.0.1:8081 that accepts connections and never answers: debootstrap
/// from it stays busy until it is cancelled or killed.
fn start_tarpit(host: &TestHost) {
    host.ok(&[
        "systemd-run",
        "--unit=tarpit",
        "busybox",
        "nc",
        "-ll",
        "-p",
        "8081",
        "-e",
        "sleep",
        "600",
    ]);
}

/// Starts building template "slow" by debootstrap from the tarpit, straight over D-Bus,
/// and waits until debootstrap runs.
fn start_slow_build(host: &TestHost) {
    host.ok(&[
        "busctl",
        "--system",
        "call",
        "org.berth.Berth1",
        "/org/berth/Berth1/Manager",
        "org.berth.Berth1.Manager",
        "BuildTemplate",
        "ssa{sv}",
        "slow",
        "debootstrap",
        "2",
        "Suite",
        "s",
        "bookworm",
        "Mirror",
        "s",
        "http://127.0.0.1:8081/debian",
    ]);
    assert!(
        wait_until("debootstrap runs", Duration::from_secs(10), || {
            host.run(&["pgrep", "-x", "debootstrap"]).status.success()
        }),
        "debootstrap started"
    );
}

#[test]
fn busybox_template_build_list_use_remove() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "busybox_template_build_list_use_remove")
    else {
        return;
    };
    assert_eq!(
        host.okw("berthctl template build bb --method busybox")
            .trim(),
        "bb"
    );
    let list = templates_json(&host);
    let bb = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "bb")
        .expect("bb listed");
    assert_eq!(bb["method"], "busybox");
    assert_eq!(bb["state"], "ready");
    assert!(bb["size_bytes"].as_u64().unwrap() > 500_000, "{bb}");
    assert!(bb["created_at_usec"].as_u64().unwrap() > 0);
    let table = host.okw("berthctl template list");
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("bb") && table.contains("ready"), "{table}");
    let props = host.okw("busctl --system get-property org.berth.Berth1 /org/berth/Berth1/template/bb org.berth.Berth1.Template State");
    assert_eq!(props.trim(), "s \"ready\"");

    host.okw("berthctl create m1 --template bb");
    host.okw("berthctl template remove bb");
    // The machine is a copy: it starts without its template.
    host.okw("berthctl start m1");
    host.okw("berthctl exec m1 -- /bin/true");
    host.okw("berthctl stop m1");
    host.okw("berthctl remove m1");
    assert!(!host.path("/var/lib/berth/templates/bb").exists());
    let e = host.failsw("berthctl template remove bb");
    assert!(e.contains("no template named \"bb\""), "{e}");
    let e = host.failsw("berthctl create m2 --template bb");
    assert!(e.contains("no template named \"bb\""), "{e}");
    assert_no_build_leftovers(&host);
}

#[test]
fn bad_template_builds_are_refused_and_leave_nothing() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "bad_template_builds_are_refused") else {
        return;
    };
    host.okw("berthctl template build bb --method busybox");
    for (cmdline, says) in [
        (
            "berthctl template build bb --method busybox",
            "already exists",
        ),
        ("berthctl template build a/b --method busybox", "a/b"),
        (
            "berthctl template build d --method debootstrap --suite narnia",
            "no suite \"narnia\"",
        ),
        (
            "berthctl template build d --method debootstrap --mirror ftp://x/",
            "Mirror",
        ),
        (
            "berthctl template build d --method debootstrap --variant huge",
            "Variant",
        ),
        (
            "berthctl template build d --method debootstrap --include a;b",
            "Include",
        ),
        (
            "berthctl template build d --method busybox --suite bookworm",
            "takes none",
        ),
        (
            "berthctl template build d --method directory",
            "needs option Source",
        ),
        ("berthctl template build d --method tar", "Archive"),
    ] {
        let e = host.failsw(cmdline);
        assert!(e.contains(says), "{cmdline}: {e}");
    }
    let out = host.runw("berthctl template build d --method rsync");
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown method");
    // An unreachable mirror: the Job fails with debootstrap's own words, and nothing is left.
    let e = host.failsw("berthctl template build d --method debootstrap --suite bookworm --mirror http://127.0.0.1:9/debian --no-progress",
    );
    assert!(
        e.contains("debootstrap bookworm from http://127.0.0.1:9/debian failed"),
        "{e}"
    );
    let list = templates_json(&host);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_no_build_leftovers(&host);
}

/// The one real debootstrap of the run (others copy its tree): a Job on the bus with
/// moving Progress, a ready template with its options, a machine made from it, and a
/// second template from the same tree by the directory method, without the network.
#[test]
fn debootstrap_template_builds_once_per_run() {
    let Some(host) = boot_with_berth(
        CgroupMode::Hybrid,
        "debootstrap_template_builds_once_per_run",
    ) else {
        return;
    };
    let built_here = debian::debian_template(&host, "deb");
    let list = templates_json(&host);
    let deb = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "deb")
        .expect("deb listed");
    assert_eq!(deb["state"], "ready");
    assert!(deb["size_bytes"].as_u64().unwrap() > 100 << 20, "{deb}");
    let method = if built_here {
        "debootstrap"
    } else {
        "directory"
    };
    assert_eq!(deb["method"], method, "{deb}");
    if built_here {
        let opts = host.okw("busctl --system get-property org.berth.Berth1 /org/berth/Berth1/template/deb org.berth.Berth1.Template Options");
        assert!(opts.contains("\"suite\" \"bookworm\""), "{opts}");
        assert!(opts.contains("systemd-sysv"), "{opts}");
    }
    // The tree is a template a machine can be made from; it has no machine-id of its own.
    assert_eq!(
        host.read("/var/lib/berth/templates/deb/rootfs/etc/machine-id")
            .unwrap(),
        ""
    );
    host.okw("berthctl create web --template deb");
    assert!(
        host.path("/var/lib/berth/machines/web/rootfs/usr/lib/systemd/systemd")
            .exists()
    );
    host.okw("berthctl remove web");
    host.okw("berthctl template remove deb");
    assert_no_build_leftovers(&host);
}

/// Cancel in the middle of a long build: the Job completes unsuccessfully, the template
/// and its staging directory are gone, and debootstrap's processes with them.
#[test]
fn cancelled_build_leaves_nothing() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "cancelled_build_leaves_nothing") else {
        return;
    };
    // A mirror that accepts the connection and never answers keeps debootstrap busy.
    start_tarpit(&host);
    start_slow_build(&host);
    let jobs = host.okw("busctl --system tree org.berth.Berth1 --list");
    let job = jobs
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("/org/berth/Berth1/job/"))
        .unwrap_or_else(|| panic!("a Job object: {jobs}"))
        .to_string();
    let op = host.ok(&[
        "busctl",
        "--system",
        "get-property",
        "org.berth.Berth1",
        &job,
        "org.berth.Berth1.Job",
        "Operation",
    ]);
    assert_eq!(op.trim(), "s \"build-template\"");
    let obj = host.ok(&[
        "busctl",
        "--system",
        "get-property",
        "org.berth.Berth1",
        &job,
        "org.berth.Berth1.Job",
        "Object",
    ]);
    assert_eq!(obj.trim(), "o \"/org/berth/Berth1/template/slow\"");
    // dbus/org.berth.Berth1.Job.xml describes the live Job (hybrid.rs checks the others).
    let live = host.ok(&[
        "busctl",
        "introspect",
        "--xml-interface",
        "org.berth.Berth1",
        &job,
    ]);
    let iface = "org.berth.Berth1.Job";
    let file = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("dbus/{iface}.xml")),
    )
    .unwrap();
    assert_eq!(
        common::interface_members(&live, iface),
        common::interface_members(&file, iface),
        "dbus/{iface}.xml differs from the live daemon"
    );
    let state = host.okw("busctl --system get-property org.berth.Berth1 /org/berth/Berth1/template/slow org.berth.Berth1.Template State");
    assert_eq!(state.trim(), "s \"building\"");
    let e = host.failsw("berthctl create x --template slow");
    assert!(e.contains("still being built"), "{e}");
    host.ok(&[
        "busctl",
        "--system",
        "call",
        "org.berth.Berth1",
        &job,
        "org.berth.Berth1.Job",
        "Cancel",
    ]);
    assert!(
        wait_until("the build is gone", Duration::from_secs(20), || {
            host.okw("berthctl template list --json").trim() == "[]"
        }),
        "template gone after cancel"
    );
    assert!(
        wait_until("debootstrap is gone", Duration::from_secs(10), || {
            !host
                .run(&["pgrep", "-x", "debootstrap|wget"])
                .status
                .success()
        }),
        "no debootstrap process left"
    );
    assert!(
        host.journal("berthd.service").contains("cancelled"),
        "the log says why"
    );
    assert_no_build_leftovers(&host);
}

/// On a terminal, berthctl draws the Job's progress and Ctrl-C cancels it; a berthd
/// killed in the middle of a build leaves nothing that its next start doesn't clear.
#[test]
fn progress_bar_ctrl_c_and_a_crash_mid_build() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "progress_bar_ctrl_c_and_a_crash") else {
        return;
    };
    start_tarpit(&host);
    let build = "berthctl template build slow --method debootstrap --suite bookworm \
                 --mirror http://127.0.0.1:8081/debian";
    // script(1) gives berthctl a terminal (a real one: TERM set, and a size); its
    // output goes to a file we read.
    let on_terminal = format!("stty cols 100 rows 30; {build}");
    host.ok(&[
        "systemd-run",
        "--unit=follow",
        "--setenv=TERM=xterm",
        "--property=StandardOutput=file:/var/tmp/follow.out",
        "script",
        "-qefc",
        &on_terminal,
        "/dev/null",
    ]);
    assert!(
        wait_until("the bar is drawn", Duration::from_secs(20), || {
            host.read("/var/tmp/follow.out")
                .is_ok_and(|o| o.contains("building slow") && o.contains('%'))
        }),
        "a progress bar: {:?}",
        host.read("/var/tmp/follow.out")
    );
    host.ok(&["pkill", "-INT", "-x", "berthctl"]);
    assert!(
        wait_until(
            "Ctrl-C cancelled the build",
            Duration::from_secs(20),
            || { host.okw("berthctl template list --json").trim() == "[]" }
        ),
        "template gone after Ctrl-C"
    );
    assert!(
        wait_until("berthctl ended", Duration::from_secs(10), || {
            !host.run(&["pgrep", "-x", "berthctl"]).status.success()
        }),
        "berthctl exits"
    );
    let out = host.read("/var/tmp/follow.out").unwrap();
    assert!(out.contains("was cancelled"), "{out}");
    assert_no_build_leftovers(&host);

    // debootstrap killed half way: the Job fails saying so, and nothing is left.
    start_slow_build(&host);
    host.ok(&["pkill", "-KILL", "-x", "debootstrap"]);
    assert!(
        wait_until("the failed build is gone", Duration::from_secs(20), || {
            host.okw("berthctl template list --json").trim() == "[]"
        }),
        "template gone after debootstrap died"
    );
    assert!(
        host.journal("berthd.service")
            .contains("failed (killed by signal 9)"),
        "the Job says how debootstrap ended: {}",
        host.journal("berthd.service")
    );
    assert_no_build_leftovers(&host);

    // A crash: berthd and its debootstrap killed together, a staging dir left behind.
    start_slow_build(&host);
    host.okw("systemctl kill --signal=SIGKILL berthd");
    assert!(
        wait_until(
            "debootstrap died with berthd",
            Duration::from_secs(10),
            || {
                !host
                    .run(&["pgrep", "-x", "debootstrap|wget"])
                    .status
                    .success()
            }
        ),
        "no debootstrap outlives berthd"
    );
    // The next call starts berthd again, which clears what the build left.
    assert_eq!(host.okw("berthctl template list --json").trim(), "[]");
    assert_no_build_leftovers(&host);
    assert!(
        host.journal("berthd.service")
            .contains("left over from an interrupted operation"),
        "the log says what was cleared"
    );
}
