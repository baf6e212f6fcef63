//! berthd's start: clear leftovers of interrupted work, load every stored machine, and
//! re-attach to machines that kept running while berthd was away.

use super::Daemon;
use super::machine::{Machine, MachineState, Run};
use crate::store;
use crate::sys::{PidFd, process};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

impl Daemon {
    pub(super) async fn load(self: &Arc<Self>) {
        let leftovers = store::list_leftovers(&self.paths.machines_dir())
            .into_iter()
            .chain(store::list_leftovers(&self.paths.templates_dir()));
        for leftover in leftovers {
            warn!(
                "removing {}, left over from an interrupted operation",
                leftover.display()
            );
            if let Err(e) = crate::rootfs::remove_tree(&leftover) {
                warn!("cannot remove {}: {e}", leftover.display());
            }
        }
        let dirs = match store::list_machine_dirs(&self.paths.machines_dir()) {
            Ok(d) => d,
            Err(e) => {
                warn!("cannot list machines: {e}");
                return;
            }
        };
        for dir in dirs {
            let config = match store::load_config(&dir) {
                Ok(c) => c,
                Err(e) => {
                    warn!("skipping machine: {e}");
                    continue;
                }
            };
            let ephemeral = config.ephemeral;
            let m = Arc::new(Machine::new(dir, config));
            self.insert(m.clone());
            self.reattach(&m).await;
            // It stopped while berthd was away (or the host rebooted): its end is due.
            if ephemeral && !m.state().is_active() {
                info!("machine {}: ephemeral and stopped; removing it", m.name);
                if let Err(e) = self.remove(&m.name, false).await {
                    warn!("machine {}: cannot remove ephemeral machine: {e}", m.name);
                }
            }
        }
    }

    /// Takes the machine as running again only if its recorded leader is the same
    /// process (PID and start time) and systemd's scope holds it.
    async fn reattach(self: &Arc<Self>, m: &Arc<Machine>) {
        let rt_dir = self.paths.runtime_machines_dir();
        let Some(rt) = store::load_runtime(&rt_dir, &m.name) else {
            return;
        };
        let alive = process::start_time(rt.leader) == Some(rt.leader_start_time)
            && self.systemd.holds(&m.unit, rt.leader).await;
        let pidfd = if alive {
            PidFd::open(rt.leader).ok()
        } else {
            None
        };
        match pidfd {
            Some(fd) => {
                info!("machine {}: re-attached, leader {}", m.name, rt.leader);
                m.set_run(Run {
                    state: MachineState::Running,
                    leader: rt.leader,
                    pidfd: Some(fd.clone()),
                });
                self.emit_state(m);
                self.watch_leader(m.clone(), fd);
            }
            None => {
                info!("machine {}: its recorded leader is gone", m.name);
                store::remove_runtime(&rt_dir, &m.name);
                if let Err(e) = self.systemd.wait_gone(&m.unit, Duration::ZERO).await {
                    warn!("machine {}: {e}", m.name);
                }
            }
        }
    }
}
