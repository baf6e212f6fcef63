//! The orchestrator's state machine against a fake systemd and a fake spawner, without a
//! test host. The fakes keep the contract of the real ones where the daemon relies on it:
//! a machine's "PID 1" is a real process (so pidfds, signals and exits are real), a scope
//! holds its processes until they are gone, and KillUnit signals them.

use super::machine::MachineState;
use super::{CreateOptions, Daemon, Event, Host};
use crate::api::KillWho;
use crate::cgroup::CgroupMode;
use crate::error::{Error, Kind, Result};
use crate::limits::{Flavor, Limits};
use crate::paths::Paths;
use crate::spawn::protocol::{ExecRequest, SpawnRequest};
use crate::spawn::{CallerGone, Pending, RunIo, Spawner};
use crate::systemd::{ScopeSpec, Systemd};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

fn alive(pid: u32) -> bool {
    // A zombie is gone as far as a machine is concerned.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s[s.rfind(')').unwrap_or(0)..].starts_with(") Z"))
        .unwrap_or(false)
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill with a pid the fake spawned and a signal number.
    unsafe { libc::kill(pid as i32, sig) };
}

#[derive(Default)]
pub struct FakeSystemd {
    /// unit → the processes it holds.
    units: Mutex<HashMap<String, Vec<u32>>>,
    pub refuse_scopes: AtomicBool,
    pub registered: Mutex<Vec<String>>,
    pub kills: Mutex<Vec<(String, i32)>>,
    pub limits: Mutex<Vec<(String, Limits)>>,
    /// Transient services running, with their argv.
    pub services: Mutex<HashMap<String, Vec<String>>>,
}

impl FakeSystemd {
    fn has_unit(&self, unit: &str) -> bool {
        self.units.lock().unwrap().contains_key(unit)
    }
}

#[async_trait::async_trait]
impl Systemd for FakeSystemd {
    async fn version(&self) -> Result<u32> {
        Ok(252)
    }

    async fn start_scope(&self, spec: &ScopeSpec<'_>) -> Result<()> {
        if self.refuse_scopes.load(Ordering::SeqCst) {
            return Err(Error::Failed(format!("fake systemd refused {}", spec.unit)));
        }
        let mut units = self.units.lock().unwrap();
        if units.contains_key(spec.unit) {
            return Err(Error::Failed(format!("{} exists already", spec.unit)));
        }
        units.insert(spec.unit.to_string(), vec![spec.pid]);
        Ok(())
    }

    async fn set_limits(&self, unit: &str, limits: &Limits, _: Flavor) -> Result<()> {
        self.limits
            .lock()
            .unwrap()
            .push((unit.to_string(), limits.clone()));
        Ok(())
    }

    async fn kill_all(&self, unit: &str, sig: i32) -> Result<()> {
        self.kills.lock().unwrap().push((unit.to_string(), sig));
        for pid in self
            .units
            .lock()
            .unwrap()
            .get(unit)
            .cloned()
            .unwrap_or_default()
        {
            signal(pid, sig);
        }
        Ok(())
    }

    async fn freeze(&self, _: &str, _: bool) -> Result<()> {
        Ok(())
    }

