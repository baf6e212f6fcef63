//! The orchestrator: machine lifecycle on top of the concern modules. Each operation
//! reads top to bottom as the steps a user would expect; the how of each step lives in
//! store, template, spawn and systemd. D-Bus objects are not touched here: changes are
//! announced as [`Event`]s that the dbus layer turns into signals.

pub mod machine;

use crate::cgroup::CgroupMode;
use crate::error::{BerthError, Result};
use crate::limits::{Flavor, Limits};
use crate::names;
use crate::paths::Paths;
use crate::spawn::{self, protocol::SpawnRequest};
use crate::store::{self, MachineConfig, RuntimeState};
use crate::systemd::{ScopeSpec, Systemd};
use crate::template;
use machine::{Machine, MachineState, Run, pidfd_open, pidfd_send_signal};
use std::collections::{BTreeMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

/// Default time PID 1 gets to shut down after the halt signal.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long berth waits for systemd to drop a scope whose processes are gone.
const SCOPE_GONE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// State and leader of the machine changed; the values are those of the moment, so
    /// a quick succession (starting, running) is told as it happened.
    StateChanged {
        name: String,
        state: MachineState,
        leader: u32,
    },
    LimitsChanged(String),
    AutostartChanged(String),
    /// The daemon removed a machine on its own (an ephemeral one that stopped).
    Removed(String),
}

#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub cgroup_mode: CgroupMode,
    pub systemd_version: u32,
    pub flavor: Flavor,
}

/// CreateMachine's options, already type-checked by the dbus layer.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    pub hostname: Option<String>,
    pub command: Vec<String>,
    pub environment: Vec<String>,
    pub autostart: bool,
    pub ephemeral: bool,
    pub limits: Limits,
    pub halt_signal: Option<i32>,
    pub stop_timeout_usec: Option<u64>,
    pub tmp_size: Option<u64>,
}

pub struct Daemon {
    pub paths: Paths,
    pub systemd: Systemd,
    pub host: Host,
    machines: Mutex<BTreeMap<String, Arc<Machine>>>,
    /// Names whose creation is under way, so two CreateMachine calls can't race.
    reserved: Mutex<HashSet<String>>,
    /// One template build at a time: concurrent creations wait for the first build
    /// instead of racing it in the same staging directory.
    template_builds: tokio::sync::Mutex<()>,
    events: UnboundedSender<Event>,
}

impl Daemon {
    pub async fn new(
        paths: Paths,
        systemd: Systemd,
        events: UnboundedSender<Event>,
    ) -> Result<Arc<Daemon>> {
        let cgroup_mode = CgroupMode::detect(Path::new("/sys/fs/cgroup"))
            .map_err(|e| BerthError::failed("cannot tell the cgroup hierarchy", e))?;
        let systemd_version = systemd.version().await?;
        let flavor = Flavor::for_host(cgroup_mode == CgroupMode::Unified, systemd_version);
        info!(
            "host: cgroup mode {}, systemd {systemd_version}, sending {flavor:?} limit names",
            cgroup_mode.as_str()
        );
        for dir in [
            paths.machines_dir(),
            paths.templates_dir(),
            paths.runtime_machines_dir(),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| BerthError::failed(format!("cannot create {}", dir.display()), e))?;
        }
        let daemon = Arc::new(Daemon {
            paths,
            systemd,
            host: Host {
                cgroup_mode,
                systemd_version,
                flavor,
            },
            machines: Mutex::new(BTreeMap::new()),
            reserved: Mutex::new(HashSet::new()),
            template_builds: tokio::sync::Mutex::new(()),
            events,
        });
        daemon.load().await;
        Ok(daemon)
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    fn emit_state(&self, m: &Machine) {
        let run = m.run();
        self.emit(Event::StateChanged {
            name: m.name.clone(),
            state: run.state,
            leader: run.leader,
        });
    }

