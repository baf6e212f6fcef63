//! `berthctl network list|create|remove`.

use futures_util::stream::{self, StreamExt};
use serde_json::json;
use zbus::zvariant::OwnedObjectPath;

use super::args::NetworkCreateArgs;
use super::commands::{FAN_OUT, Session, is_vanished, print, print_json};
use super::error::CliError;
use super::output::{self, NetworkRow};
use super::parse::network_create_options;
use crate::client::NetworkProxy;
use zbus::proxy::CacheProperties;

impl Session {
    async fn network_at(&self, path: OwnedObjectPath) -> zbus::Result<NetworkProxy<'static>> {
        NetworkProxy::builder(&self.conn)
            .path(path)?
            .cache_properties(CacheProperties::No)
            .build()
            .await
    }

    pub async fn network_list(&self) -> Result<i32, CliError> {
        let mut networks = self.manager().await?.list_networks().await?;
        networks.sort_by(|a, b| a.0.cmp(&b.0));
        // ListNetworks has all but the machines: one Get each, a few at a time.
        let machines: Vec<_> = stream::iter(
            networks
                .iter()
                .map(|(.., path)| self.network_machines(path.clone())),
        )
        .buffered(FAN_OUT)
        .collect()
        .await;
        let mut rows = Vec::new();
        for ((name, subnet, gateway, bridge, nat, dhcp, path), machines) in
            networks.into_iter().zip(machines)
        {
            let Some(mut machines) = machines? else {
                continue;
            };
            machines.sort();
            rows.push(NetworkRow {
                name,
                subnet,
                gateway,
                bridge,
                nat,
                dhcp,
                machines,
                path: path.to_string(),
            });
        }
        if self.json {
            let array: Vec<_> = rows.iter().map(NetworkRow::to_json).collect();
            return print_json(&serde_json::Value::Array(array)).map(|()| 0);
        }
        if rows.is_empty() {
            return print("No networks. berthctl network create makes one.\n").map(|()| 0);
        }
        print(&output::network_table(&rows))?;
        Ok(0)
    }

    /// `None` when the network went away since ListNetworks.
    async fn network_machines(
        &self,
        path: OwnedObjectPath,
    ) -> Result<Option<Vec<String>>, CliError> {
        let read = async { self.network_at(path).await?.machines().await };
        match read.await {
            Ok(machines) => Ok(Some(machines)),
            Err(e) if is_vanished(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn network_create(&self, args: &NetworkCreateArgs) -> Result<i32, CliError> {
        let options = network_create_options(args);
        let manager = self.manager().await?;
        let body = (args.name.as_str(), options);
        let path: OwnedObjectPath = self.change(manager.inner(), "CreateNetwork", &body).await?;
        if self.json {
            print_json(&json!({ "name": args.name, "path": path.as_str() }))?;
        } else {
            print(&format!("{}\n", args.name))?;
        }
        Ok(0)
    }

    pub async fn network_remove(&self, name: &str) -> Result<i32, CliError> {
        // Looked up rather than built from the name, so a missing network is told as
        // such instead of as the bus library's "Unknown object '/org/...'".
        let path = self
            .manager()
            .await?
            .list_networks()
            .await?
            .into_iter()
            .find(|(n, ..)| n == name)
            .map(|(.., p)| p)
            .ok_or_else(|| {
                CliError::DBus(format!(
                    "no network named {}; berthctl network list shows them",
                    crate::names::shown(name)
                ))
            })?;
        let proxy = self.network_at(path).await?;
        let () = self.change(proxy.inner(), "Remove", &()).await?;
        Ok(0)
    }
}
