//! Execute: a command inside a running machine with the caller's stdio; the spawner
//! joins the machine and reports the command's exit status. OpenShell: the same on a
//! pty opened inside the machine, as one of its users.

use super::machine::MachineState;
use super::{Daemon, validate};
use crate::error::{Error, Result};
use crate::spawn::protocol::{ExecRequest, ShellRequest};
use crate::spawn::{CallerGone, OpenedShell};
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
        let req = self.exec_request(name, argv, environment, None)?;
        self.spawner.exec(&req, stdio, caller_gone).await
    }

    /// OpenShell: `argv` (else `user`'s login shell) as `user` of the machine, on a pty
    /// opened inside it.
    pub async fn open_shell(
        &self,
        name: &str,
        user: String,
        argv: Vec<String>,
        environment: Vec<String>,
        caller_gone: CallerGone,
    ) -> Result<OpenedShell> {
        // No argv is the login shell, whose name only the machine's /etc/passwd knows:
        // the environment is checked against a stand-in.
        let checked = if argv.is_empty() {
            vec!["/bin/sh".to_string()]
        } else {
            argv.clone()
        };
        validate::command(validate::EXECUTE, &checked, &environment)?;
        let req = self.exec_request(name, argv, environment, Some(ShellRequest { user }))?;
        self.spawner.shell(name, &req, caller_gone).await
    }

    /// What the exec helper needs to enter machine `name`, which must be running (not
    /// stopped, starting or frozen), and to confine what it starts there.
    fn exec_request(
        &self,
        name: &str,
        argv: Vec<String>,
        environment: Vec<String>,
        shell: Option<ShellRequest>,
    ) -> Result<ExecRequest> {
        let m = self.machine(name)?;
        let run = m.run();
        if run.state != MachineState::Running {
            return Err(not_running(name, run.state));
        }
        Ok(ExecRequest {
            leader: run.leader,
            argv,
            environment,
            confinement: super::start::confinement(&m.config())?,
            shell,
            resident: false,
        })
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
