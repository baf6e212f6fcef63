//! Test hosts: a real systemd booted as PID 1 of fresh namespaces on this machine, on a
//! throwaway overlay of its root (see /work/shared/design/testing-on-real-systemd.md and
//! tests/host/boot.sh). Integration tests drive berth inside such a host only as users do:
//! over the host's system bus (`bus_address()`) and with commands run inside (`run()`).
//!
//! Each host gets a cgroup `berth-test-<test pid>-<n>-<test start time>` in every
//! hierarchy; dropping the `TestHost` kills it and removes that cgroup tree. A test process
//! that dies takes its hosts with it (PR_SET_PDEATHSIG); the cgroups and state directories
//! it leaves are removed by `cleanup_leftovers()`, which every `boot()` calls first.
//!
//! What a host sees is this machine's / as it was at boot (an overlay): berth is copied in
//! at boot from `bin_dir`, so rebuild before booting. Directories that must stay live are
//! bound in with `BERTH_HOST_BINDS=/dir1:/dir2` in the test's environment. The host has
//! its own, empty network namespace (only lo) and a fresh /tmp and /run.
//! `BERTH_TEST_KEEP_STATE=1` keeps each host's state directory (boot.log, console).
#![allow(dead_code)]

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long teardown keeps retrying rmdir; a killed host's last processes take a moment
/// to be reaped.
const RMDIR_TIMEOUT: Duration = Duration::from_secs(10);
/// An empty berth-test cgroup whose owner still runs may be a boot between mkdir and
/// joining it; only older ones are taken for debris.
const EMPTY_LEFTOVER_MIN_AGE: Duration = Duration::from_secs(30);
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PREFIX: &str = "berth-test-";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v1 controllers plus name=systemd (limits show up as v1 cgroup files).
    Hybrid,
    /// One cgroup2 hierarchy at /sys/fs/cgroup (here without cpu/memory controllers, so
    /// limits are visible as unit properties only; freezing works).
    Unified,
}

impl CgroupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupMode::Hybrid => "hybrid",
            CgroupMode::Unified => "unified",
        }
    }
}

pub struct TestHost {
    /// The host's PID 1 as seen from the test process; 0 until known.
    pid: u32,
    /// The `unshare` process boot.sh became; the host's PID 1 is its only child.
    unshare: Option<Child>,
    statedir: PathBuf,
    cgroup: String,
    mode: CgroupMode,
    /// `<hierarchy>/<cgroup>/cgroup.procs` for every hierarchy, prepared for `run()`'s
    /// pre-exec hook, which must not allocate.
    procs_files: Vec<CString>,
}

/// True (after saying why) when the caller is not root and a host-booting test should
/// return early. Root with a broken setup must fail instead, so nothing else is checked.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: booting a test host needs root (cgroups, mounts, namespaces)");
    true
}

