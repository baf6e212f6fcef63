//! `berthctl console` and `berthctl logs`: a machine's console through the pty master
//! OpenConsole returns, and its log through the pipe ReadLog returns.
//!
//! The relay here is a minimal one of console's own (raw mode, window size, the
//! Ctrl-] ×3 escape); the shared terminal relay (src/cli/terminal.rs) had not landed when
//! this was written.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use super::args::LogsArgs;
use super::commands::Session;
use super::error::CliError;
use crate::console::pty;

/// Ctrl-]: pressed [`ESCAPE_COUNT`] times within [`ESCAPE_WITHIN`] it detaches, as
/// machinectl's and nspawn's consoles do.
const ESCAPE: u8 = 0x1d;
const ESCAPE_COUNT: usize = 3;
const ESCAPE_WITHIN: Duration = Duration::from_secs(1);

/// How often the relay wakes without input, to carry a terminal resize over (no
/// SIGWINCH handler is needed that way).
const TICK_MS: u16 = 250;

enum End {
    Detached,
    Closed,
}

impl Session {
    pub async fn console(&self, name: &str) -> Result<i32, CliError> {
        let machine = self.machine(name).await?;
        let master: zbus::zvariant::OwnedFd =
            self.change(machine.inner(), "OpenConsole", &()).await?;
        let master: OwnedFd = master.into();
        eprintln!(
            "Connected to the console of machine {name}. \
             Press Ctrl-] three times within a second to detach."
        );
        let end = tokio::task::spawn_blocking(move || relay(&master))
            .await
            .map_err(|e| CliError::Io(io::Error::other(e)))??;
        match end {
            End::Detached => eprintln!(
                "\r\nDetached from the console of machine {name}; it runs on \
                 (`berthctl console {name}` attaches again)."
            ),
            End::Closed => eprintln!(
                "\r\nThe console of machine {name} closed: the machine stopped, or berthd \
                 restarted (attach again)."
            ),
        }
        Ok(0)
    }

    pub async fn logs(&self, args: &LogsArgs) -> Result<i32, CliError> {
        let machine = self.machine(&args.name).await?;
        let fd: zbus::zvariant::OwnedFd = self
            .change(machine.inner(), "ReadLog", &(args.lines, args.follow))
            .await?;
        let fd: OwnedFd = fd.into();
        tokio::task::spawn_blocking(move || copy_log(File::from(fd), &mut io::stdout().lock()))
            .await
            .map_err(|e| CliError::Io(io::Error::other(e)))??;
        Ok(0)
    }
}

/// Copies the log to `out` as it comes (flushed per read, for -f), with the console's
/// CRLF line ends made plain newlines.
fn copy_log(mut from: impl Read, out: &mut impl Write) -> io::Result<()> {
    let mut buf = [0u8; 8192];
    let mut cr = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut text = Vec::with_capacity(n + 1);
        for &b in &buf[..n] {
            if cr && b != b'\n' {
                text.push(b'\r');
            }
            cr = b == b'\r';
            if !cr {
                text.push(b);
            }
        }
        out.write_all(&text)?;
        out.flush()?;
    }
    if cr {
        out.write_all(b"\r")?;
    }
    out.flush()
}

/// The terminal in raw mode until dropped: keys go to the machine as typed (Ctrl-C
/// included), and what the machine writes is shown as it is.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> io::Result<RawMode> {
        let stdin = io::stdin();
        let saved = nix::sys::termios::tcgetattr(stdin.as_fd())?;
        pty::make_raw(stdin.as_fd())?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            io::stdin().as_fd(),
            nix::sys::termios::SetArg::TCSADRAIN,
            &self.saved,
        );
    }
}

/// Counts Ctrl-] pressed in a row; any other key starts over.
#[derive(Default)]
struct Escape {
    seen: usize,
    first: Option<Instant>,
}

impl Escape {
    /// Whether `input` completes the escape.
    fn detaches(&mut self, input: &[u8], now: Instant) -> bool {
        for &b in input {
            if b != ESCAPE {
                self.seen = 0;
                continue;
            }
            if self.seen == 0 || self.first.is_none_or(|t| now - t > ESCAPE_WITHIN) {
                self.seen = 0;
                self.first = Some(now);
            }
            self.seen += 1;
            if self.seen == ESCAPE_COUNT {
                return true;
            }
        }
        false
    }
}

fn relay(master: &OwnedFd) -> io::Result<End> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let stdin = io::stdin();
    let tty = stdin.is_terminal();
    let _raw = tty.then(RawMode::enter).transpose()?;
    let mut size = None;
    let mut escape = Escape::default();
    let mut buf = [0u8; 4096];
    let mut out = io::stdout().lock();
    loop {
        if tty
            && let Ok(now) = pty::window_size(stdin.as_fd())
            && Some(now) != size
        {
            let _ = pty::set_window_size(master, now);
            size = Some(now);
        }
        let mut fds = [
            PollFd::new(master.as_fd(), PollFlags::POLLIN),
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::from(TICK_MS)) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let ready = |f: &PollFd| {
            f.revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
        };
        let (from_machine, from_user) = (ready(&fds[0]), ready(&fds[1]));
        if from_machine {
            match nix::unistd::read(master, &mut buf) {
                // berthd closed its side: the machine ended, or berthd did.
                Ok(0) | Err(nix::errno::Errno::EIO) => return Ok(End::Closed),
                Ok(n) => {
                    out.write_all(&buf[..n])?;
                    out.flush()?;
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if from_user {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(0) => return Ok(End::Detached),
                Ok(n) => {
                    if escape.detaches(&buf[..n], Instant::now()) {
                        return Ok(End::Detached);
                    }
                    write_all(master, &buf[..n])?;
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn write_all(fd: &OwnedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_ctrl_brackets_in_a_row_detach() {
        let t = Instant::now();
        let mut e = Escape::default();
        assert!(!e.detaches(b"ls\r\x1d\x1d", t));
        assert!(e.detaches(b"\x1d", t));
        let mut e = Escape::default();
        assert!(!e.detaches(b"\x1d\x1dx\x1d", t));
        // Too slow: the count starts over.
        let mut e = Escape::default();
        assert!(!e.detaches(b"\x1d\x1d", t));
        assert!(!e.detaches(b"\x1d", t + Duration::from_secs(2)));
        assert!(e.detaches(b"\x1d\x1d", t + Duration::from_secs(2)));
    }

    #[test]
    fn logs_lose_their_carriage_returns() {
        let mut out = Vec::new();
        copy_log(&b"a\r\nb\rc\r\n\r"[..], &mut out).unwrap();
        assert_eq!(out, b"a\nb\rc\n\r");
    }
}
