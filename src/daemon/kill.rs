//! Kill: a signal to the machine's PID 1 (through its pidfd) or to every process of its
//! scope (through systemd).

use super::Daemon;
use super::machine::MachineState;
use crate::api::KillWho;
use crate::cgroup::CgroupMode;
use crate::error::{Error, Result};

impl Daemon {
    pub async fn kill(&self, name: &str, who: KillWho, signal: i32) -> Result<()> {
        let m = self.machine(name)?;
        let run = m.run();
        if !run.state.is_active() {
            return Err(Error::InvalidState(format!(
                "machine {name} is not running"
            )));
        }
        if signal <= 0 || signal > libc::SIGRTMAX() {
            return Err(Error::InvalidArgument(format!(
                "signal {signal} is not a valid signal number"
            )));
        }
        match who {
            KillWho::Leader => match &run.pidfd {
                Some(fd) => fd
                    .send_signal(signal)
                    .map_err(|e| Error::failed(format!("cannot signal {name}'s leader"), e)),
                None => Err(Error::InvalidState(format!("machine {name} has no leader"))),
            },
            KillWho::All => self.systemd.kill_all(&m.unit, signal).await,
        }?;
        let whom = match who {
            KillWho::Leader => "the leader",
            KillWho::All => "every process",
        };
        self.console_note(name, &format!("sent signal {signal} to {whom}"));
        // SIGKILL ends frozen tasks on cgroup v2, but a v1 frozen task dies only once
        // thawed: thawing after the signal is queued makes both modes end the machine,
        // without letting it run anything in between.
        if signal == libc::SIGKILL
            && run.state == MachineState::Frozen
            && self.host.cgroup_mode != CgroupMode::Unified
        {
            self.set_frozen(&m, run.leader, false).await?;
        }
        Ok(())
    }
}
