//! Stop and restart: the init's halt signal through the leader's pidfd, then SIGKILL to
//! the whole scope after the machine's stop timeout.

use super::machine::{Machine, MachineState, Run};
use super::{DEFAULT_STOP_TIMEOUT, Daemon, SCOPE_GONE_TIMEOUT};
use crate::error::{Error, Result};
use crate::store::MachineConfig;
use crate::template::{self, init};
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

impl Daemon {
    pub async fn stop(self: &Arc<Self>, name: &str) -> Result<()> {
        let m = self.machine(name)?;
        let _op = m.op.lock().await;
        self.stop_locked(&m).await
    }

    pub async fn restart(self: &Arc<Self>, name: &str) -> Result<()> {
        let m = self.machine(name)?;
        if m.config().ephemeral && m.state().is_active() {
            return Err(Error::InvalidState(format!(
                "machine {name} is ephemeral: stopping it removes it, so it cannot be restarted"
            )));
        }
        {
            let _op = m.op.lock().await;
            if m.state().is_active() {
                self.stop_locked(&m).await?;
            }
        }
        self.start(name).await
    }

    /// Stops a machine whose operation lock the caller holds.
    pub(super) async fn stop_locked(&self, m: &Machine) -> Result<()> {
        let run = m.run();
        if !matches!(run.state, MachineState::Running | MachineState::Frozen) {
            return Err(Error::InvalidState(format!(
                "machine {} is {}, not running",
                m.name,
                run.state.as_str()
            )));
        }
        if run.state == MachineState::Frozen {
            // A frozen init cannot act on its halt signal.
            self.systemd.freeze(&m.unit, false).await?;
        }
        let cfg = m.config();
        let mut ended = m.ended.subscribe();
        m.set_run(Run {
            state: MachineState::Stopping,
            ..run.clone()
        });
        self.emit_state(m);
        let signal = halt_signal(m, &cfg);
        if let Some(fd) = &run.pidfd {
            let _ = fd.send_signal(signal);
        }
        if tokio::time::timeout(stop_timeout(&cfg), ended.changed())
            .await
            .is_ok()
        {
            return Ok(());
        }
        warn!("machine {}: did not halt in time; killing it", m.name);
        self.systemd.kill_all(&m.unit, libc::SIGKILL).await?;
        match tokio::time::timeout(SCOPE_GONE_TIMEOUT, ended.changed()).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::Failed(format!(
                "machine {} survived SIGKILL for {}s",
                m.name,
                SCOPE_GONE_TIMEOUT.as_secs()
            ))),
        }
    }
}

fn halt_signal(m: &Machine, cfg: &MachineConfig) -> i32 {
    init::halt_signal(
        &m.rootfs(),
        &cfg.command,
        template::info(&cfg.template).ok(),
        cfg.halt_signal,
    )
}

pub(super) fn stop_timeout(cfg: &MachineConfig) -> Duration {
    cfg.stop_timeout_usec
        .map(Duration::from_micros)
        .unwrap_or(DEFAULT_STOP_TIMEOUT)
}
