//! Starting a machine's PID 1 and running commands inside it.
//!
//! berthd is a multi-threaded tokio process, and fork() there is unsafe, so every
//! namespace operation happens in a small single-threaded helper: berthd re-executes its
//! own binary (`/proc/self/exe __spawn-helper`) and talks to it over the helper's
//! stdin/stdout with one JSON message per line ([`protocol`]). The helper unshares the
//! namespaces, forks the future PID 1 and reports its PID; berthd puts that PID into the
//! machine's systemd scope and only then says `Go`, so the payload never runs outside its
//! cgroup limits. `__exec-helper` is the same idea for Execute(): join a running machine;
//! one of them may stay in a machine to fork the next commands ([`resident`]).
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
pub mod resident;
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
/// Where a resident exec helper finds its control socket (src/spawn/resident/).
pub const RESIDENT_CONTROL_FD: i32 = 4;

/// Where the spawn helper finds what berthd passes it beside its protocol pipes
/// (launch::spawn puts them there): for a one-shot run the caller's stdin, stdout and
/// stderr for PID 1 and the write end of the status pipe; the slave of the machine's
/// console pty. The [`SpawnRequest`] names those a machine gets; the helper closes the
/// others, and everything above.
pub const RUN_STDIO_FDS: [i32; 3] = [3, 4, 5];
pub const RUN_STATUS_FD: i32 = 6;
/// The slave of the machine's console pty (when its request says `console`): PID 1's
/// /dev/console, and its stdio unless a run passes the caller's.
pub const CONSOLE_FD: i32 = 7;
/// The first descriptor the spawn helper closes at its start: none of berthd's (D-Bus
/// clients' descriptors received by a concurrent call among them) may reach a machine.
pub const SPAWN_HELPER_FIRST_CLOSED_FD: i32 = 8;

/// What a one-shot run hands its machine: PID 1's stdio, and the pipe on which berth's
/// init reports the command's exit status (one byte) when it ends.
pub struct RunIo {
    pub stdio: [OwnedFd; 3],
    pub status: OwnedFd,
}

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
    /// [`Spawner::spawn`] for a one-shot run: PID 1 gets `io`'s stdio, and berth's init
    /// (which `req` must ask for) writes the command's exit status to `io.status`.
    async fn spawn_run(&self, req: &SpawnRequest, io: RunIo) -> Result<Box<dyn Pending>> {
        let _ = (req, io);
        Err(crate::error::Error::NotSupported(
            "this spawner cannot run one-shot machines".into(),
        ))
    }
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
    /// The machine's console pty (master, slave), once: the slave is PID 1's stdio and
    /// /dev/console. None when the spawner made none.
    fn take_console(&mut self) -> Option<(OwnedFd, OwnedFd)> {
        None
    }
    /// Lets PID 1 set up its root and exec the payload; returns once exec succeeded.
    async fn go(self: Box<Self>) -> Result<()>;
    /// Kills the waiting PID 1 (e.g. because systemd refused the scope).
    async fn abort(self: Box<Self>);
}

/// The real spawner: berthd's own binary re-executed as a helper, and the resident exec
/// helpers of machines commands were executed in lately.
#[derive(Default)]
pub struct Helpers {
    residents: resident::Residents,
}

#[async_trait::async_trait]
impl Spawner for Helpers {
    async fn spawn(&self, req: &SpawnRequest) -> Result<Box<dyn Pending>> {
        Ok(Box::new(launch::spawn(req, None).await?))
    }

    async fn spawn_run(&self, req: &SpawnRequest, io: RunIo) -> Result<Box<dyn Pending>> {
        Ok(Box::new(launch::spawn(req, Some(io)).await?))
    }

    async fn exec(
        &self,
        req: &ExecRequest,
        stdio: [OwnedFd; 3],
        caller_gone: CallerGone,
    ) -> Result<i32> {
        let mut caller_gone = caller_gone;
        if let Some(status) = self.residents.exec(req, &stdio, &mut caller_gone).await? {
            return Ok(status);
        }
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
