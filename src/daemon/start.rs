//! Start: PID 1 is made in its namespaces by the spawner and waits; systemd puts it in
//! the machine's scope with its limits; its runtime file is written and machined told;
//! only then may PID 1 set up its root and exec the init. Every step that leaves
//! something behind registers its undoing, so a start that fails anywhere leaves no
//! scope, process or file (see revert.rs).

use super::machine::{Machine, MachineState, Run};
use super::{Daemon, SCOPE_GONE_TIMEOUT};
use crate::error::{Error, Result};
use crate::revert::Revert;
use crate::security::Confinement;
use crate::spawn::protocol::SpawnRequest;
use crate::spawn::{Pending, RunIo};
use crate::store::{self, RuntimeState};
use crate::sys::{PidFd, process};
use crate::systemd::ScopeSpec;
use crate::template::init;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;
use tracing::{info, warn};

impl Daemon {
    pub async fn start(self: &Arc<Self>, name: &str) -> Result<()> {
        self.start_with(name, None).await.map(drop)
    }

    /// Start, with a one-shot run's stdio and status pipe for PID 1 when `io` is given;
    /// returns the leader's watcher, which ends once the machine has stopped (and, if
    /// it is ephemeral, been removed).
    pub(super) async fn start_with(
        self: &Arc<Self>,
        name: &str,
        io: Option<RunIo>,
    ) -> Result<JoinHandle<()>> {
        let (m, _op) = self.locked(name).await?;
        m.usable()?;
        if m.state().is_active() {
            return Err(Error::InvalidState(format!(
                "machine {name} is already {}; stop it first",
                m.state().as_str()
            )));
        }
        self.check_no_overlay_on(&m.dir, &format!("start {name}"))?;
        m.set_state(MachineState::Starting);
        self.emit_state(&m);
        match self.spawn_in_scope(&m, io).await {
            Ok(pidfd) => {
                let leader = pidfd.pid();
                m.set_run(Run {
                    state: MachineState::Running,
                    leader,
                    pidfd: Some(pidfd.clone()),
                });
                self.emit_state(&m);
                let watcher = self.watch_leader(m.clone(), pidfd);
                info!("machine {name}: started, leader {leader}");
                self.console_note(name, &format!("started, leader PID {leader}"));
                Ok(watcher)
            }
            Err(e) => {
                warn!("machine {name}: start failed: {e}");
                m.set_state(MachineState::Failed);
                self.emit_state(&m);
                Err(e)
            }
        }
    }

    async fn spawn_in_scope(self: &Arc<Self>, m: &Machine, io: Option<RunIo>) -> Result<PidFd> {
        let cfg = m.config();
        let (network, resolv_conf) = self.net_plan(m)?;
        let req = SpawnRequest {
            name: m.name.clone(),
            hostname: cfg.hostname.clone(),
            rootfs: m.rootfs(),
            overlay: cfg.base.is_some(),
            command: init::pid1_argv(&cfg.command),
            environment: cfg.environment.clone(),
            tmp_size: cfg.tmp_size,
            binds: cfg.binds.clone(),
            confinement: confinement(&cfg)?,
            users: cfg.users,
            machine_id: cfg.machine_id.clone(),
            network,
            resolv_conf,
            init: cfg.berth_init(),
            console: true,
            stdio_fds: None,
            status_fd: None,
        };
        let mut revert = Revert::new();

        let one_shot = io.is_some();
        let mut steps = Steps::new();
        let mut pending = match io {
            None => self.spawner.spawn(&req).await?,
            Some(io) => self.spawner.spawn_run(&req, io).await?,
        };
        let pid = pending.pid();
        steps.mark("helper and namespaces");
        // Read from now on, so the log has everything PID 1 says.
        let console = pending.take_console();
        // Shared with the undo steps: whichever runs first kills the waiting PID 1.
        let pending: Arc<Mutex<Option<Box<dyn Pending>>>> = Arc::new(Mutex::new(Some(pending)));
        revert.add("kill the waiting PID 1", abort(pending.clone()));
        if let Some((master, peer)) = console {
            revert
                .check(self.console_attach(&m.name, master, Some(peer), true))
                .await?;
            let daemon = self.clone();
            let name = m.name.clone();
            revert.add("close the console", async move {
                daemon.console_end(&name);
                Ok(())
            });
        }

        // Opened while PID 1 is still waiting for us, so it is certainly ours.
        let pidfd = revert
            .check(
                PidFd::open(pid).map_err(|e| Error::failed("cannot watch the machine's PID 1", e)),
            )
            .await?;

        let systemd = self.systemd.clone();
        let unit = m.unit.clone();
        let scope_pending = pending.clone();
        revert.add("drop the scope", async move {
            abort(scope_pending).await?;
            systemd.wait_gone(&unit, SCOPE_GONE_TIMEOUT).await
        });
        let spec = ScopeSpec {
            unit: &m.unit,
            description: format!("berth machine {}", m.name),
            pid,
            limits: &cfg.limits,
            flavor: self.host.flavor,
            stop_timeout_usec: super::stop::stop_timeout(&cfg).as_micros() as u64,
            owner: cfg.users.map(|u| u.range.base),
        };
        steps.mark("console and pidfd");
        revert.check(self.systemd.start_scope(&spec).await).await?;
        steps.mark("scope job");
        // In its scope and still waiting: its eth0 goes into its namespace now, so its
        // init finds the network up.
        self.plug(m, pid, &mut revert).await?;
        steps.mark("network");

        // Recorded before PID 1 runs anything: a berthd that dies from here on still finds
        // the machine again after its restart.
        let rt = RuntimeState {
            leader: pid,
            leader_start_time: process::start_time(pid).unwrap_or(0),
            run: one_shot,
        };
        let rt_dir = self.paths.runtime_machines_dir();
        let name = m.name.clone();
        let rt_dir_undo = rt_dir.clone();
        revert.add("remove the runtime file", async move {
            store::remove_runtime(&rt_dir_undo, &name);
            Ok(())
        });
        revert
            .check(store::save_runtime(&rt_dir, &m.name, &rt))
            .await?;
        steps.mark("runtime file");

        // Registered while PID 1 still waits in its scope: were it to exit at once,
        // machined would otherwise keep a machine whose scope is already gone.
        self.systemd
            .register_machine(
                &m.name,
                cfg.machine_id.as_deref().and_then(crate::machine_id::bytes),
                pid,
                &m.rootfs(),
            )
            .await;
        steps.mark("machined");

        let waiting = pending.lock().expect("pending lock").take();
        if let Some(p) = waiting {
            let went = p
                .go()
                .await
                .map_err(|e| e.context(format!("machine {} did not start", m.name)));
            revert.check(went).await?;
        }
        steps.mark("mounts, pivot_root, exec");
        revert.commit();
        info!("machine {}: start took {steps}", m.name);
        Ok(pidfd)
    }

