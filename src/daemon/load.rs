//! berthd's start: clear leftovers of interrupted work, load every stored machine, and
//! re-attach to machines that kept running while berthd was away.

use super::Daemon;
use super::machine::{Machine, MachineState, Run};
use crate::api::KillWho;
use crate::names;
use crate::store::{self, RuntimeState};
use crate::sys::{PidFd, process};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

impl Daemon {
    pub(super) async fn load(self: &Arc<Self>) {
        remove_leftovers(
            store::list_leftovers(&self.paths.machines_dir())
                .into_iter()
                .chain(store::list_leftovers(&self.paths.templates_dir())),
        );
        let dirs = match store::list_machine_dirs(&self.paths.machines_dir()) {
            Ok(d) => d,
            Err(e) => {
                warn!("cannot list machines: {e}");
                return;
            }
        };
        for dir in &dirs {
            super::rename::finish_interrupted_rename(dir);
            recover_interrupted_restore(dir);
        }
        for dir in dirs {
            let Some(m) = self.machine_in(dir) else {
                continue;
            };
            let ephemeral = m.config().ephemeral;
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
        super::console::drop_unclaimed_from_store();
    }

    /// The machine a directory holds. The directory's name is the machine's identity:
    /// a config that cannot be read, or names another machine, makes the machine broken
    /// (shown, stoppable, removable), never hidden and never taken for the other one.
    fn machine_in(&self, dir: PathBuf) -> Option<Arc<Machine>> {
        let name = dir.file_name()?.to_string_lossy().into_owned();
        if let Err(e) = names::validate_machine_name(&name) {
            warn!(
                "ignoring {}: not a machine name ({e}); rename or remove it",
                dir.display()
            );
            return None;
        }
        let problem = match store::load_config(&dir) {
            Ok(config) if config.name == name => return Some(Arc::new(Machine::new(dir, config))),
            Ok(config) => format!(
                "its {} names machine {:?}, not {name:?}",
                store::CONFIG_FILE,
                config.name
            ),
            Err(e) => e.to_string(),
        };
        warn!("machine {name}: broken: {problem}");
        Some(Arc::new(Machine::broken(dir, &name, problem)))
    }

    /// Takes the machine as running again if systemd's scope for it has processes: its
    /// leader is the one the runtime file names when that is the same process (PID and
    /// start time) and in the scope, else the one systemd's scope shows as the PID
    /// namespace's init. A missing, garbled or stale runtime file never makes berth stop
    /// a machine that runs. Every decision is logged.
    async fn reattach(self: &Arc<Self>, m: &Arc<Machine>) {
        let rt_dir = self.paths.runtime_machines_dir();
        let recorded = store::load_runtime(&rt_dir, &m.name);
        let mut believed = None;
        if let Some(rt) = &recorded {
            if process::start_time(rt.leader) == Some(rt.leader_start_time)
                && self.systemd.holds(&m.unit, rt.leader).await
            {
                believed = Some(rt.leader);
            } else {
                warn!(
                    "machine {}: the runtime file names leader {}, which is not the machine's",
                    m.name, rt.leader
                );
            }
        }
        let leader = match believed {
            Some(pid) => Some(pid),
            None => {
                let found = self.systemd.scope_leader(&m.unit).await;
                if let Some(pid) = found {
                    warn!(
                        "machine {}: {} runs; adopting its leader {pid} from systemd",
                        m.name, m.unit
                    );
                    let rt = RuntimeState {
                        leader: pid,
                        leader_start_time: process::start_time(pid).unwrap_or(0),
                        run: false,
                    };
                    if let Err(e) = store::save_runtime(&rt_dir, &m.name, &rt) {
                        warn!("machine {}: {e}", m.name);
                    }
                }
                found
            }
        };
        match leader.and_then(|pid| PidFd::open(pid).ok().map(|fd| (pid, fd))) {
            Some((pid, fd)) => {
                let state = if self.left_frozen(m, pid) {
                    MachineState::Frozen
                } else {
                    MachineState::Running
                };
                info!(
                    "machine {}: re-attached, leader {pid}, {}",
                    m.name,
                    state.as_str()
                );
                m.set_run(Run {
                    state,
                    leader: pid,
                    pidfd: Some(fd.clone()),
                });
                self.take_back_console(m);
                self.emit_state(m);
                self.watch_leader(m.clone(), fd);
                if recorded
                    .as_ref()
                    .is_some_and(|rt| rt.run && rt.leader == pid)
                {
                    // Its caller's call ended with the berthd that took it, so nobody
                    // waits for its status; the watcher removes it once it is dead.
                    info!(
                        "machine {}: a one-shot run whose caller is gone; killing it",
                        m.name
                    );
                    if let Err(e) = self.kill(&m.name, KillWho::All, libc::SIGKILL).await {
                        warn!("machine {}: {e}", m.name);
                    }
                }
            }
            // A machine that was stopped when berthd went away has nothing to clear up.
            None if recorded.is_none() => {}
            None => {
                info!("machine {}: not running any more", m.name);
                store::remove_runtime(&rt_dir, &m.name);
                self.drop_freezer(m).await;
                // The scope, if systemd still has it, holds no process: let it go.
                if let Err(e) = self.systemd.wait_gone(&m.unit, Duration::ZERO).await {
                    warn!("machine {}: {e}", m.name);
                }
            }
        }
    }
}

impl Daemon {
    /// The running machine's console pty, as systemd's store gave it back to this berthd.
    fn take_back_console(&self, m: &Machine) {
        use crate::console::fdstore;
        let master = fdstore::take(&fdstore::master_name(&m.name)).pop();
        let peer = fdstore::take(&fdstore::peer_name(&m.name)).pop();
        match master {
            Some(master) => match self.console_attach(&m.name, master, peer, false) {
                Ok(()) => self.console_note(&m.name, "berthd restarted; console taken back"),
                Err(e) => warn!("machine {}: {e}", m.name),
            },
            None => info!(
                "machine {}: no console in systemd's store; it has one again after a restart",
                m.name
            ),
        }
    }
}

/// A restore interrupted between moving the old tree aside and renaming the new one in
/// leaves no rootfs: the old one goes back (the restore did not happen). Then dot-entries
/// of interrupted restores and snapshots go.
fn recover_interrupted_restore(dir: &std::path::Path) {
    let rootfs = dir.join(store::ROOTFS_DIR);
    if !rootfs.exists() {
        let old = store::list_leftovers(dir).into_iter().find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".rootfs.old-"))
        });
        if let Some(old) = old {
            warn!(
                "{}: putting back the tree of an interrupted restore",
                dir.display()
            );
            if let Err(e) = std::fs::rename(&old, &rootfs) {
                warn!("cannot put back {}: {e}", old.display());
                return;
            }
        }
    }
    remove_leftovers(
        store::list_leftovers(dir)
            .into_iter()
            .chain(store::list_leftovers(
                &dir.join(super::snapshot::SNAPSHOTS_DIR),
            )),
    );
}

/// Removes dot-entries that interrupted operations left, saying so.
fn remove_leftovers(leftovers: impl Iterator<Item = PathBuf>) {
    for leftover in leftovers {
        warn!(
            "removing {}, left over from an interrupted operation",
            leftover.display()
        );
        if let Err(e) = crate::storage::copy::remove_tree(&leftover) {
            warn!("cannot remove {}: {e}", leftover.display());
        }
    }
}
