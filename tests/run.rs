//! `berthctl run --rm` in test hosts of both cgroup modes: a one-shot machine from a
//! template passes its command's exit status, stdio and limits through, and leaves
//! nothing behind: not when the command ends, not when it cannot start, not when
//! berthctl is killed while it runs.

mod common;

use common::{CgroupMode, TestHost, assert_no_leftovers, boot_with_berth, wait_until};
use std::process::Output;
use std::time::Duration;

const SHORTLY: Duration = Duration::from_secs(20);

/// `berthctl run --rm --template busybox FLAGS -- CMD...` in the host.
fn run(host: &TestHost, flags: &[&str], cmd: &[&str]) -> Output {
    let mut argv = vec!["berthctl", "run", "--rm", "--template", "busybox"];
    argv.extend(flags);
    argv.push("--");
    argv.extend(cmd);
    host.run(&argv)
}

fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed: {out:?}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A run's answer comes once its machine is gone: nothing may be left the moment
/// berthctl returns.
fn nothing_left(host: &TestHost) {
    assert!(host.okw("berthctl list").contains("No machines."));
    assert_no_leftovers(host);
}

fn state(host: &TestHost, name: &str) -> Option<String> {
    let out = host.run(&["berthctl", "--json", "status", name]);
    if !out.status.success() {
        return None;
    }
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["state"].as_str().map(str::to_string)
}