    pub fn machines(&self) -> Vec<Arc<Machine>> {
        self.machines
            .lock()
            .expect("machines lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn machine(&self, name: &str) -> Result<Arc<Machine>> {
        self.machines
            .lock()
            .expect("machines lock")
            .get(name)
            .cloned()
            .ok_or_else(|| {
                BerthError::NoSuchMachine(format!(
                    "no machine named {name:?} (berthctl list shows the machines)"
                ))
            })
    }

    /// Loads every stored machine, clears leftovers of interrupted work and re-attaches
    /// to machines that kept running while berthd was away.
    async fn load(self: &Arc<Self>) {
        let leftovers = store::list_leftovers(&self.paths.machines_dir())
            .into_iter()
            .chain(store::list_leftovers(&self.paths.templates_dir()));
        for leftover in leftovers {
            warn!(
                "removing {}, left over from an interrupted operation",
                leftover.display()
            );
            let _ = crate::rootfs::remove_tree(&leftover);
        }
        let dirs = match store::list_machine_dirs(&self.paths.machines_dir()) {
            Ok(d) => d,
            Err(e) => {
                warn!("cannot list machines: {e}");
                return;
            }
        };
        for dir in dirs {
            let config = match store::load_config(&dir) {
                Ok(c) => c,
                Err(e) => {
                    warn!("skipping machine: {e}");
                    continue;
                }
            };
            let ephemeral = config.ephemeral;
            let m = Arc::new(Machine::new(dir, config));
            self.machines
                .lock()
                .expect("machines lock")
                .insert(m.name.clone(), m.clone());
            self.reattach(&m).await;
            // It stopped while berthd was away (or the host rebooted): its end is due.
            if ephemeral && !m.state().is_active() {
                info!("machine {}: ephemeral and stopped; removing it", m.name);
                if let Err(e) = self.remove(&m.name, false).await {
                    warn!("machine {}: cannot remove ephemeral machine: {e:?}", m.name);
                }
            }
        }
    }

    async fn reattach(self: &Arc<Self>, m: &Arc<Machine>) {
        let rt_dir = self.paths.runtime_machines_dir();
        let Some(rt) = store::load_runtime(&rt_dir, &m.name) else {
            return;
        };
        let alive = store::process_start_time(rt.leader) == Some(rt.leader_start_time)
            && std::fs::read_to_string(format!("/proc/{}/cgroup", rt.leader))
                .map(|c| c.contains(&format!("/{}", m.unit)))
                .unwrap_or(false);
        let pidfd = if alive {
            pidfd_open(rt.leader).ok()
        } else {
            None
        };
        match pidfd {
            Some(fd) => {
                info!("machine {}: re-attached, leader {}", m.name, rt.leader);
                let fd = Arc::new(fd);
                m.set_run(Run {
                    state: MachineState::Running,
                    leader: rt.leader,
                    pidfd: Some(fd.clone()),
                });
                self.watch_leader(m.clone(), fd);
            }
            None => {
                store::remove_runtime(&rt_dir, &m.name);
                let _ = self.systemd.wait_gone(&m.unit, Duration::ZERO).await;
            }
        }
    }

    pub async fn create(
        self: &Arc<Self>,
        name: &str,
        template_name: &str,
        opts: CreateOptions,
    ) -> Result<Arc<Machine>> {
        names::validate_machine_name(name).map_err(BerthError::InvalidName)?;
        let info = template::info(template_name)?;
        // Refuse limits this host can't apply now, not at the first start.
        crate::systemd::properties::limit_properties(&opts.limits, self.host.flavor)?;
        if let Some(h) = &opts.hostname {
            names::validate_machine_name(h)
                .map_err(|e| BerthError::InvalidArgument(format!("Hostname: {e}")))?;
        }
        let _reservation = self.reserve(name)?;
        let templates_dir = self.paths.templates_dir();
        let template_rootfs = {
            let _build = self.template_builds.lock().await;
            tokio::task::spawn_blocking(move || template::ensure(&templates_dir, info.name))
                .await
                .map_err(|e| BerthError::failed("template build crashed", e))??
        };

        let config = MachineConfig {
            name: name.to_string(),
            template: info.name.to_string(),
            hostname: opts.hostname.unwrap_or_else(|| name.to_string()),
            command: opts.command,
            environment: opts.environment,
            created_at: now_usec(),
            autostart: opts.autostart,
            ephemeral: opts.ephemeral,
            halt_signal: opts.halt_signal,
            stop_timeout_usec: opts.stop_timeout_usec,
            tmp_size: opts.tmp_size,
            limits: opts.limits,
        };
        let final_dir = self.paths.machine_dir(name);
        let staging = self
            .paths
            .machines_dir()
            .join(format!(".{name}.create-{}", std::process::id()));
        let cfg = config.clone();
        let dest = final_dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let made = (|| {
                std::fs::create_dir(&staging)?;
                crate::rootfs::copy_tree(&template_rootfs, &staging.join(store::ROOTFS_DIR))?;
                std::fs::write(
                    staging.join(store::ROOTFS_DIR).join("etc/hostname"),
                    format!("{}\n", cfg.hostname),
                )?;
                store::save_config(&staging, &cfg)?;
                std::fs::rename(&staging, &dest)
            })();
            if made.is_err() {
                let _ = crate::rootfs::remove_tree(&staging);
            }
            made
        })
        .await
        .map_err(|e| BerthError::failed("machine creation crashed", e))?
        .map_err(|e| BerthError::failed(format!("cannot create machine {name}"), e))?;

