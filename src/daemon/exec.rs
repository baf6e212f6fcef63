//! Execute: a command inside a running machine with the caller's stdio; the spawner
//! joins the machine and reports the command's exit status.

use super::machine::MachineState;
use super::{Daemon, validate};
use crate::error::{Error, Result};
use crate::spawn::CallerGone;
use crate::spawn::protocol::ExecRequest;
use std::os::fd::OwnedFd;

impl Daemon {
    pub async fn execute(
        &self,
        name: &str,
        argv: Vec<String>,
        environment: Vec<String>,
        stdio: [OwnedFd; 3],
        caller_gone: CallerGone,
    ) -> Result<i32> {
        validate::command(validate::EXECUTE, &argv, &environment)?;
        let m = self.machine(name)?;
        let run = m.run();
        if run.state != MachineState::Running {
            return Err(Error::InvalidState(format!(
                "machine {name} is {}; start it first",
                run.state.as_str()
            )));
        }
        let req = ExecRequest {
            leader: run.leader,
            argv,
            environment,
            confinement: super::start::confinement(&m.config())?,
        };
        self.spawner.exec(&req, stdio, caller_gone).await
    }
}
