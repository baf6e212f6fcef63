//! A bridge's DHCP and DNS server: dnsmasq (as lxc-net runs it), started by systemd as
//! the transient service `berth-dnsmasq-NETWORK.service`. Its leases follow berth's
//! IPAM (one dhcp-host line per machine: MAC, address, name) and it answers the names
//! of the network's machines and of the host; both files are re-read on SIGHUP.

use super::NetworkConfig;
use crate::error::Result;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// A machine dnsmasq knows: its eth0's MAC, its lease, its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
}

pub fn unit_name(network: &str) -> String {
    format!("berth-dnsmasq-{network}.service")
}

/// Where dnsmasq's files for `network` live under `dir` (readable by the user dnsmasq
/// drops to).
pub fn files_dir(dir: &Path, network: &str) -> PathBuf {
    dir.join(network)
}

/// dnsmasq's argv (argv[0] the binary's absolute path).
pub fn argv(net: &NetworkConfig, files: &Path) -> Result<Vec<String>> {
    let _ = (net, files);
    todo!("helper: dnsmasq")
}

/// Writes the hosts files dnsmasq reads (atomically), before a start or a SIGHUP.
pub fn write_files(
    files: &Path,
    net: &NetworkConfig,
    host_name: &str,
    leases: &[Lease],
) -> Result<()> {
    let _ = (files, net, host_name, leases);
    todo!("helper: dnsmasq")
}