        let m = Arc::new(Machine::new(final_dir, config));
        self.machines
            .lock()
            .expect("machines lock")
            .insert(name.to_string(), m.clone());
        info!("machine {name}: created from template {template_name}");
        Ok(m)
    }

    fn reserve(self: &Arc<Self>, name: &str) -> Result<Reservation> {
        let exists = self
            .machines
            .lock()
            .expect("machines lock")
            .contains_key(name)
            || self.paths.machine_dir(name).exists();
        let mut reserved = self.reserved.lock().expect("reserved lock");
        if exists || !reserved.insert(name.to_string()) {
            return Err(BerthError::AlreadyExists(format!(
                "a machine named {name:?} already exists; pick another name or remove it first"
            )));
        }
        Ok(Reservation {
            daemon: self.clone(),
            name: name.to_string(),
        })
    }

    pub async fn start(self: &Arc<Self>, name: &str) -> Result<()> {
        let m = self.machine(name)?;
        let _op = m.op.lock().await;
        if m.state().is_active() {
            return Err(BerthError::InvalidState(format!(
                "machine {name} is already {}; stop it first",
                m.state().as_str()
            )));
        }
        m.set_state(MachineState::Starting);
        self.emit_state(&m);
        match self.start_locked(&m).await {
            Ok((leader, pidfd)) => {
                m.set_run(Run {
                    state: MachineState::Running,
                    leader,
                    pidfd: Some(pidfd.clone()),
                });
                self.emit_state(&m);
                self.watch_leader(m.clone(), pidfd);
                info!("machine {name}: started, leader {leader}");
                Ok(())
            }
            Err(e) => {
                warn!("machine {name}: start failed: {e:?}");
                m.set_state(MachineState::Failed);
                self.emit_state(&m);
                Err(e)
            }
        }
    }

    async fn start_locked(&self, m: &Machine) -> Result<(u32, Arc<OwnedFd>)> {
        let cfg = m.config();
        let info = template::info(&cfg.template)?;
        let command = if cfg.command.is_empty() {
            info.init.iter().map(|s| s.to_string()).collect()
        } else {
            cfg.command.clone()
        };
        let req = SpawnRequest {
            name: m.name.clone(),
            hostname: cfg.hostname.clone(),
            rootfs: m.rootfs(),
            command,
            environment: cfg.environment.clone(),
            tmp_size: cfg.tmp_size,
        };
        let pending = spawn::spawn(&req).await?;
        let pid = pending.pid();
        // Opened while PID 1 is still waiting for us, so it is certainly ours.
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => Arc::new(fd),
            Err(e) => {
                pending.abort().await;
                return Err(BerthError::failed("cannot watch the machine's PID 1", e));
            }
        };
        let spec = ScopeSpec {
            unit: &m.unit,
            description: format!("berth machine {}", m.name),
            pid,
            limits: &cfg.limits,
            flavor: self.host.flavor,
            stop_timeout_usec: stop_timeout(&cfg).as_micros() as u64,
        };
        if let Err(e) = self.systemd.start_scope(&spec).await {
            pending.abort().await;
            let _ = self.systemd.wait_gone(&m.unit, SCOPE_GONE_TIMEOUT).await;
            return Err(e);
        }
        // Recorded before PID 1 runs anything: a berthd that dies from here on still finds
        // the machine again after its restart.
        let rt = RuntimeState {
            leader: pid,
            leader_start_time: store::process_start_time(pid).unwrap_or(0),
        };
        let rt_dir = self.paths.runtime_machines_dir();
        if let Err(e) = store::save_runtime(&rt_dir, &m.name, &rt) {
            pending.abort().await;
            let _ = self.systemd.wait_gone(&m.unit, SCOPE_GONE_TIMEOUT).await;
            return Err(BerthError::failed(
                format!(
                    "cannot record the runtime state of {} in {}",
                    m.name,
                    rt_dir.display()
                ),
                e,
            ));
        }
        // Registered while PID 1 still waits in its scope: were it to exit at once,
        // machined would otherwise keep a machine whose scope is already gone.
        crate::systemd::machined::register(
            self.systemd.connection(),
            &m.name,
            pid,
            &m.rootfs().to_string_lossy(),
        )
        .await;
        if let Err(e) = pending.go().await {
            store::remove_runtime(&rt_dir, &m.name);
            let _ = self.systemd.wait_gone(&m.unit, SCOPE_GONE_TIMEOUT).await;
            return Err(BerthError::Failed(format!(
                "machine {} did not start: {}",
                m.name,
                match e {
                    BerthError::Failed(m) => m,
                    other => format!("{other:?}"),
                }
            )));
        }
        Ok((pid, pidfd))
    }

    /// Waits for the leader to exit, then for systemd to drop the scope, and marks the
    /// machine stopped. Every way a machine ends (halt, kill, crash) goes through here.
    fn watch_leader(self: &Arc<Self>, m: Arc<Machine>, pidfd: Arc<OwnedFd>) {
        let daemon = self.clone();
        tokio::spawn(async move {
            // SAFETY: the Arc keeps the pidfd open, unchanged, for the AsyncFd's lifetime.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    RawPidFd(pidfd.clone()),
                    tokio::io::Interest::READABLE,
                )
            };
            match registered {
                Ok(afd) => {
                    let _ = afd.readable().await;
                }
                Err(e) => warn!("machine {}: cannot poll the leader's pidfd: {e}", m.name),
            }
            if let Err(e) = daemon.systemd.wait_gone(&m.unit, SCOPE_GONE_TIMEOUT).await {
                warn!("machine {}: {e:?}", m.name);
            }
            store::remove_runtime(&daemon.paths.runtime_machines_dir(), &m.name);
            m.set_state(MachineState::Stopped);
            info!("machine {}: stopped", m.name);
            daemon.emit_state(&m);
            m.ended.send_modify(|n| *n += 1);
            if m.config().ephemeral {
                daemon.remove_ephemeral(&m.name).await;
            }
        });
    }

    /// An ephemeral machine goes away when it stops. This waits for whoever stopped it to
    /// let go of the machine; if it was started again meanwhile, it stays.
    async fn remove_ephemeral(self: &Arc<Self>, name: &str) {
        match self.remove(name, false).await {
            Ok(()) => self.emit(Event::Removed(name.to_string())),
            Err(BerthError::NoSuchMachine(_)) => {}
            Err(e) => info!("machine {name}: ephemeral machine kept: {e:?}"),
        }
    }

    pub async fn stop(self: &Arc<Self>, name: &str) -> Result<()> {
        let m = self.machine(name)?;
        let _op = m.op.lock().await;
        self.stop_locked(&m).await
    }

    async fn stop_locked(&self, m: &Machine) -> Result<()> {
        let run = m.run();
        if !matches!(run.state, MachineState::Running | MachineState::Frozen) {
            return Err(BerthError::InvalidState(format!(
                "machine {} is {}, not running",
                m.name,
                run.state.as_str()
            )));
        }
        if run.state == MachineState::Frozen {
            // A frozen init cannot act on its halt signal.
            self.systemd.freeze(&m.unit, false).await?;
        }
        let cfg = m.config();
        let mut ended = m.ended.subscribe();
        m.set_run(Run {
            state: MachineState::Stopping,
            ..run.clone()
        });
        self.emit_state(m);
        let signal = self.halt_signal(m, &cfg);
        if let Some(fd) = &run.pidfd {
            let _ = pidfd_send_signal(fd, signal);
        }
        if tokio::time::timeout(stop_timeout(&cfg), ended.changed())
            .await
            .is_ok()
        {
            return Ok(());
        }
        warn!("machine {}: did not halt in time; killing it", m.name);
        self.systemd.kill(&m.unit, "all", libc::SIGKILL).await?;
        match tokio::time::timeout(SCOPE_GONE_TIMEOUT, ended.changed()).await {
            Ok(_) => Ok(()),
            Err(_) => Err(BerthError::Failed(format!(
                "machine {} survived SIGKILL for {}s",
                m.name,
                SCOPE_GONE_TIMEOUT.as_secs()
            ))),
        }
    }

    /// The signal that asks this machine's init to power off: the configured one, else
    /// SIGRTMIN+3 for systemd, else what the template's init wants, else SIGTERM.
    fn halt_signal(&self, m: &Machine, cfg: &MachineConfig) -> i32 {
        if let Some(s) = cfg.halt_signal {
            return s;
        }
        let init = cfg.command.first().cloned().or_else(|| {
            template::info(&cfg.template)
                .ok()
                .and_then(|t| t.init.first().map(|s| s.to_string()))
        });
        let Some(init) = init else {
            return libc::SIGTERM;
        };
        if resolves_to_systemd(&m.rootfs(), &init) {
            return libc::SIGRTMIN() + 3;
        }
        match template::info(&cfg.template) {
            Ok(t) if cfg.command.is_empty() => t.halt_signal,
            _ => libc::SIGTERM,
        }
    }

    /// Freezes (or thaws) every process of the machine through systemd.
    pub async fn freeze(self: &Arc<Self>, name: &str, freeze: bool) -> Result<()> {
        let m = self.machine(name)?;
        let _op = m.op.lock().await;
        let (from, to) = if freeze {
            (MachineState::Running, MachineState::Frozen)
        } else {
            (MachineState::Frozen, MachineState::Running)
        };
        let run = m.run();
        if run.state != from {
            return Err(BerthError::InvalidState(format!(
                "machine {name} is {}; only a {} machine can be {}",
                run.state.as_str(),
                from.as_str(),
                if freeze { "frozen" } else { "thawed" }
            )));
        }
        if self.host.cgroup_mode != CgroupMode::Unified {
            return Err(BerthError::NotSupported(format!(
                "freezing needs the unified cgroup hierarchy (cgroup v2); this host runs {}, \
                 where systemd cannot freeze units",
                self.host.cgroup_mode.as_str()
            )));
        }
        self.systemd.freeze(&m.unit, freeze).await?;
        m.set_run(Run { state: to, ..run });
        self.emit_state(&m);
        info!("machine {name}: {}", to.as_str());
        Ok(())
    }

    pub async fn restart(self: &Arc<Self>, name: &str) -> Result<()> {
        let m = self.machine(name)?;
        if m.config().ephemeral && m.state().is_active() {
            return Err(BerthError::InvalidState(format!(
                "machine {name} is ephemeral: stopping it removes it, so it cannot be restarted"
            )));
        }
        {
            let _op = m.op.lock().await;
            if m.state().is_active() {
                self.stop_locked(&m).await?;
            }
        }
        self.start(name).await
    }

    pub async fn kill(&self, name: &str, whom: &str, signal: i32) -> Result<()> {
        let m = self.machine(name)?;
        let run = m.run();
        if !run.state.is_active() {
            return Err(BerthError::InvalidState(format!(
                "machine {name} is not running"
            )));
        }
        if signal <= 0 || signal > libc::SIGRTMAX() {
            return Err(BerthError::InvalidArgument(format!(
                "signal {signal} is not a valid signal number"
            )));
        }
        match whom {
            "leader" => match &run.pidfd {
                Some(fd) => pidfd_send_signal(fd, signal)
                    .map_err(|e| BerthError::failed(format!("cannot signal {name}'s leader"), e)),
                None => Err(BerthError::InvalidState(format!(
                    "machine {name} has no leader"
                ))),
            },
            "all" => self.systemd.kill(&m.unit, "all", signal).await,
            other => Err(BerthError::InvalidArgument(format!(
                "whom must be \"leader\" or \"all\", not {other:?}"
            ))),
        }
    }

    pub async fn remove(self: &Arc<Self>, name: &str, force: bool) -> Result<()> {
        let m = self.machine(name)?;
        let _op = m.op.lock().await;
        if m.state().is_active() {
            if !force {
                return Err(BerthError::InvalidState(format!(
                    "machine {name} is running; stop it first or remove it with --force"
                )));
            }
            self.stop_locked(&m).await?;
        }
        let doomed = self
            .paths
            .machines_dir()
            .join(format!(".{name}.remove-{}", std::process::id()));
        std::fs::rename(&m.dir, &doomed)
            .map_err(|e| BerthError::failed(format!("cannot remove machine {name}"), e))?;
        self.machines.lock().expect("machines lock").remove(name);
        store::remove_runtime(&self.paths.runtime_machines_dir(), name);
        tokio::task::spawn_blocking(move || crate::rootfs::remove_tree(&doomed))
            .await
            .map_err(|e| BerthError::failed("removal crashed", e))?
            .map_err(|e| BerthError::failed(format!("cannot delete the files of {name}"), e))?;
        info!("machine {name}: removed");
        Ok(())
    }

    /// Applies `changes` on top of the stored limits: live through systemd when the
    /// machine runs, and on disk for the next start.
    pub async fn set_limits(self: &Arc<Self>, name: &str, changes: Limits) -> Result<()> {
        let m = self.machine(name)?;
        let _op = m.op.lock().await;
        if changes.is_empty() {
            return Err(BerthError::InvalidArgument(format!(
                "no limits given; pass at least one of {}",
                crate::limits::key_list()
            )));
        }
        let mut cfg = m.config();
        cfg.limits.merge(&changes);
        crate::systemd::properties::limit_properties(&cfg.limits, self.host.flavor)?;
        if m.state().is_active() {
            self.systemd
                .set_limits(&m.unit, &cfg.limits, self.host.flavor)
                .await?;
        }
        commit_config(&m, cfg, "limits")?;
        self.emit(Event::LimitsChanged(name.to_string()));
        Ok(())
    }

    pub async fn set_autostart(&self, name: &str, enabled: bool) -> Result<()> {
        let m = self.machine(name)?;
        let _op = m.op.lock().await;
        let mut cfg = m.config();
        cfg.autostart = enabled;
        commit_config(&m, cfg, "settings")?;
        self.emit(Event::AutostartChanged(name.to_string()));
        Ok(())
    }

    /// Starts the machines marked autostart, once per boot of the host: the marker lives
    /// in /run, so a restart of berthd leaves machines stopped by hand alone.
    pub fn autostart_once_per_boot(self: &Arc<Self>) {
        let marker = self.paths.runtime_dir.join("autostart-done");
        if marker.exists() {
            return;
        }
        if let Err(e) = std::fs::write(&marker, b"") {
            warn!("cannot write {}: {e}; not autostarting", marker.display());
            return;
        }
        for m in self.machines() {
            if !m.config().autostart || m.state().is_active() {
                continue;
            }
            let daemon = self.clone();
            tokio::spawn(async move {
                info!("machine {}: autostart", m.name);
                if let Err(e) = daemon.start(&m.name).await {
                    warn!("machine {}: autostart failed: {e:?}", m.name);
                }
            });
        }
    }

    /// Runs argv inside the machine with the caller's stdio; returns its exit status.
    pub async fn execute(
        &self,
        name: &str,
        argv: Vec<String>,
        environment: Vec<String>,
        stdio: [OwnedFd; 3],
        caller_gone: impl std::future::Future<Output = ()>,
    ) -> Result<i32> {
        let m = self.machine(name)?;
        let run = m.run();
        if run.state != MachineState::Running {
            return Err(BerthError::InvalidState(format!(
                "machine {name} is {}; start it first",
                run.state.as_str()
            )));
        }
        if argv.is_empty() || argv[0].is_empty() {
            return Err(BerthError::InvalidArgument(
                "no command given to execute".into(),
            ));
        }
        let req = spawn::protocol::ExecRequest {
            leader: run.leader,
            argv,
            environment,
        };
        let [stdin, stdout, stderr] = stdio;
        let mut child = tokio::process::Command::new(spawn::self_exe())
            .arg(spawn::EXEC_HELPER_ARG)
            .arg(serde_json::to_string(&req).expect("serializable"))
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BerthError::failed("cannot start the exec helper", e))?;
        // Killing the helper kills the command too (it dies with its parent).
        let status = tokio::select! {
            status = child.wait() => status
                .map_err(|e| BerthError::failed("cannot wait for the exec helper", e))?,
            () = caller_gone => {
                let _ = child.kill().await;
                info!("machine {name}: caller of Execute left; command killed");
                return Err(BerthError::Failed("the caller went away".into()));
            }
        };
        use std::os::unix::process::ExitStatusExt;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }
}

