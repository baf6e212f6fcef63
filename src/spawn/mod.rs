//! Starting a machine's PID 1 and running commands inside it.
//!
//! berthd is a multi-threaded tokio process, and fork() there is unsafe, so every
//! namespace operation happens in a small single-threaded helper: berthd re-executes its
//! own binary (`/proc/self/exe __spawn-helper`) and talks to it over the helper's
//! stdin/stdout with one JSON message per line ([`protocol`]). The helper unshares the
//! namespaces, forks the future PID 1 and reports its PID; berthd puts that PID into the
//! machine's systemd scope and only then says `Go`, so the payload never runs outside its
//! cgroup limits. `__exec-helper` is the same idea for Execute(): join a running machine.
//!
//! The daemon reaches all this through the [`Spawner`] trait; [`Helpers`] is the real
//! one ([`launch`] is its berthd side, [`helper`] and [`exec`] the helpers' side).

pub mod binds;
pub mod exec;
pub mod helper;
pub mod init;
pub mod launch;
pub mod mount;
pub mod network;
pub mod passwd;
pub mod protocol;
pub mod userns;

use crate::error::Result;
use protocol::{ExecRequest, SpawnRequest};
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;

/// argv[1] that turns berthd into the spawn helper.
pub const SPAWN_HELPER_ARG: &str = "__spawn-helper";
/// argv[1] that turns berthd into the exec helper.
pub const EXEC_HELPER_ARG: &str = "__exec-helper";
/// The descriptor on which the exec helper reads its [`ExecRequest`]: its stdio are the
/// caller's, and its argv is readable by every user, so the request (environment and
/// all) comes through a pipe of its own.
pub const EXEC_REQUEST_FD: i32 = 3;

/// Resolves when whoever asked for a command has gone away.
pub type CallerGone = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A command running on a pty inside a machine (OpenShell).
pub struct OpenedShell {
    /// The pty's master, opened inside the machine.
    pub master: OwnedFd,
    /// The slave's path as the machine sees it (/dev/pts/N).
    pub pty_path: String,
    /// The command's exit status (128+N when killed by signal N); it is killed first if
    /// the caller left.
    pub exited: Pin<Box<dyn Future<Output = i32> + Send>>,
}

/// What the daemon needs to make machines' processes.
#[async_trait::async_trait]
pub trait Spawner: Send + Sync {
    /// Creates the machine's namespaces and its PID 1, which waits for [`Pending::go`].
    async fn spawn(&self, req: &SpawnRequest) -> Result<Box<dyn Pending>>;
    /// Runs a command inside a running machine with the given stdio; its exit status
    /// (128+N when killed by signal N). The command is killed if `caller_gone` resolves.
    async fn exec(
        &self,
        req: &ExecRequest,
        stdio: [OwnedFd; 3],
        caller_gone: CallerGone,
    ) -> Result<i32>;
    /// Runs `req` (with its `shell` set) on a pty inside machine `machine`; a missing
    /// user or any other failure is returned before anything runs.
    async fn shell(
        &self,
        machine: &str,
        req: &ExecRequest,
        caller_gone: CallerGone,
    ) -> Result<OpenedShell> {
        let _ = (req, caller_gone);
        Err(crate::error::Error::NotSupported(format!(
            "this spawner cannot open shells (machine {machine})"
        )))
    }
}

/// A machine whose PID 1 exists, in its namespaces, but waits before it sets up its root
/// and execs the payload.
#[async_trait::async_trait]
pub trait Pending: Send {
    /// PID 1 of the machine as seen from the host.
    fn pid(&self) -> u32;
    /// Lets PID 1 set up its root and exec the payload; returns once exec succeeded.
    async fn go(self: Box<Self>) -> Result<()>;
    /// Kills the waiting PID 1 (e.g. because systemd refused the scope).
    async fn abort(self: Box<Self>);
}

/// The real spawner: berthd's own binary re-executed as a helper.
pub struct Helpers;

#[async_trait::async_trait]
impl Spawner for Helpers {
    async fn spawn(&self, req: &SpawnRequest) -> Result<Box<dyn Pending>> {
        Ok(Box::new(launch::spawn(req).await?))
    }

    async fn exec(
        &self,
        req: &ExecRequest,
        stdio: [OwnedFd; 3],
        caller_gone: CallerGone,
    ) -> Result<i32> {
        launch::exec(req, stdio, caller_gone).await
    }

    async fn shell(
        &self,
        machine: &str,
        req: &ExecRequest,
        caller_gone: CallerGone,
    ) -> Result<OpenedShell> {
        launch::shell(machine, req, caller_gone).await
    }
}
