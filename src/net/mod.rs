//! Networks: berth's own bridges, each machine's veth pair, addresses from berth's IPAM,
//! NAT and port forwards in one nftables table (`inet berth`), and a dnsmasq per bridge
//! for DHCP and DNS, run by systemd as a transient service.
//!
//! The daemon reaches the kernel only through the [`NetHost`] trait (links and addresses
//! over netlink in link.rs, the nftables table in nft.rs), so its logic is tested
//! against a fake; the types here are what it stores and what it asks for.
//!
//! - ipam.rs: subnets, the gateway, picking and checking addresses (pure logic)
//! - link.rs: netlink (rtnetlink): bridges, veth pairs, a machine's eth0, routes, stats
//! - nft.rs: the `inet berth` table, rebuilt whole from [`nft::Rules`] in one transaction
//! - dnsmasq.rs: the DHCP/DNS server of a bridge: its argv and its hosts files

pub mod dnsmasq;
pub mod ipam;
pub mod link;
pub mod nft;
#[cfg(test)]
pub(crate) mod testns;

use crate::error::{Error, Result};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The network berthd makes on its first start (lxc-net's lxcbr0).
pub const DEFAULT_NETWORK: &str = "berth0";
pub const DEFAULT_SUBNET: &str = "10.0.3.0/24";
/// Linux's limit for interface names (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// Prefix of every host-side veth berth makes.
pub const VETH_PREFIX: &str = "vb-";
/// Written as IFLA_IFALIAS on every link berth makes, followed by what it is for
/// ("network lab", "machine web"), so `ip link` maps a link back and berth never takes
/// an interface it did not make for its own.
pub const ALIAS_PREFIX: &str = "berth ";

/// How a machine reaches the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Its own network namespace with a loopback only.
    #[default]
    None,
    /// Its own namespace with `eth0`, the peer of a veth on a berth bridge.
    Bridge,
    /// The host's network namespace.
    Host,
}

impl NetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::None => "none",
            NetMode::Bridge => "bridge",
            NetMode::Host => "host",
        }
    }
}

impl FromStr for NetMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<NetMode, String> {
        match s {
            "none" => Ok(NetMode::None),
            "bridge" => Ok(NetMode::Bridge),
            "host" => Ok(NetMode::Host),
            other => Err(format!(
                "network mode {}: expected none, bridge or host",
                crate::names::shown(other)
            )),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Proto, String> {
        match s {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            other => Err(format!(
                "protocol {}: expected tcp or udp",
                crate::names::shown(other)
            )),
        }
    }
}

/// A host port whose connections go to a machine's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PortForward {
    pub proto: Proto,
    pub host_port: u16,
    pub machine_port: u16,
}

impl PortForward {
    /// A forward from its parts as D-Bus gives them (proto, host port, machine port).
    pub fn new(proto: &str, host_port: u32, machine_port: u32) -> Result<PortForward> {
        let proto: Proto = proto.parse().map_err(Error::InvalidArgument)?;
        let port = |what: &str, n: u32| {
            if (1..=65535).contains(&n) {
                Ok(n as u16)
            } else {
                Err(Error::InvalidArgument(format!(
                    "port forward {}:{host_port}:{machine_port}: {what} port {n} is not between 1 and 65535",
                    proto.as_str()
                )))
            }
        };
        Ok(PortForward {
            proto,
            host_port: port("host", host_port)?,
            machine_port: port("machine", machine_port)?,
        })
    }
}

impl std::fmt::Display for PortForward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.proto.as_str(),
            self.host_port,
            self.machine_port
        )
    }
}