/// A pidfd becomes readable when its process exits.
struct RawPidFd(Arc<OwnedFd>);

impl std::os::fd::AsRawFd for RawPidFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// Writes `cfg` to disk first and only then makes it the machine's, so memory never
/// holds a setting that a restart of berthd would lose.
fn commit_config(m: &Machine, cfg: MachineConfig, what: &str) -> Result<()> {
    store::save_config(&m.dir, &cfg)
        .map_err(|e| BerthError::failed(format!("cannot save the {what} of {}", m.name), e))?;
    m.set_config(cfg);
    Ok(())
}

fn stop_timeout(cfg: &MachineConfig) -> Duration {
    cfg.stop_timeout_usec
        .map(Duration::from_micros)
        .unwrap_or(DEFAULT_STOP_TIMEOUT)
}

/// Whether `init` (a path inside the rootfs) is systemd, following symlinks within the
/// rootfs as /sbin/init usually is one.
fn resolves_to_systemd(rootfs: &Path, init: &str) -> bool {
    let mut path = init.to_string();
    for _ in 0..8 {
        if path.ends_with("/systemd") {
            return true;
        }
        let on_host = rootfs.join(path.trim_start_matches('/'));
        match std::fs::read_link(&on_host) {
            Ok(target) => {
                let t = target.to_string_lossy().to_string();
                path = if t.starts_with('/') {
                    t
                } else {
                    let parent = Path::new(&path).parent().unwrap_or(Path::new("/"));
                    parent.join(t).to_string_lossy().to_string()
                };
            }
            Err(_) => return false,
        }
    }
    false
}

fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

struct Reservation {
    daemon: Arc<Daemon>,
    name: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.daemon
            .reserved
            .lock()
            .expect("reserved lock")
            .remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn systemd_init_is_recognized_through_links() {
        let root = std::env::temp_dir().join(format!("berth-init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sbin")).unwrap();
        std::fs::create_dir_all(root.join("lib/systemd")).unwrap();
        symlink("../lib/systemd/systemd", root.join("sbin/init")).unwrap();
        symlink("/bin/busybox", root.join("sbin/halt")).unwrap();
        assert!(resolves_to_systemd(&root, "/sbin/init"));
        assert!(resolves_to_systemd(&root, "/lib/systemd/systemd"));
        assert!(!resolves_to_systemd(&root, "/sbin/halt"));
        assert!(!resolves_to_systemd(&root, "/bin/sh"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
