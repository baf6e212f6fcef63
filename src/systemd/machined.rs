//! Registration with systemd-machined, so `machinectl list` and other machined clients
//! see berth's machines. Optional: a host without systemd-container still runs machines.

use crate::error::bus_message;
use std::path::Path;
use tracing::{info, warn};
use zbus::Connection;
use zbus_systemd::machine1::ManagerProxy;

/// Registers a running machine by its leader; machined finds the scope from the PID and
/// forgets the machine by itself when that scope goes away.
pub async fn register(
    conn: &Connection,
    name: &str,
    id: Option<[u8; 16]>,
    leader: u32,
    root_directory: &Path,
) {
    let result = async {
        let machined = ManagerProxy::new(conn).await?;
        machined
            .register_machine(
                name.to_string(),
                id.map(Vec::from).unwrap_or_default(),
                "berth".into(),
                "container".into(),
                leader,
                root_directory.to_string_lossy().into_owned(),
            )
            .await
    }
    .await;
    match result {
        Ok(_) => info!("machine {name}: registered with systemd-machined"),
        Err(zbus::Error::MethodError(err, _, _))
            if err.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown" =>
        {
            info!("machine {name}: systemd-machined is not installed; machinectl won't list it")
        }
        Err(e) => warn!(
            "machine {name}: systemd-machined refused the registration: {}",
            bus_message(&e)
        ),
    }
}
