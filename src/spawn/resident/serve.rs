//! The resident exec helper's side: joined to the machine once, it forks each command
//! berthd sends instead of a new helper joining the machine's cgroups for every one.
//!
//! One thread, one poll(2) loop over: the control socket (commands; end-of-file when
//! berthd lets it go), the leader's pidfd (the machine ended), and per running command
//! its pidfd (it ended: its status goes out on its reply socket) and its reply socket
//! (berthd closed it: the caller left, so the command is killed). Once neither berthd
//! nor the machine can send more, it waits for the commands it runs and exits.
//!
//! The helper stays outside the machine's PID namespace (only its children are inside),
//! so nothing in the machine sees it; it is in the machine's cgroups, where its
//! children must start.

use super::super::exec::{EXIT_CANNOT_EXEC, become_command, enter_machine, exec_in_root};
use super::super::protocol::{ExecRequest, ResidentCommand, ResidentMsg, merge_environment};
use super::{CONTROL_MESSAGE_MAX, send_datagram};
use crate::spawn::RESIDENT_CONTROL_FD;
use crate::sys::pidfd::PidFd;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// Entry point from exec::main for a request with `resident` set.
pub fn main(req: &ExecRequest) -> i32 {
    // SAFETY: launch put the control socket there for us alone.
    let control = unsafe { OwnedFd::from_raw_fd(RESIDENT_CONTROL_FD) };
    // dup2 cleared close-on-exec; no command may inherit the control socket.
    if let Err(e) = nix::fcntl::fcntl(
        &control,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    ) {
        eprintln!("berth: resident exec helper: {e}");
        return EXIT_CANNOT_EXEC;
    }
    let joined = PidFd::open(req.leader)
        .map_err(|e| format!("machine leader {} is gone: {e}", req.leader))
        .and_then(|leader| enter_machine(req.leader).map(|()| leader));
    let leader = match joined {
        Ok(l) => l,
        Err(message) => {
            let _ = send_datagram(&control, &ResidentMsg::Failed { message }, &[]);
            return EXIT_CANNOT_EXEC;
        }
    };
    if send_datagram(&control, &ResidentMsg::Ready, &[]).is_err() {
        return 0;
    }
    Server {
        control: Some(control),
        leader,
        commands: Vec::new(),
    }
    .run()
}

struct Server {
    /// None once berthd let go of it or the machine ended: no more commands.
    control: Option<OwnedFd>,
    leader: PidFd,
    commands: Vec<Running>,
}

/// What poll(2) said.
struct Woken {
    control_ready: bool,
    leader_ended: bool,
    /// Per command, in order: (it ended, its caller left).
    ready: Vec<(bool, bool)>,
}

struct Running {
    pid: Pid,
    pidfd: PidFd,
    reply: OwnedFd,
    killed: bool,
}

impl Server {
    fn run(mut self) -> i32 {
        let mut buf = vec![0u8; CONTROL_MESSAGE_MAX];
        loop {
            if self.control.is_none() && self.commands.is_empty() {
                return 0;
            }
            let Woken {
                control_ready,
                leader_ended,
                ready,
            } = match self.wait() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("berth: resident exec helper: poll: {e}");
                    // The commands die with us (PR_SET_PDEATHSIG), as berthd expects.
                    return 1;
                }
            };
            // Commands first: a machine that ended has ended them too, and their
            // statuses still go out before this helper leaves.
            for (i, (ended, caller_left)) in ready.into_iter().enumerate().rev() {
                if ended {
                    let done = self.commands.swap_remove(i);
                    finish(done);
                } else if caller_left {
                    let c = &mut self.commands[i];
                    let _ = kill(c.pid, Signal::SIGKILL);
                    c.killed = true;
                }
            }
            if leader_ended {
                self.control = None;
            } else if control_ready {
                self.receive(&mut buf);
            }
        }
    }

    /// Waits for something to do.
    fn wait(&self) -> nix::Result<Woken> {
        let mut fds = Vec::new();
        if let Some(c) = &self.control {
            fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(self.leader.as_fd(), PollFlags::POLLIN));
        }
        let first = fds.len();
        for c in &self.commands {
            fds.push(PollFd::new(c.pidfd.as_fd(), PollFlags::POLLIN));
            // berthd never writes there: any event is its end closing. Not watched
            // once the command is killed, since that event never clears.
            let watch = if c.killed {
                PollFlags::empty()
            } else {
                PollFlags::POLLIN
            };
            fds.push(PollFd::new(c.reply.as_fd(), watch));
        }
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e),
                Ok(_) => break,
            }
        }
        let fired = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        let (control_ready, leader_ended) = if first == 2 {
            (fired(&fds[0]), fired(&fds[1]))
        } else {
            (false, false)
        };
        let ready = fds[first..]
            .chunks(2)
            .zip(&self.commands)
            .map(|(pair, c)| (fired(&pair[0]), !c.killed && fired(&pair[1])))
            .collect();
        Ok(Woken {
            control_ready,
            leader_ended,
            ready,
        })
    }

    /// Takes one datagram off the control socket and starts its command.
    fn receive(&mut self, buf: &mut [u8]) {
        let Some(control) = &self.control else {
            return;
        };
        let (len, fds) = match receive_datagram(control, buf) {
            Ok(r) => r,
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => return,
            Err(nix::errno::Errno::EMSGSIZE) => {
                eprintln!("berth: resident exec helper: a command too large was dropped");
                return;
            }
            Err(e) => {
                eprintln!("berth: resident exec helper: control socket: {e}");
                self.control = None;
                return;
            }
        };
        if len == 0 && fds.is_empty() {
            // berthd let go: no more commands.
            self.control = None;
            return;
        }
        let Ok::<[OwnedFd; 4], _>([stdin, stdout, stderr, reply]) = fds.try_into() else {
            // Not berthd's way of asking: whatever came is dropped, and a reply socket
            // among it closes, which berthd reads as "never ran".
            eprintln!("berth: resident exec helper: a command came without its four descriptors");
            return;
        };
        let cmd: ResidentCommand = match serde_json::from_slice(&buf[..len]) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("berth: resident exec helper: garbled command: {e}");
                return;
            }
        };
        if let Some(running) = start(&cmd, [stdin, stdout, stderr], reply) {
            self.commands.push(running);
        }
    }
}

