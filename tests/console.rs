//! Machine consoles in a test host of each cgroup mode, driven through a real pty as a
//! user at a terminal would: `berthctl console` shows what PID 1's console says and types
//! into it, detaches on Ctrl-] ×3 and attaches again, refuses a second writer and a
//! stopped machine; `berthctl logs` shows the bounded log with berthd's lines, and
//! follows it; the console survives berthd being killed with SIGKILL (systemd restarts
//! it, Restart=on-failure, and hands the masters back from its file descriptor store);
//! nothing is left once the machine is removed.

mod common;

use common::{CgroupMode, TestHost, assert_no_leftovers, boot_with_berth, wait_until};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SHORTLY: Duration = Duration::from_secs(15);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The console log's bound (src/console/log.rs's CAP): the file never exceeds twice it.
const CAP: u64 = 128 * 1024;

fn leader(host: &TestHost, name: &str) -> u64 {
    let status: serde_json::Value =
        serde_json::from_str(&host.ok(&["berthctl", "--json", "status", name])).unwrap();
    status["leader"].as_u64().unwrap_or(0)
}

fn state(host: &TestHost, name: &str) -> String {
    let status: serde_json::Value =
        serde_json::from_str(&host.ok(&["berthctl", "--json", "status", name])).unwrap();
    status["state"].as_str().unwrap_or_default().to_string()
}

fn berthd_pid(host: &TestHost) -> String {
    host.okw("systemctl show -p MainPID --value berthd")
        .trim()
        .to_string()
}

