//! org.berth.Berth1.Machine, one object per machine at /org/berth/Berth1/machine/NAME.

use super::auth::{Action, authorize};
use super::error::Result;
use super::manager::{ManagerIface, machine_path};
use super::options;
use crate::api::KillWho;
use crate::daemon::Daemon;
use crate::daemon::Figure;
use crate::daemon::machine::{Machine, MachineState};
use crate::error::Error;
use crate::limits::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedFd, OwnedValue, Value};
use zbus::{Connection, interface};

pub use crate::api::MACHINE_INTERFACE as INTERFACE;

pub struct MachineIface {
    daemon: Arc<Daemon>,
    name: String,
    /// The registry's machine of that name when the object went up (each name's object
    /// comes and goes with the registry's entry, see the event pump), so that a getter
    /// need not look it up: GetManagedObjects calls ~30 per machine. None when it was
    /// removed before its object went up.
    machine: Option<Arc<Machine>>,
}

/// Drops the machine's object (InterfacesRemoved) and says MachineRemoved.
pub async fn unregister(conn: &Connection, name: &str) -> zbus::Result<()> {
    let path = machine_path(name);
    conn.object_server()
        .remove::<MachineIface, _>(&path)
        .await?;
    let emitter = SignalEmitter::new(conn, super::MANAGER_PATH)?;
    ManagerIface::machine_removed(&emitter, name, &path.as_ref()).await
}

/// Puts the machine's object up (InterfacesAdded) and says MachineNew.
pub async fn register(conn: &Connection, daemon: &Arc<Daemon>, name: &str) -> zbus::Result<()> {
    let path = machine_path(name);
    conn.object_server()
        .at(
            &path,
            MachineIface {
                daemon: daemon.clone(),
                name: name.to_string(),
                machine: daemon.machine(name).ok(),
            },
        )
        .await?;
    let emitter = SignalEmitter::new(conn, super::MANAGER_PATH)?;
    ManagerIface::machine_new(&emitter, name, &path.as_ref()).await
}

async fn iface_ref(
    conn: &Connection,
    name: &str,
) -> zbus::Result<zbus::object_server::InterfaceRef<MachineIface>> {
    conn.object_server()
        .interface::<_, MachineIface>(machine_path(name))
        .await
}

/// PropertiesChanged with the given values rather than the current ones: by the time
/// this runs the machine may have moved on, and clients must see every step.
pub async fn emit_state(
    conn: &Connection,
    name: &str,
    state: MachineState,
    leader: u32,
) -> zbus::Result<()> {
    let r = iface_ref(conn, name).await?;
    let changed = HashMap::from([
        ("State", Value::from(state.as_str())),
        ("Leader", Value::U32(leader)),
    ]);
    zbus::fdo::Properties::properties_changed(
        r.signal_emitter(),
        INTERFACE.try_into()?,
        changed,
        Cow::Borrowed(&[]),
    )
    .await
}

pub async fn emit_limits(conn: &Connection, name: &str) -> zbus::Result<()> {
    let r = iface_ref(conn, name).await?;
    let iface = r.get().await;
    iface.limits_changed(r.signal_emitter()).await?;
    iface.disk_quota_changed(r.signal_emitter()).await
}

pub async fn emit_network(conn: &Connection, name: &str) -> zbus::Result<()> {
    let r = iface_ref(conn, name).await?;
    let iface = r.get().await;
    let e = r.signal_emitter();
    iface.network_changed(e).await?;
    iface.bridge_changed(e).await?;
    iface.address_changed(e).await?;
    iface.port_forwards_changed(e).await
}

pub async fn emit_autostart(conn: &Connection, name: &str) -> zbus::Result<()> {
    let r = iface_ref(conn, name).await?;
    r.get().await.autostart_changed(r.signal_emitter()).await
}

/// OpenShell's `pty_path`, a plain string on the wire, that says when it is dropped:
/// zbus drops a method's reply value once the reply has gone out. (zbus's own
/// ResponseDispatchNotifier would do the same but hides the reply's two arguments from
/// the introspection data.)
pub struct SentWithReply {
    path: String,
    sent: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SentWithReply {
    fn new(path: String) -> (Self, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            SentWithReply {
                path,
                sent: Some(tx),
            },
            rx,
        )
    }
}

