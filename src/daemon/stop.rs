//! Stop and restart: the init's halt signal through the leader's pidfd, then SIGKILL to
//! the whole scope after the machine's stop timeout.

use super::machine::{Machine, MachineState, Run};
use super::{DEFAULT_STOP_TIMEOUT, Daemon, MAX_STOP_TIMEOUT, SCOPE_GONE_TIMEOUT};
use crate::error::{Error, Result};
use crate::store::MachineConfig;
use crate::template::init;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::warn;

/// How often the halt signal is sent again while the machine has not stopped.
const HALT_RESEND_INTERVAL: Duration = Duration::from_secs(1);

impl Daemon {
    pub async fn stop(self: &Arc<Self>, name: &str) -> Result<()> {
        let (m, _op) = self.locked(name).await?;
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
            let (m, _op) = self.locked(name).await?;
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
            // A frozen init cannot act on its halt signal, and on v1 frozen tasks do not
            // even die of the SIGKILL that follows a timeout.
            self.set_frozen(m, run.leader, false).await?;
        }
        let cfg = m.config();
        let mut ended = m.ended.subscribe();
        m.set_run(Run {
            state: MachineState::Stopping,
            ..run.clone()
        });
        self.emit_state(m);
        let signal = halt_signal(m, &cfg);
        let deadline = Instant::now() + stop_timeout(&cfg);
        // Again and again: an init that has not installed its handler yet (a stop right
        // after a start) ignores the signal, and would otherwise cost the whole timeout.
        loop {
            if let Some(fd) = &run.pidfd {
                let _ = fd.send_signal(signal);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let wait = left.min(HALT_RESEND_INTERVAL);
            if tokio::time::timeout(wait, ended.changed()).await.is_ok() {
                return Ok(());
            }
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

/// What the HaltSignal property shows too (figures.rs reads it the same way).
fn halt_signal(m: &Machine, cfg: &MachineConfig) -> i32 {
    init::halt_signal(&m.rootfs(), &cfg.command, cfg.halt_signal)
}

/// The configured stop timeout, never beyond [`MAX_STOP_TIMEOUT`] (a hand-edited config
/// could say more), so a stop or a forced removal always ends.
pub fn stop_timeout(cfg: &MachineConfig) -> Duration {
    cfg.stop_timeout_usec
        .map(Duration::from_micros)
        .unwrap_or(DEFAULT_STOP_TIMEOUT)
        .min(MAX_STOP_TIMEOUT)
}
