//! Resident exec helpers: berthd's side. Execute's time went mostly to the kernel, not
//! to berth: a new exec helper writing itself into the machine's cgroups is the first
//! writer of cgroup_threadgroup_rwsem after a quiet spell, and waits for an RCU grace
//! period (~18 ms on a loaded host, docs/benchmarks.md). A process that is already in
//! the machine's cgroups forks into them for free. So the first Execute in a machine
//! starts an exec helper that joins the machine as usual and then stays
//! ([`serve`]); the next ones are datagrams to it, and it forks each command. It leaves
//! after [`IDLE`] without a command, and with the machine.
//!
//! It is a fast path only: when there is no helper and one can't be started, when it
//! went away, or when a request is too large for one datagram, Execute falls back to a
//! one-shot exec helper (launch::exec), which reports any error on the caller's stderr
//! as before. A command that was started is never retried.

pub mod serve;

use super::protocol::{ExecRequest, ResidentCommand, ResidentMsg};
use super::{CallerGone, EXEC_HELPER_ARG, EXEC_REQUEST_FD, RESIDENT_CONTROL_FD};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::{debug, info};

/// How long a resident helper waits for another command: long enough for a script's
/// run of execs, short enough that an idle machine soon holds only its own tasks (the
/// helper counts as one of them).
pub const IDLE: Duration = Duration::from_secs(10);

/// The largest command datagram: far above any ordinary command, far below the
/// socket's buffer. A larger environment takes the one-shot path.
pub const CONTROL_MESSAGE_MAX: usize = 64 * 1024;

/// The resident helpers of running machines, by leader PID.
#[derive(Default)]
pub struct Residents {
    helpers: Arc<Mutex<HashMap<u32, Arc<Resident>>>>,
}

struct Resident {
    /// berthd's end of the control socket; closing it tells the helper to leave.
    control: OwnedFd,
    last_used: Mutex<Instant>,
}

/// How a command sent to a resident helper went.
enum Sent {
    /// It ran and ended with this status.
    Ran(i32),
    /// It never ran: the helper was gone. Another helper may be asked.
    NotRun,
}

impl Residents {
    /// Runs `req` through the machine's resident helper, starting one if need be. None
    /// when no helper could run it: nothing ran, and the caller falls back to a one-shot
    /// helper. An error only when the caller left.
    pub async fn exec(
        &self,
        req: &ExecRequest,
        stdio: &[OwnedFd; 3],
        caller_gone: &mut CallerGone,
    ) -> Result<Option<i32>> {
        let body = serde_json::to_vec(&ResidentCommand {
            argv: req.argv.clone(),
            environment: req.environment.clone(),
            confinement: req.confinement.clone(),
        })
        .expect("serializable");
        if body.len() > CONTROL_MESSAGE_MAX {
            return Ok(None);
        }
        // A helper found in the map may have left just now (idle, or the machine
        // restarted with the same leader PID): one more, freshly started, is tried.
        for _ in 0..2 {
            let found = tokio::select! {
                found = self.helper_for(req) => found,
                () = &mut *caller_gone => {
                    return Err(Error::Failed("the caller went away".into()));
                }
            };
            let Some(helper) = found else {
                return Ok(None);
            };
            match helper.run(&body, stdio, caller_gone).await? {
                Sent::Ran(status) => return Ok(Some(status)),
                Sent::NotRun => self.forget(req.leader, &helper),
            }
        }
        Ok(None)
    }

    async fn helper_for(&self, req: &ExecRequest) -> Option<Arc<Resident>> {
        if let Some(h) = self.helpers.lock().expect("not poisoned").get(&req.leader) {
            *h.last_used.lock().expect("not poisoned") = Instant::now();
            return Some(h.clone());
        }
        let (helper, child) = match start(req).await {
            Ok(started) => started,
            Err(e) => {
                debug!(leader = req.leader, "no resident exec helper: {e}");
                return None;
            }
        };
        let helper = Arc::new(helper);
        // Two first execs at once may both start one; the second keeps the first's,
        // and its own leaves when its control socket closes here.
        let kept = self
            .helpers
            .lock()
            .expect("not poisoned")
            .entry(req.leader)
            .or_insert_with(|| helper.clone())
            .clone();
        if Arc::ptr_eq(&kept, &helper) {
            tokio::spawn(watch(self.helpers.clone(), req.leader, helper, child));
        }
        Some(kept)
    }

    fn forget(&self, leader: u32, helper: &Arc<Resident>) {
        let mut helpers = self.helpers.lock().expect("not poisoned");
        if helpers.get(&leader).is_some_and(|h| Arc::ptr_eq(h, helper)) {
            helpers.remove(&leader);
        }
    }
}

/// Until the helper exits: lets it go (out of the map, so its control socket closes
/// once no call holds it) after [`IDLE`] without a command, and forgets it when it
/// exits (the machine ended).
async fn watch(
    helpers: Arc<Mutex<HashMap<u32, Arc<Resident>>>>,
    leader: u32,
    helper: Arc<Resident>,
    mut child: tokio::process::Child,
) {
    let weak = Arc::downgrade(&helper);
    drop(helper);
    let forget = |helpers: &Mutex<HashMap<u32, Arc<Resident>>>| {
        let mut map = helpers.lock().expect("not poisoned");
        if map
            .get(&leader)
            .is_some_and(|h| std::ptr::eq(Arc::as_ptr(h), weak.as_ptr()))
        {
            map.remove(&leader);
        }
    };
    let mut let_go = false;
    loop {
        let wake = match weak.upgrade() {
            Some(h) if !let_go => *h.last_used.lock().expect("not poisoned") + IDLE,
            // Let go: only its exit is left to wait for.
            _ => Instant::now() + Duration::from_secs(3600),
        };
        tokio::select! {
            _ = child.wait() => {
                forget(&helpers);
                return;
            }
            () = tokio::time::sleep_until(wake.into()) => {
                let idle = weak.upgrade().is_some_and(|h| {
                    h.last_used.lock().expect("not poisoned").elapsed() >= IDLE
                });
                if idle {
                    debug!(leader, "resident exec helper idle; letting it go");
                    forget(&helpers);
                    let_go = true;
                }
            }
        }
    }
}

