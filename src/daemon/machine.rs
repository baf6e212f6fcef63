//! A machine as berthd holds it in memory: its stored config plus what is true while
//! it runs (state, leader, a pidfd on the leader to notice its exit).

use crate::store::MachineConfig;
use crate::sys::PidFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MachineState {
    Stopped,
    Starting,
    Running,
    Stopping,
    Frozen,
    Failed,
    /// Its directory is there but berth cannot use it (see [`Machine::problem`]); it can
    /// still be stopped if its scope runs, and removed.
    Broken,
}

impl MachineState {
    /// Every state, for clients that take a state's name (`berthctl wait`).
    pub const ALL: [MachineState; 7] = [
        MachineState::Stopped,
        MachineState::Starting,
        MachineState::Running,
        MachineState::Stopping,
        MachineState::Frozen,
        MachineState::Failed,
        MachineState::Broken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Stopped => "stopped",
            MachineState::Starting => "starting",
            MachineState::Running => "running",
            MachineState::Stopping => "stopping",
            MachineState::Frozen => "frozen",
            MachineState::Failed => "failed",
            MachineState::Broken => "broken",
        }
    }

    /// States in which the machine has processes.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            MachineState::Starting
                | MachineState::Running
                | MachineState::Stopping
                | MachineState::Frozen
        )
    }
}

#[derive(Clone)]
pub struct Run {
    pub state: MachineState,
    pub leader: u32,
    pub pidfd: Option<PidFd>,
}

pub struct Machine {
    pub name: String,
    pub dir: PathBuf,
    pub unit: String,
    config: Mutex<MachineConfig>,
    /// Why the machine is broken (its config unreadable or naming another machine).
    problem: Option<String>,
    run: Mutex<Run>,
    /// Serializes start/stop/remove/limits on one machine; readers never wait on it.
    pub op: Arc<tokio::sync::Mutex<()>>,
    /// Bumped by the leader watcher each time a run of the machine has ended.
    pub ended: tokio::sync::watch::Sender<u64>,
    /// Its live figures as last read (see figures.rs).
    pub(super) figures: super::figures::Cache,
}

impl Machine {
    pub fn new(dir: PathBuf, config: MachineConfig) -> Machine {
        Machine::with(dir, config, None)
    }

    /// A machine whose directory berth cannot use; `name` is its directory's.
    pub fn broken(dir: PathBuf, name: &str, problem: String) -> Machine {
        Machine::with(dir, MachineConfig::placeholder(name), Some(problem))
    }

    fn with(dir: PathBuf, config: MachineConfig, problem: Option<String>) -> Machine {
        let idle = if problem.is_some() {
            MachineState::Broken
        } else {
            MachineState::Stopped
        };
        Machine {
            name: config.name.clone(),
            unit: crate::names::scope_unit_name(&config.name),
            dir,
            config: Mutex::new(config),
            problem,
            run: Mutex::new(Run {
                state: idle,
                leader: 0,
                pidfd: None,
            }),
            op: Arc::new(tokio::sync::Mutex::new(())),
            ended: tokio::sync::watch::channel(0).0,
            figures: Default::default(),
        }
    }

    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// What the machine is when nothing of it runs.
    pub fn idle_state(&self) -> MachineState {
        if self.problem.is_some() {
            MachineState::Broken
        } else {
            MachineState::Stopped
        }
    }

    /// Refuses changes to a broken machine, saying why it is broken.
    pub fn usable(&self) -> Result<(), crate::error::Error> {
        match &self.problem {
            None => Ok(()),
            Some(p) => Err(crate::error::Error::InvalidState(format!(
                "machine {} is broken: {p}; repair {} or remove the machine",
                self.name,
                self.dir.join(crate::store::CONFIG_FILE).display()
            ))),
        }
    }

    pub fn config(&self) -> MachineConfig {
        self.config.lock().expect("config lock").clone()
    }

    /// `f` of the config in place: a reader of one field (a property getter) need not
    /// copy the whole config, which GetManagedObjects would do ~30 times per machine.
    pub fn with_config<R>(&self, f: impl FnOnce(&MachineConfig) -> R) -> R {
        f(&self.config.lock().expect("config lock"))
    }

    pub fn set_config(&self, config: MachineConfig) {
        *self.config.lock().expect("config lock") = config;
    }

    pub fn run(&self) -> Run {
        self.run.lock().expect("run lock").clone()
    }

    pub fn state(&self) -> MachineState {
        self.run.lock().expect("run lock").state
    }

    pub fn set_run(&self, run: Run) {
        *self.run.lock().expect("run lock") = run;
    }

    pub fn set_state(&self, state: MachineState) {
        let mut run = self.run.lock().expect("run lock");
        run.state = state;
        if !state.is_active() {
            run.leader = 0;
            run.pidfd = None;
        }
    }

    /// The tree the machine runs on: its own rootfs, or an ephemeral machine's base.
    pub fn rootfs(&self) -> PathBuf {
        match self.with_config(|c| c.base.clone()) {
            Some(base) => base,
            None => self.dir.join(crate::store::ROOTFS_DIR),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_states_drop_the_leader() {
        let cfg: MachineConfig = toml::from_str(
            "name = \"m\"\ntemplate = \"busybox\"\nhostname = \"m\"\ncreated-at = 0\n",
        )
        .unwrap();
        let m = Machine::new("/nonexistent".into(), cfg);
        assert_eq!(m.unit, "machine-m.scope");
        m.set_run(Run {
            state: MachineState::Running,
            leader: 42,
            pidfd: None,
        });
        assert_eq!(m.run().leader, 42);
        m.set_state(MachineState::Stopped);
        assert_eq!(m.run().leader, 0);
        assert!(!m.state().is_active());
    }
}
