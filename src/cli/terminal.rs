//! Relaying berthctl's terminal to a pty master that berthd handed over (`shell`, and
//! `console` and `run -t`).
//!
//! The whole API:
//! - [`relay`]: copies stdin → master and master → stdout until the pty ends (its slave
//!   side is closed: EIO/EOF on the master) or the escape is typed. When stdin is a
//!   terminal it is put in raw mode for the duration ([`RawMode`], restored on every way
//!   out, panics included) and its window size is copied to the master at the start and
//!   on every SIGWINCH. When stdin is not a terminal nothing of that happens: its bytes
//!   are copied until EOF, then the pty's end-of-file character goes in (so a shell
//!   reading the pty sees EOF too) and the output is copied until the pty ends.
//! - [`Escape`]: a byte repeated a number of times within an interval that detaches
//!   (`console`'s Ctrl-] ×3); [`EscapeDetector`] is its pure logic.
//! - [`RawMode`] and [`copy_window_size`], for a caller that needs them alone.
//!
//! stdin is read on a thread of its own in blocking mode: making it non-blocking would
//! change the terminal's shared file description for every other process on it. That
//! thread may still be blocked in read(2) when [`relay`] returns; it ends with the
//! process.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::termios::{self, SetArg, SpecialCharacterIndices, Termios};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// Detach when `byte` comes `count` times in a row, all within `within` of the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escape {
    pub byte: u8,
    pub count: usize,
    pub within: Duration,
}

impl Escape {
    /// Ctrl-] three times within a second, as machinectl login and nspawn have it.
    pub const CONSOLE: Escape = Escape {
        byte: 0x1d,
        count: 3,
        within: Duration::from_secs(1),
    };
}

/// Why [`relay`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The pty's slave side was closed: whatever ran on it is gone.
    Hangup,
    /// The escape was typed; what runs on the pty goes on.
    Detached,
}

/// Watches input for an [`Escape`]; pure, so its timing can be tested.
#[derive(Debug)]
pub struct EscapeDetector {
    escape: Escape,
    seen: usize,
    first: Option<Instant>,
}

impl EscapeDetector {
    pub fn new(escape: Escape) -> Self {
        EscapeDetector {
            escape,
            seen: 0,
            first: None,
        }
    }

    /// Feeds one input byte read at `now`; true when it completes the escape.
    pub fn feed(&mut self, byte: u8, now: Instant) -> bool {
        if byte != self.escape.byte {
            self.seen = 0;
            self.first = None;
            return false;
        }
        match self.first {
            Some(first) if now.saturating_duration_since(first) <= self.escape.within => {
                self.seen += 1;
            }
            // The first press, or one too late to count with the earlier ones: a new
            // run starts here.
            _ => {
                self.first = Some(now);
                self.seen = 1;
            }
        }
        if self.seen >= self.escape.count.max(1) {
            self.seen = 0;
            self.first = None;
            return true;
        }
        false
    }

    /// Where in `buf` (read at `now`) the escape completes: the number of bytes up to
    /// and including the completing one.
    pub fn scan(&mut self, buf: &[u8], now: Instant) -> Option<usize> {
        buf.iter().position(|&b| self.feed(b, now)).map(|i| i + 1)
    }
}

