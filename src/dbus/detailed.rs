//! Manager.ListMachinesDetailed: many machines' properties in one call, for clients
//! that show many machines (berthctl list and status, a frontend's refresh) instead of a
//! Get or GetAll per machine, which the bus caps at 128 pending replies per connection.
//!
//! The values are the Machine objects' own (each object's getters answer, as for
//! GetAll), so the two never disagree and a new property shows up here by itself. Live
//! figures and tree facts (daemon/figures.rs), if asked for, are read for all the
//! machines in one blocking pass first.

use super::error::{BerthError, Result};
use super::machine::MachineIface;
use super::manager::machine_path;
use crate::daemon::Daemon;
use crate::daemon::machine::Machine;
use crate::error::Error;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use zbus::Connection;
use zbus::object_server::{Interface, ObjectServer};
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

/// One machine of the reply: name, object path, properties.
pub type Detailed = (String, OwnedObjectPath, HashMap<String, OwnedValue>);

/// Machines named in `names` that exist, in that order (each once), or every machine by
/// name when `names` is empty; with the properties named in `properties`, or all of them.
pub async fn list(
    server: &ObjectServer,
    conn: &Connection,
    daemon: &Arc<Daemon>,
    names: Vec<String>,
    properties: Vec<String>,
) -> Result<Vec<Detailed>> {
    let machines: Vec<Arc<Machine>> = if names.is_empty() {
        daemon.machines()
    } else {
        let mut seen = HashSet::new();
        names
            .iter()
            .filter(|n| seen.insert(n.as_str()))
            // A machine removed since the caller learnt its name is no error of the call.
            .filter_map(|n| daemon.machine(n).ok())
            .collect()
    };
    if properties.is_empty()
        || properties.iter().any(|p| {
            crate::api::LIVE_FIGURES.contains(&p.as_str())
                || ["DiskUsage", "HaltSignal"].contains(&p.as_str())
        })
    {
        daemon.prefetch_figures(&machines).await;
    }
    let mut out = Vec::with_capacity(machines.len());
    for m in machines {
        let path = machine_path(&m.name);
        // Not (or no longer) on the bus: created or removed while this ran.
        let Ok(iface) = server.interface::<_, MachineIface>(&path).await else {
            continue;
        };
        let emitter = iface.signal_emitter().clone();
        let guard = iface.get().await;
        let values = if properties.is_empty() {
            guard
                .get_all(server, conn, None, &emitter)
                .await
                .map_err(zbus::Error::from)?
        } else {
            let mut values = HashMap::with_capacity(properties.len());
            for p in &properties {
                let value = guard
                    .get(p, server, conn, None, &emitter)
                    .await
                    .ok_or_else(|| unknown_property(p))?
                    .map_err(zbus::Error::from)?;
                values.insert(p.clone(), value);
            }
            values
        };
        drop(guard);
        out.push((m.name.clone(), path, values));
    }
    Ok(out)
}

fn unknown_property(name: &str) -> BerthError {
    Error::InvalidArgument(format!(
        "{} is no property of {}; its introspection data lists them",
        crate::names::shown(name),
        super::machine::INTERFACE
    ))
    .into()
}
