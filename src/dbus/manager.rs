//! org.berth.Berth1.Manager at /org/berth/Berth1/Manager.

use super::auth::{Action, authorize};
use super::error::Result;
use super::options;
use crate::daemon::Daemon;
use crate::names;
use std::collections::HashMap;
use std::sync::Arc;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue};
use zbus::{Connection, interface};

pub struct ManagerIface {
    pub daemon: Arc<Daemon>,
}

pub fn machine_path(name: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(names::machine_object_path(name)).expect("escaped paths are valid")
}

#[interface(name = "org.berth.Berth1.Manager")]
impl ManagerIface {
    async fn create_machine(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        template: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath> {
        authorize(conn, &hdr, Action::CreateMachine, &name).await?;
        let opts = options::create_options(options)?;
        let m = self.daemon.create(&name, &template, opts).await?;
        // The reply promises an object the caller can use at once.
        self.daemon.events_flushed().await;
        Ok(machine_path(&m.name))
    }

    /// A one-shot machine: an ephemeral machine `name` (berthd picks a free
    /// `run-XXXXXX` when it is empty) from `template`, with `options` as CreateMachine
    /// takes them (not Command, Autostart or Init), runs `command` under berth's init
    /// with the given stdio. Returns the command's exit status (128+N when signal N
    /// ended it; 127 when it cannot be executed, told on `stderr`) once the machine is
    /// gone. If the caller leaves the bus first, the machine is killed and removed.
    #[allow(clippy::too_many_arguments)]
    async fn run_machine(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        template: String,
        command: Vec<String>,
        options: HashMap<String, OwnedValue>,
        stdin: zbus::zvariant::OwnedFd,
        stdout: zbus::zvariant::OwnedFd,
        stderr: zbus::zvariant::OwnedFd,
    ) -> Result<i32> {
        // Received descriptors are inheritable; don't let them leak into other children.
        for fd in [&stdin, &stdout, &stderr] {
            super::machine::set_cloexec(fd)?;
        }
        // It makes a machine and starts it.
        authorize(conn, &hdr, Action::CreateMachine, &name).await?;
        authorize(conn, &hdr, Action::ManageMachines, &name).await?;
        let opts = options::create_options(options)?;
        let gone = super::caller_gone(conn, &hdr)?;
        let stdio = [stdin.into(), stdout.into(), stderr.into()];
        Ok(self
            .daemon
            .run(&name, &template, command, opts, stdio, gone)
            .await?)
    }

    /// A copy of a stopped machine. Options: `Ephemeral b` (removed when it stops).
    async fn clone_machine(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        source: String,
        new_name: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath> {
        authorize(conn, &hdr, Action::CreateMachine, &new_name).await?;
        let ephemeral = options::clone_ephemeral(options)?;
        let m = self
            .daemon
            .clone_machine(&source, &new_name, ephemeral)
            .await?;
        self.daemon.events_flushed().await;
        Ok(machine_path(&m.name))
    }

    /// A new machine from a tar (plain, gzip, xz or zstd, told by content) on `archive`:
    /// a berth export keeps its settings, any other archive is a root filesystem. No
    /// options yet. Returns the Job; the machine exists when it completes.
    async fn import_machine(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        archive: zbus::zvariant::OwnedFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath> {
        authorize(conn, &hdr, Action::CreateMachine, &name).await?;
        if let Some(key) = options.keys().next() {
            return Err(crate::error::Error::InvalidArgument(format!(
                "unknown ImportMachine option {}; it takes none yet",
                names::shown(key)
            ))
            .into());
        }
        let job = self.daemon.import(&name, archive.into()).await?;
        self.daemon.events_flushed().await;
        Ok(super::job::job_path(job.id))
    }

    async fn get_machine(&self, name: String) -> Result<OwnedObjectPath> {
        let m = self.daemon.machine(&name)?;
        Ok(machine_path(&m.name))
    }

    async fn list_machines(&self) -> Vec<(String, String, u32, OwnedObjectPath)> {
        self.daemon
            .machines()
            .into_iter()
            .map(|m| {
                let run = m.run();
                (
                    m.name.clone(),
                    run.state.as_str().to_string(),
                    run.leader,
                    machine_path(&m.name),
                )
            })
            .collect()
    }

    /// Machines with their properties in one call, for clients that show many: those
    /// named in `names` that exist, in that order, or every machine (by name) when it is
    /// empty; each with its name, object path and the properties named in `properties`
    /// (the values Get gives), or all of them (GetAll's) when it is empty. Live figures
    /// of all the machines are read in one pass.
    async fn list_machines_detailed(
        &self,
        #[zbus(object_server)] server: &zbus::ObjectServer,
        #[zbus(connection)] conn: &Connection,
        names: Vec<String>,
        properties: Vec<String>,
    ) -> Result<Vec<super::detailed::Detailed>> {
        super::detailed::list(server, conn, &self.daemon, names, properties).await
    }

    /// A berth network: a bridge named NAME with the subnet's first address, a dnsmasq
    /// on it, NAT out of the host's default route. Options: `Subnet s` (CIDR; default
    /// the first free 10.0.N.0/24), `Nat b` (default true), `Dhcp b` (default true).
    async fn create_network(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath> {
        authorize(conn, &hdr, Action::ManageNetworks, &name).await?;
        let opts = options::network_options(options)?;
        self.daemon.create_network(&name, opts).await?;
        self.daemon.events_flushed().await;
        Ok(super::network::network_path(&name))
    }

    /// Networks: name, subnet, gateway, bridge, NAT, DHCP, object path.
    async fn list_networks(
        &self,
    ) -> Vec<(String, String, String, String, bool, bool, OwnedObjectPath)> {
        self.daemon
            .networks()
            .into_iter()
            .map(|n| {
                let path = super::network::network_path(&n.name);
                (
                    n.name.clone(),
                    n.subnet.to_string(),
                    n.gateway().to_string(),
                    n.bridge().to_string(),
                    n.nat,
                    n.dhcp,
                    path,
                )
            })
            .collect()
    }

    /// Templates: name, state (`building`, `ready`, `broken`), object path.
    async fn list_templates(&self) -> Vec<(String, String, OwnedObjectPath)> {
        self.daemon
            .templates()
            .into_iter()
            .map(|(name, entry)| {
                let path = super::template::template_path(&name);
                (name, entry.state().to_string(), path)
            })
            .collect()
    }

    /// Starts building a template; returns its Job at once. Methods: busybox,
    /// debootstrap (Suite, Mirror, Variant, Include, Architecture), tar (Archive: an open
    /// file descriptor of a plain, gzip, xz or zstd tar), directory (Source).
    async fn build_template(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        method: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath> {
        authorize(conn, &hdr, Action::ManageTemplates, &name).await?;
        let spec = options::build_spec(&method, options)?;
        let job = self.daemon.build_template(&name, spec).await?;
        // The reply promises the Job and template objects exist.
        self.daemon.events_flushed().await;
        Ok(super::job::job_path(job.id))
    }

    #[zbus(property)]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    #[zbus(property)]
    fn cgroup_mode(&self) -> String {
        self.daemon.host.cgroup_mode.as_str().to_string()
    }

    #[zbus(property)]
    fn systemd_version(&self) -> u32 {
        self.daemon.host.systemd_version
    }

    #[zbus(signal)]
    pub async fn machine_new(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: &ObjectPath<'_>,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn machine_removed(
        emitter: &SignalEmitter<'_>,
        name: &str,
        path: &ObjectPath<'_>,
    ) -> zbus::Result<()>;
}
