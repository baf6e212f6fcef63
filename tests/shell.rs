//! `berthctl shell`: a login shell on a pty inside a machine (OpenShell), driven through a
//! real terminal (tests/common/pty.rs).

mod common;

use common::{CgroupMode, boot_with_berth};
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
