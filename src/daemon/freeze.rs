//! Freeze and thaw. On the unified hierarchy through systemd's FreezeUnit/ThawUnit; on
//! hybrid and legacy hosts, where systemd refuses, through the v1 freezer controller
//! (src/cgroup/freezer.rs), in a blocking task since it polls the kernel's files.

use super::Daemon;
use super::machine::{Machine, MachineState, Run};
use crate::cgroup::CgroupMode;
use crate::cgroup::freezer::{self, Freezer, FreezerState};
use crate::error::{Error, Result};
use std::sync::Arc;
use tracing::{info, warn};

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
        self.set_frozen(&m, run.leader, freeze).await?;
        m.set_run(Run { state: to, ..run });
        self.emit_state(&m);
        info!("machine {name}: {}", to.as_str());
        Ok(())
    }

    /// Freezes or thaws every process of the machine, returning once the kernel says it
    /// is done; `leader` locates the scope on v1 hosts.
    pub(super) async fn set_frozen(&self, m: &Machine, leader: u32, freeze: bool) -> Result<()> {
        if self.host.cgroup_mode == CgroupMode::Unified {
            return self.systemd.freeze(&m.unit, freeze).await;
        }
        let unit = m.unit.clone();
        let done = tokio::task::spawn_blocking(move || {
            let cgroup = Freezer::of(&unit)?;
            if freeze {
                cgroup.freeze(&freezer::tracked_scope_dir(leader, &unit)?)
            } else {
                cgroup.thaw()
            }
        })
        .await
        .map_err(|e| Error::failed("the freezer task crashed", e))?;
        done.map_err(|e| {
            Error::failed(
                format!(
                    "cannot {} machine {} through the v1 freezer",
                    if freeze { "freeze" } else { "thaw" },
                    m.name
                ),
                e,
            )
        })
    }

    /// Whether a running machine found at berthd's start, `leader` its leader, was left
    /// frozen. systemd knows nothing of a v1 freeze, so there berth's own freezer cgroup
    /// tells.
    pub(super) fn left_frozen(&self, m: &Machine, leader: u32) -> bool {
        let frozen = if self.host.cgroup_mode == CgroupMode::Unified {
            freezer::unified_frozen(leader, &m.unit)
        } else {
            Freezer::of(&m.unit)
                .and_then(|f| f.state())
                .map(|state| matches!(state, Some(FreezerState::Frozen | FreezerState::Freezing)))
        };
        match frozen {
            Ok(frozen) => frozen,
            Err(e) => {
                warn!("machine {}: cannot read its freezer state: {e}", m.name);
                false
            }
        }
    }

    /// Removes the v1 freezer cgroup berth made for the machine, once its processes are
    /// gone; systemd removes only the cgroups it made.
    pub(super) async fn drop_freezer(&self, m: &Machine) {
        if self.host.cgroup_mode == CgroupMode::Unified {
            return;
        }
        let unit = m.unit.clone();
        let removed =
            tokio::task::spawn_blocking(move || Freezer::of(&unit).and_then(|f| f.remove())).await;
        match removed {
            Ok(Ok(())) => {}
            // No v1 freezer on this host: berth never froze anything here.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(Err(e)) => warn!("machine {}: cannot remove its freezer cgroup: {e}", m.name),
            Err(e) => warn!("machine {}: freezer cleanup crashed: {e}", m.name),
        }
    }
}
