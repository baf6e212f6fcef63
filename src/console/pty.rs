//! Pseudo-terminal pairs, opened by berthd itself (no fork): one per running machine
//! (its console) and one per attached console client.

use nix::fcntl::OFlag;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// A master and its slave, both close-on-exec and opened without becoming anyone's
/// controlling terminal.
pub struct Pair {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a new pty pair. The slave is opened through the master (TIOCGPTPEER), never by
/// its /dev/pts path, so it is certainly this master's peer.
pub fn open() -> io::Result<Pair> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    // SAFETY: the master is a valid descriptor; TIOCGPTPEER returns a new one.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from the kernel; PtyMaster owns a valid one.
    let (master, slave) = unsafe {
        let raw = master.as_raw_fd();
        std::mem::forget(master);
        (OwnedFd::from_raw_fd(raw), OwnedFd::from_raw_fd(slave))
    };
    Ok(Pair { master, slave })
}

/// A machine's console: the slave belongs to the machine's root (`owner`, the base of an
/// unprivileged machine's user range, else 0), mode 0600, as nspawn gives a container
/// its console.
pub fn open_console(owner: u32) -> io::Result<Pair> {
    let pair = open()?;
    nix::unistd::fchown(
        &pair.slave,
        Some(nix::unistd::Uid::from_raw(owner)),
        Some(nix::unistd::Gid::from_raw(owner)),
    )?;
    nix::sys::stat::fchmod(&pair.slave, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    Ok(pair)
}

/// Raw mode: bytes pass unchanged both ways (a relay's side of a pty).
pub fn make_raw(fd: impl AsFd) -> io::Result<()> {
    let mut t = nix::sys::termios::tcgetattr(&fd)?;
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(&fd, nix::sys::termios::SetArg::TCSANOW, &t)?;
    Ok(())
}

pub fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// The window size (rows, columns) of the terminal `fd` is a side of.
pub fn window_size(fd: impl AsFd) -> io::Result<(u16, u16)> {
    // SAFETY: all-zero is a valid winsize; TIOCGWINSZ writes it.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a winsize to write to.
    if unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((ws.ws_row, ws.ws_col))
}

/// Sets the window size; the kernel sends SIGWINCH to the terminal's foreground group.
pub fn set_window_size(fd: impl AsFd, (rows, cols): (u16, u16)) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: a valid descriptor and winsize.
    if unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_carries_bytes_and_window_sizes() {
        let p = open().unwrap();
        make_raw(&p.slave).unwrap();
        nix::unistd::write(&p.master, b"hi\n").unwrap();
        let mut buf = [0u8; 8];
        let n = nix::unistd::read(&p.slave, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi\n");
        set_window_size(&p.master, (33, 101)).unwrap();
        assert_eq!(window_size(&p.slave).unwrap(), (33, 101));
    }
}
