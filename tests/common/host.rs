//! `TestHost`: one booted test host and everything a test does with it. Boots it with
//! tests/host/boot.sh, runs commands inside it, reads its files, gives its bus address,
//! and on Drop kills it and removes its cgroups (cgroups.rs) and state directory, so a
//! test never has to clean up after its host, even when it fails.

use super::CgroupMode;
use super::cgroups::{self, cgroup_mounts, cleanup_leftovers, kill, remove_cgroup_everywhere};
use super::is_root;
use super::poll::wait_until;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a killed host's `unshare` gets to reap the host's PID 1.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);
const HOST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Files tests share across hosts and processes of one run, bound live into every host.
pub fn test_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/berth-test-cache")
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

impl TestHost {
    /// Boots a host with `tests/host/boot.sh`, installing berth from `bin_dir` (the
    /// directory of `env!("CARGO_BIN_EXE_berthd")`; a directory without the binaries boots
    /// a host without berth) and waits until systemd reports `running` or `degraded`.
    ///
    /// `mode` is Hybrid (cgroup v1 controllers plus name=systemd: limits show up as v1
    /// cgroup files) or Unified (one cgroup2 hierarchy at /sys/fs/cgroup, here without
    /// cpu/memory controllers, so limits are visible as unit properties only; freezing
    /// works). boot.sh boots no Legacy hosts.
    pub fn boot(mode: CgroupMode, bin_dir: &Path) -> Result<TestHost, String> {
        if !is_root() {
            return Err("booting a test host needs root".into());
        }
        if mode == CgroupMode::Legacy {
            return Err("test hosts boot in hybrid or unified mode only".into());
        }
        cleanup_leftovers();
        let deadline = Instant::now() + BOOT_TIMEOUT;

        let cgroup = cgroups::claim_name();
        let statedir = std::env::temp_dir().join(&cgroup);
        let procs_files = cgroup_mounts()
            .iter()
            .map(|m| {
                let p = m.join(&cgroup).join("cgroup.procs");
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
        // What tests share between hosts (debian.rs's tree) is written while other hosts
        // run: bound live, as the overlay would show it stale.
        let shared = test_cache_dir();
        fs::create_dir_all(&shared)
            .map_err(|e| format!("cannot create {}: {e}", shared.display()))?;
        let binds = match std::env::var("BERTH_HOST_BINDS") {
            Ok(b) if !b.is_empty() => format!("{b}:{}", shared.display()),
            _ => shared.display().to_string(),
        };
        let mut cmd = Command::new("/bin/bash");
        cmd.arg(&script)
            .arg(mode.as_str())
            .arg(&host.statedir)
            .env("BERTH_TEST_CGROUP", &host.cgroup)
            .env("BERTH_BIN_DIR", bin_dir)
            .env("BERTH_HOST_BINDS", binds)
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
        self.run_for(Duration::from_secs(120), argv)
    }

    /// `run` with a time limit of `limit` instead of two minutes, for long work
    /// (debootstrap).
    pub fn run_for(&self, limit: Duration, argv: &[&str]) -> Output {
        assert!(!argv.is_empty(), "TestHost::run needs a command");
        let secs = limit.as_secs().max(1).to_string();
        // A hung command fails its test with exit 124 instead of stalling the suite.
        let mut argv_timed = vec!["timeout", "-k", "5", secs.as_str()];
        argv_timed.extend(argv);
        let mut cmd = self.command(&argv_timed);
        cmd.stdin(Stdio::null());
        match cmd.output() {
            Ok(out) => out,
            Err(e) => panic!(
                "cannot run nsenter for {argv:?} in test host {}: {e}",
                self.pid
            ),
        }
    }

    /// `argv` as a command that runs inside the host: nsenter into all its namespaces,
    /// its root cgroup, a clean environment with only PATH; stdio are the caller's to set.
    pub fn command(&self, argv: &[&str]) -> Command {
        let pid = self.pid.to_string();
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", pid.as_str(), "-a", "--"])
            .args(argv)
            .env_clear()
            .env("PATH", HOST_PATH);
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
        cmd
    }

    /// `run` for a command line whose words need no quoting.
    pub fn runw(&self, cmdline: &str) -> Output {
        self.run(&cmdline.split_whitespace().collect::<Vec<_>>())
    }

    /// `script` run by /bin/sh inside the running machine `machine` (berthctl exec).
    pub fn shell(&self, machine: &str, script: &str) -> Output {
        self.run(&["berthctl", "exec", machine, "--", "/bin/sh", "-c", script])
    }

    /// `shell`, which must exit 0; its stdout.
    pub fn shell_ok(&self, machine: &str, script: &str) -> String {
        self.ok(&["berthctl", "exec", machine, "--", "/bin/sh", "-c", script])
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
        self.ok_for(Duration::from_secs(120), argv)
    }

    /// `ok` with a time limit of `limit` instead of two minutes, for bulk work.
    pub fn ok_for(&self, limit: Duration, argv: &[&str]) -> String {
        let out = self.run_for(limit, argv);
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

    /// Runs `argv`, which must fail with a one-line error on stderr (berthctl's way of
    /// refusing); returns that line.
    pub fn fails(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert!(!out.status.success(), "{argv:?} should fail");
        let e = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
        e
    }

    /// `fails` for a command line whose words need no quoting.
    pub fn failsw(&self, cmdline: &str) -> String {
        self.fails(&cmdline.split_whitespace().collect::<Vec<_>>())
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
        let mut outcome = None;
        wait_until(
            "the test host's systemd to start",
            deadline.saturating_duration_since(Instant::now()),
            || {
                if let Some(e) = self.check_alive() {
                    outcome = Some(Err(e));
                    return true;
                }
                let found = fs::read_to_string(&children).unwrap_or_default();
                outcome = found
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .find(|pid| {
                        fs::read_link(format!("/proc/{pid}/exe"))
                            .unwrap_or_default()
                            .ends_with("lib/systemd/systemd")
                    })
                    .map(Ok);
                outcome.is_some()
            },
        );
        outcome.unwrap_or_else(|| {
            Err(format!(
                "test host's systemd did not start within {BOOT_TIMEOUT:?}; boot log:\n{}",
                self.boot_log()
            ))
        })
    }

    /// Polls `systemctl is-system-running` rather than using `--wait`: until systemd's
    /// private socket exists, `--wait` fails at once, and polling keeps our own deadline.
    fn wait_until_running(&mut self, deadline: Instant) -> Result<(), String> {
        let mut state = String::new();
        let mut died = None;
        let up = wait_until(
            "the test host to be running",
            deadline.saturating_duration_since(Instant::now()),
            || {
                died = self.check_alive();
                if died.is_some() {
                    return true;
                }
                let out = self.run(&["systemctl", "is-system-running"]);
                state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                state == "running" || state == "degraded"
            },
        );
        if let Some(e) = died {
            return Err(e);
        }
        if up {
            return Ok(());
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
            wait_until("unshare to reap the test host", REAP_TIMEOUT, || {
                !matches!(child.try_wait(), Ok(None))
            });
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
        cgroups::release(&self.cgroup);
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