    /// Waits for the leader to exit, then for systemd to drop the scope, and marks the
    /// machine stopped. Every way a machine ends (halt, kill, crash) goes through here.
    pub(super) fn watch_leader(self: &Arc<Self>, m: Arc<Machine>, pidfd: PidFd) -> JoinHandle<()> {
        let daemon = self.clone();
        tokio::spawn(async move {
            if let Err(e) = pidfd.exited().await {
                warn!("machine {}: cannot poll the leader's pidfd: {e}", m.name);
            }
            // Boxed: the task waits as long as the machine runs, and would otherwise
            // hold room for the cleanup's state all that time (~1 KiB per machine).
            Box::pin(daemon.leader_exited(m)).await;
        })
    }

    async fn leader_exited(self: Arc<Self>, m: Arc<Machine>) {
        if let Err(e) = self.systemd.wait_gone(&m.unit, SCOPE_GONE_TIMEOUT).await {
            warn!("machine {}: {e}", m.name);
        }
        self.drop_freezer(&m).await;
        self.console_end(&m.name);
        self.console_note(&m.name, "stopped");
        store::remove_runtime(&self.paths.runtime_machines_dir(), &m.name);
        self.unplug(&m).await;
        m.set_state(m.idle_state());
        info!("machine {}: stopped", m.name);
        self.emit_state(&m);
        m.ended.send_modify(|n| *n += 1);
        if m.config().ephemeral {
            self.remove_ephemeral(&m.name).await;
        }
    }
}

/// The machine's confinement; its settings were checked at creation, so an error here
/// means a hand-edited config.
pub(super) fn confinement(cfg: &crate::store::MachineConfig) -> Result<Confinement> {
    let mut security = cfg.security.clone();
    // On the host's network a privileged root could reconfigure the host's links and
    // routes (nspawn keeps CAP_NET_ADMIN only with a private network), unless asked.
    if cfg.network.mode == crate::net::NetMode::Host
        && !security.capabilities.iter().any(|c| c == "CAP_NET_ADMIN")
    {
        security.drop_capabilities.push("CAP_NET_ADMIN".into());
    }
    Confinement::new(&security).map_err(|e| Error::InvalidArgument(format!("{}: {e}", cfg.name)))
}

/// Kills PID 1 if it still waits for its go.
async fn abort(pending: Arc<Mutex<Option<Box<dyn Pending>>>>) -> Result<()> {
    let waiting = pending.lock().expect("pending lock").take();
    if let Some(p) = waiting {
        p.abort().await;
    }
    Ok(())
}

/// How long each step of a start took, for the one line berthd logs about it: the
/// breakdown docs/benchmarks.md keeps comes from these lines.
struct Steps {
    begun: std::time::Instant,
    last: std::time::Instant,
    done: Vec<(&'static str, std::time::Duration)>,
}

impl Steps {
    fn new() -> Steps {
        let now = std::time::Instant::now();
        Steps {
            begun: now,
            last: now,
            done: Vec::new(),
        }
    }

    fn mark(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.done.push((step, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        write!(f, "{:.1} ms:", ms(self.last - self.begun))?;
        for (i, (step, took)) in self.done.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{step} {:.1}", ms(*took))?;
        }
        Ok(())
    }
}