    async fn wait_gone(&self, unit: &str, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let pids = self.units.lock().unwrap().get(unit).cloned();
            match pids {
                None => return Ok(()),
                Some(pids) if pids.iter().all(|p| !alive(*p)) => {
                    self.units.lock().unwrap().remove(unit);
                    return Ok(());
                }
                Some(pids) if tokio::time::Instant::now() >= deadline => {
                    // As systemd's StopUnit: the scope goes, its processes with it.
                    pids.iter().for_each(|p| signal(*p, libc::SIGKILL));
                    self.units.lock().unwrap().remove(unit);
                    return Ok(());
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    async fn register_machine(&self, name: &str, _: Option<[u8; 16]>, _: u32, _: &Path) {
        self.registered.lock().unwrap().push(name.to_string());
    }

    async fn start_service(&self, spec: &crate::systemd::ServiceSpec) -> Result<()> {
        self.services
            .lock()
            .unwrap()
            .entry(spec.unit.clone())
            .or_insert_with(|| spec.argv.clone());
        Ok(())
    }

    async fn stop_unit(&self, unit: &str) -> Result<()> {
        self.services.lock().unwrap().remove(unit);
        Ok(())
    }

    async fn scope_leader(&self, unit: &str) -> Option<u32> {
        let pids = self.units.lock().unwrap().get(unit).cloned()?;
        pids.into_iter().find(|p| alive(*p))
    }

    async fn holds(&self, unit: &str, pid: u32) -> bool {
        self.units
            .lock()
            .unwrap()
            .get(unit)
            .is_some_and(|p| p.contains(&pid))
    }
}

/// Spawns `sleep` as each machine's PID 1; a reaper thread per process plays the host's
/// init.
#[derive(Default)]
pub struct FakeSpawner {
    pub refuse_spawn: AtomicBool,
    pub fail_exec: AtomicBool,
    /// PID 1 ignores every halt signal, as a stuck init would.
    pub ignore_halt: AtomicBool,
    /// PID 1 ignores the first halt signal, as an init that has not set up its handlers.
    pub ignore_first_halt: AtomicBool,
    pub pids: Mutex<Vec<u32>>,
    pub execs: Mutex<Vec<ExecRequest>>,
    /// What a run's PID 1 does (sh; its stdout is the status pipe); None writes 3.
    pub run_script: Mutex<Option<String>>,
}

struct FakePending {
    pid: u32,
    fail_exec: bool,
}

#[async_trait::async_trait]
impl Pending for FakePending {
    fn pid(&self) -> u32 {
        self.pid
    }

    async fn go(self: Box<Self>) -> Result<()> {
        if self.fail_exec {
            // What the real PID 1 does when its init cannot be executed.
            signal(self.pid, libc::SIGKILL);
            return Err(Error::Failed("cannot execute /sbin/init: not found".into()));
        }
        Ok(())
    }

    async fn abort(self: Box<Self>) {
        signal(self.pid, libc::SIGKILL);
    }
}

#[async_trait::async_trait]
impl Spawner for FakeSpawner {
    async fn spawn(&self, req: &SpawnRequest) -> Result<Box<dyn Pending>> {
        if self.refuse_spawn.load(Ordering::SeqCst) {
            return Err(Error::Failed(format!(
                "cannot create the namespaces of machine {}",
                req.name
            )));
        }
        let script = if self.ignore_halt.load(Ordering::SeqCst) {
            "trap '' TERM USR2; exec sleep 1000"
        } else if self.ignore_first_halt.load(Ordering::SeqCst) {
            "trap 'trap - USR2' USR2; while :; do sleep 0.05; done"
        } else {
            "exec sleep 1000"
        };
        let child = std::process::Command::new("sh")
            .args(["-c", script])
            .spawn()
            .map_err(|e| Error::failed("cannot spawn", e))?;
        let pid = child.id();
        // Never reaped while the test runs: an exited PID 1 stays a zombie (which `alive`
        // counts as gone), so its PID can't be given to another process that the checks
        // and the SIGKILLs here would then take for it.
        drop(child);
        // Give sh a moment to install its traps before anyone signals it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.pids.lock().unwrap().push(pid);
        Ok(Box::new(FakePending {
            pid,
            fail_exec: self.fail_exec.load(Ordering::SeqCst),
        }))
    }

    async fn spawn_run(&self, req: &SpawnRequest, io: RunIo) -> Result<Box<dyn Pending>> {
        assert!(req.init, "a run's command is always under berth's init");
        if self.refuse_spawn.load(Ordering::SeqCst) {
            return Err(Error::Failed("cannot create the namespaces".into()));
        }
        let script = self.run_script.lock().unwrap().clone();
        // As berth's init would: the status as one byte on the status pipe.
        let script = script.unwrap_or_else(|| "printf '\\003'".into());
        let child = std::process::Command::new("sh")
            .args(["-c", &script])
            .stdout(std::process::Stdio::from(io.status))
            .spawn()
            .map_err(|e| Error::failed("cannot spawn", e))?;
        let pid = child.id();
        // Never reaped, as in spawn.
        drop(child);
        self.pids.lock().unwrap().push(pid);
        Ok(Box::new(FakePending {
            pid,
            fail_exec: false,
        }))
    }

    async fn exec(&self, req: &ExecRequest, _: [OwnedFd; 3], _: CallerGone) -> Result<i32> {
        self.execs.lock().unwrap().push(req.clone());
        Ok(0)
    }
}

/// The host's network as berth sees it: links by name (with their alias), the rules
/// last applied, host ports some process holds.
#[derive(Default)]
pub struct FakeNet {
    pub routes: Mutex<Vec<ipnet::Ipv4Net>>,
    pub links: Mutex<HashMap<String, crate::net::LinkInfo>>,
    pub veths: Mutex<Vec<crate::net::VethSpec>>,
    pub rules: Mutex<crate::net::nft::Rules>,
    pub ports_in_use: Mutex<Vec<(crate::net::Proto, u16)>>,
    pub refuse_veths: AtomicBool,
}

impl FakeNet {
    fn add_link(&self, name: &str, alias: &str, kind: &str) {
        let mut links = self.links.lock().unwrap();
        let index = links.len() as u32 + 10;
        links.insert(
            name.to_string(),
            crate::net::LinkInfo {
                index,
                alias: Some(alias.to_string()),
                kind: Some(kind.to_string()),
            },
        );
    }
}

#[async_trait::async_trait]
impl crate::net::NetHost for FakeNet {
    async fn routes(&self) -> Result<Vec<ipnet::Ipv4Net>> {
        Ok(self.routes.lock().unwrap().clone())
    }
    async fn link(&self, name: &str) -> Result<Option<crate::net::LinkInfo>> {
        Ok(self.links.lock().unwrap().get(name).cloned())
    }
    async fn ensure_bridge(&self, spec: &crate::net::BridgeSpec) -> Result<()> {
        self.add_link(&spec.name, &spec.alias, "bridge");
        self.routes.lock().unwrap().push(spec.address.trunc());
        Ok(())
    }
    async fn add_veth(&self, spec: &crate::net::VethSpec) -> Result<()> {
        if self.refuse_veths.load(Ordering::SeqCst) {
            return Err(Error::Failed(format!(
                "fake netlink refused {}",
                spec.host_name
            )));
        }
        self.add_link(&spec.host_name, &spec.alias, "veth");
        self.veths.lock().unwrap().push(spec.clone());
        Ok(())
    }
    async fn remove_link(&self, name: &str) -> Result<()> {
        if let Some(link) = self.links.lock().unwrap().remove(name)
            && link.kind.as_deref() == Some("bridge")
        {
            let prefix = format!("{}network {name}", crate::net::ALIAS_PREFIX);
            assert_eq!(link.alias.as_deref(), Some(prefix.as_str()));
        }
        self.veths.lock().unwrap().retain(|v| v.host_name != name);
        Ok(())
    }
    fn link_stats(&self, name: &str) -> Option<crate::net::LinkStats> {
        self.links
            .lock()
            .unwrap()
            .contains_key(name)
            .then_some(crate::net::LinkStats {
                rx_bytes: 1,
                tx_bytes: 2,
                rx_packets: 3,
                tx_packets: 4,
            })
    }
    async fn apply_rules(&self, rules: &crate::net::nft::Rules) -> Result<()> {
        *self.rules.lock().unwrap() = rules.clone();
        Ok(())
    }
    fn port_in_use(&self, proto: crate::net::Proto, port: u16) -> bool {
        self.ports_in_use.lock().unwrap().contains(&(proto, port))
    }
    fn enable_forwarding(&self) -> Result<()> {
        Ok(())
    }
}

struct Bench {
    daemon: Arc<Daemon>,
    systemd: Arc<FakeSystemd>,
    net: Arc<FakeNet>,
    spawner: Arc<FakeSpawner>,
    events: UnboundedReceiver<Event>,
    dir: PathBuf,
}

impl Bench {
    async fn new(tag: &str) -> Bench {
        let dir = std::env::temp_dir().join(format!("berth-fake-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // A ready template, so no busybox build is needed.
        std::fs::create_dir_all(dir.join("state/templates/busybox/rootfs/etc")).unwrap();
        Self::with(
            dir,
            Default::default(),
            Default::default(),
            Default::default(),
        )
        .await
    }

    async fn with(
        dir: PathBuf,
        systemd: Arc<FakeSystemd>,
        spawner: Arc<FakeSpawner>,
        net: Arc<FakeNet>,
    ) -> Bench {
        let paths = Paths {
            state_dir: dir.join("state"),
            runtime_dir: dir.join("run"),
            default_subnet: crate::net::DEFAULT_SUBNET.into(),
        };
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let daemon = Daemon::new(
            paths,
            Host::new(CgroupMode::Hybrid, 252),
            systemd.clone(),
            spawner.clone(),
            net.clone(),
            tx,
        )
        .await
        .unwrap();
        Bench {
            daemon,
            systemd,
            net,
            spawner,
            events,
            dir,
        }
    }

    /// A second berthd on the same state and the same "host", as after a restart.
    async fn restarted(&self) -> Bench {
        Self::with(
            self.dir.clone(),
            self.systemd.clone(),
            self.spawner.clone(),
            self.net.clone(),
        )
        .await
    }

    async fn create(&self, name: &str, opts: CreateOptions) {
        self.daemon.create(name, "busybox", opts).await.unwrap();
    }

    async fn create_with_stop_timeout(&self, name: &str, usec: u64) {
        let opts = CreateOptions {
            stop_timeout_usec: Some(usec),
            ..Default::default()
        };
        self.create(name, opts).await;
    }

    fn state(&self, name: &str) -> MachineState {
        self.daemon.machine(name).unwrap().state()
    }

    fn runtime_file(&self, name: &str) -> PathBuf {
        self.daemon
            .paths
            .runtime_machines_dir()
            .join(format!("{name}.json"))
    }

    /// States told for `name` so far, in order.
    fn states(&mut self, name: &str) -> Vec<MachineState> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            if let Event::StateChanged { name: n, state, .. } = e
                && n == name
            {
                out.push(state);
            }
        }
        out
    }

    /// Nothing of a start is left: no unit, no process, no runtime file.
    fn assert_nothing_left(&self, name: &str) {
        let unit = crate::names::scope_unit_name(name);
        assert!(!self.systemd.has_unit(&unit), "{unit} left behind");
        for pid in self.spawner.pids.lock().unwrap().iter() {
            assert!(!alive(*pid), "process {pid} left running");
        }
        assert!(
            !self.runtime_file(name).exists(),
            "runtime file left behind"
        );
        let veth = crate::net::host_veth_name(name);
        assert!(
            !self.net.links.lock().unwrap().contains_key(&veth),
            "{veth} left behind"
        );
        assert!(
            self.net
                .rules
                .lock()
                .unwrap()
                .forwards
                .iter()
                .all(|f| f.machine != name),
            "forwards of {name} left behind"
        );
    }
}

fn bridged(ports: &[&str]) -> CreateOptions {
    CreateOptions {
        network: crate::net::NetRequest {
            mode: Some(crate::net::NetMode::Bridge),
            ports: Some(ports.iter().map(|p| p.parse().unwrap()).collect()),
            ..Default::default()
        },
        ..Default::default()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        for pid in self.spawner.pids.lock().unwrap().iter() {
            signal(*pid, libc::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn start_and_stop_tell_every_step_and_leave_nothing() {
    let mut b = Bench::new("cycle").await;
    b.create("m", CreateOptions::default()).await;
    b.daemon.start("m").await.unwrap();
    let leader = b.daemon.machine("m").unwrap().run().leader;
    assert!(alive(leader));
    assert!(b.systemd.holds("machine-m.scope", leader).await);
    assert!(b.runtime_file("m").exists());
    assert_eq!(*b.systemd.registered.lock().unwrap(), ["m"]);
    let again = b.daemon.start("m").await.unwrap_err();
    assert_eq!(again.kind(), Kind::InvalidState);

    b.daemon.stop("m").await.unwrap();
    assert_eq!(b.state("m"), MachineState::Stopped);
    assert_eq!(
        b.states("m"),
        [
            MachineState::Starting,
            MachineState::Running,
            MachineState::Stopping,
            MachineState::Stopped
        ]
    );
    b.assert_nothing_left("m");
    assert!(
        b.systemd.kills.lock().unwrap().is_empty(),
        "halted without SIGKILL"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_spawn_leaves_nothing() {
    let mut b = Bench::new("nospawn").await;
    b.create("m", CreateOptions::default()).await;
    b.spawner.refuse_spawn.store(true, Ordering::SeqCst);
    let e = b.daemon.start("m").await.unwrap_err();
    assert!(e.to_string().contains("namespaces"), "{e}");
    assert_eq!(b.state("m"), MachineState::Failed);
    assert_eq!(
        b.states("m"),
        [MachineState::Starting, MachineState::Failed]
    );
    b.assert_nothing_left("m");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_scope_kills_the_waiting_pid1() {
    let b = Bench::new("noscope").await;
    b.create("m", CreateOptions::default()).await;
    b.systemd.refuse_scopes.store(true, Ordering::SeqCst);
    let e = b.daemon.start("m").await.unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    assert_eq!(b.spawner.pids.lock().unwrap().len(), 1);
    until("PID 1 is killed", || {
        b.spawner.pids.lock().unwrap().iter().all(|p| !alive(*p))
    })
    .await;
    b.assert_nothing_left("m");
    // The machine can start once systemd agrees.
    b.systemd.refuse_scopes.store(false, Ordering::SeqCst);
    b.daemon.start("m").await.unwrap();
    b.daemon.stop("m").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_runtime_state_undoes_the_scope() {
    let b = Bench::new("nort").await;
    b.create("m", CreateOptions::default()).await;
    let rt = b.daemon.paths.runtime_machines_dir();
    std::fs::remove_dir_all(&rt).unwrap();
    std::fs::write(&rt, b"not a directory").unwrap();
    let e = b.daemon.start("m").await.unwrap_err();
    assert!(
        e.to_string().contains(&rt.display().to_string()),
        "names the path: {e}"
    );
    until("PID 1 is killed", || {
        b.spawner.pids.lock().unwrap().iter().all(|p| !alive(*p))
    })
    .await;
    assert!(!b.systemd.has_unit("machine-m.scope"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_init_that_cannot_exec_fails_the_start_and_leaves_nothing() {
    let b = Bench::new("noexec").await;
    b.create("m", CreateOptions::default()).await;
    b.spawner.fail_exec.store(true, Ordering::SeqCst);
    let e = b.daemon.start("m").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "machine m did not start: cannot execute /sbin/init: not found"
    );
    assert_eq!(b.state("m"), MachineState::Failed);
    b.assert_nothing_left("m");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stuck_init_is_killed_after_the_stop_timeout() {
    let b = Bench::new("stuck").await;
    b.create_with_stop_timeout("m", 300_000).await;
    b.spawner.ignore_halt.store(true, Ordering::SeqCst);
    b.daemon.start("m").await.unwrap();
    b.daemon.stop("m").await.unwrap();
    assert_eq!(
        *b.systemd.kills.lock().unwrap(),
        [("machine-m.scope".to_string(), libc::SIGKILL)]
    );
    assert_eq!(b.state("m"), MachineState::Stopped);
    b.assert_nothing_left("m");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ephemeral_machine_goes_when_it_stops_and_cannot_restart() {
    let mut b = Bench::new("ephemeral").await;
    b.create(
        "m",
        CreateOptions {
            ephemeral: true,
            ..Default::default()
        },
    )
    .await;
    b.daemon.start("m").await.unwrap();
    let e = b.daemon.restart("m").await.unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidState);
    let dir = b.daemon.paths.machine_dir("m");
    let leader = b.daemon.machine("m").unwrap().run().leader;
    // It ends on its own, not through Stop: the watcher removes it.
    signal(leader, libc::SIGKILL);
    until("the machine is removed", || b.daemon.machine("m").is_err()).await;
    assert!(!dir.exists());
    b.assert_nothing_left("m");
    let mut removed = false;
    while let Ok(e) = b.events.try_recv() {
        removed |= matches!(e, Event::Removed(n) if n == "m");
    }
    assert!(removed, "Removed was told");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_gives_a_new_leader_and_kill_reaches_the_right_processes() {
    let b = Bench::new("restart").await;
    b.create("m", CreateOptions::default()).await;
    let e = b
        .daemon
        .kill("m", KillWho::All, libc::SIGTERM)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidState);
    b.daemon.start("m").await.unwrap();
    let first = b.daemon.machine("m").unwrap().run().leader;
    b.daemon.restart("m").await.unwrap();
    let second = b.daemon.machine("m").unwrap().run().leader;
    assert_ne!(first, second);
    assert!(!alive(first) && alive(second));
    b.daemon
        .kill("m", KillWho::All, libc::SIGWINCH)
        .await
        .unwrap();
    assert_eq!(
        *b.systemd.kills.lock().unwrap(),
        [("machine-m.scope".to_string(), libc::SIGWINCH)]
    );
    b.daemon
        .kill("m", KillWho::Leader, libc::SIGKILL)
        .await
        .unwrap();
    until("the machine is stopped", || {
        b.state("m") == MachineState::Stopped
    })
    .await;
    b.assert_nothing_left("m");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_daemon_adopts_running_machines_and_only_those() {
    let b = Bench::new("adopt").await;
    b.create("m", CreateOptions::default()).await;
    b.create("other", CreateOptions::default()).await;
    b.daemon.start("m").await.unwrap();
    let leader = b.daemon.machine("m").unwrap().run().leader;
    // A runtime file that names a process its scope does not hold is not believed.
    let stranger = std::process::id();
    let forged = serde_json::json!({
        "leader": stranger,
        "leader_start_time": crate::sys::process::start_time(stranger).unwrap(),
    });
    std::fs::write(b.runtime_file("other"), forged.to_string()).unwrap();

    let b2 = b.restarted().await;
    assert_eq!(b2.state("m"), MachineState::Running);
    assert_eq!(b2.daemon.machine("m").unwrap().run().leader, leader);
    assert_eq!(b2.state("other"), MachineState::Stopped);
    assert!(!b2.runtime_file("other").exists());
    b2.daemon.stop("m").await.unwrap();
    assert!(!alive(leader));
}

fn null_stdio() -> [OwnedFd; 3] {
    let null = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
    [null(), null(), null()]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_answers_its_status_once_its_machine_is_gone() {
    let b = Bench::new("run").await;
    let never: CallerGone = Box::pin(std::future::pending());
    let argv = vec!["/bin/cmd".to_string()];
    let code = b
        .daemon
        .run(
            "",
            "busybox",
            argv,
            CreateOptions::default(),
            null_stdio(),
            never,
        )
        .await
        .unwrap();
    assert_eq!(code, 3);
    // Already gone when the answer comes: nothing to wait for.
    assert!(b.daemon.machines().is_empty());
    let left: Vec<_> = std::fs::read_dir(b.daemon.paths.machines_dir())
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(b.systemd.units.lock().unwrap().is_empty());

    // PID 1 killed before it could tell: 128 + SIGKILL.
    *b.spawner.run_script.lock().unwrap() = Some("kill -KILL $$".into());
    let never: CallerGone = Box::pin(std::future::pending());
    let argv = vec!["/bin/cmd".to_string()];
    let code = b
        .daemon
        .run(
            "named",
            "busybox",
            argv,
            CreateOptions::default(),
            null_stdio(),
            never,
        )
        .await
        .unwrap();
    assert_eq!(code, 128 + libc::SIGKILL);
    assert!(b.daemon.machine("named").is_err());
    b.assert_nothing_left("named");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_caller_leaves_or_whose_start_fails_leaves_nothing() {
    let b = Bench::new("run-gone").await;
    *b.spawner.run_script.lock().unwrap() = Some("exec sleep 1000".into());
    let soon: CallerGone = Box::pin(tokio::time::sleep(Duration::from_millis(200)));
    let argv = vec!["/bin/cmd".to_string()];
    let e = b
        .daemon
        .run(
            "r",
            "busybox",
            argv,
            CreateOptions::default(),
            null_stdio(),
            soon,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("caller went away"), "{e}");
    until("the run's machine is removed", || {
        b.daemon.machine("r").is_err()
    })
    .await;
    b.assert_nothing_left("r");

    b.spawner.refuse_spawn.store(true, Ordering::SeqCst);
    let never: CallerGone = Box::pin(std::future::pending());
    let argv = vec!["/bin/cmd".to_string()];
    let e = b
        .daemon
        .run(
            "f",
            "busybox",
            argv,
            CreateOptions::default(),
            null_stdio(),
            never,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("namespaces"), "{e}");
    assert!(b.daemon.machine("f").is_err());
    assert!(!b.daemon.paths.machine_dir("f").exists());
    b.assert_nothing_left("f");

    // No command, no run, and nothing made.
    let never: CallerGone = Box::pin(std::future::pending());
    let e = b
        .daemon
        .run(
            "e",
            "busybox",
            vec![],
            CreateOptions::default(),
            null_stdio(),
            never,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidArgument);
    assert!(e.to_string().contains("command is empty"), "{e}");
    assert!(b.daemon.machines().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_daemon_ends_the_runs_it_finds() {
    let b = Bench::new("run-restart").await;
    *b.spawner.run_script.lock().unwrap() = Some("exec sleep 1000".into());
    let daemon = b.daemon.clone();
    let never: CallerGone = Box::pin(std::future::pending());
    let call = tokio::spawn(async move {
        let argv = vec!["/bin/cmd".to_string()];
        daemon
            .run(
                "r",
                "busybox",
                argv,
                CreateOptions::default(),
                null_stdio(),
                never,
            )
            .await
    });
    until("the run is running", || {
        b.daemon
            .machine("r")
            .is_ok_and(|m| m.state() == MachineState::Running)
    })
    .await;
    let leader = b.daemon.machine("r").unwrap().run().leader;
    // The old berthd's call goes with it.
    call.abort();
    let b2 = b.restarted().await;
    until("the run's leader is killed", || !alive(leader)).await;
    // The old daemon still runs in this process, and its watcher races the new one's to
    // remove the machine: whichever wins, its files go and nothing of it runs.
    let dir = b2.daemon.paths.machine_dir("r");
    until("the run's machine is removed", || {
        !dir.exists()
            && b2
                .daemon
                .machine("r")
                .map_or(true, |m| !m.state().is_active())
    })
    .await;
    b2.assert_nothing_left("r");
}

#[tokio::test(flavor = "multi_thread")]
async fn execute_needs_a_running_machine_and_a_command() {
    let b = Bench::new("exec").await;
    b.create("m", CreateOptions::default()).await;
    let stdio = || {
        let null = || OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        [null(), null(), null()]
    };
    let never: fn() -> CallerGone = || Box::pin(std::future::pending());
    let e = b
        .daemon
        .execute("m", vec!["true".into()], vec![], stdio(), never())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidState);
    b.daemon.start("m").await.unwrap();
    let e = b
        .daemon
        .execute("m", vec![], vec![], stdio(), never())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidArgument);
    // The same checks as CreateMachine, before anything is spawned.
    let e = b
        .daemon
        .execute(
            "m",
            vec!["true".into()],
            vec!["A B=1".into()],
            stdio(),
            never(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidArgument);
    assert!(e.to_string().contains("\"A B=1\""), "{e}");
    assert!(b.spawner.execs.lock().unwrap().is_empty());
    let code = b
        .daemon
        .execute(
            "m",
            vec!["true".into()],
            vec!["A=1".into()],
            stdio(),
            never(),
        )
        .await
        .unwrap();
    assert_eq!(code, 0);
    let leader = b.daemon.machine("m").unwrap().run().leader;
    let execs = b.spawner.execs.lock().unwrap().clone();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0].leader, leader);
    assert_eq!(execs[0].environment, ["A=1"]);
    b.daemon.stop("m").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_halt_signal_is_sent_again_until_the_init_listens() {
    let b = Bench::new("resend").await;
    b.create_with_stop_timeout("m", 20_000_000).await;
    b.spawner.ignore_first_halt.store(true, Ordering::SeqCst);
    b.daemon.start("m").await.unwrap();
    b.daemon.stop("m").await.unwrap();
    assert!(
        b.systemd.kills.lock().unwrap().is_empty(),
        "stopped without SIGKILL"
    );
    b.assert_nothing_left("m");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operation_queued_behind_a_removal_finds_no_machine() {
    let b = Bench::new("queued").await;
    b.create_with_stop_timeout("m", 300_000).await;
    b.spawner.ignore_halt.store(true, Ordering::SeqCst);
    b.daemon.start("m").await.unwrap();
    let daemon = b.daemon.clone();
    let removal = tokio::spawn(async move { daemon.remove("m", true).await });
    // The removal holds the machine's lock while it waits out the stop timeout.
    until("the removal is under way", || {
        b.state("m") == MachineState::Stopping
    })
    .await;
    let start = b.daemon.start("m").await.unwrap_err();
    assert_eq!(start.kind(), Kind::NoSuchMachine, "{start}");
    removal.await.unwrap().unwrap();
    assert!(!b.daemon.paths.machine_dir("m").exists());
    b.assert_nothing_left("m");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_could_never_run_is_not_created() {
    let b = Bench::new("badcmd").await;
    for (command, environment, says) in [
        (vec![], vec!["1=2"], "starts with a digit"),
        (vec![""], vec![], "Command[0] is empty"),
        (vec!["/bin/sh"], vec!["NOEQUALS"], "not NAME=VALUE"),
    ] {
        let opts = CreateOptions {
            command: command.into_iter().map(String::from).collect(),
            environment: environment.into_iter().map(String::from).collect(),
            ..Default::default()
        };
        let Err(e) = b.daemon.create("m", "busybox", opts).await else {
            panic!("created with {says:?}");
        };
        assert_eq!(e.kind(), Kind::InvalidArgument, "{e}");
        assert!(e.to_string().contains(says), "{e}");
        assert!(b.daemon.machine("m").is_err());
        assert!(!b.daemon.paths.machine_dir("m").exists());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn state_is_private_to_root() {
    use std::os::unix::fs::PermissionsExt;
    let b = Bench::new("private").await;
    b.create("m", CreateOptions::default()).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for dir in [
        b.daemon.paths.state_dir.clone(),
        b.daemon.paths.machines_dir(),
        b.daemon.paths.templates_dir(),
        b.daemon.paths.runtime_dir.clone(),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let config = b
        .daemon
        .paths
        .machine_dir("m")
        .join(crate::store::CONFIG_FILE);
    assert_eq!(mode(&config), 0o600);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_is_its_machine_and_broken_ones_are_shown() {
    let b = Bench::new("broken").await;
    b.create("c5", CreateOptions::default()).await;
    b.create("k010", CreateOptions::default()).await;
    let machines = b.daemon.paths.machines_dir();
    // k010's config says it is c5; "garbage" has an unreadable one; "bare" has none.
    let k010 = machines.join("k010").join(crate::store::CONFIG_FILE);
    let text = std::fs::read_to_string(&k010).unwrap();
    std::fs::write(&k010, text.replace("name = \"k010\"", "name = \"c5\"")).unwrap();
    std::fs::create_dir(machines.join("garbage")).unwrap();
    std::fs::write(
        machines.join("garbage").join(crate::store::CONFIG_FILE),
        "name = [",
    )
    .unwrap();
    std::fs::create_dir(machines.join("bare")).unwrap();
    std::fs::create_dir(machines.join("Not_A_Name")).unwrap();

    let b2 = b.restarted().await;
    assert_eq!(b2.state("c5"), MachineState::Stopped);
    for name in ["k010", "garbage", "bare"] {
        assert_eq!(b2.state(name), MachineState::Broken, "{name}");
    }
    let problem = |n: &str| b2.daemon.machine(n).unwrap().problem().unwrap().to_string();
    assert!(problem("k010").contains("\"c5\""), "{}", problem("k010"));
    assert!(
        problem("garbage").contains("config.toml"),
        "{}",
        problem("garbage")
    );
    assert!(
        b2.daemon.machine("Not_A_Name").is_err(),
        "not a name: only logged"
    );

    let e = b2.daemon.start("k010").await.unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidState);
    assert!(e.to_string().contains("broken"), "{e}");
    let e = b2.daemon.set_autostart("garbage", true).await.unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidState);
    // Removing c5 removes c5, not the directory that claimed its name.
    b2.daemon.remove("c5", true).await.unwrap();
    assert!(machines.join("k010").exists() && !machines.join("c5").exists());
    b2.daemon.remove("k010", false).await.unwrap();
    b2.daemon.remove("bare", false).await.unwrap();
    assert!(!machines.join("k010").exists() && !machines.join("bare").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_runtime_files_never_stop_or_hide_a_running_machine() {
    let b = Bench::new("tampered").await;
    for name in ["gone", "garbled", "other"] {
        b.create(name, CreateOptions::default()).await;
        b.daemon.start(name).await.unwrap();
    }
    let leader = |b: &Bench, n: &str| b.daemon.machine(n).unwrap().run().leader;
    let leaders: Vec<u32> = ["gone", "garbled", "other"]
        .iter()
        .map(|n| leader(&b, n))
        .collect();
    std::fs::remove_file(b.runtime_file("gone")).unwrap();
    std::fs::write(b.runtime_file("garbled"), "{not json").unwrap();
    let stranger = std::process::id();
    let forged = serde_json::json!({
        "leader": stranger,
        "leader_start_time": crate::sys::process::start_time(stranger).unwrap(),
    });
    std::fs::write(b.runtime_file("other"), forged.to_string()).unwrap();

    let b2 = b.restarted().await;
    for (name, was) in ["gone", "garbled", "other"].iter().zip(leaders) {
        assert_eq!(b2.state(name), MachineState::Running, "{name}");
        assert_eq!(leader(&b2, name), was, "{name} adopted from its scope");
        assert!(alive(was), "{name} kept running");
        let rt: crate::store::RuntimeState =
            serde_json::from_slice(&std::fs::read(b2.runtime_file(name)).unwrap()).unwrap();
        assert_eq!(rt.leader, was, "{name}'s runtime file is right again");
    }
    assert!(b.systemd.kills.lock().unwrap().is_empty());
    for name in ["gone", "garbled", "other"] {
        b2.daemon.stop(name).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bridged_machines_get_leases_veths_and_forwards_while_they_run() {
    let b = Bench::new("bridged").await;
    // berth0 comes with the first start: its bridge, its dnsmasq, its NAT.
    let berth0 = b.daemon.network("berth0").unwrap();
    assert_eq!(berth0.subnet.to_string(), "10.0.3.0/24");
    assert!(b.net.links.lock().unwrap().contains_key("berth0"));
    assert!(
        b.systemd
            .services
            .lock()
            .unwrap()
            .contains_key("berth-dnsmasq-berth0.service")
    );
    b.create("web", bridged(&["tcp:8080:80"])).await;
    b.create("db", bridged(&[])).await;
    let lease = |m: &str| {
        b.daemon
            .machine(m)
            .unwrap()
            .config()
            .network
            .address
            .unwrap()
    };
    assert_eq!(lease("web").to_string(), "10.0.3.2/24");
    assert_eq!(lease("db").to_string(), "10.0.3.3/24");
    // dnsmasq knows both, by MAC and name.
    let hosts =
        std::fs::read_to_string(b.daemon.paths.dns_dir().join("berth0/dhcp-hosts")).unwrap();
    assert!(
        hosts.contains("10.0.3.2") && hosts.contains("db"),
        "{hosts}"
    );

    // Another machine can't take web's host port.
    let Err(e) = b
        .daemon
        .create("x", "busybox", bridged(&["tcp:8080:81"]))
        .await
    else {
        panic!("a second forward of host port 8080 was accepted");
    };
    assert!(e.to_string().contains("forwarded to machine web"), "{e}");

    b.daemon.start("web").await.unwrap();
    let leader = b.daemon.machine("web").unwrap().run().leader;
    let veths = b.net.veths.lock().unwrap().clone();
    assert_eq!(veths.len(), 1);
    assert_eq!(veths[0].host_name, "vb-web");
    assert_eq!(veths[0].pid, leader);
    assert_eq!(veths[0].gateway.to_string(), "10.0.3.1");
    let forwards = b.net.rules.lock().unwrap().forwards.clone();
    assert_eq!(forwards.len(), 1);
    assert_eq!(forwards[0].address.to_string(), "10.0.3.2");

    // A restarted berthd puts the forwards of running machines back.
    *b.net.rules.lock().unwrap() = Default::default();
    let b2 = b.restarted().await;
    assert_eq!(b2.net.rules.lock().unwrap().forwards.len(), 1);

    // The network of a running machine stays; stopped, it goes.
    let e = b2.daemon.remove_network("berth0").await.unwrap_err();
    assert!(e.to_string().contains("running machine web"), "{e}");
    b2.daemon.stop("web").await.unwrap();
    b2.assert_nothing_left("web");
    b2.daemon.remove_network("berth0").await.unwrap();
    assert!(!b2.net.links.lock().unwrap().contains_key("berth0"));
    assert!(b2.systemd.services.lock().unwrap().is_empty());
    let e = b2.daemon.start("web").await.unwrap_err();
    assert!(e.to_string().contains("no longer exists"), "{e}");
    b2.assert_nothing_left("web");
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_veth_leaves_no_forward_and_no_process() {
    let b = Bench::new("noveth").await;
    b.create("m", bridged(&["udp:5353:53"])).await;
    b.net.refuse_veths.store(true, Ordering::SeqCst);
    let e = b.daemon.start("m").await.unwrap_err();
    assert!(e.to_string().contains("vb-m"), "{e}");
    until("PID 1 is killed", || {
        b.spawner.pids.lock().unwrap().iter().all(|p| !alive(*p))
    })
    .await;
    b.assert_nothing_left("m");
    // A host port taken by a process of the host refuses the start early.
    b.net.refuse_veths.store(false, Ordering::SeqCst);
    b.net
        .ports_in_use
        .lock()
        .unwrap()
        .push((crate::net::Proto::Udp, 5353));
    let e = b.daemon.start("m").await.unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
    b.assert_nothing_left("m");
}

#[tokio::test(flavor = "multi_thread")]
async fn copies_get_their_own_lease_and_no_forwards() {
    let b = Bench::new("netclone").await;
    b.create("a", bridged(&["tcp:80:80"])).await;
    b.daemon.clone_machine("a", "b", false).await.unwrap();
    let net = b.daemon.machine("b").unwrap().config().network;
    assert_eq!(net.address.unwrap().to_string(), "10.0.3.3/24");
    assert!(net.ports.is_empty());
    // Moving a stopped machine to another network gives it a lease there.
    b.daemon
        .create_network(
            "lab",
            crate::net::NetworkOptions {
                subnet: Some("10.77.0.0/24".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let e = b
        .daemon
        .create_network(
            "lab2",
            crate::net::NetworkOptions {
                subnet: Some("10.77.0.0/25".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("berth network lab"), "{e}");
    b.daemon
        .set_network(
            "b",
            crate::net::NetRequest {
                bridge: Some("lab".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let net = b.daemon.machine("b").unwrap().config().network;
    assert_eq!(net.address.unwrap().to_string(), "10.77.0.2/24");
    assert_eq!(net.bridge.as_deref(), Some("lab"));
}

/// Additions and removals of machines told so far, in order: ("+", name) or ("-", name).
fn registry_events(events: &mut UnboundedReceiver<Event>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e {
            Event::Added(n) => out.push(("+", n)),
            Event::Removed(n) => out.push(("-", n)),
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn rename_moves_the_machine_and_everything_named_after_it() {
    let mut b = Bench::new("rename").await;
    let opts = CreateOptions {
        autostart: true,
        ..bridged(&[])
    };
    b.create("web", opts).await;
    b.daemon.snapshot("web", "s1", "before").await.unwrap();
    let lease = b.daemon.machine("web").unwrap().config().network.address;
    registry_events(&mut b.events);

    let m = b.daemon.rename("web", "www").await.unwrap();
    assert_eq!(
        registry_events(&mut b.events),
        [("-", "web".into()), ("+", "www".into())]
    );
    assert_eq!(m.unit, "machine-www.scope");
    assert!(matches!(
        b.daemon.machine("web"),
        Err(Error::NoSuchMachine(_))
    ));
    let machines = b.daemon.paths.machines_dir();
    assert!(!machines.join("web").exists());
    let dir = machines.join("www");
    assert_eq!(m.dir, dir);
    let cfg = crate::store::load_config(&dir).unwrap();
    assert_eq!((cfg.name.as_str(), cfg.hostname.as_str()), ("www", "www"));
    assert!(cfg.autostart, "autostart follows");
    assert_eq!(cfg.network.address, lease, "the lease stays");
    assert_eq!(m.config(), cfg);
    let etc_hostname = std::fs::read_to_string(dir.join("rootfs/etc/hostname")).unwrap();
    assert_eq!(etc_hostname, "www\n");
    assert!(!dir.join(".config.toml.renamed").exists());
    let snaps = b.daemon.snapshots("www").await.unwrap();
    assert_eq!(snaps.len(), 1, "snapshots move with the directory");
    let hosts =
        std::fs::read_to_string(b.daemon.paths.dns_dir().join("berth0/dhcp-hosts")).unwrap();
    assert!(
        hosts.contains(",www\n") && !hosts.contains("web"),
        "{hosts}"
    );

    // It runs under its new name.
    b.daemon.start("www").await.unwrap();
    let leader = m.run().leader;
    assert!(b.systemd.holds("machine-www.scope", leader).await);
    assert_eq!(b.net.veths.lock().unwrap()[0].host_name, "vb-www");
    b.daemon.stop("www").await.unwrap();
    b.assert_nothing_left("www");

    // A hostname of its own stays; a restarted berthd finds the machine whole.
    b.create(
        "db",
        CreateOptions {
            hostname: Some("dbhost".into()),
            ..Default::default()
        },
    )
    .await;
    b.daemon.rename("db", "data").await.unwrap();
    let b2 = b.restarted().await;
    for (name, hostname) in [("www", "www"), ("data", "dbhost")] {
        let m = b2.daemon.machine(name).unwrap();
        assert_eq!(m.state(), MachineState::Stopped, "{name}");
        assert_eq!(m.config().hostname, hostname);
    }
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn rename_refuses_what_would_lose_or_confuse_a_machine() {
    let mut b = Bench::new("renameno").await;
    b.create("a", CreateOptions::default()).await;
    b.create("b", CreateOptions::default()).await;
    let privileged = CreateOptions {
        private_users: crate::security::users::Request::No,
        ..Default::default()
    };
    b.create("base", privileged).await;
    b.daemon.clone_machine("base", "eph", true).await.unwrap();
    assert!(b.daemon.machine("eph").unwrap().config().base.is_some());
    registry_events(&mut b.events);

    let kind = |r: Result<Arc<super::machine::Machine>>| r.map(|_| ()).unwrap_err();
    let e = kind(b.daemon.rename("a", "b").await);
    assert_eq!(e.kind(), Kind::AlreadyExists, "{e}");
    let e = kind(b.daemon.rename("a", "a").await);
    assert_eq!(e.kind(), Kind::AlreadyExists, "{e}");
    let e = kind(b.daemon.rename("a", "no/slash").await);
    assert_eq!(e.kind(), Kind::InvalidName, "{e}");
    let e = kind(b.daemon.rename("nothere", "c").await);
    assert_eq!(e.kind(), Kind::NoSuchMachine, "{e}");
    let e = kind(b.daemon.rename("base", "c").await);
    assert_eq!(e.kind(), Kind::InvalidState, "{e}");
    assert!(e.to_string().contains("eph"), "{e}");
    b.daemon.start("a").await.unwrap();
    let e = kind(b.daemon.rename("a", "c").await);
    assert_eq!(e.kind(), Kind::InvalidState, "{e}");
    assert!(e.to_string().contains("stop it"), "{e}");
    b.daemon.stop("a").await.unwrap();

    // Nothing moved, and the names refused are free again.
    assert!(registry_events(&mut b.events).is_empty());
    let machines = b.daemon.paths.machines_dir();
    for name in ["a", "b", "base"] {
        assert!(!machines.join(name).join(".config.toml.renamed").exists());
        assert_eq!(b.daemon.machine(name).unwrap().config().name, name);
    }
    assert!(!machines.join("c").exists());
    b.daemon.rename("a", "c").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rename_interrupted_by_a_crash_leaves_one_whole_machine() {
    let b = Bench::new("renamecrash").await;
    b.create("before", CreateOptions::default()).await;
    b.create("after", CreateOptions::default()).await;
    let machines = b.daemon.paths.machines_dir();
    let pending = |dir: &str, new: &str| {
        let mut cfg = b.daemon.machine(dir).unwrap().config();
        cfg.name = new.into();
        std::fs::write(
            machines.join(dir).join(".config.toml.renamed"),
            toml::to_string(&cfg).unwrap(),
        )
        .unwrap();
    };
    // Crashed before the directory's rename: the rename did not happen.
    pending("before", "before2");
    // Crashed right after it: the rename happened, the config follows at the next start.
    pending("after", "after2");
    std::fs::rename(machines.join("after"), machines.join("after2")).unwrap();

    let b2 = b.restarted().await;
    assert_eq!(b2.state("before"), MachineState::Stopped);
    assert!(!machines.join("before/.config.toml.renamed").exists());
    assert!(b2.daemon.machine("before2").is_err());
    assert_eq!(b2.state("after2"), MachineState::Stopped);
    assert_eq!(b2.daemon.machine("after2").unwrap().config().name, "after2");
    assert!(!machines.join("after2/.config.toml.renamed").exists());
    assert!(b2.daemon.machine("after").is_err());
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn figures_are_read_only_for_running_machines_and_belong_to_one_run() {
    use super::{Figure, Figures};
    let b = Bench::new("figures").await;
    b.create("web", bridged(&[])).await;
    b.create("idle", CreateOptions::default()).await;
    let (web, idle) = (
        b.daemon.machine("web").unwrap(),
        b.daemon.machine("idle").unwrap(),
    );
    assert_eq!(b.daemon.figures(&web), Figures::UNKNOWN);

    b.daemon.start("web").await.unwrap();
    b.daemon
        .prefetch_figures(&[web.clone(), idle.clone()])
        .await;
    // The fake's veth counts 1 and 2; this "host" has no cgroup of the scope.
    let running = b.daemon.figures(&web);
    assert_eq!(
        (running.get(Figure::RxBytes), running.get(Figure::TxBytes)),
        (1, 2)
    );
    assert_eq!(
        running.get(Figure::TasksCurrent),
        crate::api::UNKNOWN_FIGURE
    );
    assert_eq!(b.daemon.figures(&idle), Figures::UNKNOWN);

    // Cached figures of a run that ended are not the stopped machine's.
    b.daemon.stop("web").await.unwrap();
    assert_eq!(b.daemon.figures(&web), Figures::UNKNOWN);
}