/// Boots a host of `mode` with this build's berth installed, or None (after saying why)
/// when not root.
pub fn boot_with_berth(mode: CgroupMode, test: &str) -> Option<TestHost> {
    if skip_unless_root(test) {
        return None;
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_berthd"))
        .parent()
        .expect("binaries live in a directory");
    Some(TestHost::boot(mode, bin_dir).unwrap_or_else(|e| panic!("test host boots: {e}")))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

impl TestHost {
    /// Boots a host with `tests/host/boot.sh`, installing berth from `bin_dir` (the
    /// directory of `env!("CARGO_BIN_EXE_berthd")`; a directory without the binaries boots
    /// a host without berth) and waits until systemd reports `running` or `degraded`.
    pub fn boot(mode: CgroupMode, bin_dir: &Path) -> Result<TestHost, String> {
        if !is_root() {
            return Err("booting a test host needs root".into());
        }
        cleanup_leftovers();
        let deadline = Instant::now() + BOOT_TIMEOUT;

        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let cgroup = format!("{PREFIX}{}-{n}-{}", std::process::id(), own_start_time());
        live_hosts().insert(cgroup.clone());
        let statedir = std::env::temp_dir().join(&cgroup);
        let procs_files = cgroup_mounts()
            .iter()
            .map(|m| {
                let p = m.path.join(&cgroup).join("cgroup.procs");
                CString::new(p.as_os_str().as_bytes()).expect("no NUL in a cgroup path")
            })
            .collect();
        // From here on, dropping `host` tears down whatever part of it exists.
        let mut host = TestHost {
            pid: 0,
            unshare: None,
            statedir,
            cgroup,
            mode,
            procs_files,
        };

        fs::create_dir_all(&host.statedir)
            .map_err(|e| format!("cannot create {}: {e}", host.statedir.display()))?;
        let log = fs::File::create(host.boot_log_path())
            .map_err(|e| format!("cannot create {}: {e}", host.boot_log_path().display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot dup boot log: {e}"))?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/host/boot.sh");
        let mut cmd = Command::new("/bin/bash");
        cmd.arg(&script)
            .arg(mode.as_str())
            .arg(&host.statedir)
            .env("BERTH_TEST_CGROUP", &host.cgroup)
            .env("BERTH_BIN_DIR", bin_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        host.unshare = Some(
            spawn_tied_to_process(cmd)
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?,
        );

        host.pid = host.wait_for_pid1(deadline)?;
        host.wait_until_running(deadline)?;
        eprintln!(
            "test host {} ({} mode, PID 1 = {}) up in {:.2?}",
            host.cgroup,
            mode.as_str(),
            host.pid,
            BOOT_TIMEOUT.saturating_sub(deadline.saturating_duration_since(Instant::now()))
        );
        Ok(host)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// Name of the host's cgroup in every hierarchy of the machine.
    pub fn cgroup(&self) -> &str {
        &self.cgroup
    }

    /// Holds boot.log (boot.sh's output) and console (what systemd wrote to /dev/console).
    pub fn statedir(&self) -> &Path {
        &self.statedir
    }

    /// Runs `argv` inside the host: all its namespaces and its root cgroup, a clean
    /// environment with only PATH, stdin from /dev/null.
    pub fn run(&self, argv: &[&str]) -> Output {
        assert!(!argv.is_empty(), "TestHost::run needs a command");
        let pid = self.pid.to_string();
        let mut cmd = Command::new("nsenter");
        // A hung command fails its test with exit 124 instead of stalling the suite.
        cmd.args(["-t", pid.as_str(), "-a", "--", "timeout", "-k", "5", "120"])
            .args(argv)
            .env_clear()
            .env("PATH", HOST_PATH)
            .stdin(Stdio::null());
        let files = self.procs_files.clone();
        // Joining the host's cgroups makes the command part of the host: it shows "/" as its
        // cgroup, systemd may move it into units (systemd-run --scope), and it counts
        // against the host. Best effort: a failure leaves it where the test runs.
        // SAFETY: only open/write/close on prepared buffers between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                for f in &files {
                    let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd >= 0 {
                        libc::write(fd, b"0".as_ptr().cast(), 1);
                        libc::close(fd);
                    }
                }
                Ok(())
            });
        }
        match cmd.output() {
            Ok(out) => out,
            Err(e) => panic!(
                "cannot run nsenter for {argv:?} in test host {}: {e}",
                self.pid
            ),
        }
    }

    /// `run` for a command line whose words need no quoting.
    pub fn runw(&self, cmdline: &str) -> Output {
        self.run(&cmdline.split_whitespace().collect::<Vec<_>>())
    }

    /// `ok` for a command line whose words need no quoting.
    pub fn okw(&self, cmdline: &str) -> String {
        self.ok(&cmdline.split_whitespace().collect::<Vec<_>>())
    }

    pub fn sh(&self, script: &str) -> Output {
        self.run(&["sh", "-c", script])
    }

    /// Like `run`, but panics with the command's output unless it exits 0; returns stdout.
    pub fn ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        if !out.status.success() {
            panic!(
                "{argv:?} failed in test host {} ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.pid,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `p` inside the host, as reachable from the test process.
    pub fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(p.trim_start_matches('/'))
    }

    /// Reads `p` through `path()`, i.e. as the test process. Files whose contents depend on
    /// the reader's namespaces differ from what the host sees: cgroup.procs lists pids as
    /// seen *outside* the host. Read those inside with `ok(&["cat", p])`.
    pub fn read(&self, p: &str) -> Result<String, io::Error> {
        fs::read_to_string(self.path(p))
    }

    /// The host's system bus, reachable from the test process (the socket is opened through
    /// /proc/PID/root; the bus sees the test process as uid 0).
    pub fn bus_address(&self) -> String {
        format!(
            "unix:path=/proc/{}/root/run/dbus/system_bus_socket",
            self.pid
        )
    }

    pub fn journal(&self, unit: &str) -> String {
        let out = self.run(&["journalctl", "-u", unit, "--no-pager", "-n", "200"]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    fn boot_log_path(&self) -> PathBuf {
        self.statedir.join("boot.log")
    }

    fn boot_log(&self) -> String {
        let mut s = fs::read_to_string(self.boot_log_path()).unwrap_or_default();
        if let Ok(console) = fs::read_to_string(self.statedir.join("console"))
            && !console.is_empty()
        {
            s.push_str("--- console ---\n");
            s.push_str(&console);
        }
        s
    }

    /// Error text when the boot process is gone, or None while it runs.
    fn check_alive(&mut self) -> Option<String> {
        let child = self.unshare.as_mut()?;
        match child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(format!(
                "test host ({} mode) exited during boot ({status}); boot log:\n{}",
                self.mode.as_str(),
                self.boot_log()
            )),
            Err(e) => Some(format!("cannot wait for boot.sh: {e}")),
        }
    }

    /// The host's PID 1 is unshare's only child once host-init.sh has exec'ed systemd;
    /// before that, nsenter would land in the half-built mount namespace.
    fn wait_for_pid1(&mut self, deadline: Instant) -> Result<u32, String> {
        let upid = self.unshare.as_ref().map(|c| c.id()).unwrap_or(0);
        let children = format!("/proc/{upid}/task/{upid}/children");
        loop {
            if let Some(e) = self.check_alive() {
                return Err(e);
            }
            let found = fs::read_to_string(&children).unwrap_or_default();
            for pid in found
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
            {
                let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
                if exe.ends_with("lib/systemd/systemd") {
                    return Ok(pid);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "test host's systemd did not start within {BOOT_TIMEOUT:?}; boot log:\n{}",
                    self.boot_log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `systemctl is-system-running` rather than using `--wait`: until systemd's
    /// private socket exists, `--wait` fails at once, and polling keeps our own deadline.
    fn wait_until_running(&mut self, deadline: Instant) -> Result<(), String> {
        let mut state;
        loop {
            if let Some(e) = self.check_alive() {
                return Err(e);
            }
            let out = self.run(&["systemctl", "is-system-running"]);
            state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                return Ok(());
            }
            if Instant::now() > deadline {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let failed = self.run(&["systemctl", "--failed", "--no-pager"]);
        let journal = self.run(&["journalctl", "-b", "--no-pager", "-n", "100"]);
        Err(format!(
            "test host ({} mode) not running after {BOOT_TIMEOUT:?} (state: {state:?})\n\
             --- systemctl --failed ---\n{}{}\n--- journal tail ---\n{}{}\n--- boot log ---\n{}",
            self.mode.as_str(),
            String::from_utf8_lossy(&failed.stdout),
            String::from_utf8_lossy(&failed.stderr),
            String::from_utf8_lossy(&journal.stdout),
            String::from_utf8_lossy(&journal.stderr),
            self.boot_log()
        ))
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // A failing test's host journal is the first thing anyone debugging it needs, and it
        // lives on the host's tmpfs, about to vanish.
        if thread::panicking() && self.pid != 0 {
            let out = self.run(&[
                "timeout",
                "10",
                "journalctl",
                "-b",
                "--no-pager",
                "-n",
                "150",
            ]);
            eprintln!(
                "--- journal of test host {} (test failed) ---\n{}",
                self.cgroup,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        if let Some(mut child) = self.unshare.take() {
            // Kill the host's PID 1 (before systemd: host-init.sh, or boot.sh's helpers)
            // but let unshare reap it: killing unshare first would leave a zombie that only
            // the machine's init reaps, whenever it gets to it.
            let upid = child.id();
            let victims = match self.pid {
                0 => fs::read_to_string(format!("/proc/{upid}/task/{upid}/children"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect(),
                pid => vec![pid],
            };
            victims.iter().for_each(|&p| kill(p, libc::SIGKILL));
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            // Still there: boot.sh before its exec, or unshare wedged.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(e) = remove_cgroup_everywhere(&self.cgroup) {
            eprintln!("warning: test host {} not fully removed: {e}", self.cgroup);
        }
        if std::env::var_os("BERTH_TEST_KEEP_STATE").is_none() {
            let _ = fs::remove_dir_all(&self.statedir);
        }
        live_hosts().remove(&self.cgroup);
    }
}

/// Removes what earlier, crashed runs left: every berth-test-* cgroup (in every hierarchy)
/// whose owning test process is gone, or which is empty and old, with its processes killed;
/// and the state directories of dead owners. Hosts of running test processes are left alone.
pub fn cleanup_leftovers() {
    let me = std::process::id();
    let mut doomed: HashSet<String> = HashSet::new();
    let mut spared: HashSet<String> = HashSet::new();
    let live = live_hosts().clone();
    for m in cgroup_mounts() {
        let Ok(entries) = fs::read_dir(&m.path) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(PREFIX) || doomed.contains(&name) || spared.contains(&name) {
                continue;
            }
            if live.contains(&name) {
                spared.insert(name); // this process's own host, booting or up
                continue;
            }
            // This process's names not in `live` are hosts it failed to tear down.
            let owner_alive = match parse_owner(&name) {
                Some((pid, start)) => pid != me && process_start_time(pid) == Some(start),
                None => false,
            };
            let dir = e.path();
            if !owner_alive
                || (cgroup_tree_pids(&dir).is_empty() && age(&dir) > EMPTY_LEFTOVER_MIN_AGE)
            {
                doomed.insert(name);
            } else {
                spared.insert(name);
            }
        }
    }
    for name in &doomed {
        if let Err(e) = remove_cgroup_everywhere(name) {
            eprintln!("warning: leftover test host {name} not fully removed: {e}");
        }
    }
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(PREFIX) || live.contains(&name) {
                continue;
            }
            let dead = match parse_owner(&name) {
                Some((pid, start)) => pid != me && process_start_time(pid) != Some(start),
                None => false,
            };
            if dead && e.path().join("cgroup").exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Hosts of this process that are booting or up, so that concurrent boots in other threads
/// never take them for leftovers.
fn live_hosts() -> std::sync::MutexGuard<'static, HashSet<String>> {
    static LIVE: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

struct CgroupMount {
    path: PathBuf,
}

/// Every cgroup hierarchy (v1 and v2) mounted on this machine, from mountinfo, the same way
/// boot.sh finds them.
fn cgroup_mounts() -> Vec<CgroupMount> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(fstype), Some(mnt)) = (fields.get(sep + 1), fields.get(4)) else {
            continue;
        };
        if (*fstype == "cgroup" || *fstype == "cgroup2") && seen.insert(mnt.to_string()) {
            out.push(CgroupMount {
                path: PathBuf::from(mnt),
            });
        }
    }
    out
}

/// Owner pid and owner start time from berth-test-<pid>-<n>-<start time>.
fn parse_owner(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.strip_prefix(PREFIX)?.split('-');
    let pid = parts.next()?.parse().ok()?;
    let _n = parts.next()?;
    let start = parts.next()?.parse().ok()?;
    Some((pid, start))
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat): with the
/// pid, it names a process unambiguously even after pid reuse.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

fn own_start_time() -> u64 {
    process_start_time(std::process::id()).unwrap_or(0)
}

fn age(dir: &Path) -> Duration {
    fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

/// Pids in the cgroup `dir` and all below it.
fn cgroup_tree_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = fs::read_dir(&d) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| is_dir(&e.path()))
                    .map(|e| e.path()),
            );
        }
    }
    pids
}

fn is_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false)
}

/// Depth-first rmdir of `dir` and its sub-cgroups; Err with the first failure.
fn rmdir_tree(dir: &Path) -> io::Result<()> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if is_dir(&e.path()) {
                rmdir_tree(&e.path())?;
            }
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Kills whatever still runs in cgroup `name` and removes it in every hierarchy.
fn remove_cgroup_everywhere(name: &str) -> Result<(), String> {
    let dirs: Vec<PathBuf> = cgroup_mounts()
        .into_iter()
        .map(|m| m.path.join(name))
        .filter(|d| d.exists())
        .collect();
    let deadline = Instant::now() + RMDIR_TIMEOUT;
    loop {
        // Killing every member (the host's PID 1 among them) ends the pid namespace; the
        // rest are what run() or a crashed boot left in the tree.
        let mut any = false;
        for d in &dirs {
            for pid in cgroup_tree_pids(d) {
                any = true;
                kill(pid, libc::SIGKILL);
            }
        }
        let mut last_err = None;
        if !any {
            for d in &dirs {
                if let Err(e) = rmdir_tree(d) {
                    last_err = Some(format!("rmdir under {}: {e}", d.display()));
                }
            }
            if last_err.is_none() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            let pids: Vec<u32> = dirs.iter().flat_map(|d| cgroup_tree_pids(d)).collect();
            return Err(last_err.unwrap_or_else(|| format!("processes {pids:?} survive SIGKILL")));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: u32, sig: i32) {
    if pid > 1 {
        // SAFETY: kill has no memory-safety preconditions; errors (ESRCH) are expected.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
}

/// Spawns `cmd` with PR_SET_PDEATHSIG=SIGKILL from a thread that lives as long as the
/// process: the death signal fires when the spawning *thread* ends, and a test thread may
/// end while its host is still shared with others. So a test process that dies any way at
/// all takes its hosts with it (boot.sh's unshare --kill-child passes it on to systemd).
fn spawn_tied_to_process(mut cmd: Command) -> io::Result<Child> {
    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("test-host-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the test-host spawner thread");
        Mutex::new(tx)
    });
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The test process may have died before the prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::other("test process exited during spawn"));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("test-host spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("test-host spawner thread is gone"))?
}

/// The members of interface `iface` in D-Bus introspection XML, in a canonical form that
/// ignores what XML and introspection leave free: whitespace, comments, attribute order,
/// `<x/>` versus `<x></x>`, and the order of methods, signals and properties (the order of
/// a method's args is kept). One string per member, sorted; None if `iface` is absent.
/// For comparing the installed dbus/*.xml files with what the live daemon serves.
pub fn interface_xml(xml: &str, iface: &str) -> Option<Vec<String>> {
    #[derive(Default)]
    struct Node {
        head: String,
        children: Vec<Node>,
    }
    fn render(n: &Node) -> String {
        if n.children.is_empty() {
            n.head.clone()
        } else {
            let kids: Vec<String> = n.children.iter().map(render).collect();
            format!("{} [{}]", n.head, kids.join(", "))
        }
    }

    // Comments may contain anything that looks like a tag.
    let mut text = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find("<!--") {
        text.push_str(&rest[..start]);
        rest = rest[start..]
            .find("-->")
            .map_or("", |end| &rest[start + end + 3..]);
    }
    text.push_str(rest);

    // Tags as (name, sorted attributes, kind): kind 0 open, 1 close, 2 self-closing.
    let mut tags = Vec::new();
    let mut rest = text.as_str();
    while let Some(lt) = rest.find('<') {
        let gt = rest[lt..].find('>')? + lt;
        let raw = rest[lt + 1..gt].trim();
        rest = &rest[gt + 1..];
        if raw.starts_with('?') || raw.starts_with('!') {
            continue; // <?xml ...?>, <!DOCTYPE ...>
        }
        if let Some(name) = raw.strip_prefix('/') {
            tags.push((name.trim().to_string(), Vec::new(), 1));
            continue;
        }
        let (raw, kind) = match raw.strip_suffix('/') {
            Some(r) => (r.trim(), 2),
            None => (raw, 0),
        };
        let name_end = raw.find(char::is_whitespace).unwrap_or(raw.len());
        let mut attrs = Vec::new();
        let mut a = raw[name_end..].trim_start();
        while let Some(eq) = a.find('=') {
            let key = a[..eq].trim().to_string();
            let v = a[eq + 1..].trim_start();
            let quote = v.chars().next()?;
            let end = v[1..].find(quote)? + 1;
            attrs.push(format!("{key}={quote}{}{quote}", &v[1..end]).replace('\'', "\""));
            a = v[end + 1..].trim_start();
        }
        attrs.sort();
        tags.push((raw[..name_end].to_string(), attrs, kind));
    }

    let wanted = [format!("name=\"{iface}\"")];
    let start = tags
        .iter()
        .position(|(n, a, _)| n == "interface" && a[..] == wanted[..])?;
    let mut stack = vec![Node::default()];
    if tags[start].2 == 0 {
        for (name, attrs, kind) in &tags[start + 1..] {
            let head = std::iter::once(name.clone())
                .chain(attrs.iter().cloned())
                .collect::<Vec<_>>()
                .join(" ");
            match kind {
                0 => stack.push(Node {
                    head,
                    children: Vec::new(),
                }),
                2 => stack.last_mut()?.children.push(Node {
                    head,
                    children: Vec::new(),
                }),
                _ if stack.len() == 1 => break, // </interface>
                _ => {
                    let done = stack.pop()?;
                    stack.last_mut()?.children.push(done);
                }
            }
        }
    }
    let mut members: Vec<String> = stack.first()?.children.iter().map(render).collect();
    members.sort();
    Some(members)
}
