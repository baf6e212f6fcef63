//! The spawn helper: a single-threaded re-exec of berthd that creates a machine's
//! namespaces and forks its PID 1. It exits as soon as PID 1 has exec'ed, so PID 1 is
//! then reaped by the host's init (systemd), like every other process in a scope.

use super::protocol::{DaemonMsg, HelperMsg, SpawnRequest, merge_environment, pid1_environment};
use super::{CONSOLE_FD, RUN_STATUS_FD, RUN_STDIO_FDS, init, mount, network, userns};
use crate::net::NetMode;
use crate::security::users::Ownership;
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, pipe2};
use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Entry point for `berthd __spawn-helper`; returns the process exit code.
pub fn main() -> i32 {
    let req = match read_msg() {
        Some(DaemonMsg::Spawn(req)) => req,
        other => {
            reply(&HelperMsg::Failed {
                message: format!("expected a spawn request, got {other:?}"),
            });
            return 1;
        }
    };
    take_passed_fds(&req);
    match run(&req) {
        Ok(()) => 0,
        Err(message) => {
            reply(&HelperMsg::Failed { message });
            1
        }
    }
}

fn read_msg() -> Option<DaemonMsg> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(n) if n > 0 => serde_json::from_str(&line).ok(),
        _ => None,
    }
}

fn reply(msg: &HelperMsg) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string(msg).expect("serializable"));
    let _ = out.flush();
}

fn run(req: &SpawnRequest) -> Result<(), String> {
    // Both pipes are close-on-exec: the go pipe so the payload never inherits it, the
    // error pipe so a successful exec shows up as end-of-file.
    let (go_r, go_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // Read while this helper still sees the host's mounts and files.
    let host = mount::HostView::read();
    let console = req.console.then(take_console);
    // An unprivileged machine: its user namespace first, the idmapped root (or an
    // ephemeral machine's idmapped lower layer) made while this helper is still
    // privileged, then every other namespace from inside it.
    let ns = req
        .users
        .map(|users| userns::create(users.range))
        .transpose()?;
    let idmap = match (&ns, req.users) {
        (Some(ns), Some(users)) if users.ownership == Ownership::Idmap => Some(ns),
        _ => None,
    };
    let root_tree = if req.overlay {
        let mut etc = vec![("hostname".to_string(), req.hostname.clone())];
        if let Some(id) = &req.machine_id {
            etc.push(("machine-id".to_string(), id.clone()));
        }
        if ns.is_some() && idmap.is_none() {
            return Err("an overlay in a user namespace needs an idmapped lower layer".into());
        }
        mount::RootTree::overlay(&req.rootfs, idmap, etc)?
    } else {
        mount::RootTree::clone_of(&req.rootfs, idmap)?
    }
    .with_binds(&req.binds)?;
    let root_tree = match &console {
        Some(c) => root_tree.with_console(c)?,
        None => root_tree,
    };
    if let Some(ns) = ns {
        userns::enter(&ns)?;
    }
    // `host`: PID 1 stays in berthd's network namespace, the host's.
    let own_netns = req.network != NetMode::Host;
    let mut namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID;
    if own_netns {
        namespaces |= CloneFlags::CLONE_NEWNET;
    }
    unshare(namespaces).map_err(|e| {
        let net = if own_netns { ", net" } else { "" };
        format!("unshare(mount, uts, ipc{net}, pid): {e}")
    })?;
    // SAFETY: this helper is single-threaded (it never starts a runtime or threads).
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(go_w);
            drop(err_r);
            pid1(req, go_r, err_w, &root_tree, &host, console)
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            drop(err_w);
            reply(&HelperMsg::Spawned {
                pid: child.as_raw() as u32,
            });
            supervise_start(child, go_w, err_r);
            Ok(())
        }
    }
}

fn supervise_start(child: Pid, go_w: OwnedFd, err_r: OwnedFd) {
    match read_msg() {
        Some(DaemonMsg::Go) => {
            let mut go = File::from(go_w);
            let _ = go.write_all(b"g");
            drop(go);
            let mut message = String::new();
            let _ = File::from(err_r).read_to_string(&mut message);
            if message.is_empty() {
                reply(&HelperMsg::Running);
            } else {
                let _ = waitpid(child, None);
                reply(&HelperMsg::Failed { message });
            }
        }
        // Abort, or berthd went away: PID 1 must not outlive the start attempt.
        _ => {
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
        }
    }
}

/// PID 1 of the new PID namespace: it becomes the machine, then execs the payload, or,
/// with berth's init, forks it as PID 2 and stays to reap and forward signals. Whatever
/// fails before an exec is written to the error pipe; a successful exec closes it.
fn pid1(
    req: &SpawnRequest,
    go_r: OwnedFd,
    err_w: OwnedFd,
    root_tree: &mount::RootTree,
    host: &mount::HostView,
    console: Option<OwnedFd>,
) -> ! {
    // Until Go, what does not depend on the scope, built while systemd makes it. A
    // failure waits for Go too, so the start fails on its message, not on the scope.
    let prepared = prepare_machine(req, root_tree, host, console);
    wait_for_go(go_r);
    let message = match prepared.and_then(|()| become_machine(req, root_tree, host)) {
        Err(m) => m,
        // Confined before the fork, so berth's PID 1 holds no more privilege than the
        // command: reaping and kill(2) of its own child need none.
        Ok(()) if req.init => match init::fork_command() {
            Err(m) => m,
            Ok(init::Role::Command) if req.status_fd.is_some() => {
                // A one-shot run: the machine is up, and a command that cannot be exec'ed
                // is the command's failure, told on its stderr (the caller's) with the
                // shells' 127, as Execute does.
                drop(err_w);
                let message = exec_payload(req);
                eprintln!("berth: {message}");
                // SAFETY: _exit skips atexit handlers and stdio flushing meant for the
                // parent.
                unsafe { libc::_exit(super::exec::EXIT_CANNOT_EXEC) }
            }
            Ok(init::Role::Command) => exec_payload(req),
            Ok(init::Role::Init(command)) => {
                // The command's copy of the error pipe alone reports its exec.
                drop(err_w);
                init::reap_and_forward(command, req.status_fd)
            }
        },
        Ok(()) => exec_payload(req),
    };
    let mut f = File::from(err_w);
    let _ = f.write_all(message.as_bytes());
    // SAFETY: _exit skips atexit handlers and stdio flushing meant for the parent.
    unsafe { libc::_exit(127) }
}

