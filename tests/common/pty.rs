//! `Pty`: a command run inside a test host on a terminal of its own, driven as a user
//! at a keyboard would (berthctl shell, console, run -t).
//!
//! `host.pty(&["berthctl", "shell", "web"])` starts it (like `TestHost::run`: all the
//! host's namespaces, its root cgroup, an environment of PATH alone, no time limit of
//! its own) as a session leader with a fresh pty's slave as its controlling terminal and
//! stdio, 24 rows by 80 columns. Then:
//! - `write(bytes)` types; `read_until(pattern, timeout)` waits for `pattern` in the
//!   output not consumed yet and returns that output up to the end of the match (panics
//!   with everything seen when it does not come); `output()` is everything so far;
//! - `set_winsize(rows, cols)` resizes the terminal (the kernel sends SIGWINCH to the
//!   command);
//! - `wait(timeout)` its exit code (128+signal when killed), or None while it runs;
//! - `signal(sig)` signals the command itself (not nsenter in front of it);
//! - on drop the command and nsenter are killed.
//!
//! Output is read on a thread of its own until the pty hangs up, so nothing the command
//! writes blocks on a full pty while the test does something else.

use super::host::TestHost;
use super::poll::wait_until;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub struct Pty {
    master: File,
    child: Child,
    output: Arc<(Mutex<Output>, Condvar)>,
    /// How much of the output `read_until` has consumed.
    consumed: usize,
    argv: Vec<String>,
}

#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    /// The slave side is closed (EIO) or reading failed.
    ended: bool,
}

impl TestHost {
    /// `argv` inside the host on a fresh pty; see the module's documentation.
    pub fn pty(&self, argv: &[&str]) -> Pty {
        let size = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&size, None).expect("openpty");
        // Neither end may leak into the command beyond its stdio, or the pty would never
        // hang up.
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .expect("FD_CLOEXEC");
        }
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the pty's slave"));
        let mut cmd = self.command(argv);
        cmd.stdin(stdio(&pty.slave))
            .stdout(stdio(&pty.slave))
            .stderr(stdio(&pty.slave));
        // SAFETY: setsid and ioctl only, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {argv:?} on a pty: {e}"));
        drop(cmd);
        drop(pty.slave);
        let master = File::from(pty.master);
        let output = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let reader = master.try_clone().expect("dup the pty's master");
        let shared = Arc::clone(&output);
        thread::spawn(move || read_all(reader, shared));
        Pty {
            master,
            child,
            output,
            consumed: 0,
            argv: argv.iter().map(|a| a.to_string()).collect(),
        }
    }
}

fn read_all(mut master: File, shared: Arc<(Mutex<Output>, Condvar)>) {
    let (lock, cond) = &*shared;
    let mut buf = [0u8; 4096];
    loop {
        let n = match master.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO once the slave side is closed.
            Err(_) => 0,
        };
        let mut out = lock.lock().unwrap_or_else(|p| p.into_inner());
        if n == 0 {
            out.ended = true;
            cond.notify_all();
            return;
        }
        out.bytes.extend_from_slice(&buf[..n]);
        cond.notify_all();
    }
}

impl Pty {
    /// Types `bytes` (0x03 is Ctrl-C, "\r" Enter).
    pub fn write(&mut self, bytes: &[u8]) {
        self.master
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("writing to {:?}'s pty: {e}", self.argv));
    }

    /// Waits up to `timeout` for `pattern` in the output after what earlier calls
    /// consumed; returns the output up to and including it, and consumes that. Panics
    /// with all the output when the pattern does not come.
    pub fn read_until(&mut self, pattern: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.output;
        let mut out = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let fresh = &out.bytes[self.consumed..];
            if let Some(at) = find(fresh, pattern.as_bytes()) {
                let end = self.consumed + at + pattern.len();
                let text = String::from_utf8_lossy(&out.bytes[self.consumed..end]).into_owned();
                self.consumed = end;
                return text;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || out.ended {
                panic!(
                    "{:?} did not print {pattern:?} within {timeout:?}{}; its output:\n{}",
                    self.argv,
                    if out.ended { " (its pty hung up)" } else { "" },
                    String::from_utf8_lossy(&out.bytes)
                );
            }
            out = cond
                .wait_timeout(out, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Everything the command wrote so far.
    pub fn output(&self) -> String {
        let out = self.output.0.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&out.bytes).into_owned()
    }

    /// Resizes the terminal; the command gets SIGWINCH.
    pub fn set_winsize(&self, rows: u16, cols: u16) {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads the winsize we pass.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// The command's exit code (128+signal when killed) once it ended, waiting up to
    /// `timeout`; None if it still runs then.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let mut code = None;
        wait_until(&format!("{:?} to end", self.argv), timeout, || {
            code = match self.child.try_wait() {
                Ok(Some(status)) => Some(
                    status
                        .code()
                        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                ),
                Ok(None) => None,
                Err(e) => panic!("waiting for {:?}: {e}", self.argv),
            };
            code.is_some()
        });
        code
    }

    /// Sends `sig` to the command itself: nsenter runs it as its only child (it forks to
    /// enter the host's PID namespace).
    pub fn signal(&self, sig: i32) {
        let nsenter = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{nsenter}/task/{nsenter}/children"))
            .unwrap_or_default();
        let pids: Vec<i32> = children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        assert!(!pids.is_empty(), "{:?} has no process to signal", self.argv);
        for pid in pids {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let nsenter = self.child.id();
            let children =
                std::fs::read_to_string(format!("/proc/{nsenter}/task/{nsenter}/children"))
                    .unwrap_or_default();
            for pid in children.split_whitespace().filter_map(|p| p.parse().ok()) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
