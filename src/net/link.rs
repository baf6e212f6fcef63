//! Links, addresses and routes over netlink (rtnetlink): berth's bridges, each machine's
//! veth pair and its eth0 inside the machine's network namespace.

use super::{BridgeSpec, LinkInfo, LinkStats, Proto, VethSpec};
use crate::error::Result;
use ipnet::Ipv4Net;

pub async fn routes() -> Result<Vec<Ipv4Net>> {
    todo!("helper: link")
}

pub async fn find(name: &str) -> Result<Option<LinkInfo>> {
    let _ = name;
    todo!("helper: link")
}

pub async fn ensure_bridge(spec: &BridgeSpec) -> Result<()> {
    let _ = spec;
    todo!("helper: link")
}

pub async fn add_veth(spec: &VethSpec) -> Result<()> {
    let _ = spec;
    todo!("helper: link")
}

pub async fn remove(name: &str) -> Result<()> {
    let _ = name;
    todo!("helper: link")
}

pub fn stats(name: &str) -> Option<LinkStats> {
    let _ = name;
    todo!("helper: link")
}

pub fn port_in_use(proto: Proto, port: u16) -> bool {
    let _ = (proto, port);
    todo!("helper: link")
}

pub fn enable_forwarding() -> Result<()> {
    todo!("helper: link")
}