/// Before Go: PID 1's stdio, the machine's hostname and loopback, and its root but for
/// its cgroups.
fn prepare_machine(
    req: &SpawnRequest,
    root_tree: &mount::RootTree,
    host: &mount::HostView,
    console: Option<OwnedFd>,
) -> Result<(), String> {
    // stdout is berthd's protocol pipe: keep the payload's chatter off it.
    redirect_stdio(req.stdio_fds, console).map_err(|e| format!("stdio: {e}"))?;
    nix::unistd::sethostname(&req.hostname)
        .map_err(|e| format!("sethostname({}): {e}", req.hostname))?;
    // In the host's namespace lo is the host's, and up already.
    if req.network != NetMode::Host {
        network::loopback_up()?;
    }
    mount::build_root(req, root_tree, host)
}

/// Blocks until berthd says Go: the scope holds this process. Leaves quietly if berthd
/// gave up before the scope existed.
fn wait_for_go(go_r: OwnedFd) {
    let mut byte = [0u8; 1];
    let mut go = File::from(go_r);
    if !matches!(go.read(&mut byte), Ok(1)) {
        // SAFETY: _exit skips atexit handlers and stdio flushing meant for the parent.
        unsafe { libc::_exit(0) }
    }
}

/// After Go, everything up to the exec: a cgroup namespace, the rest of the root, and
/// the confinement.
fn become_machine(
    req: &SpawnRequest,
    root_tree: &mount::RootTree,
    host: &mount::HostView,
) -> Result<(), String> {
    // Now that systemd has moved us into the scope, a cgroup namespace rooted here makes
    // the machine see its scope as "/".
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|e| format!("unshare(cgroup): {e}"))?;
    mount::finish_root(root_tree, host)?;
    if let Some(text) = &req.resolv_conf {
        // Best effort: a machine on a read-only root still starts, with the resolv.conf
        // it has.
        let _ = network::write_resolv_conf(Path::new("/etc"), text);
    }
    req.confinement.apply()
}

/// Execs the machine's init or Command; returns only the reason it could not.
fn exec_payload(req: &SpawnRequest) -> String {
    let mut extra = pid1_environment(req.machine_id.as_deref());
    extra.extend(req.environment.iter().cloned());
    let env = merge_environment(&extra);
    super::exec::exec_in_root(&req.command, &env)
}

/// PID 1's stdio: a run's caller's descriptors; else all three the console when it has
/// one (closed here, as the copies are all PID 1 needs); else stdin /dev/null and stdout
/// berthd's stderr (the journal).
fn redirect_stdio(passed: Option<[i32; 3]>, console: Option<OwnedFd>) -> std::io::Result<()> {
    if let Some(fds) = passed {
        for (target, fd) in fds.into_iter().enumerate() {
            // SAFETY: plain dup2 on descriptors berthd passed us (see take_passed_fds).
            if unsafe { libc::dup2(fd, target as i32) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        return Ok(());
    }
    if let Some(console) = console {
        for fd in 0..3 {
            // SAFETY: plain dup2 on descriptors we own.
            if unsafe { libc::dup2(console.as_raw_fd(), fd) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        return Ok(());
    }
    let null = File::options().read(true).open("/dev/null")?;
    // SAFETY: plain dup2 on descriptors we own.
    unsafe {
        if libc::dup2(null.as_raw_fd(), 0) < 0 || libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The console pty's slave berthd passed at [`CONSOLE_FD`], already close-on-exec
/// ([`take_passed_fds`]): the payload gets it as its stdio, never as a stray descriptor.
fn take_console() -> OwnedFd {
    // SAFETY: berthd put the slave at CONSOLE_FD for this helper (launch::spawn), and
    // nothing else here owns that descriptor.
    unsafe { OwnedFd::from_raw_fd(CONSOLE_FD) }
}

/// The descriptors launch::spawn may have passed at fixed numbers: those the request
/// names become close-on-exec (PID 1 copies the stdio onto 0-2, berth's init alone keeps
/// the status pipe), the others, whatever berthd happened to hold there, are closed.
fn take_passed_fds(req: &SpawnRequest) {
    let named: Vec<i32> = req
        .stdio_fds
        .into_iter()
        .flatten()
        .chain(req.status_fd)
        .chain(req.console.then_some(CONSOLE_FD))
        .collect();
    for fd in RUN_STDIO_FDS.into_iter().chain([RUN_STATUS_FD, CONSOLE_FD]) {
        // SAFETY: fcntl and close on descriptor numbers nothing else in this process uses.
        unsafe {
            if named.contains(&fd) {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            } else {
                libc::close(fd);
            }
        }
    }
}
