//! `berthctl console` and `berthctl logs`: a machine's console through the pty master
//! OpenConsole returns (relayed by the shared src/cli/terminal.rs, with console's
//! Ctrl-] ×3 escape), and its log through the pipe ReadLog returns.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;

use super::args::LogsArgs;
use super::commands::Session;
use super::error::CliError;
use super::terminal::{self, Ended, Escape};

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
        match terminal::relay(master, Some(Escape::CONSOLE)).await? {
            Ended::Detached => eprintln!(
                "\r\nDetached from the console of machine {name}; it runs on \
                 (`berthctl console {name}` attaches again)."
            ),
            // berthd closed its side of the relay.
            Ended::Hangup => eprintln!(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_lose_their_carriage_returns() {
        let mut out = Vec::new();
        copy_log(&b"a\r\nb\rc\r\n\r"[..], &mut out).unwrap();
        assert_eq!(out, b"a\nb\rc\n\r");
    }
}
