//! Networks and a machine's place on one: create and remove berth networks, bring them
//! up when berthd starts, hand out leases and port forwards (checked against every
//! other machine), plug a starting machine's veth in and unplug it when it ends, keep
//! dnsmasq's hosts and the `inet berth` table in step. The how of each step is in
//! src/net/.

use super::machine::Machine;
use super::{Daemon, Event, now_usec};
use crate::error::{Error, IoContext, Result};
use crate::net::{
    self, BridgeSpec, DEFAULT_NETWORK, MachineNet, NetMode, NetRequest, NetworkConfig,
    NetworkOptions, PortForward, VethSpec, dnsmasq, ipam, nft,
};
use crate::revert::Revert;
use crate::store;
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use tracing::{info, warn};

/// Marks that berthd made its default network once: a user who removes berth0 keeps it
/// removed.
const DEFAULTS_MADE: &str = ".default-made";

/// What a machine being created (or changed) holds until its config is registered.
#[derive(Clone, Debug)]
pub(super) struct PendingNet {
    machine: String,
    net: MachineNet,
}

/// Releases a pending lease when creation ends either way.
pub struct LeaseReservation {
    daemon: Arc<Daemon>,
    machine: String,
}

impl Drop for LeaseReservation {
    fn drop(&mut self) {
        self.daemon
            .pending_net
            .lock()
            .expect("pending net lock")
            .retain(|p| p.machine != self.machine);
    }
}

impl Daemon {
    pub fn networks(&self) -> Vec<NetworkConfig> {
        self.networks
            .lock()
            .expect("networks lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn network(&self, name: &str) -> Result<NetworkConfig> {
        self.networks
            .lock()
            .expect("networks lock")
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchNetwork(name.to_string()))
    }

    /// Machines configured on the network, running or not.
    pub fn network_machines(&self, network: &str) -> Vec<Arc<Machine>> {
        self.machines()
            .into_iter()
            .filter(|m| m.with_config(|c| on_network(&c.network, network)))
            .collect()
    }

    pub async fn create_network(
        self: &Arc<Self>,
        name: &str,
        opts: NetworkOptions,
    ) -> Result<NetworkConfig> {
        net::validate_network_name(name)?;
        let _net = self.net_lock.lock().await;
        if self.network(name).is_ok() {
            return Err(Error::NetworkExists(name.to_string()));
        }
        if let Some(link) = self.net.link(name).await?
            && !link.is_berths()
        {
            return Err(Error::InvalidArgument(format!(
                "an interface named {name} exists and is not berth's; pick another network name"
            )));
        }
        let routes = self.net.routes().await?;
        let others: Vec<(String, Ipv4Net)> = self
            .networks()
            .into_iter()
            .map(|n| (n.name, n.subnet))
            .collect();
        let subnet = match &opts.subnet {
            Some(s) => {
                let subnet = ipam::parse_subnet(s)?;
                ipam::check_overlaps(&subnet, &routes, &others)?;
                subnet
            }
            None => free_subnet(&routes, &others)?,
        };
        let cfg = NetworkConfig {
            name: name.to_string(),
            subnet,
            nat: opts.nat.unwrap_or(true),
            dhcp: opts.dhcp.unwrap_or(true),
            created_at: now_usec(),
        };
        self.add_network(cfg.clone()).await?;
        info!(
            "network {name}: created, {} (nat {}, dhcp {})",
            cfg.subnet, cfg.nat, cfg.dhcp
        );
        Ok(cfg)
    }

    /// Saves, brings up and registers a network; on failure nothing of it is left.
    async fn add_network(self: &Arc<Self>, cfg: NetworkConfig) -> Result<()> {
        let mut revert = Revert::new();
        let file = network_file(&self.paths.networks_dir(), &cfg.name);
        let text = toml::to_string(&cfg).map_err(|e| Error::failed("cannot encode", e))?;
        revert
            .check(store::write_atomic(&file, text.as_bytes()))
            .await?;
        let undo_file = file.clone();
        revert.add("remove the network's file", async move {
            std::fs::remove_file(&undo_file).at("cannot remove", &undo_file)
        });
        let daemon = self.clone();
        let undo = cfg.clone();
        revert.add("take the network down", async move {
            daemon.take_down(&undo).await
        });
        revert.check(self.bring_up(&cfg).await).await?;
        self.networks
            .lock()
            .expect("networks lock")
            .insert(cfg.name.clone(), cfg.clone());
        if let Err(e) = self.sync_rules().await {
            self.networks
                .lock()
                .expect("networks lock")
                .remove(&cfg.name);
            return Err(revert.rollback(e).await);
        }
        revert.commit();
        self.emit(Event::NetworkAdded(cfg.name.clone()));
        Ok(())
    }

