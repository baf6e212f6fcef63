//! `berthctl shell`: a login shell on a pty inside a machine (OpenShell), driven through a
//! real terminal (tests/common/pty.rs).

mod common;

use common::{CgroupMode, Pty, TestHost, boot_with_berth, wait_until};
use std::time::Duration;

const SHORTLY: Duration = Duration::from_secs(10);

/// The pty driver itself, against the host's own shell: typing, output, window size and
/// exit status.
#[test]
fn pty_driver_drives_a_shell_in_the_host() {
    let Some(host) = boot_with_berth(CgroupMode::Unified, "pty_driver_drives_a_shell_in_the_host")
    else {
        return;
    };
    // No job control: dash would try to give the terminal back to nsenter's process
    // group at exit, which is outside the host's PID namespace, and fail with 2.
    let mut pty = host.pty(&["sh", "+m"]);
    // The pty is the test's, not in the host's /dev/pts: `tty` cannot name it.
    pty.write(b"test -t 0 && echo tty-$((2+2)); stty size; echo one-$((1+1))\r");
    let out = pty.read_until("one-2", SHORTLY);
    assert!(out.contains("tty-4"), "{out}");
    assert!(out.contains("24 80"), "{out}");
    pty.set_winsize(33, 101);
    pty.write(b"stty size\r");
    pty.read_until("33 101", SHORTLY);
    pty.write(b"exit 7\r");
    assert_eq!(pty.wait(SHORTLY), Some(7), "{}", pty.output());
}

/// `text`'s lines, trimmed of the pty's carriage returns.
fn lines(text: &str) -> Vec<&str> {
    text.lines().map(|l| l.trim_end_matches('\r')).collect()
}

/// Types `command` and a marker computed by the shell (so the echo of what was typed
/// never matches it), and returns what the command printed up to the marker.
fn run_in(pty: &mut Pty, command: &str, marker: u32) -> String {
    pty.write(format!("{command}; echo mark-$(({marker}+1))\r").as_bytes());
    pty.read_until(&format!("mark-{}", marker + 1), SHORTLY)
}

/// The command lines of every process in machine `name` but the exec's own.
fn processes(host: &TestHost, name: &str) -> String {
    host.shell_ok(
        name,
        "for p in /proc/[0-9]*; do [ \"${p#/proc/}\" = $$ ] || \
         { tr '\\0' ' ' < $p/cmdline; echo; }; done 2>/dev/null",
    )
}

