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
            return Err(not_running(name, run.state));
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

/// Why a command cannot run in machine `name` in `state`, and what to do about it.
fn not_running(name: &str, state: MachineState) -> Error {
    let what_to_do = match state {
        MachineState::Starting => {
            format!("wait until it is running (berthctl status {name}), then try again")
        }
        MachineState::Stopping => {
            format!("wait until it has stopped, then start it (berthctl start {name})")
        }
        MachineState::Frozen => format!("thaw it first (berthctl thaw {name})"),
        MachineState::Stopped | MachineState::Failed => {
            format!("start it first (berthctl start {name})")
        }
        MachineState::Broken => {
            format!("repair its config or remove it (berthctl status {name} says what is wrong)")
        }
        MachineState::Running => unreachable!("a running machine can execute"),
    };
    Error::InvalidState(format!(
        "machine {name} is {}; {what_to_do}",
        state.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_state_says_what_to_do() {
        for (state, advice) in [
            (MachineState::Starting, "wait until it is running"),
            (
                MachineState::Stopping,
                "wait until it has stopped, then start it",
            ),
            (MachineState::Frozen, "thaw it first (berthctl thaw m)"),
            (MachineState::Stopped, "start it first (berthctl start m)"),
            (MachineState::Failed, "start it first"),
        ] {
            let e = not_running("m", state);
            assert!(matches!(e, Error::InvalidState(_)));
            let said = e.to_string();
            assert!(
                said.starts_with(&format!("machine m is {}; ", state.as_str())),
                "{said}"
            );
            assert!(said.contains(advice), "{said}");
        }
    }
}