/// `PROTO:HOSTPORT:MACHINEPORT`, or `HOSTPORT:MACHINEPORT` for tcp, or `PORT` for the
/// same port on both sides (nspawn's --port).
impl FromStr for PortForward {
    type Err = Error;
    fn from_str(s: &str) -> Result<PortForward> {
        let parts: Vec<&str> = s.split(':').collect();
        let (proto, host, machine) = match parts.as_slice() {
            [p, h, m] => (*p, *h, *m),
            [h, m] => ("tcp", *h, *m),
            [p] => ("tcp", *p, *p),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "port forward {}: expected PROTO:HOSTPORT:MACHINEPORT",
                    crate::names::shown(s)
                )));
            }
        };
        let num = |x: &str| {
            x.parse::<u32>().map_err(|_| {
                Error::InvalidArgument(format!(
                    "port forward {}: {} is not a port number",
                    crate::names::shown(s),
                    crate::names::shown(x)
                ))
            })
        };
        PortForward::new(proto, num(host)?, num(machine)?)
    }
}

/// A machine's network settings (the `[network]` table of its config.toml).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MachineNet {
    #[serde(default)]
    pub mode: NetMode,
    /// The berth network a bridged machine joins (its bridge has the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Its IPv4 address and the network's prefix: its lease, held for as long as the
    /// machine exists on that network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Net>,
    /// The user chose the address (kept as it is), rather than berth's IPAM.
    #[serde(default)]
    pub static_address: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortForward>,
}

/// What a caller asks of a machine's network (CreateMachine's or SetNetwork's options);
/// what is not given keeps what the machine has (the defaults for a new one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetRequest {
    pub mode: Option<NetMode>,
    pub bridge: Option<String>,
    pub address: Option<String>,
    pub ports: Option<Vec<PortForward>>,
}

impl NetRequest {
    /// Whether it asks for something only a bridged machine has.
    pub fn wants_bridge(&self) -> bool {
        self.bridge.is_some() || self.address.is_some() || self.ports.is_some()
    }
}

/// What a caller asks of a new network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkOptions {
    /// None: the first free 10.0.N.0/24.
    pub subnet: Option<String>,
    pub nat: Option<bool>,
    pub dhcp: Option<bool>,
}

/// A berth network, `networks/NAME.toml`. Its bridge is named as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NetworkConfig {
    pub name: String,
    pub subnet: Ipv4Net,
    /// Masquerade the subnet out of the host's default route.
    #[serde(default = "yes")]
    pub nat: bool,
    /// Run dnsmasq on the bridge for DHCP (its DNS runs either way).
    #[serde(default = "yes")]
    pub dhcp: bool,
    /// µs since the epoch.
    #[serde(default)]
    pub created_at: u64,
}

fn yes() -> bool {
    true
}

impl NetworkConfig {
    /// The bridge's own address, the machines' gateway: the subnet's first host.
    pub fn gateway(&self) -> Ipv4Addr {
        ipam::gateway(&self.subnet)
    }

    /// The gateway with the subnet's prefix, as the bridge carries it.
    pub fn gateway_net(&self) -> Ipv4Net {
        Ipv4Net::new(self.gateway(), self.subnet.prefix_len()).expect("prefix of a subnet")
    }

    pub fn bridge(&self) -> &str {
        &self.name
    }
}

/// A network's name is its bridge's: 1 to 15 characters an interface name may have.
pub fn validate_network_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let problem = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.len() > IFNAME_MAX {
        Some(format!(
            "is {} characters long; a bridge's name has at most {IFNAME_MAX}",
            name.len()
        ))
    } else if !name.chars().all(ok_char) {
        Some("may hold only letters, digits, '-', '_' and '.'".to_string())
    } else if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Some("must start with a letter".to_string())
    } else if name.starts_with(VETH_PREFIX) {
        Some(format!(
            "must not start with {VETH_PREFIX}, berth's veth prefix"
        ))
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::InvalidName(format!(
            "network name {} {p}",
            crate::names::shown(name)
        ))),
        None => Ok(()),
    }
}

/// FNV-1a: a stable hash for names (MACs, shortened interface names); not for secrets.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The host side of a machine's veth: `vb-NAME`, or when that is too long for an
/// interface, `vb-` + the name's first 7 characters + `-` + 4 hex digits of its hash, so
/// two long names with one beginning still differ. The link's alias names the machine.
pub fn host_veth_name(machine: &str) -> String {
    let full = format!("{VETH_PREFIX}{machine}");
    if full.len() <= IFNAME_MAX {
        return full;
    }
    let head: String = machine.chars().take(7).collect();
    format!(
        "{VETH_PREFIX}{head}-{:04x}",
        fnv1a(machine.as_bytes()) & 0xffff
    )
}