fn shell_scenarios(mode: CgroupMode, test: &str) {
    let Some(host) = boot_with_berth(mode, test) else {
        return;
    };
    host.okw("berthctl create web --template busybox");
    host.okw("berthctl start web");
    host.okw("berthctl create idle --template busybox");

    // A login shell on a pty of the machine's own: its name, its devpts, the window size
    // the terminal has and then changes to.
    let mut pty = host.pty(&["berthctl", "shell", "web"]);
    let out = run_in(&mut pty, "hostname; tty; stty size", 1);
    let seen = lines(&out);
    assert!(seen.contains(&"web"), "{out}");
    assert!(
        seen.iter().any(|l| l.starts_with("/dev/pts/")),
        "tty inside: {out}"
    );
    assert!(seen.contains(&"24 80"), "{out}");
    pty.set_winsize(41, 123);
    // SIGWINCH reaches berthctl asynchronously: ask until the new size has come through.
    let mut size = String::new();
    for i in 0..20 {
        size = run_in(&mut pty, "stty size", 100 + i);
        if lines(&size).contains(&"41 123") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(lines(&size).contains(&"41 123"), "{}", pty.output());
    let env = run_in(&mut pty, "echo \"$HOME $USER $TERM $SHELL\"; id -u", 2);
    assert!(
        lines(&env).contains(&"/root root xterm-256color /bin/sh"),
        "{env}"
    );
    assert!(lines(&env).contains(&"0"), "{env}");
    // Ctrl-C interrupts the foreground command, not the shell or berthctl.
    pty.write(b"sleep 100\r");
    pty.read_until("sleep 100", SHORTLY);
    std::thread::sleep(Duration::from_millis(500));
    pty.write(b"\x03");
    run_in(&mut pty, "true", 3);
    pty.write(b"exit 3\r");
    assert_eq!(pty.wait(SHORTLY), Some(3), "{}", pty.output());

    // Another user of the machine's own, with its uid, groups and home.
    // The busybox template has no adduser: the lines it would write.
    host.shell_ok(
        "web",
        "echo alice:x:1234:1234::/home/alice:/bin/sh >> /etc/passwd && \
         echo alice:x:1234: >> /etc/group && echo staff2:x:2000:root,alice >> /etc/group && \
         mkdir -p /home/alice && chown 1234:1234 /home/alice",
    );
    let mut pty = host.pty(&[
        "berthctl",
        "shell",
        "web",
        "--user",
        "alice",
        "--",
        "sh",
        "-c",
        "id; pwd; tty",
    ]);
    assert_eq!(pty.wait(SHORTLY), Some(0), "{}", pty.output());
    let out = pty.output();
    assert!(out.contains("uid=1234(alice)"), "{out}");
    assert!(out.contains("2000(staff2)"), "{out}");
    assert!(lines(&out).contains(&"/home/alice"), "{out}");
    assert!(out.contains("/dev/pts/"), "{out}");
    // A uid works too.
    let out = host.ok(&["berthctl", "shell", "web", "-u", "1234", "--", "id", "-un"]);
    assert_eq!(out.trim(), "alice");

    // Without a terminal: no raw mode, the input copied, its end passed on.
    let out = host.ok(&["berthctl", "shell", "web", "--", "hostname"]);
    assert_eq!(out.trim(), "web");
    let out = host.ok(&[
        "berthctl",
        "shell",
        "web",
        "--",
        "sh",
        "-c",
        "read x; echo got-$x",
    ]);
    assert!(out.contains("got-"), "{out}");

    // The machine's confinement, as Execute's commands get it.
    let confinement = "grep -E '^(CapBnd|Seccomp):' /proc/self/status";
    let exec = host.shell_ok("web", confinement);
    let shell = host.ok(&["berthctl", "shell", "web", "--", "sh", "-c", confinement]);
    assert_eq!(lines(&shell), lines(&exec));
    assert!(exec.contains("Seccomp:\t2"), "{exec}");

    // A privileged machine (no user namespace of its own) too: its devpts, and a uid
    // its /etc/passwd does not name.
    if mode == CgroupMode::Hybrid {
        host.okw("berthctl create priv --template busybox --private-users no");
        host.okw("berthctl start priv");
        let out = host.ok(&[
            "berthctl",
            "shell",
            "priv",
            "-u",
            "4321",
            "--",
            "sh",
            "-c",
            "id -u; tty",
        ]);
        let seen = lines(&out);
        assert!(seen.contains(&"4321"), "{out}");
        assert!(seen.iter().any(|l| l.starts_with("/dev/pts/")), "{out}");
        host.okw("berthctl stop priv");
    }

    // Refusals come before anything runs, each in one line.
    let e = host.fails(&["berthctl", "shell", "web", "--user", "bob", "--", "id"]);
    assert!(
        e.contains("no user \"bob\" in machine web's /etc/passwd"),
        "{e}"
    );
    let e = host.fails(&["berthctl", "shell", "idle"]);
    assert!(e.contains("idle is stopped"), "{e}");
    host.okw("berthctl freeze web");
    let e = host.fails(&["berthctl", "shell", "web"]);
    assert!(e.contains("web is frozen"), "{e}");
    host.okw("berthctl thaw web");

    // A command the machine does not have: 127, and its name said on the terminal.
    let mut pty = host.pty(&["berthctl", "shell", "web", "--", "no-such-command"]);
    assert_eq!(pty.wait(SHORTLY), Some(127), "{}", pty.output());
    assert!(pty.output().contains("no-such-command"), "{}", pty.output());

    // berthctl killed: berthd sees it leave the bus and the shell goes, with what it ran.
    let before = processes(&host, "web");
    let mut pty = host.pty(&["berthctl", "shell", "web"]);
    pty.write(b"sleep 1000\r");
    assert!(
        wait_until("the shell's sleep", SHORTLY, || processes(&host, "web")
            .contains("sleep 1000")),
        "{}",
        pty.output()
    );
    pty.signal(libc::SIGKILL);
    assert!(pty.wait(SHORTLY).is_some());
    let mut now = String::new();
    assert!(
        wait_until("the shell to go", SHORTLY, || {
            now = processes(&host, "web");
            now == before
        }),
        "before:\n{before}\nnow:\n{now}"
    );

    // berthctl told to stop: the terminal is left as it was found.
    let mut pty = host.pty(&["berthctl", "shell", "web"]);
    run_in(&mut pty, "true", 4);
    assert!(!pty.echoes(), "raw while relaying");
    pty.signal(libc::SIGTERM);
    assert_eq!(pty.wait(SHORTLY), Some(1), "{}", pty.output());
    assert!(pty.echoes(), "restored: {}", pty.output());
    pty.read_until("terminated (SIGTERM)", SHORTLY);
    assert!(
        wait_until("that shell to go too", SHORTLY, || {
            now = processes(&host, "web");
            now == before
        }),
        "before:\n{before}\nnow:\n{now}"
    );
}

#[test]
fn shell_on_hybrid() {
    shell_scenarios(CgroupMode::Hybrid, "shell_on_hybrid");
}

#[test]
fn shell_on_unified() {
    shell_scenarios(CgroupMode::Unified, "shell_on_unified");
}
