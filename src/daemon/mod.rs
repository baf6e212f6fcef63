//! The orchestrator: machine lifecycle on top of the concern modules, one file per
//! operation (create, remove, rename, start, stop, kill, freeze, exec, run, settings,
//! autostart, load). Each reads top to bottom as the steps a user would expect; the how
//! of each step lives in store, template, spawn and systemd. This file keeps the registry of
//! machines and the events.
//!
//! D-Bus objects are not touched here: changes are announced as [`Event`]s, in the order
//! they happen, and the dbus layer's event pump turns them into objects and signals.
//! systemd and the helpers are reached through the [`Systemd`] and [`Spawner`] traits,
//! so the unit tests in fake.rs drive the whole state machine without a host.

mod autostart;
mod clone;
mod console;
mod copy;
mod create;
mod exec;
mod export;
#[cfg(test)]
mod fake;
mod figures;
mod freeze;
mod import;
mod job;
mod kill;
mod load;
pub mod machine;
mod network;
mod quota;
mod remove;
mod rename;
mod run;
mod settings;
mod snapshot;
mod start;
mod stop;
mod template;
mod validate;

pub use create::CreateOptions;
pub use figures::{Figure, Figures, TreeFacts};
pub use network::LeaseReservation;
pub use snapshot::SnapshotInfo;
pub use stop::stop_timeout;
pub use template::TemplateEntry;

use crate::cgroup::CgroupMode;
use crate::error::{Error, Result};
use crate::limits::Flavor;
use crate::paths::Paths;
use crate::spawn::Spawner;
use crate::systemd::Systemd;
use machine::{Machine, MachineState};
use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OwnedMutexGuard;
use tokio::sync::mpsc::UnboundedSender;
use tracing::info;

/// Default time PID 1 gets to shut down after the halt signal.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest stop timeout a machine may have: a stop must end.
pub const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long berth waits for systemd to drop a scope whose processes are gone.
const SCOPE_GONE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum Event {
    /// A machine was added to the registry (created, or found at startup).
    Added(String),
    /// A machine left the registry (removed by a caller, or an ephemeral one that stopped).
    Removed(String),
    /// State and leader of the machine changed; the values are those of the moment, so
    /// a quick succession (starting, running) is told as it happened.
    StateChanged {
        name: String,
        state: MachineState,
        leader: u32,
    },
    LimitsChanged(String),
    AutostartChanged(String),
    /// A machine's network settings changed.
    NetworkChanged(String),
    NetworkAdded(String),
    NetworkRemoved(String),
    TemplateAdded(String),
    TemplateChanged(String),
    TemplateRemoved(String),
    JobAdded(Arc<crate::jobs::Job>),
    /// The Job's work is over (its worker cleaned up after a failure or cancel).
    JobCompleted {
        job: Arc<crate::jobs::Job>,
        success: bool,
        message: String,
    },
    /// Answered once every event sent before it has been handled.
    Flush(tokio::sync::oneshot::Sender<()>),
}

#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub cgroup_mode: CgroupMode,
    pub systemd_version: u32,
    pub flavor: Flavor,
}

impl Host {
    /// Reads the cgroup hierarchy and asks systemd its version.
    pub async fn detect(systemd: &dyn Systemd) -> Result<Host> {
        let cgroup_mode = CgroupMode::detect(Path::new("/sys/fs/cgroup"))
            .map_err(|e| Error::failed("cannot tell the cgroup hierarchy", e))?;
        let systemd_version = systemd.version().await?;
        Ok(Host::new(cgroup_mode, systemd_version))
    }

    pub fn new(cgroup_mode: CgroupMode, systemd_version: u32) -> Host {
        Host {
            cgroup_mode,
            systemd_version,
            flavor: Flavor::for_host(cgroup_mode == CgroupMode::Unified, systemd_version),
        }
    }
}

pub struct Daemon {
    pub paths: Paths,
    pub host: Host,
    systemd: Arc<dyn Systemd>,
    spawner: Arc<dyn Spawner>,
    net: Arc<dyn crate::net::NetHost>,
    networks: Mutex<BTreeMap<String, crate::net::NetworkConfig>>,
    /// Held while networks are made or removed and while a lease is picked, so two
    /// callers never take the same subnet or address.
    net_lock: tokio::sync::Mutex<()>,
    /// One rebuild of the nftables table at a time.
    rules_lock: tokio::sync::Mutex<()>,
    /// The port forwards of running machines, by machine.
    forwards: Mutex<BTreeMap<String, Vec<crate::net::nft::Forward>>>,
    /// Leases and forwards of machines being created or changed.
    pending_net: Mutex<Vec<network::PendingNet>>,
    machines: Mutex<BTreeMap<String, Arc<Machine>>>,
    /// Names whose creation is under way, so two CreateMachine calls can't race.
    reserved: Mutex<HashSet<String>>,
    /// User ID ranges of machines being created, so two creations can't pick the same.
    pending_ranges: Mutex<Vec<crate::security::users::UserRange>>,
    /// One template build at a time: concurrent creations wait for the first build
    /// instead of racing it in the same staging directory.
    template_builds: tokio::sync::Mutex<()>,
    templates: Mutex<BTreeMap<String, TemplateEntry>>,
    /// Read-held while a machine is copied from a template; write-held to remove one.
    templates_in_use: tokio::sync::RwLock<()>,
    pub jobs: crate::jobs::Jobs,
    /// Machines' consoles and logs, by machine name (console.rs).
    consoles: Mutex<BTreeMap<String, Arc<console::Console>>>,
    events: UnboundedSender<Event>,
}