fn consoles(mode: CgroupMode, test: &str) {
    let Some(host) = boot_with_berth(mode, test) else {
        return;
    };
    // A command that says something every 0.2 s on its console, and a shell there.
    host.ok(&[
        "berthctl",
        "create",
        "c",
        "--template",
        "busybox",
        "--",
        "/bin/sh",
        "-c",
        "(while :; do echo mark-$((i+=1)); sleep 0.2; done) & exec sh -i",
    ]);
    host.okw("berthctl start c");
    let pid1 = leader(&host, "c");
    // Its master and the slave berthd keeps are in systemd's store.
    let stored = host.sh("ls -l /proc/1/fd");
    let stored = String::from_utf8_lossy(&stored.stdout);
    assert!(
        stored.contains("ptmx") && stored.contains("/dev/pts/0"),
        "{stored}"
    );

    // berthd raises its own descriptor limit (a console's ptys per machine); what runs
    // in a machine still starts with the usual soft limit.
    assert_eq!(host.shell_ok("c", "ulimit -n").trim(), "1024");
    let limits = host.shell_ok("c", "grep 'open files' /proc/1/limits");
    assert!(limits.contains(" 1024 "), "{limits}");

    let mut term = host.pty(&["berthctl", "console", "c"]);
    term.read_until("Ctrl-] three times", SHORTLY);
    term.read_until("mark-", SHORTLY);
    // Typed into the machine's console: the shell runs it (its echo shows the line as
    // typed; only the shell's output says hi2).
    term.write(b"echo hi$((1+1))\r");
    term.read_until("hi2", SHORTLY);
    // The terminal's size is the console's, and follows a resize.
    term.write(b"stty size\r");
    term.read_until("24 80", SHORTLY);
    term.set_winsize(40, 120);
    // berthctl carries it over on SIGWINCH, berthd on its next wakeup or timer tick.
    std::thread::sleep(Duration::from_secs(1));
    term.write(b"stty size\r");
    term.read_until("40 120", SHORTLY);

    // One writer at a time; the refusal says how to watch instead.
    let err = host.failsw("berthctl console c");
    assert!(
        err.contains("in use") && err.contains("berthctl logs -f c"),
        "{err}"
    );

    // Detach, and the seat is free again.
    term.write(b"\x1d\x1d\x1d");
    term.read_until("Detached", SHORTLY);
    assert_eq!(term.wait(SHORTLY), Some(0), "{}", term.output());
    let mut term = host.pty(&["berthctl", "console", "c"]);
    term.read_until("Connected", SHORTLY);
    term.write(b"echo again$((2+3))\r");
    term.read_until("again5", SHORTLY);

    // The log: the last lines, berthd's own lines among the earlier ones.
    let mut last = String::new();
    assert!(
        wait_until("a mark among the last lines", SHORTLY, || {
            last = host.okw("berthctl logs -n 3 c");
            last.contains("mark-")
        }),
        "{last}"
    );
    assert!(last.lines().count() <= 3, "{last}");
    let all = host.okw("berthctl logs -n 100000 c");
    assert!(all.contains("-- berthd: started"), "{all}");
    assert!(all.contains("again5"), "{all}");
    assert!(!all.contains("\r\n"), "CRLF left in: {all:?}");

    // Followed: new marks come as they are written.
    let mut follower = Command::new("nsenter")
        .args(["-t", &host.pid().to_string(), "-a", "--"])
        .args(["berthctl", "logs", "-f", "-n", "0", "c"])
        .env_clear()
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    assert!(wait_until("followed marks", SHORTLY, || {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("mark-"))
            .count()
            >= 3
    }));
    let _ = follower.kill();
    let _ = follower.wait();

    // Bounded: far more than twice the cap written to the console leaves at most that.
    host.shell_ok(
        "c",
        "i=0; while [ $i -lt 3000 ]; do echo filler-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done > /dev/console",
    );
    assert!(wait_until("the filler's end logged", SHORTLY, || host
        .okw("berthctl logs -n 200 c")
        .contains("filler-2999-")));
    let size: u64 = host
        .okw("stat -c %s /run/berth/console/c.log")
        .trim()
        .parse()
        .unwrap();
    assert!(size <= 2 * CAP, "the log is {size} bytes");
    assert!(size >= CAP / 2, "the log is only {size} bytes");

    // berthd killed outright: systemd restarts it (Restart=on-failure) and gives the
    // console back from its store; the same PID 1 is on it and still answers.
    let before = berthd_pid(&host);
    host.okw("systemctl kill -s KILL berthd");
    assert!(wait_until("berthd restarted", SHORTLY, || {
        let now = berthd_pid(&host);
        now != before
            && now != "0"
            && host
                .runw("systemctl is-active --quiet berthd")
                .status
                .success()
    }));
    // The old client's relay was in the killed berthd: it ends.
    term.read_until("console of machine c closed", SHORTLY);
    drop(term);
    assert_eq!(leader(&host, "c"), pid1);
    assert_eq!(state(&host, "c"), "running");
    let mut term = host.pty(&["berthctl", "console", "c"]);
    term.read_until("Connected", SHORTLY);
    term.write(b"echo back$((3+4))\r");
    term.read_until("back7", SHORTLY);
    // And the reader in the new berthd logs what the machine says.
    assert!(wait_until(
        "marks logged after the restart",
        SHORTLY,
        || {
            let log = host.okw("berthctl logs -n 100000 c");
            log.split("console taken back")
                .nth(1)
                .is_some_and(|after| after.contains("mark-"))
        }
    ));
    term.write(b"\x1d\x1d\x1d");
    assert_eq!(term.wait(SHORTLY), Some(0), "{}", term.output());

    // A frozen machine's console is refused until it is thawed.
    host.okw("berthctl freeze c");
    let err = host.failsw("berthctl console c");
    assert!(err.contains("frozen"), "{err}");
    host.okw("berthctl thaw c");

    // A stopped machine has no console; its log stays until it is removed.
    host.okw("berthctl kill --signal KILL c");
    assert!(wait_until("c stopped", SHORTLY, || state(&host, "c") == "stopped"));
    let err = host.failsw("berthctl console c");
    assert!(err.contains("stopped"), "{err}");
    assert!(
        host.okw("berthctl logs -n 5 c")
            .contains("-- berthd: stopped")
    );
    // The log follows a rename.
    host.okw("berthctl rename c d");
    assert!(!host.path("/run/berth/console/c.log").exists());
    assert!(
        host.okw("berthctl logs -n 5 d")
            .contains("-- berthd: stopped")
    );
    host.okw("berthctl remove d");
    assert!(!host.path("/run/berth/console/d.log").exists());
    let err = host.failsw("berthctl logs d");
    assert!(err.contains("d"), "{err}");
    assert_no_leftovers(&host);
}

#[test]
fn consoles_hybrid() {
    consoles(CgroupMode::Hybrid, "consoles_hybrid");
}

#[test]
fn consoles_unified() {
    consoles(CgroupMode::Unified, "consoles_unified");
}