fn runs_one_shot_machines(mode: CgroupMode, test: &str) {
    let Some(host) = boot_with_berth(mode, test) else {
        return;
    };

    // Exit codes come back, the machine goes.
    let out = run(&host, &[], &["true"]);
    assert_eq!(code(&out), 0, "{out:?}");
    nothing_left(&host);
    let out = run(&host, &[], &["sh", "-c", "exit 3"]);
    assert_eq!(code(&out), 3, "{out:?}");
    nothing_left(&host);
    // 128 + the signal that ended it, as shells say.
    let out = run(&host, &[], &["sh", "-c", "kill -KILL $$"]);
    assert_eq!(code(&out), 128 + libc::SIGKILL, "{out:?}");
    nothing_left(&host);

    // Its stdout and stderr are the caller's, and so is its stdin; its name is given.
    let out = run(
        &host,
        &["--name", "echo"],
        &["sh", "-c", "echo out; echo err >&2; hostname"],
    );
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(text(&out.stdout), "out\necho\n");
    assert_eq!(text(&out.stderr), "err\n");
    let out = host.sh("echo hi | berthctl run --rm --template busybox -- cat");
    assert_eq!(code(&out), 0, "{out:?}");
    assert_eq!(text(&out.stdout), "hi\n");
    nothing_left(&host);

    // -t: a pty of its own on all three, its controlling terminal.
    let out = run(
        &host,
        &["-t"],
        &[
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo ttys; echo ctty > /dev/tty; exit 4",
        ],
    );
    assert_eq!(code(&out), 4, "{out:?}");
    let said = text(&out.stdout);
    assert!(said.contains("ttys") && said.contains("ctty"), "{out:?}");
    nothing_left(&host);

    // -t from a real terminal: the window size is the caller's and follows it, and
    // Ctrl-C is a byte the command's pty turns into SIGINT for it.
    let mut pty = host.pty(&[
        "berthctl",
        "run",
        "--rm",
        "-t",
        "--template",
        "busybox",
        "--",
        "sh",
    ]);
    // Markers the shell computes, so the echo of what was typed never matches them.
    pty.write(b"stty size; echo m-$((1+1))\r");
    let out = pty.read_until("m-2", SHORTLY);
    assert!(out.contains("24 80"), "{out}");
    pty.set_winsize(41, 123);
    // SIGWINCH reaches berthctl asynchronously: ask until the new size has come through.
    let mut resized = false;
    for i in 0..20 {
        pty.write(format!("stty size; echo w-$(({i}+100))\r").as_bytes());
        let out = pty.read_until(&format!("w-{}", i + 100), SHORTLY);
        if out.contains("41 123") {
            resized = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(resized, "{}", pty.output());
    pty.write(b"sleep 100\r");
    std::thread::sleep(Duration::from_millis(500));
    pty.write(b"\x03");
    pty.write(b"echo back-$((3+3))\r");
    pty.read_until("back-6", SHORTLY);
    pty.write(b"exit 5\r");
    assert_eq!(pty.wait(SHORTLY), Some(5), "{}", pty.output());
    drop(pty);
    nothing_left(&host);

    // Limits apply to the command: the scope has them while it runs, and it reads its
    // cgroup's memory limit inside, where the scope is the root of each hierarchy. The
    // command waits on a fifo for the look from outside.
    let (limit_file, property) = match mode {
        CgroupMode::Unified => ("/sys/fs/cgroup/memory.max", "MemoryMax"),
        _ => ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "MemoryLimit"),
    };
    let out = host.sh(&format!(
        "mkfifo /tmp/gate; \
         berthctl run --rm --name lim --template busybox --memory 64M -- \
           sh -c 'cat {limit_file} 2>/dev/null || echo none; read x' </tmp/gate & p=$!; \
         exec 3>/tmp/gate; \
         until berthctl --json status lim 2>/dev/null | grep -q '\"running\"'; do sleep 0.1; done; \
         systemctl show -p {property} machine-lim.scope; \
         echo >&3; exec 3>&-; wait $p"
    ));
    assert_eq!(code(&out), 0, "{out:?}");
    let bytes = (64u64 << 20).to_string();
    let said = text(&out.stdout);
    assert!(said.contains(&format!("{property}={bytes}\n")), "{said}");
    // A unified host whose kernel keeps the memory controller on v1 (this test machine
    // may) has no memory.max to read.
    let v2_memory = host
        .read("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
    if mode == CgroupMode::Hybrid || v2_memory {
        assert!(said.starts_with(&format!("{bytes}\n")), "{said}");
    } else {
        assert!(said.starts_with("none\n"), "{said}");
    }
    // And the environment.
    let out = run(
        &host,
        &["-e", "GREETING=hello"],
        &["sh", "-c", "echo $GREETING"],
    );
    assert_eq!(text(&out.stdout), "hello\n", "{out:?}");
    nothing_left(&host);

    // A command that is not there: 127, named on stderr.
    let out = run(&host, &[], &["no-such-command", "x"]);
    assert_eq!(code(&out), 127, "{out:?}");
    assert!(text(&out.stderr).contains("no-such-command"), "{out:?}");
    nothing_left(&host);

    // berthctl's own failures: one line, 125, nothing made.
    let out = host.run(&[
        "berthctl",
        "run",
        "--rm",
        "--template",
        "no-such-template",
        "--",
        "true",
    ]);
    assert_eq!(code(&out), 125, "{out:?}");
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("no-such-template"), "{err}");
    let out = host.run(&["berthctl", "run", "--template", "busybox", "--", "true"]);
    assert_eq!(code(&out), 125, "{out:?}");
    assert!(text(&out.stderr).contains("--rm"), "{out:?}");
    nothing_left(&host);

    // SIGTERM to berthctl reaches the command, whose status comes back.
    let out = host.sh(
        "berthctl run --rm --name term --template busybox -- \
         sh -c 'trap \"exit 7\" TERM; sleep 100 & wait' & p=$!; \
         until berthctl --json status term 2>/dev/null | grep -q '\"running\"'; do sleep 0.1; done; \
         sleep 0.5; kill -TERM $p; wait $p",
    );
    assert_eq!(code(&out), 7, "{out:?}");
    nothing_left(&host);

    // berthctl killed mid-run: berthd kills the machine, and nothing is left.
    let pid = host.sh(
        "berthctl run --rm --name victim --template busybox -- sleep 100 \
         </dev/null >/dev/null 2>&1 & echo $!",
    );
    let pid = text(&pid.stdout).trim().to_string();
    assert!(
        wait_until("the run to be running", SHORTLY, || state(&host, "victim")
            .as_deref()
            == Some("running")),
        "victim never ran"
    );
    host.ok(&["kill", "-KILL", &pid]);
    assert!(
        wait_until("the run's machine to go", SHORTLY, || state(
            &host, "victim"
        )
        .is_none()
            && host
                .okw("systemctl list-units --all --no-legend machine-*")
                .trim()
                .is_empty()),
        "victim outlived its berthctl"
    );
    nothing_left(&host);

    // berthd restarted mid-run: the call is gone with the old berthd, and so is the
    // machine once the new one finds it.
    let pid = host.sh(
        "berthctl run --rm --name orphan --template busybox -- sleep 100 \
         </dev/null >/dev/null 2>&1 & echo $!",
    );
    let pid = text(&pid.stdout).trim().to_string();
    assert!(
        wait_until("the run to be running", SHORTLY, || state(&host, "orphan")
            .as_deref()
            == Some("running")),
        "orphan never ran"
    );
    host.okw("systemctl restart berthd");
    assert!(
        wait_until("the orphaned run to go", SHORTLY, || state(&host, "orphan")
            .is_none()),
        "orphan outlived the berthd that ran it"
    );
    // Its berthctl lost the call and said so.
    assert!(wait_until("its berthctl to end", SHORTLY, || !host
        .run(&["kill", "-0", &pid])
        .status
        .success()));
    nothing_left(&host);
}

#[test]
fn run_in_a_hybrid_host() {
    runs_one_shot_machines(CgroupMode::Hybrid, "run_in_a_hybrid_host");
}

#[test]
fn run_in_a_unified_host() {
    runs_one_shot_machines(CgroupMode::Unified, "run_in_a_unified_host");
}