impl Daemon {
    /// Makes the state directories, then loads the stored machines (see load.rs).
    pub async fn new(
        paths: Paths,
        host: Host,
        systemd: Arc<dyn Systemd>,
        spawner: Arc<dyn Spawner>,
        net: Arc<dyn crate::net::NetHost>,
        events: UnboundedSender<Event>,
    ) -> Result<Arc<Daemon>> {
        info!(
            "host: cgroup mode {}, systemd {}, sending {:?} limit names",
            host.cgroup_mode.as_str(),
            host.systemd_version,
            host.flavor
        );
        // Private, as nspawn keeps /var/lib/machines: a machine's files (setuid binaries
        // its root made, configs with secrets) are not for the host's users.
        for dir in [
            paths.state_dir.clone(),
            paths.machines_dir(),
            paths.templates_dir(),
            paths.runtime_dir.clone(),
            paths.runtime_machines_dir(),
            paths.console_dir(),
            paths.networks_dir(),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create", &dir, e))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io("cannot make private", &dir, e))?;
        }
        let daemon = Arc::new(Daemon {
            paths,
            host,
            systemd,
            spawner,
            net,
            networks: Mutex::new(BTreeMap::new()),
            net_lock: tokio::sync::Mutex::new(()),
            rules_lock: tokio::sync::Mutex::new(()),
            forwards: Mutex::new(BTreeMap::new()),
            pending_net: Mutex::new(Vec::new()),
            machines: Mutex::new(BTreeMap::new()),
            reserved: Mutex::new(HashSet::new()),
            pending_ranges: Mutex::new(Vec::new()),
            template_builds: tokio::sync::Mutex::new(()),
            templates: Mutex::new(BTreeMap::new()),
            templates_in_use: tokio::sync::RwLock::new(()),
            jobs: crate::jobs::Jobs::default(),
            consoles: Mutex::new(BTreeMap::new()),
            events,
        });
        daemon.load().await;
        daemon.load_networks().await;
        daemon.load_templates();
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

    /// Resolves once every event emitted so far has been handled, so a method can reply
    /// only after the objects and signals it caused exist.
    pub async fn events_flushed(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.emit(Event::Flush(tx));
        let _ = rx.await;
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
            .ok_or_else(|| Error::NoSuchMachine(name.to_string()))
    }

    /// The machine with its operation lock held. An operation that waited for the lock
    /// behind a removal must not run on the remains: it gets NoSuchMachine.
    async fn locked(&self, name: &str) -> Result<(Arc<Machine>, OwnedMutexGuard<()>)> {
        let m = self.machine(name)?;
        let guard = m.op.clone().lock_owned().await;
        match self.machine(name) {
            Ok(now) if Arc::ptr_eq(&now, &m) => Ok((m, guard)),
            _ => Err(Error::NoSuchMachine(name.to_string())),
        }
    }

    /// Adds a machine to the registry. The event goes out under the registry's lock, so
    /// the pump sees additions and removals of one name in the order they happened.
    fn insert(&self, m: Arc<Machine>) {
        let mut machines = self.machines.lock().expect("machines lock");
        machines.insert(m.name.clone(), m.clone());
        self.emit(Event::Added(m.name.clone()));
    }

    fn forget(&self, name: &str) {
        let mut machines = self.machines.lock().expect("machines lock");
        if machines.remove(name).is_some() {
            self.emit(Event::Removed(name.to_string()));
        }
    }

    /// Puts `m` in the registry in place of machine `old` (a rename), in one hold of the
    /// registry's lock: no caller sees neither, and a lease can't look free in between.
    fn replace(&self, old: &str, m: Arc<Machine>) {
        let mut machines = self.machines.lock().expect("machines lock");
        if machines.remove(old).is_some() {
            self.emit(Event::Removed(old.to_string()));
        }
        machines.insert(m.name.clone(), m.clone());
        self.emit(Event::Added(m.name.clone()));
    }

    /// Refuses to change `tree` (a machine's rootfs, a template's directory) while
    /// ephemeral machines run on an overlay of it: an overlay's lower layer must not move.
    fn check_no_overlay_on(&self, tree: &Path, what: &str) -> Result<()> {
        let users: Vec<String> = self
            .machines()
            .iter()
            .filter(|m| m.config().base.is_some_and(|b| b.starts_with(tree)))
            .map(|m| m.name.clone())
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        Err(Error::InvalidState(format!(
            "cannot {what}: ephemeral machine{} {} run{} on an overlay of its files; remove {} first",
            if users.len() == 1 { "" } else { "s" },
            users.join(", "),
            if users.len() == 1 { "s" } else { "" },
            if users.len() == 1 { "it" } else { "them" },
        )))
    }
}

pub fn now_usec() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
