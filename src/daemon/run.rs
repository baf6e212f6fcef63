//! RunMachine: a one-shot machine. An ephemeral machine is made from a template by the
//! ordinary create path, with the command as its payload under berth's init and the
//! caller's stdio as PID 1's; the answer is the command's exit status, given once the
//! machine is gone (removed, as every ephemeral machine is when it stops).
//!
//! berth's init tells the status through a pipe whose write end only PID 1 holds:
//! berthd is not PID 1's parent (systemd reaps it) and a scope keeps no exit status. A
//! caller that leaves the bus takes its machine with it: SIGKILL to the whole scope, and
//! the ordinary ephemeral removal clears the rest.

use super::{CreateOptions, Daemon, validate};
use crate::api::KillWho;
use crate::error::{Error, Result};
use crate::spawn::{CallerGone, RunIo};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tracing::{info, warn};

/// How many random names a run tries before it gives up (each clash is a 1 in 2 billion
/// chance, so more than one try means something else is wrong).
const NAME_TRIES: usize = 4;

impl Daemon {
    /// Runs `command` in a new ephemeral machine `name` (a random `run-XXXXXX` when
    /// empty) from `template` with `opts` (CreateMachine's) and `stdio`; its exit status
    /// (128 + N when signal N ended it).
    pub async fn run(
        self: &Arc<Self>,
        name: &str,
        template: &str,
        command: Vec<String>,
        mut opts: CreateOptions,
        stdio: [OwnedFd; 3],
        caller_gone: CallerGone,
    ) -> Result<i32> {
        check_options(&opts)?;
        validate::command(validate::RUN, &command, &opts.environment)?;
        opts.command = command;
        opts.ephemeral = true;
        opts.init = Some(true);
        let m = if name.is_empty() {
            self.create_with_run_name(template, opts).await?
        } else {
            self.create(name, template, opts).await?
        };
        let name = m.name.clone();
        let (status_r, status_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::failed("cannot make the status pipe of a run", e))?;
        let io = RunIo {
            stdio,
            status: status_w,
        };
        let watcher = match self.start_with(&name, Some(io)).await {
            Ok(watcher) => watcher,
            Err(e) => {
                // It never ran: its files go now, as they would have after a run.
                if let Err(r) = self.remove(&name, true).await {
                    warn!("machine {name}: not removed after its failed start: {r}");
                }
                return Err(e);
            }
        };
        let status = tokio::select! {
            status = read_status(status_r) => status,
            () = caller_gone => Err(Error::Failed("the caller went away".into())),
        };
        let status = match status {
            Ok(status) => status,
            Err(e) => {
                // Nobody will learn how it ends: it ends now, and the watcher removes it.
                info!("machine {name}: killing the run: {e}");
                if let Err(k) = self.kill(&name, KillWho::All, libc::SIGKILL).await {
                    warn!("machine {name}: {k}");
                }
                return Err(e);
            }
        };
        info!("machine {name}: the command ended with status {status}");
        // The answer promises the machine is gone.
        let _ = watcher.await;
        Ok(status)
    }

    async fn create_with_run_name(
        self: &Arc<Self>,
        template: &str,
        opts: CreateOptions,
    ) -> Result<Arc<super::machine::Machine>> {
        for _ in 0..NAME_TRIES {
            let name = crate::names::random_run_name().map_err(Error::Failed)?;
            match self.create(&name, template, opts.clone()).await {
                Err(Error::AlreadyExists(_)) => continue,
                other => return other,
            }
        }
        Err(Error::Failed(format!(
            "no free run-XXXXXX machine name in {NAME_TRIES} tries; name the machine"
        )))
    }
}

/// The CreateMachine options a run cannot take: those it sets itself.
fn check_options(opts: &CreateOptions) -> Result<()> {
    if !opts.command.is_empty() {
        return Err(Error::InvalidArgument(
            "RunMachine takes its command as an argument; leave Command out of the options".into(),
        ));
    }
    if opts.autostart {
        return Err(Error::InvalidArgument(
            "a run's machine is removed when its command ends, so it cannot have Autostart".into(),
        ));
    }
    if opts.init == Some(false) {
        return Err(Error::InvalidArgument(
            "a run's command always runs under berth's init, which reports its exit status; \
             leave Init out of the options"
                .into(),
        ));
    }
    Ok(())
}

/// The command's exit status from berth's init. End-of-file without one means PID 1 was
/// killed: berth's init blocks every signal, so only SIGKILL (from outside the machine,
/// `berthctl kill` or the OOM killer) ends it before it can write.
async fn read_status(fd: OwnedFd) -> Result<i32> {
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
        .map_err(|e| Error::failed("cannot read the status pipe of a run", e))?;
    let mut byte = [0u8; 1];
    match pipe.read(&mut byte).await {
        Ok(1) => Ok(i32::from(byte[0])),
        Ok(_) => Ok(128 + libc::SIGKILL),
        Err(e) => Err(Error::failed("cannot read the status pipe of a run", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn options_a_run_sets_itself_are_refused() {
        let refused = |opts: CreateOptions, says: &str| {
            let e = check_options(&opts).unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidArgument);
            assert!(e.to_string().contains(says), "{e}");
        };
        refused(
            CreateOptions {
                command: vec!["/bin/true".into()],
                ..Default::default()
            },
            "leave Command out",
        );
        refused(
            CreateOptions {
                autostart: true,
                ..Default::default()
            },
            "Autostart",
        );
        refused(
            CreateOptions {
                init: Some(false),
                ..Default::default()
            },
            "leave Init out",
        );
        check_options(&CreateOptions {
            init: Some(true),
            ephemeral: true,
            ..Default::default()
        })
        .unwrap();
    }
}
