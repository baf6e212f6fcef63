//! Client-side proxies for the `org.berth.Berth1` D-Bus API.
//!
//! `berthctl` and the integration tests share these, so the API's methods and properties
//! are spelled out in exactly one place on the client side. The macro also generates
//! `*ProxyBlocking` twins for callers without a runtime.
//!
//! Methods that change something carry ALLOW_INTERACTIVE_AUTHORIZATION, as machined's
//! clients do: a caller who is not root may then be asked for a password by polkit, if
//! an authentication agent runs for its session. berthctl sets the flag itself, only when
//! it runs on a terminal (src/cli/commands.rs).

use std::collections::HashMap;

use zbus::proxy;
use zbus::zvariant::{Fd, OwnedFd, OwnedObjectPath, OwnedValue, Value};

pub use crate::api::{
    BUS_NAME as SERVICE, MACHINE_INTERFACE, MANAGER_INTERFACE, MANAGER_PATH, NETWORK_INTERFACE,
    ROOT_PATH, UNKNOWN_FIGURE,
};

/// One network of ListNetworks: name, subnet (CIDR), gateway, bridge, NAT, DHCP, object
/// path.
pub type NetworkEntry = (String, String, String, String, bool, bool, OwnedObjectPath);

/// One machine of ListMachinesDetailed: name, object path, properties by name.
pub type MachineDetails = (String, OwnedObjectPath, HashMap<String, OwnedValue>);

/// One port forward as D-Bus carries it (`(sqq)`): protocol, host port, machine port.
pub type PortForwardEntry = (String, u16, u16);

