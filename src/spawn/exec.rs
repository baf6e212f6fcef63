//! The exec helper, for Execute(): it joins the leader's cgroups and namespaces, forks
//! so the child is inside the machine's PID namespace, and exits with the command's
//! status. berthd starts it from launch::exec.
//!
//! In shell mode (OpenShell, launch::shell) it also looks the user up in the machine's
//! own /etc/passwd, opens a pty on the machine's devpts (its /dev/ptmx), sends the
//! master back to berthd over the request socket, and runs the command on the slave as
//! that user, as a login would.

use super::EXEC_REQUEST_FD;
use super::passwd::{self, Account};
use super::protocol::{ExecRequest, ShellReply, merge_environment};
use crate::cgroup::{CgroupMode, cgroup_dirs};
use nix::sched::{CloneFlags, setns};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Exit code when the command cannot be run at all, as shells use.
pub const EXIT_CANNOT_EXEC: i32 = 127;

/// Entry point for `berthd __exec-helper`; stdio are the caller's, the request comes on
/// [`EXEC_REQUEST_FD`] (see launch::exec).
pub fn main() -> i32 {
    // SAFETY: launch::exec (or launch::shell) put the request's pipe (or socket) there
    // for us alone.
    let channel = unsafe { File::from_raw_fd(EXEC_REQUEST_FD) };
    // Buffered: serde_json reads a bare File one byte per read(2), ~800 calls a request.
    let req: ExecRequest = match serde_json::from_reader(std::io::BufReader::new(&channel)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("berth: the exec helper got no request from berthd: {e}");
            return EXIT_CANNOT_EXEC;
        }
    };
    if !req.resident {
        // Only a resident helper is passed a control socket; anything else there is
        // berthd's and must not reach the machine.
        crate::sys::process::close_fds_from(super::RESIDENT_CONTROL_FD as u32);
    }
    if req.shell.is_some() {
        return run_shell(&req, channel);
    }
    drop(channel);
    if req.resident {
        return super::resident::serve::main(&req);
    }
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
    enter_machine(req.leader)?;
    let env = merge_environment(&req.environment);
    // SAFETY: the exec helper is single-threaded.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            become_command();
            let msg = match req.confinement.apply() {
                Ok(()) => exec_in_root(&req.argv, &env),
                Err(e) => e,
            };
            eprintln!("berth: {msg}");
            // SAFETY: leave without running the parent's exit handlers.
            unsafe { libc::_exit(EXIT_CANNOT_EXEC) }
        }
        ForkResult::Parent { child } => wait_for(child),
    }
}

/// In the forked child, before it takes on the machine's confinement: it dies with its
/// helper, whom berthd kills when its caller left, and gets back the SIGPIPE that Rust's
/// runtime ignores in the helper (an ignored signal stays ignored across exec, and
/// `yes | head -1` would then end on EPIPE errors instead).
pub(super) fn become_command() {
    // SAFETY: resetting one signal's disposition to its default.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    die_with_parent();
}

fn die_with_parent() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // The helper lives outside the machine's PID namespace, so its PID reads as 0 here;
    // anything else means it died before the line above took effect.
    if nix::unistd::getppid().as_raw() != 0 {
        // SAFETY: leave without running the parent's exit handlers.
        unsafe { libc::_exit(EXIT_CANNOT_EXEC) }
    }
}

/// The child's exit status, 128+N when signal N killed it.
pub(super) fn wait_for(child: nix::unistd::Pid) -> Result<i32, String> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("waitpid: {e}")),
        }
    }
}

/// Joins the leader's cgroups and namespaces and chroots into its root.
pub(super) fn enter_machine(leader: u32) -> Result<(), String> {
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
    Ok(())
}

