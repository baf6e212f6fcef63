//! berth's own PID 1 for Command machines (src/spawn/init.rs) in a test host: it reaps
//! the orphans a command makes, passes signals on to the command (PID 2) so `stop` works
//! at once, still reports a command that cannot be exec'ed, and stays out of the way of
//! a machine that runs its own init.

mod common;

use common::{CgroupMode, TestHost, boot_with_berth, wait_until};
use std::time::{Duration, Instant};

const SHORTLY: Duration = Duration::from_secs(10);

/// Orphans that end at once, then a command that never waits for a child: whoever is
/// PID 1 inherits the orphans and must reap them.
const ORPHANS: &str = "for i in 1 2 3 4 5; do (sleep 0.1 &); done; exec sleep 1000";

fn zombies(host: &TestHost, name: &str) -> usize {
    let out = host.ok(&[
        "berthctl",
        "exec",
        name,
        "--",
        "sh",
        "-c",
        "cat /proc/[0-9]*/stat 2>/dev/null | grep -c ') Z ' || true",
    ]);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("count: {out:?}"))
}

fn inside(host: &TestHost, name: &str, cmd: &str) -> String {
    host.ok(&["berthctl", "exec", name, "--", "sh", "-c", cmd])
        .trim()
        .to_string()
}

fn state(host: &TestHost, name: &str) -> String {
    let status: serde_json::Value =
        serde_json::from_str(&host.ok(&["berthctl", "--json", "status", name])).unwrap();
    status["state"].as_str().unwrap_or_default().to_string()
}

#[test]
fn command_machines_run_under_berths_init() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "command_machines_run_under_berths_init")
    else {
        return;
    };
    let create = |name: &str, flags: &[&str], script: &str| {
        let mut argv = vec!["berthctl", "create", name, "--template", "busybox"];
        argv.extend(flags);
        argv.extend(["--", "/bin/sh", "-c", script]);
        host.ok(&argv);
        host.ok(&["berthctl", "start", name]);
    };

    // With berth's init (the default for a Command): it is PID 1, the command PID 2, and
    // the orphans are reaped.
    create("z", &[], ORPHANS);
    assert_eq!(inside(&host, "z", "cat /proc/1/comm"), "berth-init");
    assert!(
        wait_until("the command is PID 2", SHORTLY, || inside(
            &host,
            "z",
            "tr '\\0' ' ' < /proc/2/cmdline"
        )
        .starts_with("sleep 1000")),
        "{}",
        inside(&host, "z", "ps")
    );
    // The control, without berth's init: the command itself is PID 1 and the orphans'
    // zombies stay, which is what berth's init must prevent.
    create("y", &["--no-init"], ORPHANS);
    assert_eq!(inside(&host, "y", "cat /proc/1/comm"), "sleep");
    assert!(
        wait_until("zombies under a command as PID 1", SHORTLY, || zombies(
            &host, "y"
        ) == 5),
        "{}",
        inside(&host, "y", "ps")
    );
    // By now z's orphans ended as long ago as y's.
    assert_eq!(zombies(&host, "z"), 0, "{}", inside(&host, "z", "ps"));
    host.okw("berthctl kill --signal KILL y");
    assert!(wait_until("y stopped", SHORTLY, || state(&host, "y") == "stopped"));

    // A command that makes orphans all the time, traps signals and ends on SIGTERM.
    create(
        "s",
        &["--init"],
        "trap 'echo got > /tmp/usr1' USR1; trap 'exit 0' TERM; \
         while :; do (sleep 0.1 &); sleep 0.2; done",
    );
    // Signals to the leader (berth's PID 1) reach the command.
    host.okw("berthctl kill --whom leader --signal USR1 s");
    assert!(wait_until("USR1 passed on", SHORTLY, || host
        .run(&["berthctl", "exec", "s", "--", "cat", "/tmp/usr1"])
        .status
        .success()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(zombies(&host, "s"), 0, "{}", inside(&host, "s", "ps"));

    // The halt signal (SIGTERM for a Command) is passed on: stop is quick, not the
    // stop timeout's SIGKILL.
    for name in ["s", "z"] {
        let started = Instant::now();
        host.ok(&["berthctl", "stop", name]);
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "stop {name} took {took:?}");
        assert_eq!(state(&host, name), "stopped");
    }
    // And the machine starts again the same way.
    host.okw("berthctl start z");
    assert_eq!(inside(&host, "z", "cat /proc/1/comm"), "berth-init");
    host.okw("berthctl stop z");
}

#[test]
fn exec_failures_and_own_inits_are_unchanged() {
    let Some(host) = boot_with_berth(
        CgroupMode::Hybrid,
        "exec_failures_and_own_inits_are_unchanged",
    ) else {
        return;
    };
    // The command's exec fails in PID 2: the start still fails, naming it.
    host.okw("berthctl create bad --template busybox -- /nonexistent");
    let err = host.failsw("berthctl start bad");
    assert!(err.contains("/nonexistent"), "{err}");
    assert_ne!(state(&host, "bad"), "running");
    // Looked up in the machine's PATH by PID 2.
    host.okw("berthctl create bad2 --template busybox -- no-such-command");
    let err = host.failsw("berthctl start bad2");
    assert!(err.contains("no-such-command"), "{err}");

    // A machine with its own init runs it as PID 1; --init is ignored without a Command.
    for (name, flags) in [("own", ""), ("own2", " --init")] {
        host.okw(&format!("berthctl create {name} --template busybox{flags}"));
        host.okw(&format!("berthctl start {name}"));
        assert_eq!(inside(&host, name, "cat /proc/1/comm"), "init");
        let started = Instant::now();
        host.okw(&format!("berthctl stop {name}"));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