impl serde::Serialize for SentWithReply {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.path)
    }
}

impl zbus::zvariant::Type for SentWithReply {
    const SIGNATURE: &'static zbus::zvariant::Signature = String::SIGNATURE;
}

impl Drop for SentWithReply {
    fn drop(&mut self) {
        if let Some(tx) = self.sent.take() {
            let _ = tx.send(());
        }
    }
}

impl MachineIface {
    async fn export_with(
        &self,
        conn: &Connection,
        hdr: &Header<'_>,
        archive: OwnedFd,
        format: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<zbus::zvariant::OwnedObjectPath> {
        authorize(conn, hdr, Action::ManageMachines, &self.name).await?;
        let rootfs_only = options::export_rootfs_only(options)?;
        let out: std::os::fd::OwnedFd = archive.into();
        let job = self
            .daemon
            .export(&self.name, out, &format, rootfs_only)
            .await?;
        self.daemon.events_flushed().await;
        Ok(super::job::job_path(job.id))
    }

    /// `f` of the machine's config, borrowed rather than copied for each property.
    fn config<R>(&self, f: impl FnOnce(&crate::store::MachineConfig) -> R) -> Option<R> {
        self.machine.as_ref().map(|m| m.with_config(f))
    }
}

#[interface(name = "org.berth.Berth1.Machine")]
impl MachineIface {
    async fn start(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        Ok(self.daemon.start(&self.name).await?)
    }

    async fn stop(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        Ok(self.daemon.stop(&self.name).await?)
    }

    async fn restart(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        Ok(self.daemon.restart(&self.name).await?)
    }

    async fn freeze(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        Ok(self.daemon.freeze(&self.name, true).await?)
    }

    async fn thaw(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        Ok(self.daemon.freeze(&self.name, false).await?)
    }

    async fn kill(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        whom: String,
        signal: i32,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        let who: KillWho = whom.parse().map_err(Error::InvalidArgument)?;
        Ok(self.daemon.kill(&self.name, who, signal).await?)
    }

    async fn remove(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        Ok(self.remove_machine(false).await?)
    }

    /// Extension of Remove(): option `Force b` stops a running machine first.
    async fn remove_with_options(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        let force = options::remove_force(options)?;
        Ok(self.remove_machine(force).await?)
    }

    /// Renames the stopped machine: its directory, config, hostname (when it was the
    /// name), unit and this object's path follow; the object at the new path is up when
    /// this returns.
    async fn rename(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        new_name: String,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        self.daemon.rename(&self.name, &new_name).await?;
        self.daemon.events_flushed().await;
        Ok(())
    }

    /// Writes the stopped machine (config.toml and rootfs/) as a tar to `archive`; format
    /// `tar`, `tar.gz`, `tar.xz` or `tar.zst`. Returns the Job.
    async fn export(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        archive: OwnedFd,
        format: String,
    ) -> Result<zbus::zvariant::OwnedObjectPath> {
        self.export_with(conn, &hdr, archive, format, HashMap::new())
            .await
    }

