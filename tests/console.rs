//! Machine consoles in a test host of each cgroup mode, driven through a real pty as a
//! user at a terminal would: `berthctl console` shows what PID 1's console says and types
//! into it, detaches on Ctrl-] ×3 and attaches again, refuses a second writer and a
//! stopped machine; `berthctl logs` shows the bounded log with berthd's lines, and
//! follows it; the console survives berthd being killed with SIGKILL (systemd restarts
//! it, Restart=on-failure, and hands the masters back from its file descriptor store);
//! nothing is left once the machine is removed.

mod common;

use common::{CgroupMode, TestHost, boot_with_berth, wait_until};
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SHORTLY: Duration = Duration::from_secs(15);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The console log's bound (src/console/log.rs's CAP): the file never exceeds twice it.
const CAP: u64 = 128 * 1024;

/// A command run inside the host on a pty of the test's, as at a terminal.
struct Term {
    master: OwnedFd,
    child: Child,
    seen: Arc<Mutex<Vec<u8>>>,
    /// Where the next `expect` starts looking.
    cursor: usize,
}

impl Term {
    fn start(host: &TestHost, argv: &[&str]) -> Term {
        let pair = berth::console::pty::open().expect("a pty");
        berth::console::pty::set_window_size(&pair.master, (30, 100)).unwrap();
        let out = pair.slave.try_clone().unwrap();
        let err = pair.slave.try_clone().unwrap();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &host.pid().to_string(), "-a", "--"])
            .args(argv)
            .env_clear()
            .env("PATH", PATH)
            .env("TERM", "xterm")
            .stdin(Stdio::from(pair.slave))
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        // SAFETY: setsid and ioctl only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("nsenter runs");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reader = pair.master.try_clone().unwrap();
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the command and its children closed the slave.
            while let Ok(n) = nix::unistd::read(&reader, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Term {
            master: pair.master,
            child,
            seen,
            cursor: 0,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Waits for `needle` after what earlier expects found; panics with the screen if it
    /// does not come.
    fn expect(&mut self, needle: &str) {
        let mut at = None;
        let found = wait_until(needle, SHORTLY, || {
            let seen = self.seen.lock().unwrap();
            at = seen[self.cursor..]
                .windows(needle.len())
                .position(|w| w == needle.as_bytes());
            at.is_some()
        });
        assert!(
            found,
            "{needle:?} not shown; the terminal shows:\n{}",
            self.text()
        );
        self.cursor += at.unwrap() + needle.len();
    }

    fn send(&self, bytes: &[u8]) {
        nix::unistd::write(&self.master, bytes).expect("write to the pty");
    }

    /// Waits for the command to exit; its exit code.
    fn exit_code(&mut self) -> i32 {
        let mut status = None;
        let exited = wait_until("the console client to exit", SHORTLY, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        assert!(
            exited,
            "still running; the terminal shows:\n{}",
            self.text()
        );
        status.unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

    let mut term = Term::start(&host, &["berthctl", "console", "c"]);
    term.expect("Ctrl-] three times");
    term.expect("mark-");
    // Typed into the machine's console: the shell runs it (its echo shows the line as
    // typed; only the shell's output says hi2).
    term.send(b"echo hi$((1+1))\r");
    term.expect("hi2");

    // One writer at a time; the refusal says how to watch instead.
    let err = host.failsw("berthctl console c");
    assert!(
        err.contains("in use") && err.contains("berthctl logs -f c"),
        "{err}"
    );

    // Detach, and the seat is free again.
    term.send(b"\x1d\x1d\x1d");
    term.expect("Detached");
    assert_eq!(term.exit_code(), 0, "{}", term.text());
    let mut term = Term::start(&host, &["berthctl", "console", "c"]);
    term.expect("Connected");
    term.send(b"echo again$((2+3))\r");
    term.expect("again5");

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
    term.expect("console of machine c closed");
    drop(term);
    assert_eq!(leader(&host, "c"), pid1);
    assert_eq!(state(&host, "c"), "running");
    let mut term = Term::start(&host, &["berthctl", "console", "c"]);
    term.expect("Connected");
    term.send(b"echo back$((3+4))\r");
    term.expect("back7");
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
    term.send(b"\x1d\x1d\x1d");
    assert_eq!(term.exit_code(), 0, "{}", term.text());

    // A stopped machine has no console; its log stays until it is removed.
    host.okw("berthctl kill --signal KILL c");
    assert!(wait_until("c stopped", SHORTLY, || state(&host, "c") == "stopped"));
    let err = host.failsw("berthctl console c");
    assert!(err.contains("stopped"), "{err}");
    assert!(
        host.okw("berthctl logs -n 5 c")
            .contains("-- berthd: stopped")
    );
    host.okw("berthctl remove c");
    assert!(!host.path("/run/berth/console/c.log").exists());
    let err = host.failsw("berthctl logs c");
    assert!(err.contains("c"), "{err}");
}

#[test]
fn consoles_hybrid() {
    consoles(CgroupMode::Hybrid, "consoles_hybrid");
}

#[test]
fn consoles_unified() {
    consoles(CgroupMode::Unified, "consoles_unified");
}