/// Shell mode: answers berthd on `channel` (the request socket) before anything runs,
/// then waits for the command; see the module's documentation.
fn run_shell(req: &ExecRequest, channel: File) -> i32 {
    let reply = |msg: ShellReply, master: Option<&OwnedFd>| {
        if let Err(e) = send_reply(&channel, &msg, master) {
            eprintln!("berth: cannot answer berthd: {e}");
        }
    };
    let user = req.shell.as_ref().map(|s| s.user.as_str()).unwrap_or("");
    let prepared = enter_machine(req.leader).and_then(|()| {
        let passwd = read_etc("passwd")?;
        let Some(account) = passwd::find_user(&passwd, user) else {
            return Ok(None);
        };
        let group = read_etc("group")?;
        let pty = open_pty(&account, &group)?;
        Ok(Some((account, pty, group)))
    });
    let (account, pty, group) = match prepared {
        Ok(Some(p)) => p,
        Ok(None) => {
            reply(ShellReply::NoUser { user: user.into() }, None);
            return EXIT_CANNOT_EXEC;
        }
        Err(message) => {
            reply(ShellReply::Failed { message }, None);
            return EXIT_CANNOT_EXEC;
        }
    };
    let groups = passwd::groups_of(&group, &account);
    let env = shell_environment(&account, &req.environment);
    // SAFETY: the exec helper is single-threaded.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            become_command();
            let msg = match become_login(req, &account, &groups, &pty.slave) {
                Ok(()) if req.argv.is_empty() => login_shell(&account, &env),
                Ok(()) => exec_in_root(&req.argv, &env),
                Err(e) => e,
            };
            // On the pty once become_login made it stderr, so the user reads why.
            eprintln!("berth: {msg}");
            // SAFETY: leave without running the parent's exit handlers.
            unsafe { libc::_exit(EXIT_CANNOT_EXEC) }
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            reply(
                ShellReply::Failed {
                    message: format!("fork: {e}"),
                },
                None,
            );
            return EXIT_CANNOT_EXEC;
        }
    };
    // Only the command may hold the slave: the pty hangs up when it (and whatever it
    // started) is done.
    drop(pty.slave);
    reply(ShellReply::Ready { pty_path: pty.path }, Some(&pty.master));
    drop(pty.master);
    drop(channel);
    wait_for(child).unwrap_or_else(|e| {
        eprintln!("berth: {e}");
        EXIT_CANNOT_EXEC
    })
}

fn read_etc(name: &str) -> Result<String, String> {
    let path = format!("/etc/{name}");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        // Without the file only root (and bare uids) can be found, as find_user says.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("cannot read the machine's {path}: {e}")),
    }
}

struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
    /// The slave's path inside the machine.
    path: String,
}

/// A pty from the machine's own devpts (its /dev/ptmx is pts/ptmx), its slave owned by
/// `account` and the tty group as login(1) leaves it.
fn open_pty(account: &Account, group: &str) -> Result<Pty, String> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::pty::posix_openpt(flags).map_err(|e| format!("/dev/ptmx: {e}"))?;
    nix::pty::grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    nix::pty::unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let path = nix::pty::ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave = nix::fcntl::open(path.as_str(), flags, nix::sys::stat::Mode::empty())
        .map_err(|e| format!("{path}: {e}"))?;
    let tty_gid = passwd::group_id(group, "tty").unwrap_or(account.gid);
    nix::unistd::fchown(&slave, Some(account.uid.into()), Some(tty_gid.into()))
        .map_err(|e| format!("chown {path}: {e}"))?;
    nix::sys::stat::fchmod(&slave, nix::sys::stat::Mode::from_bits_truncate(0o620))
        .map_err(|e| format!("chmod {path}: {e}"))?;
    Ok(Pty {
        master: master.into(),
        slave,
        path,
    })
}

