//! The exec helper, for Execute(): it joins the leader's cgroups and namespaces, forks
//! so the child is inside the machine's PID namespace, and exits with the command's
//! status. berthd starts it from launch::exec.

use super::EXEC_REQUEST_FD;
use super::protocol::{ExecRequest, merge_environment};
use crate::cgroup::{CgroupMode, cgroup_dirs};
use nix::sched::{CloneFlags, setns};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};

/// Exit code when the command cannot be run at all, as shells use.
pub const EXIT_CANNOT_EXEC: i32 = 127;

/// Entry point for `berthd __exec-helper`; stdio are the caller's, the request comes on
/// [`EXEC_REQUEST_FD`] (see launch::exec).
pub fn main() -> i32 {
    // SAFETY: launch::exec put the read end of the request pipe there for us alone.
    let pipe = unsafe { File::from_raw_fd(EXEC_REQUEST_FD) };
    // Buffered: serde_json reads a bare File one byte per read(2), ~800 calls a request.
    let req: ExecRequest = match serde_json::from_reader(std::io::BufReader::new(pipe)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth: the exec helper got no request from berthd: {e}");
            return EXIT_CANNOT_EXEC;
        }
    };
    match run(&req) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("berth: {msg}");
            EXIT_CANNOT_EXEC
        }
    }
}

fn run(req: &ExecRequest) -> Result<i32, String> {
    if req.argv.is_empty() {
        return Err("no command given".into());
    }
    let leader = req.leader;
    join_cgroups(leader)?;
    // Open everything first: after setns(mnt) /proc is the machine's.
    // A namespace the machine shares with berthd (the host's network for a machine in
    // host mode) is joined already; and setns into it would be refused once in an
    // unprivileged machine's user namespace, which does not own it.
    let kinds = ["cgroup", "ipc", "uts", "net", "pid", "mnt"];
    let mut fds = Vec::new();
    for kind in kinds {
        let path = format!("/proc/{leader}/ns/{kind}");
        let fd = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        if !same_namespace(&fd, kind)? {
            fds.push((kind, fd));
        }
    }
    let root = File::open(format!("/proc/{leader}/root"))
        .map_err(|e| format!("/proc/{leader}/root: {e}"))?;
    // An unprivileged machine's namespaces belong to its user namespace: join that first
    // and become its root, then the others as their owner.
    if super::userns::differs_from_ours(leader)? {
        let path = format!("/proc/{leader}/ns/user");
        let userns = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        super::userns::enter(&userns)?;
    }
    for (kind, fd) in &fds {
        setns(fd, CloneFlags::empty()).map_err(|e| format!("setns({kind}): {e}"))?;
    }
    nix::unistd::fchdir(&root).map_err(|e| format!("fchdir: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir: {e}"))?;
    let env = merge_environment(&req.environment);
    // SAFETY: the exec helper is single-threaded.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            // If berthd kills this helper (its caller left), the command goes too.
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            // The helper lives outside the machine's PID namespace, so its PID reads as
            // 0 here; anything else means it died before the line above took effect.
            if nix::unistd::getppid().as_raw() != 0 {
                // SAFETY: leave without running the parent's exit handlers.
                unsafe { libc::_exit(EXIT_CANNOT_EXEC) }
            }
            let msg = match req.confinement.apply() {
                Ok(()) => exec_in_root(&req.argv, &env),
                Err(e) => e,
            };
            eprintln!("berth: {msg}");
            // SAFETY: leave without running the parent's exit handlers.
            unsafe { libc::_exit(EXIT_CANNOT_EXEC) }
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("waitpid: {e}")),
            }
        },
    }
}

/// Whether `ns`, a namespace of the machine, is this process's own namespace of `kind`.
fn same_namespace(ns: &File, kind: &str) -> Result<bool, String> {
    use std::os::unix::fs::MetadataExt;
    let theirs = ns
        .metadata()
        .map_err(|e| format!("{kind} namespace: {e}"))?;
    let path = format!("/proc/self/ns/{kind}");
    let ours = std::fs::metadata(&path).map_err(|e| format!("{path}: {e}"))?;
    Ok((theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()))
}

/// Puts this process into every cgroup the leader is in, so the command counts against
/// the machine's limits and dies with its scope.
fn join_cgroups(leader: u32) -> Result<(), String> {
    let root = Path::new("/sys/fs/cgroup");
    let mode = CgroupMode::detect(root).map_err(|e| format!("cgroup mode: {e}"))?;
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{leader}/cgroup"))
        .map_err(|e| format!("machine leader {leader} is gone: {e}"))?;
    let me = std::process::id().to_string();
    for dir in cgroup_dirs(&proc_cgroup, root, mode) {
        // Hierarchies systemd does not manage (cpuset on v1) may not exist here.
        if !dir.path.is_dir() {
            continue;
        }
        let procs = dir.path.join("cgroup.procs");
        std::fs::write(&procs, &me).map_err(|e| format!("{}: {e}", procs.display()))?;
    }
    Ok(())
}

/// Execs `argv` (in the current root) with `env`; only returns on failure, with the
/// reason. A bare program name is looked up in the PATH of `env`.
pub fn exec_in_root(argv: &[String], env: &[String]) -> String {
    let Some(prog) = argv.first() else {
        return "no command given".into();
    };
    let path = match find_program(prog, env) {
        Some(p) => p,
        None => return format!("cannot execute {prog}: not found in the machine's PATH"),
    };
    let to_c = |s: &str| CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"));
    let c_path = match to_c(&path.to_string_lossy()) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let c_argv: Result<Vec<_>, _> = argv.iter().map(|a| to_c(a)).collect();
    let c_env: Result<Vec<_>, _> = env.iter().map(|a| to_c(a)).collect();
    match (c_argv, c_env) {
        (Ok(a), Ok(e)) => match nix::unistd::execve(&c_path, &a, &e) {
            Err(err) => format!("cannot execute {}: {}", path.display(), err.desc()),
            Ok(never) => match never {},
        },
        (Err(e), _) | (_, Err(e)) => e,
    }
}

/// PATH lookup against the machine's root, not berthd's environment.
pub fn find_program(prog: &str, env: &[String]) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(prog))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_lookup_uses_given_path() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        let sh = find_program("sh", &env).expect("sh exists on any test machine");
        assert!(sh.ends_with("sh"));
        assert!(find_program("no-such-program-berth", &env).is_none());
        assert_eq!(
            find_program("/x/y", &env).unwrap(),
            PathBuf::from("/x/y"),
            "paths are taken as given"
        );
    }

    #[test]
    fn failed_exec_reports_the_program() {
        let msg = exec_in_root(&["no-such-program-berth".into()], &[]);
        assert!(msg.contains("no-such-program-berth"), "{msg}");
        let msg = exec_in_root(&[], &[]);
        assert_eq!(msg, "no command given");
    }
}