/// Forks `cmd` with `stdio`; None when it could not (said on its reply socket).
fn start(cmd: &ResidentCommand, stdio: [OwnedFd; 3], reply: OwnedFd) -> Option<Running> {
    let env = merge_environment(&cmd.environment);
    // SAFETY: this helper is single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            become_command();
            for (fd, target) in stdio.iter().zip(0..) {
                // SAFETY: dup2 onto the standard descriptors, which this process owns.
                if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
                    // SAFETY: leave without running the parent's exit handlers.
                    unsafe { libc::_exit(EXIT_CANNOT_EXEC) }
                }
            }
            let msg = match cmd.confinement.apply() {
                Ok(()) => exec_in_root(&cmd.argv, &env),
                Err(e) => e,
            };
            eprintln!("berth: {msg}");
            // SAFETY: leave without running the parent's exit handlers.
            unsafe { libc::_exit(EXIT_CANNOT_EXEC) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(stdio);
            let pidfd = match PidFd::open(child.as_raw() as u32) {
                Ok(p) => p,
                Err(e) => {
                    // Cannot follow it: end it and say so, as if it failed to start.
                    let _ = kill(child, Signal::SIGKILL);
                    let _ = waitpid(child, None);
                    eprintln!("berth: resident exec helper: pidfd: {e}");
                    let _ = send_line(
                        &reply,
                        &ResidentMsg::Exited {
                            status: 128 + libc::SIGKILL,
                        },
                    );
                    return None;
                }
            };
            // berthd gone already: the command is killed at the next poll.
            let _ = send_line(&reply, &ResidentMsg::Started);
            Some(Running {
                pid: child,
                pidfd,
                reply,
                killed: false,
            })
        }
        Err(e) => {
            let [_, _, stderr] = stdio;
            let _ = writeln!(std::fs::File::from(stderr), "berth: fork: {e}");
            let _ = send_line(
                &reply,
                &ResidentMsg::Exited {
                    status: EXIT_CANNOT_EXEC,
                },
            );
            None
        }
    }
}

/// Reaps a command that ended and sends its status.
fn finish(done: Running) {
    let status = loop {
        match waitpid(done.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(WaitStatus::StillAlive) => {
                // A pidfd turns readable at exit, before the zombie may be reapable.
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("berth: resident exec helper: waitpid: {e}");
                break EXIT_CANNOT_EXEC;
            }
        }
    };
    let _ = send_line(&done.reply, &ResidentMsg::Exited { status });
}

/// One JSON line on a command's reply socket (a stream).
fn send_line(socket: &OwnedFd, msg: &ResidentMsg) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).expect("messages serialize");
    line.push(b'\n');
    std::fs::File::from(socket.try_clone()?).write_all(&line)
}

/// One datagram and the descriptors it carried (close-on-exec).
fn receive_datagram(socket: &OwnedFd, buf: &mut [u8]) -> nix::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel just installed these descriptors for us alone.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.flags.contains(MsgFlags::MSG_TRUNC) {
        // berthd never sends more than CONTROL_MESSAGE_MAX; dropping `fds` answers it.
        return Err(nix::errno::Errno::EMSGSIZE);
    }
    Ok((msg.bytes, fds))
}