/// In the forked child: a session of its own on the pty, the machine's confinement
/// (applied while still root: it needs CAP_SYS_ADMIN for the filter), then the user's
/// groups and ids and its home.
fn become_login(
    req: &ExecRequest,
    account: &Account,
    groups: &[u32],
    slave: &OwnedFd,
) -> Result<(), String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal it).
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(format!(
            "cannot make the pty the controlling terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        if unsafe { libc::dup2(slave.as_raw_fd(), fd) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    req.confinement.apply()?;
    let gids: Vec<nix::unistd::Gid> = groups.iter().map(|&g| g.into()).collect();
    nix::unistd::setgroups(&gids).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setgid(account.gid.into()).map_err(|e| format!("setgid {}: {e}", account.gid))?;
    nix::unistd::setuid(account.uid.into()).map_err(|e| format!("setuid {}: {e}", account.uid))?;
    if nix::unistd::chdir(account.home.as_str()).is_err() {
        nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    }
    Ok(())
}

/// Execs `account`'s shell as a login shell (argv[0] "-sh"); returns only on failure.
fn login_shell(account: &Account, env: &[String]) -> String {
    let base = Path::new(&account.shell)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "sh".into());
    exec_program(Path::new(&account.shell), &[format!("-{base}")], env)
}

/// What a login on a terminal gets: the account's HOME, USER, LOGNAME and SHELL, TERM
/// (xterm-256color, as machined's shells get, unless the caller passed its own), on top
/// of the base environment; then the caller's entries, which win.
pub fn shell_environment(account: &Account, extra: &[String]) -> Vec<String> {
    let mut entries = vec![
        format!("HOME={}", account.home),
        format!("USER={}", account.name),
        format!("LOGNAME={}", account.name),
        format!("SHELL={}", account.shell),
        "TERM=xterm-256color".to_string(),
    ];
    entries.extend(extra.iter().cloned());
    merge_environment(&entries)
}

/// Sends `msg` as one JSON line on `channel`, with `master` as SCM_RIGHTS.
fn send_reply(channel: &File, msg: &ShellReply, master: Option<&OwnedFd>) -> Result<(), String> {
    use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
    let mut line = serde_json::to_vec(msg).expect("replies serialize");
    line.push(b'\n');
    let fds: Vec<i32> = master.iter().map(|m| m.as_raw_fd()).collect();
    let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&fds)]
    };
    let mut sent = 0;
    while sent < line.len() {
        // The descriptor goes with the first byte only.
        let cmsgs = if sent == 0 { &cmsgs[..] } else { &[] };
        let iov = [std::io::IoSlice::new(&line[sent..])];
        match sendmsg::<UnixAddr>(channel.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None) {
            Ok(n) => sent += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
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
    match find_program(prog, env) {
        Some(path) => exec_program(&path, argv, env),
        None => format!("cannot execute {prog}: not found in the machine's PATH"),
    }
}

/// Execs the program at `path` with `argv` and `env`; only returns on failure.
fn exec_program(path: &Path, argv: &[String], env: &[String]) -> String {
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
    fn a_login_gets_its_account_and_the_callers_entries_win() {
        let alice = Account {
            name: "alice".into(),
            uid: 1234,
            gid: 1234,
            home: "/home/alice".into(),
            shell: "/bin/ash".into(),
        };
        let env = shell_environment(&alice, &[]);
        for want in [
            "HOME=/home/alice",
            "USER=alice",
            "LOGNAME=alice",
            "SHELL=/bin/ash",
            "TERM=xterm-256color",
        ] {
            assert!(env.contains(&want.to_string()), "{want}: {env:?}");
        }
        assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
        let env = shell_environment(&alice, &["TERM=vt100".into(), "HOME=/tmp".into()]);
        assert!(env.contains(&"TERM=vt100".to_string()), "{env:?}");
        assert!(env.contains(&"HOME=/tmp".to_string()), "{env:?}");
        assert_eq!(env.iter().filter(|e| e.starts_with("TERM=")).count(), 1);
    }

    #[test]
    fn failed_exec_reports_the_program() {
        let msg = exec_in_root(&["no-such-program-berth".into()], &[]);
        assert!(msg.contains("no-such-program-berth"), "{msg}");
        let msg = exec_in_root(&[], &[]);
        assert_eq!(msg, "no command given");
    }
}
