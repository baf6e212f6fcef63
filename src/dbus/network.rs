//! org.berth.Berth1.Network, one object per berth network at
//! /org/berth/Berth1/network/NAME.

use super::auth::{Action, authorize};
use super::error::Result;
use crate::daemon::Daemon;
use crate::names;
use crate::net::NetworkConfig;
use std::sync::Arc;
use zbus::message::Header;
use zbus::zvariant::OwnedObjectPath;
use zbus::{Connection, interface};

pub struct NetworkIface {
    daemon: Arc<Daemon>,
    name: String,
}

pub fn network_path(name: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(names::network_object_path(name)).expect("escaped paths are valid")
}

pub async fn register(conn: &Connection, daemon: &Arc<Daemon>, name: &str) -> zbus::Result<()> {
    conn.object_server()
        .at(
            &network_path(name),
            NetworkIface {
                daemon: daemon.clone(),
                name: name.to_string(),
            },
        )
        .await
        .map(|_| ())
}

pub async fn unregister(conn: &Connection, name: &str) -> zbus::Result<()> {
    conn.object_server()
        .remove::<NetworkIface, _>(&network_path(name))
        .await
        .map(|_| ())
}

impl NetworkIface {
    fn config(&self) -> Option<NetworkConfig> {
        self.daemon.network(&self.name).ok()
    }
}

#[interface(name = "org.berth.Berth1.Network")]
impl NetworkIface {
    /// Removes the network: its bridge, dnsmasq and NAT. Refused while a running machine
    /// is on it; stopped machines on it must be moved before they start again.
    async fn remove(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageNetworks, &self.name).await?;
        self.daemon.remove_network(&self.name).await?;
        self.daemon.events_flushed().await;
        Ok(())
    }

    #[zbus(property)]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// The IPv4 subnet, CIDR.
    #[zbus(property)]
    fn subnet(&self) -> String {
        self.config()
            .map(|c| c.subnet.to_string())
            .unwrap_or_default()
    }

    /// The bridge's own address, the machines' gateway and DNS server.
    #[zbus(property)]
    fn gateway(&self) -> String {
        self.config()
            .map(|c| c.gateway().to_string())
            .unwrap_or_default()
    }

    /// The bridge interface on the host.
    #[zbus(property)]
    fn bridge(&self) -> String {
        self.config()
            .map(|c| c.bridge().to_string())
            .unwrap_or_default()
    }

    /// Whether the subnet is masqueraded out of the host's default route.
    #[zbus(property)]
    fn nat(&self) -> bool {
        self.config().is_some_and(|c| c.nat)
    }

    /// Whether dnsmasq hands out the leases over DHCP (it serves DNS either way).
    #[zbus(property)]
    fn dhcp(&self) -> bool {
        self.config().is_some_and(|c| c.dhcp)
    }

    /// Machines configured on the network, running or not.
    #[zbus(property(emits_changed_signal = "false"))]
    fn machines(&self) -> Vec<String> {
        self.daemon
            .network_machines(&self.name)
            .iter()
            .map(|m| m.name.clone())
            .collect()
    }

    #[zbus(property)]
    fn created_at(&self) -> u64 {
        self.config().map(|c| c.created_at).unwrap_or(0)
    }
}
