//! The `inet berth` nftables table: NAT for berth's networks and port forwards to
//! machines. It is always rebuilt whole from [`Rules`], in one transaction, so it can
//! never hold a rule for a machine or network that is gone; no other table is touched.

use super::PortForward;
use crate::error::Result;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

pub const TABLE: &str = "berth";

/// Everything the table holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub networks: Vec<NetworkRules>,
    pub forwards: Vec<Forward>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.forwards.is_empty()
    }
}

/// A berth network's part: masquerade when `nat`, and the masquerade of connections from
/// the host's loopback that a forward sends out of its bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub nat: bool,
}

/// One port forward of a running machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub machine: String,
    pub forward: PortForward,
    pub address: Ipv4Addr,
    pub bridge: String,
}

/// Replaces the table with `rules` (deletes it when they are empty).
pub async fn apply(rules: &Rules) -> Result<()> {
    let _ = rules;
    todo!("helper: nft")
}