/// A locally administered unicast MAC that is the same every time for `what`, so a
/// machine keeps its DHCP lease and the bridge its address across restarts.
pub fn stable_mac(what: &str) -> [u8; 6] {
    let h = fnv1a(format!("berth:{what}").as_bytes()).to_be_bytes();
    [(h[0] & 0xfe) | 0x02, h[1], h[2], h[3], h[4], h[5]]
}

/// The MAC of a machine's eth0.
pub fn machine_mac(machine: &str) -> [u8; 6] {
    stable_mac(&format!("machine/{machine}/eth0"))
}

/// The MAC of a machine's host-side veth.
pub fn host_mac(machine: &str) -> [u8; 6] {
    stable_mac(&format!("machine/{machine}/host"))
}

/// The MAC of a network's bridge (else it takes its lowest port's and changes with it).
pub fn bridge_mac(network: &str) -> [u8; 6] {
    stable_mac(&format!("network/{network}"))
}

pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A bridge to make (or find) with its address, up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeSpec {
    pub name: String,
    pub mac: [u8; 6],
    /// The gateway address with the subnet's prefix.
    pub address: Ipv4Net,
    /// IFLA_IFALIAS: `berth network NAME`.
    pub alias: String,
}

/// A machine's veth pair: the host side on `bridge`, the other side moved into the
/// network namespace of `pid` and set up there as `eth0` with its address and a default
/// route via `gateway`; the namespace's loopback comes up too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VethSpec {
    pub host_name: String,
    pub host_mac: [u8; 6],
    /// IFLA_IFALIAS of the host side: `berth machine NAME`.
    pub alias: String,
    pub bridge: String,
    pub pid: u32,
    pub machine_mac: [u8; 6],
    pub address: Ipv4Net,
    pub gateway: Ipv4Addr,
}

/// What berth needs to know of an existing interface before it uses the name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    /// IFLA_IFALIAS; berth's links have one starting with [`ALIAS_PREFIX`].
    pub alias: Option<String>,
    /// The link kind (bridge, veth, dummy...), when the kernel tells.
    pub kind: Option<String>,
}