    /// Removes a network no running machine uses. Stopped machines on it keep their
    /// settings and are refused at start until they are moved (berthctl set).
    pub async fn remove_network(self: &Arc<Self>, name: &str) -> Result<()> {
        let _net = self.net_lock.lock().await;
        let cfg = self.network(name)?;
        let running: Vec<String> = self
            .network_machines(name)
            .iter()
            .filter(|m| m.state().is_active())
            .map(|m| m.name.clone())
            .collect();
        if !running.is_empty() {
            return Err(Error::InvalidState(format!(
                "network {name} is in use by running machine{} {}; stop {} first",
                if running.len() == 1 { "" } else { "s" },
                running.join(", "),
                if running.len() == 1 { "it" } else { "them" }
            )));
        }
        self.networks.lock().expect("networks lock").remove(name);
        let mut problems = Vec::new();
        if let Err(e) = self.sync_rules().await {
            problems.push(e.to_string());
        }
        if let Err(e) = self.take_down(&cfg).await {
            problems.push(e.to_string());
        }
        let file = network_file(&self.paths.networks_dir(), name);
        if let Err(e) = std::fs::remove_file(&file)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(Error::io("cannot remove", &file, e).to_string());
        }
        self.emit(Event::NetworkRemoved(name.to_string()));
        if !problems.is_empty() {
            return Err(Error::Failed(format!(
                "network {name} removed, but cleaning up failed: {}",
                problems.join("; ")
            )));
        }
        info!("network {name}: removed");
        Ok(())
    }

    /// The bridge with its address, and its dnsmasq. Idempotent: berthd runs it for
    /// every network at each start.
    async fn bring_up(&self, cfg: &NetworkConfig) -> Result<()> {
        self.net
            .ensure_bridge(&BridgeSpec {
                name: cfg.bridge().to_string(),
                mac: net::bridge_mac(&cfg.name),
                address: cfg.gateway_net(),
                alias: format!("{}network {}", net::ALIAS_PREFIX, cfg.name),
            })
            .await?;
        if cfg.nat {
            self.net.enable_forwarding()?;
        }
        self.write_dns_files(cfg)?;
        let files = dnsmasq::files_dir(&self.paths.dns_dir(), &cfg.name);
        self.systemd
            .start_service(&crate::systemd::ServiceSpec {
                unit: dnsmasq::unit_name(&cfg.name),
                description: format!("berth network {}: DHCP and DNS", cfg.name),
                argv: dnsmasq::argv(cfg, &files)?,
            })
            .await
    }

    async fn take_down(&self, cfg: &NetworkConfig) -> Result<()> {
        self.systemd
            .stop_unit(&dnsmasq::unit_name(&cfg.name))
            .await?;
        self.net.remove_link(cfg.bridge()).await?;
        let files = dnsmasq::files_dir(&self.paths.dns_dir(), &cfg.name);
        match std::fs::remove_dir_all(&files) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("cannot remove", &files, e))
            }
            _ => Ok(()),
        }
    }

    fn write_dns_files(&self, cfg: &NetworkConfig) -> Result<()> {
        let leases: Vec<dnsmasq::Lease> = self
            .network_machines(&cfg.name)
            .iter()
            .filter_map(|m| {
                let net = m.config().network;
                net.address.map(|a| dnsmasq::Lease {
                    name: m.config().hostname.clone(),
                    mac: net::machine_mac(&m.name),
                    address: a.addr(),
                })
            })
            .collect();
        let host_name = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "host".into());
        let files = dnsmasq::files_dir(&self.paths.dns_dir(), &cfg.name);
        dnsmasq::write_files(&files, cfg, &host_name, &leases)
    }

    /// Tells a network's dnsmasq about its machines again (after a create, remove or
    /// change); a failure is logged, as the machine itself is fine.
    pub(super) async fn refresh_dns(&self, network: Option<&str>) {
        let Some(cfg) = network.and_then(|n| self.network(n).ok()) else {
            return;
        };
        if let Err(e) = self.write_dns_files(&cfg) {
            warn!("network {}: cannot write dnsmasq's hosts: {e}", cfg.name);
            return;
        }
        if let Err(e) = self
            .systemd
            .kill_all(&dnsmasq::unit_name(&cfg.name), libc::SIGHUP)
            .await
        {
            warn!("network {}: cannot tell dnsmasq: {e}", cfg.name);
        }
    }

    /// Rebuilds the `inet berth` table from the networks and the forwards of running
    /// machines. One at a time, so the last state always wins.
    pub(super) async fn sync_rules(&self) -> Result<()> {
        let _rules = self.rules_lock.lock().await;
        let rules = nft::Rules {
            networks: self
                .networks()
                .into_iter()
                .map(|n| nft::NetworkRules {
                    bridge: n.bridge().to_string(),
                    subnet: n.subnet,
                    nat: n.nat,
                })
                .collect(),
            forwards: self
                .forwards
                .lock()
                .expect("forwards lock")
                .values()
                .flatten()
                .cloned()
                .collect(),
        };
        self.net.apply_rules(&rules).await
    }

    /// At berthd's start: its networks up (berth0 made on the very first start), and the
    /// forwards of machines that kept running while it was away back in the table.
    pub(super) async fn load_networks(self: &Arc<Self>) {
        let dir = self.paths.networks_dir();
        let mut found = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(name) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".toml"))
                    .filter(|n| !n.starts_with('.'))
                    .map(str::to_string)
                else {
                    continue;
                };
                match read_network(&path, &name) {
                    Ok(cfg) => {
                        found.insert(name, cfg);
                    }
                    Err(e) => warn!("ignoring network {name}: {e}"),
                }
            }
        }
        for cfg in found.values() {
            if let Err(e) = self.bring_up(cfg).await {
                warn!("network {}: cannot bring it up: {e}", cfg.name);
            }
        }
        let names: Vec<String> = found.keys().cloned().collect();
        *self.networks.lock().expect("networks lock") = found;
        for name in names {
            self.emit(Event::NetworkAdded(name));
        }
        if !dir.join(DEFAULTS_MADE).exists() {
            self.make_default_network().await;
        }
        for m in self.machines() {
            if m.state().is_active() {
                self.plug_forwards(&m);
            }
        }
        if let Err(e) = self.sync_rules().await {
            warn!("cannot set up the nftables table inet berth: {e}");
        }
    }

    async fn make_default_network(self: &Arc<Self>) {
        let opts = NetworkOptions {
            subnet: Some(self.paths.default_subnet.clone()),
            ..Default::default()
        };
        match self.create_network(DEFAULT_NETWORK, opts).await {
            Ok(_) | Err(Error::NetworkExists(_)) => {}
            Err(e) => {
                // Left for the next start: the subnet may be free then, or the admin
                // sets default-subnet in berthd.toml.
                warn!("cannot make the default network {DEFAULT_NETWORK}: {e}");
                return;
            }
        }
        let marker = self.paths.networks_dir().join(DEFAULTS_MADE);
        if let Err(e) = std::fs::write(&marker, b"") {
            warn!("cannot write {}: {e}", marker.display());
        }
    }

    /// The network settings a machine gets from `req` on top of `current` (a new
    /// machine's defaults when None): the mode, its network, a lease (kept when it
    /// stays on the same network, checked when the user names one, else the lowest
    /// free) and its port forwards (not held by another machine nor by a host process).
    /// Held as pending until the returned reservation drops.
    pub(super) fn net_for(
        self: &Arc<Self>,
        machine: &str,
        req: &NetRequest,
        current: Option<&MachineNet>,
    ) -> Result<(MachineNet, LeaseReservation)> {
        let mut net = current.cloned().unwrap_or_default();
        let mode = match req.mode {
            Some(m) => m,
            None if req.wants_bridge() => NetMode::Bridge,
            None => net.mode,
        };
        if mode != NetMode::Bridge {
            if req.wants_bridge() {
                return Err(Error::InvalidArgument(format!(
                    "a bridge, an address and port forwards need Network bridge, not {}",
                    mode.as_str()
                )));
            }
            net = MachineNet {
                mode,
                ..Default::default()
            };
        } else {
            let bridge = req
                .bridge
                .clone()
                .or(net.bridge.clone())
                .unwrap_or_else(|| DEFAULT_NETWORK.to_string());
            let network = self.network(&bridge).map_err(|e| match e {
                Error::NoSuchNetwork(_) => Error::InvalidArgument(format!(
                    "no network named {bridge:?} (berthctl network list shows them; berthctl network create makes one)"
                )),
                e => e,
            })?;
            let moved = net.mode != NetMode::Bridge || net.bridge.as_deref() != Some(&bridge);
            let pending = self.pending_net.lock().expect("pending net lock");
            let others: Vec<(String, MachineNet)> = self
                .machines()
                .iter()
                .filter(|m| m.name != machine)
                .map(|m| (m.name.clone(), m.config().network))
                .chain(
                    pending
                        .iter()
                        .filter(|p| p.machine != machine)
                        .map(|p| (p.machine.clone(), p.net.clone())),
                )
                .collect();
            let taken: Vec<(String, Ipv4Addr)> = others
                .iter()
                .filter(|(_, n)| on_network(n, &bridge))
                .filter_map(|(name, n)| n.address.map(|a| (name.clone(), a.addr())))
                .collect();
            let (address, static_address) = match &req.address {
                Some(a) => (ipam::check_static(&network.subnet, a, &taken)?, true),
                None => match net.address {
                    Some(a) if !moved && network.subnet.contains(&a.addr()) => {
                        (a, net.static_address)
                    }
                    _ => {
                        let addrs: Vec<Ipv4Addr> = taken.iter().map(|(_, a)| *a).collect();
                        (ipam::pick(&network.subnet, &addrs)?, false)
                    }
                },
            };
            let ports = req.ports.clone().unwrap_or(net.ports.clone());
            check_ports(&ports, &others)?;
            for p in &ports {
                // A forward this machine already has is not "in use" by someone else
                // only while the machine runs; it is stopped here.
                if self.net.port_in_use(p.proto, p.host_port) {
                    return Err(Error::InvalidArgument(format!(
                        "port forward {p}: host port {} {} is in use by a process of the host",
                        p.proto.as_str(),
                        p.host_port
                    )));
                }
            }
            net = MachineNet {
                mode,
                bridge: Some(bridge),
                address: Some(address),
                static_address,
                ports,
            };
            drop(pending);
        }
        self.pending_net
            .lock()
            .expect("pending net lock")
            .push(PendingNet {
                machine: machine.to_string(),
                net: net.clone(),
            });
        Ok((
            net,
            LeaseReservation {
                daemon: self.clone(),
                machine: machine.to_string(),
            },
        ))
    }

    /// The network settings of a copy (clone, restore as, import): the same mode and
    /// network with a lease of its own and no port forwards (they are the original's);
    /// a network this host does not have leaves the copy unplugged (`none`).
    pub(super) async fn copied_network(
        self: &Arc<Self>,
        machine: &str,
        from: &MachineNet,
    ) -> Result<(MachineNet, LeaseReservation)> {
        let mut net = MachineNet {
            address: None,
            static_address: false,
            ports: Vec::new(),
            ..from.clone()
        };
        if net.mode == NetMode::Bridge
            && self
                .network(net.bridge.as_deref().unwrap_or_default())
                .is_err()
        {
            warn!(
                "machine {machine}: network {} does not exist here; the copy gets Network none",
                net.bridge.as_deref().unwrap_or_default()
            );
            net = MachineNet::default();
        }
        if !from.ports.is_empty() {
            info!("machine {machine}: the original's port forwards are not copied");
        }
        let _net = self.net_lock.lock().await;
        self.net_for(machine, &NetRequest::default(), Some(&net))
    }

    /// Changes a stopped machine's network settings.
    pub async fn set_network(self: &Arc<Self>, name: &str, req: NetRequest) -> Result<()> {
        let (m, _op) = self.locked(name).await?;
        m.usable()?;
        if m.state().is_active() {
            return Err(Error::InvalidState(format!(
                "machine {name} is {}; its network can be changed only while it is stopped",
                m.state().as_str()
            )));
        }
        let _net = self.net_lock.lock().await;
        let mut cfg = m.config();
        let old = cfg.network.bridge.clone();
        let (net, _lease) = self.net_for(name, &req, Some(&cfg.network))?;
        cfg.network = net;
        store::save_config(&m.dir, &cfg)?;
        let new = cfg.network.bridge.clone();
        m.set_config(cfg);
        self.emit(Event::NetworkChanged(name.to_string()));
        self.refresh_dns(old.as_deref()).await;
        if new != old {
            self.refresh_dns(new.as_deref()).await;
        }
        info!("machine {name}: network settings changed");
        Ok(())
    }

    /// What a starting machine's PID 1 is told about its network: its mode and its
    /// /etc/resolv.conf. Refuses early what would fail later: a bridged machine whose
    /// network is gone or whose host ports are taken.
    pub(super) fn net_plan(&self, m: &Machine) -> Result<(NetMode, Option<String>)> {
        let net = m.config().network;
        match net.mode {
            NetMode::None => Ok((NetMode::None, None)),
            NetMode::Host => Ok((
                NetMode::Host,
                std::fs::read_to_string("/etc/resolv.conf").ok(),
            )),
            NetMode::Bridge => {
                let bridge = net.bridge.clone().unwrap_or_default();
                let network = self.network(&bridge).map_err(|_| {
                    Error::InvalidState(format!(
                        "machine {} is on network {bridge}, which no longer exists; move it with berthctl set {} --bridge NETWORK",
                        m.name, m.name
                    ))
                })?;
                if !net
                    .address
                    .is_some_and(|a| network.subnet.contains(&a.addr()))
                {
                    return Err(Error::InvalidState(format!(
                        "machine {} has no address on network {bridge} ({}); give it one with berthctl set {} --bridge {bridge}",
                        m.name, network.subnet, m.name
                    )));
                }
                for p in &net.ports {
                    if self.net.port_in_use(p.proto, p.host_port) {
                        return Err(Error::InvalidState(format!(
                            "machine {}: host port {} {} of its forward {p} is in use by a process of the host",
                            m.name,
                            p.proto.as_str(),
                            p.host_port
                        )));
                    }
                }
                Ok((
                    NetMode::Bridge,
                    Some(format!(
                        "# berth: the DNS of network {bridge}\nnameserver {}\n",
                        network.gateway()
                    )),
                ))
            }
        }
    }

    /// Plugs a starting bridged machine in: its veth (PID 1 waits in its namespace),
    /// then its forwards; each step undone by `revert` if the start fails later.
    pub(super) async fn plug(
        self: &Arc<Self>,
        m: &Machine,
        pid: u32,
        revert: &mut Revert,
    ) -> Result<()> {
        let net = m.config().network;
        if net.mode != NetMode::Bridge {
            return Ok(());
        }
        let bridge = net.bridge.clone().unwrap_or_default();
        let network = self.network(&bridge)?;
        let address = net
            .address
            .ok_or_else(|| Error::Failed(format!("machine {} has no address", m.name)))?;
        let host_name = net::host_veth_name(&m.name);
        let spec = VethSpec {
            host_name: host_name.clone(),
            host_mac: net::host_mac(&m.name),
            alias: format!("{}machine {}", net::ALIAS_PREFIX, m.name),
            bridge: bridge.clone(),
            pid,
            machine_mac: net::machine_mac(&m.name),
            address,
            gateway: network.gateway(),
        };
        revert.check(self.net.add_veth(&spec).await).await?;
        let daemon = self.clone();
        revert.add("remove the machine's veth", async move {
            daemon.net.remove_link(&host_name).await
        });
        if !net.ports.is_empty() {
            self.plug_forwards(m);
            let daemon = self.clone();
            let name = m.name.clone();
            revert.add("remove the machine's port forwards", async move {
                daemon.forwards.lock().expect("forwards lock").remove(&name);
                daemon.sync_rules().await
            });
            revert.check(self.sync_rules().await).await?;
        }
        Ok(())
    }

    /// Records a running machine's forwards for the table (sync_rules applies them).
    fn plug_forwards(&self, m: &Machine) {
        let net = m.config().network;
        let (Some(bridge), Some(address)) = (net.bridge, net.address) else {
            return;
        };
        if net.mode != NetMode::Bridge || net.ports.is_empty() {
            return;
        }
        let forwards = net
            .ports
            .iter()
            .map(|p| nft::Forward {
                machine: m.name.clone(),
                forward: *p,
                address: address.addr(),
                bridge: bridge.clone(),
            })
            .collect();
        self.forwards
            .lock()
            .expect("forwards lock")
            .insert(m.name.clone(), forwards);
    }

    /// Unplugs a machine that ended: its forwards out of the table, its veth gone (the
    /// kernel removes it with the namespace; this catches one that outlived it).
    pub(super) async fn unplug(&self, m: &Machine) {
        if m.config().network.mode != NetMode::Bridge {
            return;
        }
        let had = self
            .forwards
            .lock()
            .expect("forwards lock")
            .remove(&m.name)
            .is_some();
        if had && let Err(e) = self.sync_rules().await {
            warn!("machine {}: cannot remove its port forwards: {e}", m.name);
        }
        if let Err(e) = self.net.remove_link(&net::host_veth_name(&m.name)).await {
            warn!("machine {}: cannot remove its veth: {e}", m.name);
        }
    }

    /// The host side of a running bridged machine: its veth's name and counters.
    pub fn host_interface(&self, m: &Machine) -> Option<String> {
        (m.state().is_active() && m.with_config(|c| c.network.mode == NetMode::Bridge))
            .then(|| net::host_veth_name(&m.name))
    }

    pub fn link_stats(&self, m: &Machine) -> Option<net::LinkStats> {
        self.host_interface(m)
            .and_then(|name| self.net.link_stats(&name))
    }
}

