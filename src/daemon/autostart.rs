//! Autostart: machines marked so start the first time berthd runs after a boot of the
//! host. The marker lives in /run, so a restart of berthd leaves machines that an admin
//! stopped by hand alone.

use super::Daemon;
use std::sync::Arc;
use tracing::{info, warn};

impl Daemon {
    pub fn autostart_once_per_boot(self: &Arc<Self>) {
        let marker = self.paths.runtime_dir.join("autostart-done");
        if marker.exists() {
            return;
        }
        if let Err(e) = std::fs::write(&marker, b"") {
            warn!("cannot write {}: {e}; not autostarting", marker.display());
            return;
        }
        for m in self.machines() {
            if !m.config().autostart || m.state().is_active() {
                continue;
            }
            let daemon = self.clone();
            tokio::spawn(async move {
                info!("machine {}: autostart", m.name);
                if let Err(e) = daemon.start(&m.name).await {
                    warn!("machine {}: autostart failed: {e}", m.name);
                }
            });
        }
    }
}
