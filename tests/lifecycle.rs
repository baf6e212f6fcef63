//! The rest of a machine's lifecycle in a test host, through berthctl and busctl:
//! `wait` for a state (driven by berthd's signals) and `rename` of a stopped machine.

mod common;

use common::{CgroupMode, TestHost, assert_no_leftovers, boot_with_berth};
use std::time::{Duration, Instant};

/// PID 1 of a machine that ends at once on stop's SIGTERM.
const QUICK_INIT: &str = "trap 'exit 0' TERM; while :; do sleep 1; done";

fn create_quick(host: &TestHost, name: &str) {
    host.ok(&[
        "berthctl",
        "create",
        name,
        "--template",
        "busybox",
        "--",
        "/bin/sh",
        "-c",
        QUICK_INIT,
    ]);
}

fn sh_ok(host: &TestHost, script: &str) -> String {
    host.ok(&["sh", "-c", script])
}

fn state(host: &TestHost, name: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&host.ok(&["berthctl", "status", name, "--json"])).unwrap();
    v["state"].as_str().unwrap_or_default().to_string()
}

fn machine_property(host: &TestHost, name: &str, property: &str) -> std::process::Output {
    host.run(&[
        "busctl",
        "get-property",
        "org.berth.Berth1",
        &format!("/org/berth/Berth1/machine/{name}"),
        "org.berth.Berth1.Machine",
        property,
    ])
}

#[test]
fn wait_returns_when_the_state_is_reached() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "wait_returns_when_the_state_is_reached")
    else {
        return;
    };
    create_quick(&host, "web");
    host.okw("berthctl wait web stopped --timeout 10s");

    // A start under way, and a wait that begins before it.
    sh_ok(
        &host,
        "berthctl start web & berthctl wait web running --timeout 10s; r=$?; wait; exit $r",
    );
    assert_eq!(state(&host, "web"), "running");
    host.okw("berthctl wait web running");
    // The waiter is subscribed before the stop: it can only learn of it by a signal.
    sh_ok(
        &host,
        "berthctl wait web stopped --timeout 20s & w=$!; sleep 1; berthctl stop web; wait $w",
    );
    assert_eq!(state(&host, "web"), "stopped");
    sh_ok(
        &host,
        "berthctl wait web running --timeout 20s & w=$!; sleep 1; berthctl start web; wait $w",
    );

    // A state not reached: exit 1 with one line, after about the time given.
    let began = Instant::now();
    let out = host.runw("berthctl wait web frozen --timeout 1500ms");
    let took = began.elapsed();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(
        e.contains("timed out after 1500ms") && e.contains("running"),
        "{e}"
    );
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(6),
        "took {took:?}"
    );

    // Refused before the bus: a state berth has not, a timeout that is no duration.
    let e = host.failsw("berthctl wait web up");
    assert!(
        e.contains("\"up\"") && e.contains("stopped") && e.contains("frozen"),
        "{e}"
    );
    let e = host.failsw("berthctl wait web running --timeout soon");
    assert!(e.contains("--timeout") && e.contains("10s"), "{e}");
    let e = host.failsw("berthctl wait nope running --timeout 1s");
    assert!(e.contains("nope"), "{e}");

    // `gone`: until the machine is removed.
    host.okw("berthctl stop web");
    sh_ok(
        &host,
        "berthctl wait web gone --timeout 20s & w=$!; sleep 1; berthctl remove web; wait $w",
    );
    host.okw("berthctl wait web gone --timeout 1s");
    assert_no_leftovers(&host);
}

#[test]
fn rename_moves_a_stopped_machine() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "rename_moves_a_stopped_machine") else {
        return;
    };
    create_quick(&host, "web");
    create_quick(&host, "db");
    host.okw("berthctl enable web");
    host.okw("berthctl snapshot web first");
    host.okw("berthctl start web");

    // Refused: a running machine, a name taken, a name that is none.
    let e = host.failsw("berthctl rename web www");
    assert!(e.contains("running") && e.contains("stop it"), "{e}");
    host.okw("berthctl stop web");
    let e = host.failsw("berthctl rename web db");
    assert!(e.contains("\"db\"") && e.contains("already exists"), "{e}");
    let e = host.failsw("berthctl rename web no/slash");
    assert!(e.contains("no/slash"), "{e}");
    let e = host.failsw("berthctl rename nope www");
    assert!(e.contains("nope"), "{e}");
    assert_eq!(state(&host, "web"), "stopped");

    host.okw("berthctl rename web www");
    let listed = host.okw("berthctl list");
    assert!(
        listed.contains("www") && !listed.contains("web"),
        "{listed}"
    );
    // The object moved: the old path is gone, the new one answers.
    assert!(!machine_property(&host, "web", "Name").status.success());
    let name = machine_property(&host, "www", "Name");
    assert!(
        String::from_utf8_lossy(&name.stdout).contains("\"www\""),
        "{name:?}"
    );
    let autostart = machine_property(&host, "www", "Autostart");
    assert_eq!(String::from_utf8_lossy(&autostart.stdout).trim(), "b true");
    assert!(
        host.path("/var/lib/berth/machines/www/snapshots/first")
            .is_dir()
    );
    assert!(!host.path("/var/lib/berth/machines/web").exists());
    assert!(host.okw("berthctl snapshots www").contains("first"));

    // It runs under its new name: unit, hostname, /etc/hostname.
    host.okw("berthctl start www");
    let unit = host.okw("systemctl show -p ActiveState machine-www.scope");
    assert_eq!(unit.trim(), "ActiveState=active");
    let old = host.okw("systemctl list-units --all --no-legend machine-web.scope");
    assert!(old.trim().is_empty(), "{old}");
    assert_eq!(host.okw("berthctl exec www -- hostname").trim(), "www");
    assert_eq!(
        host.okw("berthctl exec www -- cat /etc/hostname").trim(),
        "www"
    );

    // A restarted berthd finds it under the new name.
    host.okw("berthctl stop www");
    host.okw("systemctl restart berthd");
    assert_eq!(state(&host, "www"), "stopped");

    host.okw("berthctl remove www");
    host.okw("berthctl remove db");
    assert_no_leftovers(&host);
}