fn on_network(net: &MachineNet, network: &str) -> bool {
    net.mode == NetMode::Bridge && net.bridge.as_deref() == Some(network)
}

/// Refuses a forward listed twice, or a host port another machine forwards.
fn check_ports(ports: &[PortForward], others: &[(String, MachineNet)]) -> Result<()> {
    for (i, p) in ports.iter().enumerate() {
        if ports[..i]
            .iter()
            .any(|q| q.proto == p.proto && q.host_port == p.host_port)
        {
            return Err(Error::InvalidArgument(format!(
                "port forward {p}: host port {} {} is given twice",
                p.proto.as_str(),
                p.host_port
            )));
        }
        if let Some((owner, _)) = others.iter().find(|(_, n)| {
            n.ports
                .iter()
                .any(|q| q.proto == p.proto && q.host_port == p.host_port)
        }) {
            return Err(Error::InvalidArgument(format!(
                "port forward {p}: host port {} {} is already forwarded to machine {owner}",
                p.proto.as_str(),
                p.host_port
            )));
        }
    }
    Ok(())
}

/// The first 10.0.N.0/24 (N from 4) that overlaps no route and no berth network.
fn free_subnet(routes: &[Ipv4Net], others: &[(String, Ipv4Net)]) -> Result<Ipv4Net> {
    (4..=254u8)
        .map(|n| Ipv4Net::new(Ipv4Addr::new(10, 0, n, 0), 24).expect("a /24"))
        .find(|s| ipam::check_overlaps(s, routes, others).is_ok())
        .ok_or_else(|| {
            Error::Failed("no free 10.0.N.0/24 subnet is left; give one with --subnet".into())
        })
}