    /// Extension of Export(): option `RootfsOnly b` writes the tree alone, a rootfs
    /// tarball for `tar` and `machinectl import-tar`.
    async fn export_with_options(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        archive: OwnedFd,
        format: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<zbus::zvariant::OwnedObjectPath> {
        self.export_with(conn, &hdr, archive, format, options).await
    }

    /// Unpacks the tar stream read from `archive` (one top-level member: a file, symlink or
    /// tree) at `destination` inside the machine, as `cp -r` would: into it when it ends
    /// in `/` or is a directory, else as it. Returns the Job. No options yet.
    async fn copy_to(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        destination: String,
        archive: OwnedFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<zbus::zvariant::OwnedObjectPath> {
        // Writing any file as the machine's root is as much as a root shell in it.
        authorize(conn, &hdr, Action::Shell, &self.name).await?;
        options::no_options(options)?;
        let job = self
            .daemon
            .copy_to(&self.name, &destination, archive.into())
            .await?;
        self.daemon.events_flushed().await;
        Ok(super::job::job_path(job.id))
    }

    /// Writes `source` inside the machine (not followed if a symlink; a tree whole, but
    /// not what is mounted below it) to `archive` as a tar stream with it as the one
    /// top-level member. Returns the Job. No options yet.
    async fn copy_from(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        source: String,
        archive: OwnedFd,
        options: HashMap<String, OwnedValue>,
    ) -> Result<zbus::zvariant::OwnedObjectPath> {
        // Reading any file as the machine's root (its /etc/shadow, its keys) is a shell's.
        authorize(conn, &hdr, Action::Shell, &self.name).await?;
        options::no_options(options)?;
        let job = self
            .daemon
            .copy_from(&self.name, &source, archive.into())
            .await?;
        self.daemon.events_flushed().await;
        Ok(super::job::job_path(job.id))
    }

    /// Copies the stopped machine's tree as snapshot `name`.
    async fn snapshot(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
        comment: String,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        Ok(self.daemon.snapshot(&self.name, &name, &comment).await?)
    }

    /// (name, created usec, comment), oldest first.
    async fn list_snapshots(&self) -> Result<Vec<(String, u64, String)>> {
        Ok(self
            .daemon
            .snapshots(&self.name)
            .await?
            .into_iter()
            .map(|s| (s.name, s.created_at, s.comment))
            .collect())
    }

    /// Puts the snapshot back over this stopped machine (`new_machine` empty), or makes
    /// machine `new_machine` of it.
    async fn restore_snapshot(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        snapshot: String,
        new_machine: String,
    ) -> Result<()> {
        let action = if new_machine.is_empty() {
            Action::ManageMachines
        } else {
            Action::CreateMachine
        };
        authorize(conn, &hdr, action, &self.name).await?;
        self.daemon
            .restore_snapshot(&self.name, &snapshot, &new_machine)
            .await?;
        self.daemon.events_flushed().await;
        Ok(())
    }

    async fn remove_snapshot(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        name: String,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        Ok(self.daemon.remove_snapshot(&self.name, &name).await?)
    }

    async fn set_limits(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        limits: HashMap<String, OwnedValue>,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        let changes = options::limits(limits)?;
        Ok(self.daemon.set_limits(&self.name, changes).await?)
    }

    /// Changes a stopped machine's network: the CreateMachine keys Network, Bridge,
    /// Address and PortForwards; keys not given keep their values.
    async fn set_network(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        let req = options::net_request(options)?;
        self.daemon.set_network(&self.name, req).await?;
        self.daemon.events_flushed().await;
        Ok(())
    }

    /// Start the machine when berthd starts after a boot of the host.
    async fn set_autostart(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        enabled: bool,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        Ok(self.daemon.set_autostart(&self.name, enabled).await?)
    }

    /// A pty master that is the running machine's console (its PID 1's /dev/console and
    /// stdio): the last few KiB the console said first, then what it says; what is
    /// written to it is typed there. One client at a time: another is refused
    /// (InvalidState) while one is attached; closing the master detaches.
    async fn open_console(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<OwnedFd> {
        // Typing on the console is as much as a root login.
        authorize(conn, &hdr, Action::Shell, &self.name).await?;
        let master = self.daemon.open_console(&self.name).await?;
        Ok(master.into())
    }

    /// The read end of a pipe carrying the last `lines` lines of the machine's console
    /// log (its recent output, bounded, with berthd's own lines about it beginning
    /// `-- berthd: `), running or not; with `follow`, then what follows, until the pipe
    /// is closed or the machine removed.
    async fn read_log(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        lines: u64,
        follow: bool,
    ) -> Result<OwnedFd> {
        // What a console showed may be secret (a password typed where echo was on).
        authorize(conn, &hdr, Action::Shell, &self.name).await?;
        let r = self.daemon.read_log(&self.name, lines, follow).await?;
        Ok(r.into())
    }

    /// Bytes the machine's tree may take on disk (a project quota), 0 to drop the limit.
    async fn set_disk_quota(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        bytes: u64,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageMachines, &self.name).await?;
        Ok(self.daemon.set_disk_quota(&self.name, bytes).await?)
    }

    // The D-Bus signature fixes the argument list.
    #[allow(clippy::too_many_arguments)]
    async fn execute(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        argv: Vec<String>,
        environment: Vec<String>,
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<i32> {
        // Received descriptors are inheritable; don't let them leak into other children.
        for fd in [&stdin, &stdout, &stderr] {
            set_cloexec(fd)?;
        }
        authorize(conn, &hdr, Action::Shell, &self.name).await?;
        let gone = super::caller_gone(conn, &hdr)?;
        Ok(self
            .daemon
            .execute(
                &self.name,
                argv,
                environment,
                [stdin.into(), stdout.into(), stderr.into()],
                gone,
            )
            .await?)
    }

    /// Like machined's OpenMachineShell: `argv` (none: the user's login shell) as
    /// `user` on a pty opened inside the machine; the reply is the pty's master and the
    /// slave's path there. ShellExited says how it ended.
    #[zbus(out_args("pty_master", "pty_path"))]
    async fn open_shell(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
        user: String,
        argv: Vec<String>,
        environment: Vec<String>,
    ) -> Result<(OwnedFd, SentWithReply)> {
        authorize(conn, &hdr, Action::Shell, &self.name).await?;
        let gone = super::caller_gone(conn, &hdr)?;
        let shell = self
            .daemon
            .open_shell(&self.name, user, argv, environment, gone)
            .await?;
        let for_caller = shell
            .master
            .try_clone()
            .map_err(|e| Error::failed("cannot duplicate the pty's master", e))?;
        let (pty_path, sent) = SentWithReply::new(shell.pty_path.clone());
        // Not through the event pump: ShellExited must follow this method's reply (a
        // caller tells its own shell's signal from an earlier one on the same pty path by
        // that order), and only the reply's own value knows when it went out. berthd's
        // copy of the master keeps the pty's index from being reused until the signal
        // is out, so the path names one shell at a time.
        let conn = conn.clone();
        let path = machine_path(&self.name);
        tokio::spawn(async move {
            let status = shell.exited.await;
            let _ = sent.await;
            let sent = match SignalEmitter::new(&conn, path) {
                Ok(e) => MachineIface::shell_exited(&e, &shell.pty_path, status).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                tracing::warn!(pty = shell.pty_path, "ShellExited not sent: {e}");
            }
            drop(shell.master);
        });
        Ok((OwnedFd::from(for_caller), pty_path))
    }

    /// The command OpenShell started on the pty at `pty_path` ended with
    /// `exit_status` (128+N when signal N killed it).
    #[zbus(signal)]
    pub async fn shell_exited(
        emitter: &SignalEmitter<'_>,
        pty_path: &str,
        exit_status: i32,
    ) -> zbus::Result<()>;

    #[zbus(property)]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[zbus(property)]
    fn state(&self) -> String {
        self.machine
            .as_ref()
            .map_or("stopped", |m| m.state().as_str())
            .to_string()
    }

    #[zbus(property)]
    fn leader(&self) -> u32 {
        self.machine.as_ref().map_or(0, |m| m.run().leader)
    }

    #[zbus(property)]
    fn unit(&self) -> String {
        crate::names::scope_unit_name(&self.name)
    }

    #[zbus(property)]
    fn template(&self) -> String {
        self.config(|c| c.template.clone()).unwrap_or_default()
    }

    #[zbus(property)]
    fn hostname(&self) -> String {
        self.config(|c| c.hostname.clone()).unwrap_or_default()
    }

    #[zbus(property)]
    fn root_directory(&self) -> String {
        self.machine
            .as_ref()
            .map(|m| m.rootfs().display().to_string())
            .unwrap_or_default()
    }

    #[zbus(property)]
    fn autostart(&self) -> bool {
        self.config(|c| c.autostart).unwrap_or(false)
    }

    #[zbus(property)]
    fn ephemeral(&self) -> bool {
        self.config(|c| c.ephemeral).unwrap_or(false)
    }

    /// Host paths bound into it at every start: source, target, read-only.
    #[zbus(property)]
    fn binds(&self) -> Vec<(String, String, bool)> {
        self.config(|c| {
            c.binds
                .iter()
                .map(|b| {
                    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
                    (path(&b.source), path(&b.target), b.read_only)
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// Size of its /tmp tmpfs in bytes; 0: the kernel's default (half of RAM).
    #[zbus(property)]
    fn tmp_size(&self) -> u64 {
        self.config(|c| c.tmp_size).flatten().unwrap_or(0)
    }

    /// Bytes its tree may take on disk; 0: no quota.
    #[zbus(property)]
    fn disk_quota(&self) -> u64 {
        self.config(|c| c.disk_quota).flatten().unwrap_or(0)
    }

    /// Bytes its tree takes, as the file system's quota accounting counts them; read
    /// when asked, so no change signal; UINT64_MAX when it has no quota (only a quota's
    /// project is counted).
    #[zbus(property(emits_changed_signal = "false"))]
    fn disk_usage(&self) -> u64 {
        self.machine
            .as_ref()
            .and_then(|m| self.daemon.tree_facts(m).disk_usage)
            .map_or(u64::MAX, |(used, _)| used)
    }

    /// The signal stop sends PID 1: the one configured, else the one its init wants.
    #[zbus(property)]
    fn halt_signal(&self) -> i32 {
        self.machine
            .as_ref()
            .map_or(0, |m| self.daemon.tree_facts(m).halt_signal)
    }

    /// How long stop waits for PID 1 before killing the machine, in µs.
    #[zbus(property, name = "StopTimeoutUSec")]
    fn stop_timeout_usec(&self) -> u64 {
        self.config(|c| crate::daemon::stop_timeout(c).as_micros() as u64)
            .unwrap_or(0)
    }

    /// Why the machine is broken (State "broken"): its config cannot be read, or names
    /// another machine. Empty when it is not.
    #[zbus(property)]
    fn problem(&self) -> String {
        self.machine
            .as_ref()
            .and_then(|m| m.problem().map(str::to_string))
            .unwrap_or_default()
    }

    /// "no" for a privileged machine, else its host ID range "BASE:COUNT".
    #[zbus(property)]
    fn private_users(&self) -> String {
        self.config(|c| c.users.as_ref().map(|u| u.range.to_string()))
            .flatten()
            .unwrap_or_else(|| "no".into())
    }

    /// How it reaches the network: `none`, `bridge` or `host`.
    #[zbus(property)]
    fn network(&self) -> String {
        self.config(|c| c.network.mode.as_str().to_string())
            .unwrap_or_default()
    }

    /// The berth network a bridged machine is on; empty otherwise.
    #[zbus(property)]
    fn bridge(&self) -> String {
        self.config(|c| c.network.bridge.clone())
            .flatten()
            .unwrap_or_default()
    }

    /// A bridged machine's lease (CIDR), whether it runs or not; empty otherwise.
    #[zbus(property)]
    fn address(&self) -> String {
        self.config(|c| c.network.address.map(|a| a.to_string()))
            .flatten()
            .unwrap_or_default()
    }

    /// Port forwards: protocol, host port, machine port.
    #[zbus(property)]
    fn port_forwards(&self) -> Vec<(String, u16, u16)> {
        self.config(|c| {
            c.network
                .ports
                .iter()
                .map(|p| (p.proto.as_str().to_string(), p.host_port, p.machine_port))
                .collect()
        })
        .unwrap_or_default()
    }

    /// The addresses it has while it runs (CIDR): its lease when bridged.
    #[zbus(property(emits_changed_signal = "false"))]
    fn addresses(&self) -> Vec<String> {
        let Some(m) = &self.machine else {
            return Vec::new();
        };
        if self.daemon.host_interface(m).is_none() {
            return Vec::new();
        }
        m.with_config(|c| c.network.address.map(|a| vec![a.to_string()]))
            .unwrap_or_default()
    }

    /// The host side of its veth while it runs bridged; empty otherwise.
    #[zbus(property(emits_changed_signal = "false"))]
    fn host_interface(&self) -> String {
        self.machine
            .as_ref()
            .and_then(|m| self.daemon.host_interface(m))
            .unwrap_or_default()
    }

    /// Bytes received on the host side of its veth (what the machine sent), as `ip -s
    /// link show HOSTINTERFACE` counts them; UINT64_MAX when it has no veth.
    #[zbus(property(emits_changed_signal = "false"))]
    fn rx_bytes(&self) -> u64 {
        self.figure(Figure::RxBytes)
    }

    /// Bytes sent on the host side of its veth (what the machine received), as `ip -s
    /// link` counts them; UINT64_MAX when it has no veth.
    #[zbus(property(emits_changed_signal = "false"))]
    fn tx_bytes(&self) -> u64 {
        self.figure(Figure::TxBytes)
    }

    #[zbus(property)]
    fn created_at(&self) -> u64 {
        self.config(|c| c.created_at).unwrap_or(0)
    }

    #[zbus(property)]
    fn limits(&self) -> HashMap<String, OwnedValue> {
        let Some(entries) = self.config(|c| c.limits.entries()) else {
            return HashMap::new();
        };
        entries
            .into_iter()
            .map(|(k, v)| {
                let value = match v {
                    RawValue::Unsigned(n) => Value::U64(n),
                    RawValue::Signed(n) => Value::I64(n),
                    RawValue::Text(t) => Value::from(t),
                };
                (
                    k.to_string(),
                    OwnedValue::try_from(value).expect("plain values convert"),
                )
            })
            .collect()
    }

    /// Live figure of its scope, as systemd counts it; 18446744073709551615 (UINT64_MAX)
    /// when unknown: the machine is not running or the host does not count it.
    #[zbus(property(emits_changed_signal = "false"), name = "CPUUsageNSec")]
    fn cpu_usage_nsec(&self) -> u64 {
        self.figure(Figure::CpuUsageNSec)
    }

    /// Live figure of its scope, as systemd counts it; 18446744073709551615 (UINT64_MAX)
    /// when unknown: the machine is not running or the host does not count it.
    #[zbus(property(emits_changed_signal = "false"))]
    fn memory_current(&self) -> u64 {
        self.figure(Figure::MemoryCurrent)
    }

    /// Live figure of its scope, as systemd counts it; 18446744073709551615 (UINT64_MAX)
    /// when unknown: the machine is not running or the host does not count it.
    #[zbus(property(emits_changed_signal = "false"))]
    fn tasks_current(&self) -> u64 {
        self.figure(Figure::TasksCurrent)
    }

    /// Live figure of its scope, as systemd counts it; 18446744073709551615 (UINT64_MAX)
    /// when unknown: the machine is not running or the host does not count it.
    #[zbus(property(emits_changed_signal = "false"), name = "IOReadBytes")]
    fn io_read_bytes(&self) -> u64 {
        self.figure(Figure::IoReadBytes)
    }

    /// Live figure of its scope, as systemd counts it; 18446744073709551615 (UINT64_MAX)
    /// when unknown: the machine is not running or the host does not count it.
    #[zbus(property(emits_changed_signal = "false"), name = "IOWriteBytes")]
    fn io_write_bytes(&self) -> u64 {
        self.figure(Figure::IoWriteBytes)
    }
}

pub(super) fn set_cloexec(fd: &OwnedFd) -> Result<()> {
    use std::os::fd::AsFd;
    nix::fcntl::fcntl(
        fd.as_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|e| Error::failed("cannot take the caller's descriptors", e))?;
    Ok(())
}

impl MachineIface {
    /// Read with the machine's other figures and cached briefly (daemon/figures.rs), so
    /// a GetAll or GetManagedObjects reads each cgroup file once and never asks systemd.
    fn figure(&self, figure: Figure) -> u64 {
        self.machine
            .as_ref()
            .map_or(crate::api::UNKNOWN_FIGURE, |m| {
                self.daemon.figures(m).get(figure)
            })
    }

    /// Replies once the machine's object is gone, so a client can re-create the name.
    async fn remove_machine(&self, force: bool) -> crate::error::Result<()> {
        self.daemon.remove(&self.name, force).await?;
        self.daemon.events_flushed().await;
        Ok(())
    }
}
