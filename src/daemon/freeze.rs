//! Freeze and thaw through systemd's FreezeUnit/ThawUnit. systemd freezes only on the
//! unified hierarchy; elsewhere berth says so rather than half-freezing through the v1
//! freezer behind systemd's back.

use super::Daemon;
use super::machine::{MachineState, Run};
use crate::cgroup::CgroupMode;
use crate::error::{Error, Result};
use std::sync::Arc;
use tracing::info;

impl Daemon {
    pub async fn freeze(self: &Arc<Self>, name: &str, freeze: bool) -> Result<()> {
        let (m, _op) = self.locked(name).await?;
        let (from, to) = if freeze {
            (MachineState::Running, MachineState::Frozen)
        } else {
            (MachineState::Frozen, MachineState::Running)
        };
        let run = m.run();
        if run.state != from {
            return Err(Error::InvalidState(format!(
                "machine {name} is {}; only a {} machine can be {}",
                run.state.as_str(),
                from.as_str(),
                if freeze { "frozen" } else { "thawed" }
            )));
        }
        if self.host.cgroup_mode != CgroupMode::Unified {
            return Err(Error::NotSupported(format!(
                "freezing needs the unified cgroup hierarchy (cgroup v2); this host runs {}, \
                 where systemd cannot freeze units",
                self.host.cgroup_mode.as_str()
            )));
        }
        self.systemd.freeze(&m.unit, freeze).await?;
        m.set_run(Run { state: to, ..run });
        self.emit_state(&m);
        info!("machine {name}: {}", to.as_str());
        Ok(())
    }
}
