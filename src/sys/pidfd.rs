//! A pidfd lets berth signal and watch a machine's leader without racing PID reuse: it
//! stays bound to the process it was opened on, and becomes readable when that exits.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct PidFd {
    fd: Arc<OwnedFd>,
    pid: u32,
}

impl PidFd {
    pub fn open(pid: u32) -> std::io::Result<PidFd> {
        // SAFETY: plain syscall; on success the kernel hands us a new descriptor we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(PidFd {
            // SAFETY: fd is a fresh descriptor returned by the kernel.
            fd: Arc::new(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
            pid,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn send_signal(&self, signal: i32) -> std::io::Result<()> {
        // SAFETY: fd is a valid pidfd; info may be NULL.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Resolves when the process has exited (it need not be reaped).
    pub async fn exited(&self) -> std::io::Result<()> {
        // SAFETY: the Arc keeps the descriptor open, unchanged, for the AsyncFd's life.
        let afd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                Raw(self.fd.clone()),
                tokio::io::Interest::READABLE,
            )
        }?;
        let _ = afd.readable().await?;
        Ok(())
    }
}

/// For poll(2) in the single-threaded helpers, which have no runtime for [`PidFd::exited`].
impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

struct Raw(Arc<OwnedFd>);

impl AsRawFd for Raw {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signals_and_reports_exit() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let fd = PidFd::open(child.id()).unwrap();
        fd.send_signal(libc::SIGTERM).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), fd.exited())
            .await
            .expect("exit noticed")
            .unwrap();
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        let err = fd.send_signal(libc::SIGTERM).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }
}
