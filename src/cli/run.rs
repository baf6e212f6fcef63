//! `berthctl run --rm`: one RunMachine call with this process's stdio; berthd makes the
//! machine, runs the command and answers with its exit status once the machine is gone.
//!
//! The command shares this terminal as stdio but not as its controlling terminal (it is
//! in a session of its own inside the machine), so the keys that signal reach berthctl
//! alone: SIGINT, SIGTERM and SIGHUP are passed on to the machine's PID 1 (berth's init,
//! which passes them to the command) with Kill("leader"). Should berthctl be killed, or
//! not reach the machine with a signal, berthd sees its caller leave the bus and kills
//! and removes the machine.

use std::io::{self, Write};
use std::os::fd::AsFd;

use tokio::signal::unix::{SignalKind, signal};

use super::args::RunArgs;
use super::commands::{Session, stdio};
use super::error::CliError;
use super::parse::run_options;
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
        let argv: Vec<&str> = args.command.iter().map(String::as_str).collect();
        // Taken over before the call, so none of them can end berthctl in between.
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let manager = self.manager().await?;
        let (stdin, stdout, stderr) = (io::stdin(), io::stdout(), io::stderr());
        // Whatever we buffered must reach the fd before the command writes to it too.
        stdout.lock().flush()?;
        let body = (
            name.as_str(),
            args.template.as_str(),
            argv,
            options,
            stdio(stdin.as_fd(), false)?,
            stdio(stdout.as_fd(), true)?,
            stdio(stderr.as_fd(), true)?,
        );
        let call = self.change::<_, i32>(manager.inner(), "RunMachine", &body);
        tokio::pin!(call);
        loop {
            let sig = tokio::select! {
                status = &mut call => return status,
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
                _ = hup.recv() => libc::SIGHUP,
            };
            if self.pass_on(&name, sig).await.is_err() {
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
