//! berthd's side of the helpers: start them with fork+exec (never a bare fork of the
//! multi-threaded daemon), hand them their request, and follow them.

use super::protocol::{DaemonMsg, ExecRequest, HelperMsg, ShellReply, SpawnRequest};
use super::{
    CONSOLE_FD, CallerGone, EXEC_HELPER_ARG, EXEC_REQUEST_FD, OpenedShell, Pending, RUN_STATUS_FD,
    RUN_STDIO_FDS, RunIo, SPAWN_HELPER_ARG, SPAWN_HELPER_FIRST_CLOSED_FD,
};
use crate::console::pty;
use crate::error::{Error, Result};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tracing::info;

/// The binary to re-execute: our own, even if the file was replaced by an upgrade.
pub(super) fn self_exe() -> &'static str {
    "/proc/self/exe"
}

/// A spawn helper whose PID 1 waits for `go`.
pub struct HelperMachine {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    pid: u32,
    console: Option<pty::Pair>,
}

/// Starts the spawn helper and waits until the machine's PID 1 exists. With
/// `req.console` the helper gets the slave of a new pty at [`CONSOLE_FD`] for PID 1's
/// console; the pair is berthd's through [`Pending::take_console`]. A one-shot run's
/// `io` goes to the helper at [`RUN_STDIO_FDS`] and [`RUN_STATUS_FD`], named in the
/// request it is sent; berthd keeps no copy, so the status pipe ends with PID 1.
pub async fn spawn(req: &SpawnRequest, io: Option<RunIo>) -> Result<HelperMachine> {
    let mut req = req.clone();
    let console = req
        .console
        .then(|| pty::open_console(req.users.map_or(0, |u| u.range.base)))
        .transpose()
        .map_err(|e| Error::failed("cannot open a pty for the machine's console", e))?;
    let mut cmd = Command::new(self_exe());
    cmd.arg(SPAWN_HELPER_ARG)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut passed = Vec::new();
    if let Some(pair) = &console {
        passed.push((pair.slave.as_raw_fd(), CONSOLE_FD));
    }
    if let Some(io) = &io {
        let [stdin, stdout, stderr] = &io.stdio;
        for (fd, target) in [stdin, stdout, stderr, &io.status]
            .into_iter()
            .zip(RUN_STDIO_FDS.into_iter().chain([RUN_STATUS_FD]))
        {
            passed.push((fd.as_raw_fd(), target));
        }
        req.stdio_fds = Some(RUN_STDIO_FDS);
        req.status_fd = Some(RUN_STATUS_FD);
    }
    pass_fds(&mut cmd, passed);
    let child = cmd.spawn();
    drop(io);
    let mut child = child.map_err(|e| Error::failed("cannot start the spawn helper", e))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    send(&mut stdin, &DaemonMsg::Spawn(Box::new(req.clone()))).await?;
    match recv(&mut lines).await? {
        HelperMsg::Spawned { pid } => Ok(HelperMachine {
            child,
            stdin,
            lines,
            pid,
            console,
        }),
        HelperMsg::Failed { message } => {
            let _ = child.wait().await;
            Err(Error::Failed(format!(
                "cannot create the namespaces of machine {}: {message}",
                req.name
            )))
        }
        other => Err(Error::Failed(format!(
            "spawn helper sent {other:?} before the machine existed"
        ))),
    }
}