fn network_file(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("{name}.toml"))
}

fn read_network(path: &Path, name: &str) -> Result<NetworkConfig> {
    let text = std::fs::read_to_string(path).at("cannot read", path)?;
    let cfg: NetworkConfig = toml::from_str(&text)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
    if cfg.name != name {
        return Err(Error::InvalidArgument(format!(
            "{} names network {:?}; the file's name is the network's",
            path.display(),
            cfg.name
        )));
    }
    net::validate_network_name(name)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bridged(bridge: &str, ports: &[&str]) -> MachineNet {
        MachineNet {
            mode: NetMode::Bridge,
            bridge: Some(bridge.into()),
            address: None,
            static_address: false,
            ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn ports_twice_or_held_by_another_machine_are_refused() {
        let others = vec![("db".to_string(), bridged("lab", &["tcp:5432:5432"]))];
        let p = |s: &str| s.parse::<PortForward>().unwrap();
        check_ports(&[p("tcp:8080:80"), p("udp:5432:53")], &others).unwrap();
        let e = check_ports(&[p("tcp:5432:1")], &others)
            .unwrap_err()
            .to_string();
        assert!(e.contains("already forwarded to machine db"), "{e}");
        let e = check_ports(&[p("tcp:80:80"), p("tcp:80:81")], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("given twice"), "{e}");
    }

    #[test]
    fn free_subnets_skip_routes_and_networks() {
        let routes: Vec<Ipv4Net> = vec!["10.0.4.0/24".parse().unwrap()];
        let others = vec![("x".to_string(), "10.0.5.0/24".parse().unwrap())];
        assert_eq!(
            free_subnet(&routes, &others).unwrap().to_string(),
            "10.0.6.0/24"
        );
    }
}