#[proxy(
    interface = "org.berth.Berth1.Manager",
    default_service = "org.berth.Berth1",
    default_path = "/org/berth/Berth1/Manager"
)]
pub trait Manager {
    #[zbus(allow_interactive_auth)]
    fn create_machine(
        &self,
        name: &str,
        template: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    fn get_machine(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// A one-shot machine: `command` in an ephemeral machine `name` (empty: berthd picks
    /// one) from `template`, with CreateMachine's `options` (not Command, Autostart or
    /// Init) and the given stdio; the command's exit status, once the machine is gone.
    #[zbus(allow_interactive_auth)]
    #[allow(clippy::too_many_arguments)]
    fn run_machine(
        &self,
        name: &str,
        template: &str,
        command: &[&str],
        options: HashMap<&str, Value<'_>>,
        stdin: Fd<'_>,
        stdout: Fd<'_>,
        stderr: Fd<'_>,
    ) -> zbus::Result<i32>;

    /// Returns the Job; the machine exists once it completes successfully.
    #[zbus(allow_interactive_auth)]
    fn import_machine(
        &self,
        name: &str,
        archive: Fd<'_>,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    #[zbus(allow_interactive_auth)]
    fn clone_machine(
        &self,
        source: &str,
        new_name: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    /// (name, state, leader pid or 0 when stopped, object path)
    fn list_machines(&self) -> zbus::Result<Vec<(String, String, u32, OwnedObjectPath)>>;

    /// (name, object path, properties) of the machines named (all when `names` is
    /// empty; names not found are left out), with the properties named (all when
    /// `properties` is empty), in one call.
    fn list_machines_detailed(
        &self,
        names: &[&str],
        properties: &[&str],
    ) -> zbus::Result<Vec<MachineDetails>>;

    /// (name, state: building, ready or broken, object path)
    fn list_templates(&self) -> zbus::Result<Vec<(String, String, OwnedObjectPath)>>;

    /// Returns the Job at once; the template is usable when it completes successfully.
    #[zbus(allow_interactive_auth)]
    fn build_template(
        &self,
        name: &str,
        method: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    /// Options: `Subnet s` (CIDR), `Nat b`, `Dhcp b`; berthd picks what is left out.
    #[zbus(allow_interactive_auth)]
    fn create_network(
        &self,
        name: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    fn list_networks(&self) -> zbus::Result<Vec<NetworkEntry>>;

    #[zbus(signal)]
    fn machine_new(&self, name: String, path: OwnedObjectPath) -> zbus::Result<()>;

    #[zbus(signal)]
    fn machine_removed(&self, name: String, path: OwnedObjectPath) -> zbus::Result<()>;

    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> zbus::Result<String>;

    #[zbus(property(emits_changed_signal = "const"))]
    fn cgroup_mode(&self) -> zbus::Result<String>;

    #[zbus(property(emits_changed_signal = "const"))]
    fn systemd_version(&self) -> zbus::Result<u32>;
}

#[proxy(
    interface = "org.berth.Berth1.Machine",
    default_service = "org.berth.Berth1"
)]
pub trait Machine {
    #[zbus(allow_interactive_auth)]
    fn start(&self) -> zbus::Result<()>;

    /// Freeze every process of the machine (unified cgroup hierarchy only).
    #[zbus(allow_interactive_auth)]
    fn freeze(&self) -> zbus::Result<()>;

    #[zbus(allow_interactive_auth)]
    fn thaw(&self) -> zbus::Result<()>;

    #[zbus(allow_interactive_auth)]
    fn set_autostart(&self, enabled: bool) -> zbus::Result<()>;

    #[zbus(allow_interactive_auth)]
    fn stop(&self) -> zbus::Result<()>;

    #[zbus(allow_interactive_auth)]
    fn restart(&self) -> zbus::Result<()>;

    /// `whom` is "leader" or "all".
    #[zbus(allow_interactive_auth)]
    fn kill(&self, whom: &str, signal: i32) -> zbus::Result<()>;

    /// Refuses a running machine; see `remove_with_options`.
    #[zbus(allow_interactive_auth)]
    fn remove(&self) -> zbus::Result<()>;

    /// Option `Force b` stops a running machine before removing it.
    #[zbus(allow_interactive_auth)]
    fn remove_with_options(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<()>;

    /// Refuses a machine that runs; the object moves to the new name's path.
    #[zbus(allow_interactive_auth)]
    fn rename(&self, new_name: &str) -> zbus::Result<()>;

    /// Returns the Job writing the archive.
    #[zbus(allow_interactive_auth)]
    fn export(&self, archive: Fd<'_>, format: &str) -> zbus::Result<OwnedObjectPath>;

    /// Option `RootfsOnly b`.
    #[zbus(allow_interactive_auth)]
    fn export_with_options(
        &self,
        archive: Fd<'_>,
        format: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    #[zbus(allow_interactive_auth)]
    fn snapshot(&self, name: &str, comment: &str) -> zbus::Result<()>;

    /// (name, created usec, comment), oldest first.
    fn list_snapshots(&self) -> zbus::Result<Vec<(String, u64, String)>>;

    /// `new_machine` empty: over this machine; else into a new machine of that name.
    #[zbus(allow_interactive_auth)]
    fn restore_snapshot(&self, snapshot: &str, new_machine: &str) -> zbus::Result<()>;

    #[zbus(allow_interactive_auth)]
    fn remove_snapshot(&self, name: &str) -> zbus::Result<()>;

    #[zbus(allow_interactive_auth)]
    fn set_limits(&self, limits: HashMap<&str, Value<'_>>) -> zbus::Result<()>;

    /// A stopped machine's Network, Bridge, Address and PortForwards; keys left out keep
    /// their values.
    #[zbus(allow_interactive_auth)]
    fn set_network(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<()>;

    /// A pty master relayed to the running machine's console.
    #[zbus(allow_interactive_auth)]
    fn open_console(&self) -> zbus::Result<OwnedFd>;

    /// A pipe with the last `lines` lines of the console log, and with `follow` more.
    #[zbus(allow_interactive_auth)]
    fn read_log(&self, lines: u64, follow: bool) -> zbus::Result<OwnedFd>;

    /// Runs `argv` inside the machine with the given fds as its stdio and returns its
    /// exit status (128+N when killed by signal N).
    #[zbus(allow_interactive_auth)]
    fn execute(
        &self,
        argv: &[&str],
        environment: &[&str],
        stdin: Fd<'_>,
        stdout: Fd<'_>,
        stderr: Fd<'_>,
    ) -> zbus::Result<i32>;

    /// Runs `argv` (none: `user`'s login shell) as `user` of the machine on a pty opened
    /// inside it: its master and the slave's path there. Subscribe to ShellExited before
    /// calling; the signal for this shell is the first with its path after the reply.
    #[zbus(allow_interactive_auth)]
    fn open_shell(
        &self,
        user: &str,
        argv: &[&str],
        environment: &[&str],
    ) -> zbus::Result<(zbus::zvariant::OwnedFd, String)>;

    #[zbus(signal)]
    fn shell_exited(&self, pty_path: String, exit_status: i32) -> zbus::Result<()>;

    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn leader(&self) -> zbus::Result<u32>;

    #[zbus(property)]
    fn unit(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn template(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn hostname(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn root_directory(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn limits(&self) -> zbus::Result<HashMap<String, OwnedValue>>;

    #[zbus(property(emits_changed_signal = "const"))]
    fn created_at(&self) -> zbus::Result<u64>;

    #[zbus(property)]
    fn autostart(&self) -> zbus::Result<bool>;

    #[zbus(property)]
    fn ephemeral(&self) -> zbus::Result<bool>;

    /// Why the machine is broken, or empty.
    #[zbus(property)]
    fn problem(&self) -> zbus::Result<String>;

    /// "no" (privileged) or the machine's host ID range "BASE:COUNT".
    #[zbus(property)]
    fn private_users(&self) -> zbus::Result<String>;

    /// "none", "bridge" or "host".
    #[zbus(property)]
    fn network(&self) -> zbus::Result<String>;

    /// The berth network of a bridged machine, or empty.
    #[zbus(property)]
    fn bridge(&self) -> zbus::Result<String>;

    /// A bridged machine's lease (CIDR), running or not, or empty.
    #[zbus(property)]
    fn address(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn port_forwards(&self) -> zbus::Result<Vec<PortForwardEntry>>;

    // Live figures are read from systemd (or the kernel) on every Get and never
    // signalled, so they must bypass the proxy's property cache.

    /// Its addresses (CIDR) while it runs.
    #[zbus(property(emits_changed_signal = "false"))]
    fn addresses(&self) -> zbus::Result<Vec<String>>;

    /// The host side of its veth while it runs bridged, or empty.
    #[zbus(property(emits_changed_signal = "false"))]
    fn host_interface(&self) -> zbus::Result<String>;

    /// Bytes the machine received over its veth; UNKNOWN_FIGURE when it has none.
    #[zbus(property(emits_changed_signal = "false"))]
    fn rx_bytes(&self) -> zbus::Result<u64>;

    /// Bytes the machine sent over its veth; UNKNOWN_FIGURE when it has none.
    #[zbus(property(emits_changed_signal = "false"))]
    fn tx_bytes(&self) -> zbus::Result<u64>;

    #[zbus(property(emits_changed_signal = "false"), name = "CPUUsageNSec")]
    fn cpu_usage_nsec(&self) -> zbus::Result<u64>;

    #[zbus(property(emits_changed_signal = "false"))]
    fn memory_current(&self) -> zbus::Result<u64>;

    #[zbus(property(emits_changed_signal = "false"))]
    fn tasks_current(&self) -> zbus::Result<u64>;
}

#[proxy(
    interface = "org.berth.Berth1.Template",
    default_service = "org.berth.Berth1"
)]
pub trait Template {
    #[zbus(allow_interactive_auth)]
    fn remove(&self) -> zbus::Result<()>;

    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn method(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn size_bytes(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn created_at(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn options(&self) -> zbus::Result<HashMap<String, String>>;
    #[zbus(property)]
    fn problem(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.berth.Berth1.Network",
    default_service = "org.berth.Berth1"
)]
pub trait Network {
    /// Refused while a running machine is on it.
    #[zbus(allow_interactive_auth)]
    fn remove(&self) -> zbus::Result<()>;

    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn subnet(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn gateway(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn bridge(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn nat(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn dhcp(&self) -> zbus::Result<bool>;
    /// Machines configured on it, running or not; berthd does not signal its changes.
    #[zbus(property(emits_changed_signal = "false"))]
    fn machines(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn created_at(&self) -> zbus::Result<u64>;
}

#[proxy(
    interface = "org.berth.Berth1.Job",
    default_service = "org.berth.Berth1"
)]
pub trait Job {
    #[zbus(allow_interactive_auth)]
    fn cancel(&self) -> zbus::Result<()>;

    #[zbus(property)]
    fn operation(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn object(&self) -> zbus::Result<OwnedObjectPath>;
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn rate(&self) -> zbus::Result<f64>;
    #[zbus(property)]
    fn unit(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn cancelable(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn started_at(&self) -> zbus::Result<u64>;

    #[zbus(signal)]
    fn message(&self, line: String) -> zbus::Result<()>;

    #[zbus(signal)]
    fn completed(&self, success: bool, message: String) -> zbus::Result<()>;
}
