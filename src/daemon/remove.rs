//! Remove: a running machine only with force (stopped first); the directory is renamed
//! to a dot-name before it is deleted, so a crash half way leaves a leftover that the
//! next start of berthd clears, never a half machine.

use super::Daemon;
use crate::error::{Error, IoContext, Result};
use crate::store;
use std::sync::Arc;
use tracing::info;

impl Daemon {
    pub async fn remove(self: &Arc<Self>, name: &str, force: bool) -> Result<()> {
        let (m, _op) = self.locked(name).await?;
        self.check_no_overlay_on(&m.dir, &format!("remove {name}"))?;
        if m.state().is_active() {
            if !force {
                return Err(Error::InvalidState(format!(
                    "machine {name} is running; stop it first or remove it with --force"
                )));
            }
            self.stop_locked(&m).await?;
        }
        let doomed = self
            .paths
            .machines_dir()
            .join(format!(".{name}.remove-{}", std::process::id()));
        std::fs::rename(&m.dir, &doomed)
            .at("cannot move aside", &m.dir)
            .map_err(|e| e.context(format!("cannot remove machine {name}")))?;
        self.forget(name);
        store::remove_runtime(&self.paths.runtime_machines_dir(), name);
        self.console_forget(name);
        // Its lease goes with it.
        self.refresh_dns(m.config().network.bridge.as_deref()).await;
        tokio::task::spawn_blocking(move || {
            crate::storage::copy::remove_tree(&doomed).at("cannot delete", &doomed)
        })
        .await
        .map_err(|e| Error::failed("removal crashed", e))?
        .map_err(|e| e.context(format!("cannot delete the files of {name}")))?;
        info!("machine {name}: removed");
        Ok(())
    }

    /// An ephemeral machine goes away when it stops. This waits for whoever stopped it to
    /// let go of the machine; if it was started again meanwhile, it stays.
    pub(super) async fn remove_ephemeral(self: &Arc<Self>, name: &str) {
        match self.remove(name, false).await {
            Ok(()) => {}
            Err(Error::NoSuchMachine(_)) => {}
            Err(e) => info!("machine {name}: ephemeral machine kept: {e}"),
        }
    }
}
