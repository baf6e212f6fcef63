//! Starting a machine's PID 1 and running commands inside it.
//!
//! berthd is a multi-threaded tokio process, and fork() there is unsafe, so every
//! namespace operation happens in a small single-threaded helper: berthd re-executes its
//! own binary (`/proc/self/exe __spawn-helper`) and talks to it over the helper's
//! stdin/stdout with one JSON message per line ([`protocol`]). The helper unshares the
//! namespaces, forks the future PID 1 and reports its PID; berthd puts that PID into the
//! machine's systemd scope and only then says `Go`, so the payload never runs outside its
//! cgroup limits. `exec` is the same idea for Execute(): join a running machine.

pub mod exec;
pub mod helper;
pub mod mount;
pub mod protocol;

use crate::error::{BerthError, Result};
use protocol::{DaemonMsg, HelperMsg, SpawnRequest};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// argv[1] that turns berthd into the spawn helper.
pub const SPAWN_HELPER_ARG: &str = "__spawn-helper";
/// argv[1] that turns berthd into the exec helper.
pub const EXEC_HELPER_ARG: &str = "__exec-helper";

/// Closes every descriptor above stderr. The helpers call it first thing: berthd
/// may hold descriptors received from D-Bus clients (Execute's stdio) that a concurrently
/// spawned helper inherits, and nothing of that kind may reach a machine or keep a
/// client's pipe open.
pub fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; the helpers own none above 2 yet.
    unsafe {
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
    }
}

/// The binary to re-execute: our own, even if the file was replaced by an upgrade.
pub fn self_exe() -> &'static str {
    "/proc/self/exe"
}

/// A machine whose PID 1 exists, in its namespaces, but waits for `go` before it sets up
/// its root and execs the payload.
pub struct PendingMachine {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pid: u32,
}

/// Starts the helper and waits until the machine's PID 1 exists.
pub async fn spawn(req: &SpawnRequest) -> Result<PendingMachine> {
    let mut child = Command::new(self_exe())
        .arg(SPAWN_HELPER_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BerthError::failed("cannot start the spawn helper", e))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    send(&mut stdin, &DaemonMsg::Spawn(req.clone())).await?;
    match recv(&mut lines).await? {
        HelperMsg::Spawned { pid } => Ok(PendingMachine {
            child,
            stdin,
            lines,
            pid,
        }),
        HelperMsg::Failed { message } => {
            let _ = child.wait().await;
            Err(BerthError::Failed(format!(
                "cannot create the namespaces of machine {}: {message}",
                req.name
            )))
        }
        other => Err(BerthError::Failed(format!(
            "spawn helper sent {other:?} before the machine existed"
        ))),
    }
}

impl PendingMachine {
    /// PID 1 of the machine as seen from the host.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Lets PID 1 set up its root and exec the payload; returns once exec succeeded.
    pub async fn go(mut self) -> Result<()> {
        send(&mut self.stdin, &DaemonMsg::Go).await?;
        let reply = recv(&mut self.lines).await;
        let _ = self.child.wait().await;
        match reply? {
            HelperMsg::Running => Ok(()),
            HelperMsg::Failed { message } => Err(BerthError::Failed(message)),
            other => Err(BerthError::Failed(format!(
                "spawn helper sent {other:?} instead of a start result"
            ))),
        }
    }

    /// Kills the waiting PID 1 (e.g. because systemd refused the scope).
    pub async fn abort(mut self) {
        let _ = send(&mut self.stdin, &DaemonMsg::Abort).await;
        let _ = self.child.wait().await;
    }
}

async fn send(stdin: &mut ChildStdin, msg: &DaemonMsg) -> Result<()> {
    let mut line = serde_json::to_string(msg).expect("messages serialize");
    line.push('\n');
    stdin
        .write_all(line.as_bytes())
        .await
        .map_err(|e| BerthError::failed("spawn helper went away", e))
}

async fn recv(lines: &mut Lines<BufReader<ChildStdout>>) -> Result<HelperMsg> {
    match lines.next_line().await {
        Ok(Some(line)) => serde_json::from_str(&line)
            .map_err(|e| BerthError::failed("garbled message from the spawn helper", e)),
        Ok(None) => Err(BerthError::Failed(
            "the spawn helper exited without an answer (see berthd's log)".into(),
        )),
        Err(e) => Err(BerthError::failed("cannot read from the spawn helper", e)),
    }
}
