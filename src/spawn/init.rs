//! berth's own PID 1 for machines that run a Command instead of an init (what
//! `systemd-nspawn --as-pid2` and `docker run --init` give): a command that never expected
//! to be PID 1 neither reaps the orphans reparented to it nor gets signals it has no
//! handler for (the kernel drops those for a namespace's init), so zombies would pile up
//! and `stop` would wait for its timeout.
//!
//! The spawn child is already berthd's code inside all the machine's namespaces, so no
//! binary in the machine is needed: it forks, the child execs the command as PID 2, and
//! PID 1 stays behind as a loop that reaps and forwards. It runs in a fresh
//! single-threaded process forked from the single-threaded helper, and only makes plain
//! system calls.

use nix::unistd::{ForkResult, Pid, fork, setsid};
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

/// Where berth's init keeps the status pipe while it runs.
const STATUS_FD: RawFd = 3;

/// Which side of [`fork_command`] this process is on.
pub enum Role {
    /// PID 1: call [`reap_and_forward`] with the command's PID.
    Init(Pid),
    /// The command's side, its signal mask as before and a session of its own: exec it.
    Command,
}

/// What PID 1 calls itself in `ps` inside the machine (/proc/1/comm).
pub const COMM: &str = "berth-init";

/// Forks the command's process. Every signal is blocked first, so none sent between the
/// fork and PID 1's loop is lost: blocked signals stay pending even for a namespace's
/// init, which the kernel would otherwise spare those it has no handler for.
pub fn fork_command() -> Result<Role, String> {
    let all = full_set();
    let mut old = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: both sets are valid for the call; `old` is written by it.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &all, old.as_mut_ptr()) } != 0 {
        return Err(format!(
            "blocking signals: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: sigprocmask succeeded, so `old` holds the previous mask.
    let old = unsafe { old.assume_init() };
    // SAFETY: this process is single-threaded (forked from the single-threaded helper).
    match unsafe { fork() }.map_err(|e| format!("fork of the command: {e}"))? {
        ForkResult::Child => {
            // The command's own session and process group, as it would have as PID 1, so
            // a terminal it opens can become its controlling one.
            setsid().map_err(|e| format!("setsid: {e}"))?;
            // A terminal as stdin (the console, or a run's pty) becomes the session's
            // controlling terminal, so the keys that signal (Ctrl-C, Ctrl-Z) and
            // window-size changes reach the command and a shell there has job control.
            // Best effort: a command can run without.
            // SAFETY: isatty and ioctl(TIOCSCTTY) only look at and act on descriptor 0.
            unsafe {
                if libc::isatty(0) == 1 {
                    libc::ioctl(0, libc::TIOCSCTTY, 0);
                }
            }
            // SAFETY: restores the mask saved above.
            if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) } != 0 {
                return Err(format!(
                    "restoring the signal mask: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(Role::Command)
        }
        ForkResult::Parent { child } => Ok(Role::Init(child)),
    }
}

/// PID 1's life: reap every child, pass every other signal on to the command, and exit
/// with the command's status once it is gone (which takes the rest of the machine's
/// processes with it, as the PID namespace ends); that status is written first to
/// `status`, when given, as one byte (a one-shot run's status pipe to berthd). Closes
/// every other descriptor but stdio first: nothing the helper opened (the root tree's
/// mounts, the exec error pipe, whose end-of-file tells the helper that the command's
/// exec worked) may stay open in a process that lives as long as the machine.
pub fn reap_and_forward(command: Pid, status: Option<RawFd>) -> ! {
    // The status pipe moves to 3, the lowest number close_range spares.
    let status = status.map(|fd| {
        // SAFETY: dup2 onto a descriptor about to be closed anyway.
        unsafe { libc::dup2(fd, STATUS_FD) };
        STATUS_FD
    });
    let first_closed = if status.is_some() { STATUS_FD + 1 } else { 3 };
    // SAFETY: close_range on descriptors this process owns and no longer uses; the
    // OwnedFds still naming some of them are never dropped, as this never returns.
    unsafe {
        libc::syscall(libc::SYS_close_range, first_closed as u32, u32::MAX, 0u32);
    }
    set_comm(COMM);
    let all = full_set();
    loop {
        // SAFETY: `all` is a valid set; no siginfo is asked for.
        let sig = unsafe { libc::sigwaitinfo(&all, std::ptr::null_mut()) };
        if sig < 0 {
            continue;
        }
        if sig == libc::SIGCHLD {
            if let Some(code) = reap(command) {
                if let Some(fd) = status {
                    report(fd, code);
                }
                // SAFETY: _exit skips atexit handlers and stdio flushing, none of which
                // belong to this process.
                unsafe { libc::_exit(code) }
            }
        } else {
            // SAFETY: plain kill(2). A command that is already gone is reaped at the
            // SIGCHLD that follows.
            unsafe { libc::kill(command.as_raw(), sig) };
        }
    }
}

/// Reaps every child that has ended (SIGCHLDs coalesce); the exit code for PID 1 once
/// `command` is among them: its own, or 128 + the signal that ended it, as shells say.
fn reap(command: Pid) -> Option<i32> {
    let mut result = None;
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid(2) on any child.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return result;
        }
        if pid == command.as_raw() {
            result = Some(exit_code(status));
        }
    }
}

/// Writes `code` (0-255, see [`exit_code`]) to the status pipe. Nothing is left to do
/// if berthd is gone: a blocked SIGPIPE makes that an EPIPE, ignored.
fn report(fd: RawFd, code: i32) {
    let byte = [code as u8];
    loop {
        // SAFETY: write(2) of one byte from a live buffer.
        let n = unsafe { libc::write(fd, byte.as_ptr().cast(), 1) };
        if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

fn full_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises the set.
    unsafe {
        libc::sigfillset(set.as_mut_ptr());
        set.assume_init()
    }
}

fn set_comm(name: &str) {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_as_shells_report_them() {
        // Statuses as wait(2) encodes them.
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(libc::SIGTERM), 128 + libc::SIGTERM);
        assert_eq!(exit_code(libc::SIGKILL | 0x80), 128 + libc::SIGKILL);
    }
}
