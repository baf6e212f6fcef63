//! CloneMachine: a new machine with a copy of a stopped machine's tree and settings, as
//! `lxc-copy` makes one. The clone gets its own name, hostname, machine identity and (if
//! the source has one) its own user ID range, its files moved into that range where they
//! are shifted on disk; it does not inherit autostart.

use super::Daemon;
use super::machine::Machine;
use crate::error::{Error, Result};
use crate::names;
use crate::security::users::{self, Ownership};
use crate::store::MachineConfig;
use std::sync::Arc;
use tracing::info;

impl Daemon {
    pub async fn clone_machine(
        self: &Arc<Self>,
        source: &str,
        name: &str,
        ephemeral: bool,
    ) -> Result<Arc<Machine>> {
        names::validate_machine_name(name).map_err(Error::InvalidName)?;
        // Held for the copy: the source can't start (and change) under it.
        let (src, _op) = self.locked(source).await?;
        let from = src.config();
        let rootfs = self.stopped_rootfs(&src, "clone")?;
        let _reservation = self.reserve(name)?;
        let request = if from.users.is_some() {
            users::Request::Pick
        } else {
            users::Request::No
        };
        let (mut users, _range) = self.users_for(request)?;
        // Ephemeral: an overlay on the source's tree, which stays read-only (start,
        // restore and remove of the source are refused) while the clone exists. The tree
        // must be on disk as the machine sees it (not shifted into the source's range),
        // and in a user namespace on a file system that can idmap it.
        let source_shifted = matches!(from.users, Some(u) if u.ownership == Ownership::Chown);
        let overlay =
            ephemeral && !source_shifted && super::create::overlay_possible(users, &rootfs);
        if overlay && let Some(u) = users.as_mut() {
            u.ownership = Ownership::Idmap;
        }
        let ids = super::create::ids_between(from.users, users);
        let (network, _lease) = self.copied_network(name, &from.network).await?;
        let mut config = MachineConfig {
            network,
            ephemeral,
            base: overlay.then(|| rootfs.clone()),
            ..super::create::copied_config(from, name, users)?
        };
        let dir = self.make_machine_dir(&mut config, rootfs, ids).await?;
        let m = Arc::new(Machine::new(dir, config));
        self.insert(m.clone());
        self.refresh_dns(m.config().network.bridge.as_deref()).await;
        info!("machine {name}: cloned from {source}");
        Ok(m)
    }

    /// The rootfs of a machine that must be stopped for `what` (clone, snapshot).
    pub(super) fn stopped_rootfs(&self, m: &Machine, what: &str) -> Result<std::path::PathBuf> {
        if let Some(problem) = m.problem() {
            return Err(Error::InvalidState(format!(
                "machine {} is broken ({problem}); cannot {what} it",
                m.name
            )));
        }
        if m.state().is_active() {
            return Err(Error::InvalidState(format!(
                "machine {} is {}; stop it before you {what} it",
                m.name,
                m.state().as_str()
            )));
        }
        Ok(m.rootfs())
    }
}
