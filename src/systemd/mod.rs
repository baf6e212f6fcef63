//! Everything berth asks of systemd: the machine's transient scope under machine.slice,
//! its limits and accounting, stop and kill, and machined's registry.
//!
//! The daemon sees systemd only through the [`Systemd`] trait, so its state machine can
//! be tested against a fake (src/daemon/fake.rs) without booting a host; [`Bus`] is the
//! real one, over D-Bus.

pub mod machined;
pub mod properties;
pub mod scope;
pub mod service;

use crate::error::{Error, Result};
use crate::limits::{Flavor, Limits};
use std::path::Path;
use std::time::Duration;
use zbus::Connection;
use zbus_systemd::systemd1::ManagerProxy;

pub use crate::api::UNKNOWN_FIGURE;
pub use scope::ScopeSpec;
pub use service::ServiceSpec;

/// What the daemon needs from systemd.
#[async_trait::async_trait]
pub trait Systemd: Send + Sync {
    /// The major version of the running systemd.
    async fn version(&self) -> Result<u32>;
    /// Creates the scope holding `spec.pid`; returns once the job is done and the limits
    /// apply.
    async fn start_scope(&self, spec: &ScopeSpec<'_>) -> Result<()>;
    /// Applies limits to a running scope, for as long as it runs.
    async fn set_limits(&self, unit: &str, limits: &Limits, flavor: Flavor) -> Result<()>;
    /// Sends `signal` to every process of the unit.
    async fn kill_all(&self, unit: &str, signal: i32) -> Result<()>;
    async fn freeze(&self, unit: &str, freeze: bool) -> Result<()>;
    /// Waits until systemd has dropped the unit, stopping it if it lingers past `timeout`.
    async fn wait_gone(&self, unit: &str, timeout: Duration) -> Result<()>;
    /// Tells systemd-machined about a running machine (by its ID, when it has one), if
    /// machined is there.
    async fn register_machine(
        &self,
        name: &str,
        id: Option<[u8; 16]>,
        leader: u32,
        root_directory: &Path,
    );
    /// Whether `pid` is a process of `unit`.
    async fn holds(&self, unit: &str, pid: u32) -> bool;
    /// The machine's leader as systemd's scope shows it: the process that is its PID
    /// namespace's init. None when the unit has no process (or does not exist).
    async fn scope_leader(&self, unit: &str) -> Option<u32>;
    /// Starts a transient service that systemd keeps running (a bridge's dnsmasq); one
    /// that is already active is left as it is. Returns once it runs.
    async fn start_service(&self, spec: &ServiceSpec) -> Result<()>;
    /// Stops a unit and waits until it is gone; one that does not exist is fine.
    async fn stop_unit(&self, unit: &str) -> Result<()>;
}

/// systemd over D-Bus: PID 1's manager object and machined.
#[derive(Clone)]
pub struct Bus {
    conn: Connection,
    manager: ManagerProxy<'static>,
}

impl Bus {
    /// Connects and subscribes, so systemd sends the JobRemoved signals that scope
    /// starts wait for.
    pub async fn new(conn: &Connection) -> Result<Bus> {
        let manager = ManagerProxy::new(conn)
            .await
            .map_err(|e| Error::bus("cannot reach systemd", e))?;
        manager
            .subscribe()
            .await
            .map_err(|e| Error::bus("cannot subscribe to systemd's signals", e))?;
        Ok(Bus {
            conn: conn.clone(),
            manager,
        })
    }

    pub fn manager(&self) -> &ManagerProxy<'static> {
        &self.manager
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

#[async_trait::async_trait]
impl Systemd for Bus {
    async fn version(&self) -> Result<u32> {
        let v = self
            .manager
            .version()
            .await
            .map_err(|e| Error::bus("cannot read systemd's version", e))?;
        parse_version(&v).ok_or_else(|| {
            Error::Failed(format!("systemd reports a version berth can't read: {v:?}"))
        })
    }

    async fn start_scope(&self, spec: &ScopeSpec<'_>) -> Result<()> {
        scope::start(self, spec).await
    }

    async fn set_limits(&self, unit: &str, limits: &Limits, flavor: Flavor) -> Result<()> {
        scope::set_limits(self, unit, limits, flavor).await
    }

    async fn kill_all(&self, unit: &str, signal: i32) -> Result<()> {
        scope::kill_all(self, unit, signal).await
    }

    async fn freeze(&self, unit: &str, freeze: bool) -> Result<()> {
        scope::freeze(self, unit, freeze).await
    }

    async fn wait_gone(&self, unit: &str, timeout: Duration) -> Result<()> {
        scope::wait_gone(self, unit, timeout).await
    }

    async fn register_machine(
        &self,
        name: &str,
        id: Option<[u8; 16]>,
        leader: u32,
        root_directory: &Path,
    ) {
        machined::register(&self.conn, name, id, leader, root_directory).await
    }

    async fn scope_leader(&self, unit: &str) -> Option<u32> {
        let processes = self
            .manager
            .get_unit_processes(unit.to_string())
            .await
            .ok()?;
        let pids: Vec<u32> = processes.into_iter().map(|(_, pid, _)| pid).collect();
        crate::sys::process::namespace_init(&pids)
    }

    async fn start_service(&self, spec: &ServiceSpec) -> Result<()> {
        service::start(self, spec).await
    }

    async fn stop_unit(&self, unit: &str) -> Result<()> {
        service::stop(self, unit).await
    }

    async fn holds(&self, unit: &str, pid: u32) -> bool {
        // The scope's own cgroup, as the kernel reports it for the process; no call to
        // systemd needed, and it cannot be fooled by a file in /run.
        // A delegated scope may have sub-cgroups (a systemd inside moves itself to
        // init.scope), so the unit may be followed by more of the path.
        let own = format!("/{unit}");
        let below = format!("/{unit}/");
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map(|c| c.lines().any(|l| l.ends_with(&own) || l.contains(&below)))
            .unwrap_or(false)
    }
}

pub fn parse_version(v: &str) -> Option<u32> {
    let digits: String = v
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("252.38-1~deb12u1"), Some(252));
        assert_eq!(parse_version("258"), Some(258));
        assert_eq!(parse_version("systemd 257 (257.9-1)"), Some(257));
        assert_eq!(parse_version("unknown"), None);
    }
}