/// Starts a resident helper for `req`'s machine and waits until it has joined it.
async fn start(req: &ExecRequest) -> Result<(Resident, tokio::process::Child)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (request_r, request_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::failed("cannot make a pipe for the exec helper", e))?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::failed("cannot make a socket for the exec helper", e))?;
    let mut cmd = tokio::process::Command::new(super::launch::self_exe());
    cmd.arg(EXEC_HELPER_ARG)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit());
    super::launch::pass_fds(
        &mut cmd,
        vec![
            (request_r.as_raw_fd(), EXEC_REQUEST_FD),
            (theirs.as_raw_fd(), RESIDENT_CONTROL_FD),
        ],
    );
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::failed("cannot start a resident exec helper", e))?;
    drop((request_r, theirs));
    let request = serde_json::to_vec(&ExecRequest {
        leader: req.leader,
        argv: Vec::new(),
        environment: Vec::new(),
        confinement: req.confinement.clone(),
        shell: None,
        resident: true,
    })
    .expect("serializable");
    // Small: fits the pipe, so this does not block.
    let _ = std::fs::File::from(request_w).write_all(&request);
    let answer = tokio::task::spawn_blocking(move || {
        let mut buf = [0u8; 4096];
        let n = nix::sys::socket::recv(
            ours.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        );
        (ours, n.map(|n| buf[..n].to_vec()))
    })
    .await
    .map_err(|e| Error::Failed(format!("the exec helper's answer got lost: {e}")))?;
    let (control, said) = answer;
    let said = said.map_err(|e| Error::failed("the resident exec helper went away", e))?;
    match serde_json::from_slice(&said) {
        Ok(ResidentMsg::Ready) => {}
        Ok(ResidentMsg::Failed { message }) => {
            let _ = child.wait().await;
            return Err(Error::Failed(message));
        }
        _ => {
            let _ = child.kill().await;
            return Err(Error::Failed(
                "the resident exec helper exited without an answer (see berthd's log)".into(),
            ));
        }
    }
    // From here sends must never block berthd: a helper in a frozen machine takes
    // nothing, and a full socket makes that command fall back.
    nix::fcntl::fcntl(
        &control,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| Error::failed("resident exec helper socket", e))?;
    info!(
        leader = req.leader,
        pid = child.id(),
        "resident exec helper started"
    );
    Ok((
        Resident {
            control,
            last_used: Mutex::new(Instant::now()),
        },
        child,
    ))
}

impl Resident {
    /// Sends one command and follows it on its own reply socket until its status.
    async fn run(
        &self,
        body: &[u8],
        stdio: &[OwnedFd; 3],
        caller_gone: &mut CallerGone,
    ) -> Result<Sent> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .map_err(|e| Error::failed("cannot make a socket for the exec helper", e))?;
        let [stdin, stdout, stderr] = stdio;
        if send_datagram_raw(&self.control, body, &[stdin, stdout, stderr, &theirs]).is_err() {
            return Ok(Sent::NotRun);
        }
        drop(theirs);
        let stream = tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(ours))
            .map_err(|e| Error::failed("resident exec helper socket", e))?;
        let mut lines = BufReader::new(stream).lines();
        let mut started = false;
        loop {
            // Dropping `lines` (returning) closes the reply socket: the helper kills the
            // command.
            let line = tokio::select! {
                line = lines.next_line() => line,
                () = &mut *caller_gone => {
                    info!("caller of Execute left; command killed");
                    return Err(Error::Failed("the caller went away".into()));
                }
            };
            let msg = match line {
                Ok(Some(l)) => serde_json::from_str::<ResidentMsg>(&l).ok(),
                Ok(None) | Err(_) => None,
            };
            match msg {
                Some(ResidentMsg::Started) => started = true,
                Some(ResidentMsg::Exited { status }) => return Ok(Sent::Ran(status)),
                // Gone before the status: the machine ended, and the command with it,
                // as a one-shot helper killed with it would report.
                _ if started => return Ok(Sent::Ran(128 + libc::SIGKILL)),
                _ => return Ok(Sent::NotRun),
            }
        }
    }
}

/// Sends `msg` as one datagram with `fds` (the helper's side).
pub(crate) fn send_datagram(
    socket: &OwnedFd,
    msg: &ResidentMsg,
    fds: &[&OwnedFd],
) -> nix::Result<()> {
    let body = serde_json::to_vec(msg).expect("messages serialize");
    send_datagram_raw(socket, &body, fds)
}

fn send_datagram_raw(socket: &OwnedFd, body: &[u8], fds: &[&OwnedFd]) -> nix::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage> = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let iov = [std::io::IoSlice::new(body)];
    loop {
        match sendmsg::<()>(
            socket.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
            Ok(_) => return Ok(()),
        }
    }
}