/// Puts each of berthd's (close-on-exec) descriptors `sources[i]` at `targets[i]` in the
/// child, inheritable. Each is first copied above every target, so a source that sits on
/// another's target number is not overwritten before it has been moved.
pub(super) fn pass_fds(cmd: &mut Command, passed: Vec<(RawFd, RawFd)>) {
    if passed.is_empty() {
        return;
    }
    // Made before the fork: the child only writes into it, never allocates.
    let mut high = vec![-1; passed.len()];
    // SAFETY: runs in the forked child before exec; fcntl and dup2 are
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &(fd, _)) in passed.iter().enumerate() {
                high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, SPAWN_HELPER_FIRST_CLOSED_FD);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (&from, &(_, to)) in high.iter().zip(&passed) {
                if libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[async_trait::async_trait]
impl Pending for HelperMachine {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn take_console(&mut self) -> Option<(OwnedFd, OwnedFd)> {
        self.console.take().map(|p| (p.master, p.slave))
    }

    async fn go(mut self: Box<Self>) -> Result<()> {
        send(&mut self.stdin, &DaemonMsg::Go).await?;
        let reply = recv(&mut self.lines).await;
        let _ = self.child.wait().await;
        match reply? {
            HelperMsg::Running => Ok(()),
            HelperMsg::Failed { message } => Err(Error::Failed(message)),
            other => Err(Error::Failed(format!(
                "spawn helper sent {other:?} instead of a start result"
            ))),
        }
    }

    async fn abort(mut self: Box<Self>) {
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
        .map_err(|e| Error::failed("spawn helper went away", e))
}

async fn recv(lines: &mut Lines<BufReader<ChildStdout>>) -> Result<HelperMsg> {
    match lines.next_line().await {
        Ok(Some(line)) => serde_json::from_str(&line)
            .map_err(|e| Error::failed("garbled message from the spawn helper", e)),
        Ok(None) => Err(Error::Failed(
            "the spawn helper exited without an answer (see berthd's log)".into(),
        )),
        Err(e) => Err(Error::failed("cannot read from the spawn helper", e)),
    }
}

/// Runs the exec helper with the caller's stdio and the request on [`EXEC_REQUEST_FD`];
/// its exit status is the command's.
pub async fn exec(req: &ExecRequest, stdio: [OwnedFd; 3], caller_gone: CallerGone) -> Result<i32> {
    let (request_r, request_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::failed("cannot make a pipe for the exec helper", e))?;
    let [stdin, stdout, stderr] = stdio;
    let mut cmd = exec_helper(&request_r);
    cmd.stdin(stdin).stdout(stdout).stderr(stderr);
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::failed("cannot start the exec helper", e))?;
    drop(request_r);
    let request = serde_json::to_vec(req).expect("serializable");
    // A large environment may not fit the pipe at once; the helper reads it all first.
    let written =
        tokio::task::spawn_blocking(move || std::fs::File::from(request_w).write_all(&request));
    // Killing the helper kills the command too (it dies with its parent).
    let status = tokio::select! {
        status = child.wait() => status
            .map_err(|e| Error::failed("cannot wait for the exec helper", e))?,
        () = caller_gone => {
            let _ = child.kill().await;
            info!(leader = req.leader, "caller of Execute left; command killed");
            return Err(Error::Failed("the caller went away".into()));
        }
    };
    let _ = written.await;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// The exec helper's command, with `request` (close-on-exec here) as its
/// [`EXEC_REQUEST_FD`]; killed if dropped.
fn exec_helper(request: &OwnedFd) -> Command {
    let mut cmd = Command::new(self_exe());
    cmd.arg(EXEC_HELPER_ARG).kill_on_drop(true);
    pass_fds(&mut cmd, vec![(request.as_raw_fd(), EXEC_REQUEST_FD)]);
    cmd
}

/// Runs the exec helper in shell mode for machine `machine`: the request goes down a
/// socket at [`EXEC_REQUEST_FD`], and the answer comes back on it before the command
/// runs, with the pty's master. The helper's own messages go to berthd's log.
pub async fn shell(
    machine: &str,
    req: &ExecRequest,
    caller_gone: CallerGone,
) -> Result<OpenedShell> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| Error::failed("cannot make a socket for the exec helper", e))?;
    let mut cmd = exec_helper(&theirs);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::failed("cannot start the exec helper", e))?;
    drop(theirs);
    let request = serde_json::to_vec(req).expect("serializable");
    let answer = tokio::task::spawn_blocking(move || ask_for_shell(ours, &request))
        .await
        .map_err(|e| Error::Failed(format!("the exec helper's answer got lost: {e}")))?;
    let (reply, fds) = match answer {
        Ok(a) => a,
        Err(e) => {
            let _ = child.kill().await;
            return Err(e);
        }
    };
    let user = req.shell.as_ref().map(|s| s.user.as_str()).unwrap_or("");
    let refused = match (reply, fds.into_iter().next()) {
        (ShellReply::Ready { pty_path }, Some(master)) => Ok((pty_path, master)),
        (ShellReply::Ready { .. }, None) => Err(Error::Failed(
            "the exec helper opened a pty but sent no descriptor".into(),
        )),
        (ShellReply::NoUser { .. }, _) => {
            let who = if user.is_empty() { "root" } else { user };
            Err(Error::InvalidArgument(format!(
                "no user {who:?} in machine {machine}'s /etc/passwd"
            )))
        }
        (ShellReply::Failed { message }, _) => Err(Error::Failed(format!(
            "cannot open a shell in machine {machine}: {message}"
        ))),
    };
    let (pty_path, master) = match refused {
        Ok(opened) => opened,
        Err(e) => {
            // Nothing ran; the helper exits on its own after a refusal.
            let _ = child.kill().await;
            return Err(e);
        }
    };
    let leader = req.leader;
    let exited = Box::pin(async move {
        use std::os::unix::process::ExitStatusExt;
        tokio::select! {
            status = child.wait() => match status {
                Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0)),
                Err(_) => super::exec::EXIT_CANNOT_EXEC,
            },
            () = caller_gone => {
                // The shell dies with its helper (PR_SET_PDEATHSIG).
                let _ = child.kill().await;
                info!(leader, "caller of OpenShell left; shell killed");
                128 + libc::SIGKILL
            }
        }
    });
    Ok(OpenedShell {
        master,
        pty_path,
        exited,
    })
}

/// Blocking: sends `request` on `socket`, ends our side of it, and reads the helper's
/// one-line answer with any descriptors it carried.
fn ask_for_shell(socket: OwnedFd, request: &[u8]) -> Result<(ShellReply, Vec<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, Shutdown, recvmsg, shutdown};
    use std::os::fd::FromRawFd;
    let gone = |e: std::io::Error| Error::failed("the exec helper went away", e);
    std::fs::File::from(socket.try_clone().map_err(gone)?)
        .write_all(request)
        .map_err(gone)?;
    shutdown(socket.as_raw_fd(), Shutdown::Write).map_err(|e| gone(e.into()))?;
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut buf = [0u8; 4096];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    while !line.contains(&b'\n') {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(gone(e.into())),
        };
        for cmsg in msg.cmsgs().map_err(|e| gone(e.into()))? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel just installed these descriptors for us alone.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let n = msg.bytes;
        if n == 0 {
            return Err(Error::Failed(
                "the exec helper exited without an answer (see berthd's log)".into(),
            ));
        }
        line.extend_from_slice(&buf[..n]);
    }
    let end = line.iter().position(|&b| b == b'\n').expect("seen above");
    let reply = serde_json::from_slice(&line[..end])
        .map_err(|e| Error::failed("garbled answer from the exec helper", e))?;
    Ok((reply, fds))
}