impl LinkInfo {
    pub fn is_berths(&self) -> bool {
        self.alias
            .as_deref()
            .is_some_and(|a| a.starts_with(ALIAS_PREFIX))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// What berth asks of the host's network stack. [`Kernel`] is the real one.
#[async_trait::async_trait]
pub trait NetHost: Send + Sync {
    /// The IPv4 destinations of the host's routes (main table), to refuse a subnet that
    /// overlaps one. The default route (0.0.0.0/0) is left out.
    async fn routes(&self) -> Result<Vec<Ipv4Net>>;
    /// The link of that name, if there is one.
    async fn link(&self, name: &str) -> Result<Option<LinkInfo>>;
    /// Makes the bridge (or takes the one berth made earlier), gives it its MAC, alias and
    /// address, lets it route 127.0.0.1 (forwards from the host's loopback), brings it up.
    async fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<()>;
    /// Makes the veth pair of a starting machine (see [`VethSpec`]).
    async fn add_veth(&self, spec: &VethSpec) -> Result<()>;
    /// Deletes a link; one that is not there is fine.
    async fn remove_link(&self, name: &str) -> Result<()>;
    /// Byte and packet counters of a link, as `ip -s link` shows them.
    fn link_stats(&self, name: &str) -> Option<LinkStats>;
    /// Replaces the whole `inet berth` table with `rules` in one transaction (and
    /// deletes it when `rules` is empty); other tables are never touched.
    async fn apply_rules(&self, rules: &nft::Rules) -> Result<()>;
    /// Whether some process of the host listens on (or holds) that port.
    fn port_in_use(&self, proto: Proto, port: u16) -> bool;
    /// Turns IPv4 forwarding on (NAT needs it); berth never turns it off, as other
    /// software may rely on it once it is on.
    fn enable_forwarding(&self) -> Result<()>;
}

/// The host's real network stack.
pub struct Kernel;

#[async_trait::async_trait]
impl NetHost for Kernel {
    async fn routes(&self) -> Result<Vec<Ipv4Net>> {
        link::routes().await
    }
    async fn link(&self, name: &str) -> Result<Option<LinkInfo>> {
        link::find(name).await
    }
    async fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<()> {
        link::ensure_bridge(spec).await
    }
    async fn add_veth(&self, spec: &VethSpec) -> Result<()> {
        link::add_veth(spec).await
    }
    async fn remove_link(&self, name: &str) -> Result<()> {
        link::remove(name).await
    }
    fn link_stats(&self, name: &str) -> Option<LinkStats> {
        link::stats(name)
    }
    async fn apply_rules(&self, rules: &nft::Rules) -> Result<()> {
        nft::apply(rules).await
    }
    fn port_in_use(&self, proto: Proto, port: u16) -> bool {
        link::port_in_use(proto, port)
    }
    fn enable_forwarding(&self) -> Result<()> {
        link::enable_forwarding()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_and_differ() {
        assert_eq!(host_veth_name("web"), "vb-web");
        assert_eq!(host_veth_name("twelve-chars"), "vb-twelve-chars");
        let a = host_veth_name("a-very-long-machine-name-1");
        let b = host_veth_name("a-very-long-machine-name-2");
        assert!(a.len() <= IFNAME_MAX && b.len() <= IFNAME_MAX, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.starts_with("vb-a-very"));
    }

    #[test]
    fn macs_are_stable_local_unicast() {
        let m = machine_mac("web");
        assert_eq!(m, machine_mac("web"));
        assert_ne!(m, machine_mac("db"));
        assert_ne!(m, host_mac("web"));
        assert_eq!(m[0] & 0x01, 0, "unicast");
        assert_eq!(m[0] & 0x02, 0x02, "locally administered");
        assert_eq!(mac_string(&[2, 0, 0xab, 1, 2, 3]), "02:00:ab:01:02:03");
    }

    #[test]
    fn port_forwards_parse_and_refuse_bad_ports() {
        let p: PortForward = "tcp:8080:80".parse().unwrap();
        assert_eq!(
            (p.proto, p.host_port, p.machine_port),
            (Proto::Tcp, 8080, 80)
        );
        assert_eq!(
            "udp:5353:53".parse::<PortForward>().unwrap().proto,
            Proto::Udp
        );
        assert_eq!("8080:80".parse::<PortForward>().unwrap().host_port, 8080);
        assert_eq!("22".parse::<PortForward>().unwrap().machine_port, 22);
        for bad in [
            "tcp:0:80",
            "tcp:70000:80",
            "tcp:80:0",
            "sctp:1:1",
            "tcp:x:1",
            "a:b:c:d",
        ] {
            let e = bad.parse::<PortForward>().unwrap_err().to_string();
            assert!(!e.is_empty(), "{bad}");
        }
        let e = "tcp:70000:80"
            .parse::<PortForward>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("70000"), "{e}");
        assert_eq!(p.to_string(), "tcp:8080:80");
    }

    #[test]
    fn network_names() {
        validate_network_name("berth0").unwrap();
        validate_network_name("lab").unwrap();
        for bad in ["", "sixteen-chars-xx", "0lab", "la b", "vb-x", "a/b"] {
            assert!(validate_network_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn network_config_round_trips() {
        let n = NetworkConfig {
            name: "lab".into(),
            subnet: "10.77.0.0/24".parse().unwrap(),
            nat: false,
            dhcp: true,
            created_at: 1,
        };
        let text = toml::to_string(&n).unwrap();
        assert_eq!(toml::from_str::<NetworkConfig>(&text).unwrap(), n);
        assert_eq!(n.gateway(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(n.gateway_net().to_string(), "10.77.0.1/24");
    }
}
