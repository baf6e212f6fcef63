//! Changing a machine's settings: limits (live through systemd, and kept) and autostart.

use super::machine::Machine;
use super::{Daemon, Event};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::store::{self, MachineConfig};
use std::sync::Arc;
use tracing::warn;

impl Daemon {
    /// Applies `changes` on top of the stored limits: live through systemd when the
    /// machine runs, and on disk for the next start.
    pub async fn set_limits(self: &Arc<Self>, name: &str, changes: Limits) -> Result<()> {
        let (m, _op) = self.locked(name).await?;
        m.usable()?;
        if changes.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "no limits given; pass at least one of {}",
                crate::limits::key_list()
            )));
        }
        let mut cfg = m.config();
        let before = cfg.limits.clone();
        cfg.limits.merge(&changes);
        crate::systemd::properties::limit_properties(&cfg.limits, self.host.flavor)?;
        if m.state().is_active()
            && let Err(e) = self
                .systemd
                .set_limits(&m.unit, &cfg.limits, self.host.flavor)
                .await
        {
            // The stored limits stay the ones in force: put systemd's view back too.
            if let Err(undo) = self
                .systemd
                .set_limits(&m.unit, &before, self.host.flavor)
                .await
            {
                warn!("machine {name}: cannot put the limits back: {undo}");
            }
            return Err(e.context(format!("the limits of {name} are unchanged")));
        }
        commit_config(&m, cfg, "limits")?;
        self.emit(Event::LimitsChanged(name.to_string()));
        Ok(())
    }

    pub async fn set_autostart(&self, name: &str, enabled: bool) -> Result<()> {
        let (m, _op) = self.locked(name).await?;
        m.usable()?;
        let mut cfg = m.config();
        cfg.autostart = enabled;
        commit_config(&m, cfg, "settings")?;
        self.emit(Event::AutostartChanged(name.to_string()));
        Ok(())
    }
}

/// Writes `cfg` to disk first and only then makes it the machine's, so memory never
/// holds a setting that a restart of berthd would lose.
fn commit_config(m: &Machine, cfg: MachineConfig, what: &str) -> Result<()> {
    store::save_config(&m.dir, &cfg)
        .map_err(|e| e.context(format!("cannot save the {what} of {}", m.name)))?;
    m.set_config(cfg);
    Ok(())
}
