//! `berthctl run --rm`: one RunMachine call with this process's stdio; berthd makes the
//! machine, runs the command and answers with its exit status once the machine is gone.
//!
//! The command shares this terminal as stdio but not as its controlling terminal (it is
//! in a session of its own inside the machine), so the keys that signal reach berthctl
//! alone: SIGINT, SIGTERM and SIGHUP are passed on to the machine's PID 1 (berth's init,
//! which passes them to the command) with Kill("leader"). Should berthctl be killed, or
//! not reach the machine with a signal, berthd sees its caller leave the bus and kills
//! and removes the machine.
//!
//! With `-t` the command's stdio is instead the slave of a pty berthctl opens, which
//! becomes its controlling terminal; this terminal is relayed to the master in raw mode
//! (src/cli/terminal.rs), so Ctrl-C and Ctrl-Z are bytes the pty turns into signals for
//! the command, and its window size follows this one's.

use std::future::Future;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;

use tokio::signal::unix::{SignalKind, signal};

use super::args::RunArgs;
use super::commands::{Session, stdio};
use super::error::CliError;
use super::parse::run_options;
use super::terminal::{self, Ended};
use crate::api::KillWho;
use crate::names;

/// berthctl's exit status when it could not run the command at all (a bad flag, an
/// unknown template, berthd refusing or unreachable), apart from every status the
/// command itself may end with but 125, as docker and podman have it.
pub const EXIT_RUN_FAILED: i32 = 125;

/// What can be refused before berthd is asked.
pub fn check(args: &RunArgs) -> Result<(), CliError> {
    if !args.rm {
        return Err(CliError::Usage(
            "run needs --rm: it makes one-shot machines only, removed when the command ends \
             (create and start a machine to keep one)"
                .into(),
        ));
    }
    run_options(args).map(drop)
}

impl Session {
    pub async fn run(&self, args: &RunArgs) -> Result<i32, CliError> {
        check(args)?;
        let options = run_options(args)?;
        // Named here rather than by berthd, so signals can be passed on to it by name.
        let name = match &args.name {
            Some(name) => name.clone(),
            None => names::random_run_name().map_err(CliError::Usage)?,
        };
        // Taken over before the call, so none of them can end berthctl in between.
        let mut signals = Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        };
        let (slave, mut relay) = if args.tty {
            let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
            // Before the command starts, so its first look at the size is right.
            terminal::copy_window_size(io::stdin().as_fd(), pty.master.as_fd())?;
            let relay = Box::pin(terminal::relay(pty.master, None));
            (Some(pty.slave), Some(relay))
        } else {
            (None, None)
        };
        let status = self
            .call(
                &name,
                args,
                options,
                slave.as_ref(),
                &mut relay,
                &mut signals,
            )
            .await;
        // berthctl's is the last copy of the slave once the machine is gone: without it
        // the relay shows what the command wrote last, then sees the pty hang up.
        drop(slave);
        if let (Ok(_), Some(relay)) = (&status, relay) {
            // The command's status is the news; a terminal that failed at the very end
            // is not worth hiding it for.
            let _ = relay.await;
        }
        status
    }

    /// RunMachine, with `slave` as the command's stdio if given (else ours), while
    /// `relay` runs and `signals` are passed on; the command's status.
    async fn call<R>(
        &self,
        name: &str,
        args: &RunArgs,
        options: std::collections::HashMap<&str, zbus::zvariant::Value<'_>>,
        slave: Option<&OwnedFd>,
        relay: &mut Option<Pin<Box<R>>>,
        signals: &mut Signals,
    ) -> Result<i32, CliError>
    where
        R: Future<Output = io::Result<Ended>>,
    {
        let argv: Vec<&str> = args.command.iter().map(String::as_str).collect();
        let manager = self.manager().await?;
        let (stdin, stdout, stderr) = (io::stdin(), io::stdout(), io::stderr());
        // Whatever we buffered must reach the fd before the command writes to it too.
        stdout.lock().flush()?;
        let stdio = match slave {
            Some(pty) => [pty.as_fd(); 3].map(zbus::zvariant::Fd::from),
            None => [
                stdio(stdin.as_fd(), false)?,
                stdio(stdout.as_fd(), true)?,
                stdio(stderr.as_fd(), true)?,
            ],
        };
        let [stdin, stdout, stderr] = stdio;
        let body = (
            name,
            args.template.as_str(),
            argv,
            options,
            stdin,
            stdout,
            stderr,
        );
        let call = self.change::<_, i32>(manager.inner(), "RunMachine", &body);
        tokio::pin!(call);
        loop {
            let sig = tokio::select! {
                status = &mut call => return status,
                ended = relay_ended(relay) => {
                    // Our side of the terminal failed (stdout closed, say): the command
                    // goes on without it, as it would without a reader.
                    if let Err(e) = ended {
                        eprintln!("berthctl: the terminal relay stopped: {e}");
                    }
                    *relay = None;
                    continue;
                }
                _ = signals.int.recv() => libc::SIGINT,
                _ = signals.term.recv() => libc::SIGTERM,
                _ = signals.hup.recv() => libc::SIGHUP,
            };
            if self.pass_on(name, sig).await.is_err() {
                // The machine is not running (yet, or any more): end as the signal would
                // have ended us; berthd, seeing us leave, removes the machine.
                return Ok(128 + sig);
            }
        }
    }

    async fn pass_on(&self, name: &str, sig: i32) -> Result<(), CliError> {
        let path = names::machine_object_path(name)
            .try_into()
            .map_err(|e: zbus::zvariant::Error| CliError::DBus(e.to_string()))?;
        let machine = self.machine_at(path).await?;
        Ok(machine.kill(KillWho::Leader.as_str(), sig).await?)
    }
}

/// The signals berthctl passes on to the command.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// The relay's end, or never when there is none.
async fn relay_ended<R>(relay: &mut Option<Pin<Box<R>>>) -> io::Result<Ended>
where
    R: Future<Output = io::Result<Ended>>,
{
    match relay {
        Some(r) => r.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn run_needs_rm_and_says_so() {
        let cli = Cli::try_parse_from(["berthctl", "run", "--template", "b", "true"]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let err = check(&args).unwrap_err();
        assert!(err.to_string().starts_with("run needs --rm"), "{err}");
        let cli = Cli::try_parse_from(["berthctl", "run", "--rm", "--template", "b", "true"]);
        let Command::Run(args) = cli.unwrap().command else {
            panic!("not run")
        };
        check(&args).unwrap();
    }
}