/// A terminal in raw mode; its settings as they were come back on drop.
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Raw mode on `fd` if it is a terminal; `None` (and nothing changed) if it is not.
    pub fn enter(fd: BorrowedFd<'_>) -> io::Result<Option<RawMode>> {
        let saved = match termios::tcgetattr(fd) {
            Ok(t) => t,
            Err(nix::errno::Errno::ENOTTY) | Err(nix::errno::Errno::EINVAL) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        // Our own copy, so the guard does not borrow the caller's descriptor.
        let fd = fd.try_clone_to_owned()?;
        termios::tcsetattr(&fd, SetArg::TCSANOW, &raw)?;
        Ok(Some(RawMode { fd, saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // TCSADRAIN: what the pty last sent reaches the screen under the old settings'
        // newline handling only after it was written out under the raw ones.
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}

/// Copies the window size of terminal `from` onto pty master `to` (the kernel then sends
/// SIGWINCH to the pty's foreground process group). Nothing happens if `from` is not a
/// terminal.
pub fn copy_window_size(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize we pass.
    if unsafe { libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EINVAL) => Ok(()),
            _ => Err(err),
        };
    }
    // SAFETY: TIOCSWINSZ reads the winsize we pass.
    if unsafe { libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Relays this process's stdin and stdout to the pty `master` until the pty ends or
/// `escape` (if any) is typed; see the module's documentation. The master is set
/// non-blocking.
pub async fn relay(master: OwnedFd, escape: Option<Escape>) -> io::Result<Ended> {
    let stdin = io::stdin();
    let raw = RawMode::enter(stdin.as_fd())?;
    let interactive = raw.is_some();
    let flags = OFlag::from_bits_retain(fcntl(&master, FcntlArg::F_GETFL)?);
    fcntl(&master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    // SAFETY: the AsyncFd owns the descriptor; nothing else closes or replaces it.
    let master = unsafe { AsyncFd::register(master)? };
    let mut winch = if interactive {
        copy_window_size(stdin.as_fd(), master.get_ref().as_fd())?;
        Some(signal(SignalKind::window_change())?)
    } else {
        None
    };
    let mut input = spawn_stdin_reader();
    let mut detector = escape.map(EscapeDetector::new);
    let mut out = [0u8; 8192];
    let result = loop {
        tokio::select! {
            // Output first: what the pty has said is shown before we stop.
            biased;
            ready = master.readable() => {
                let mut guard = ready?;
                match guard.try_io(|fd| read_fd(fd.get_ref().as_fd(), &mut out)) {
                    Ok(Ok(0)) => break Ok(Ended::Hangup),
                    Ok(Ok(n)) => write_stdout(&out[..n])?,
                    // EIO: the slave side is closed and everything it wrote has been read.
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => break Ok(Ended::Hangup),
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(e)) => break Err(e),
                    Err(_would_block) => {}
                }
            }
            Some(()) = recv_winch(&mut winch) => {
                copy_window_size(stdin.as_fd(), master.get_ref().as_fd())?;
            }
            chunk = input.recv(), if !input.is_closed() => match chunk {
                Some(Ok(bytes)) => {
                    let (bytes, detach) = match detector.as_mut().and_then(|d| d.scan(&bytes, Instant::now())) {
                        Some(end) => (&bytes[..end], true),
                        None => (&bytes[..], false),
                    };
                    write_master(&master, bytes).await?;
                    if detach {
                        break Ok(Ended::Detached);
                    }
                }
                Some(Err(e)) => break Err(e),
                None => {
                    // stdin ended: a terminal's reader sees that only through the
                    // pty's EOF character, which a raw terminal never sends itself.
                    input.close();
                    if !interactive {
                        let eof = eof_char(master.get_ref().as_fd());
                        write_master(&master, &[eof]).await?;
                    }
                }
            },
        }
    };
    drop(raw);
    result
}

/// The next SIGWINCH, or never when there is no terminal to follow.
async fn recv_winch(winch: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match winch {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The pty's end-of-file character (VEOF, Ctrl-D unless the program on it changed it).
fn eof_char(master: BorrowedFd<'_>) -> u8 {
    termios::tcgetattr(master)
        .map(|t| t.control_chars[SpecialCharacterIndices::VEOF as usize])
        .ok()
        .filter(|&c| c != 0)
        .unwrap_or(0x04)
}

/// stdin's bytes as they come, from a thread of its own; the channel closes at EOF.
fn spawn_stdin_reader() -> mpsc::Receiver<io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            let sent = match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => tx.blocking_send(Ok(buf[..n].to_vec())),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    rx
}

fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    nix::unistd::read(fd, buf).map_err(io::Error::from)
}

async fn write_master(master: &AsyncFd<OwnedFd>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let mut guard = master.writable().await?;
        match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), bytes).map_err(io::Error::from)) {
            Ok(Ok(n)) => bytes = &bytes[n..],
            // The slave side is gone; the read side notices and ends the relay.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(()),
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn three_presses_within_the_interval_detach() {
        let t = Instant::now();
        let mut d = EscapeDetector::new(Escape::CONSOLE);
        assert!(!d.feed(0x1d, at(t, 0)));
        assert!(!d.feed(0x1d, at(t, 300)));
        assert!(d.feed(0x1d, at(t, 900)));
        // It starts over after a detach.
        assert!(!d.feed(0x1d, at(t, 950)));
    }

    #[test]
    fn another_byte_in_between_starts_over() {
        let t = Instant::now();
        let mut d = EscapeDetector::new(Escape::CONSOLE);
        assert!(!d.feed(0x1d, at(t, 0)));
        assert!(!d.feed(0x1d, at(t, 10)));
        assert!(!d.feed(b'a', at(t, 20)));
        assert!(!d.feed(0x1d, at(t, 30)));
        assert!(!d.feed(0x1d, at(t, 40)));
        assert!(d.feed(0x1d, at(t, 50)));
    }

    #[test]
    fn slow_presses_do_not_count_together() {
        let t = Instant::now();
        let mut d = EscapeDetector::new(Escape::CONSOLE);
        assert!(!d.feed(0x1d, at(t, 0)));
        assert!(!d.feed(0x1d, at(t, 600)));
        // 1.2 s after the first: a new run begins with this press.
        assert!(!d.feed(0x1d, at(t, 1200)));
        assert!(!d.feed(0x1d, at(t, 1300)));
        assert!(d.feed(0x1d, at(t, 1400)));
    }

    #[test]
    fn scan_says_where_the_escape_ends() {
        let t = Instant::now();
        let mut d = EscapeDetector::new(Escape::CONSOLE);
        assert_eq!(d.scan(b"ls\r", t), None);
        assert_eq!(d.scan(b"x\x1d\x1d\x1dy", t), Some(4));
        // A run split over reads still counts.
        assert_eq!(d.scan(b"\x1d", t), None);
        assert_eq!(d.scan(b"\x1d\x1dz", at(t, 100)), Some(2));
    }

    #[test]
    fn a_count_of_one_detaches_at_once() {
        let mut d = EscapeDetector::new(Escape {
            byte: b'q',
            count: 1,
            within: Duration::ZERO,
        });
        assert!(d.feed(b'q', Instant::now()));
    }
}
