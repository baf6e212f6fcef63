//! Live figures of running machines, decided in one place: CPU, memory, tasks and I/O
//! from the scope's cgroup files (crate::cgroup::figures), RX/TX from the host side of a
//! bridged machine's veth (sysfs). Neither asks systemd, so no reader waits on PID 1 and
//! none costs a D-Bus call per machine.
//!
//! Every reader goes through [`Daemon::figures`]: a Get of one property, a GetAll, each
//! machine of GetManagedObjects, ListMachinesDetailed. One machine's figures are read
//! together and serve every reader for [`FRESH`], so a GetAll reads each file once, not
//! once per property. A batch first reads all its machines in one blocking task
//! ([`Daemon::prefetch_figures`]) and then finds them cached. berthd reads nothing while
//! nobody asks: no timer, no idle CPU.

use super::Daemon;
use super::machine::Machine;
use crate::api::UNKNOWN_FIGURE;
use crate::cgroup::CgroupMode;
use crate::cgroup::figures::{self as cgroup_figures, ScopeFigures};
use crate::net::NetHost;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long figures once read answer for the machine. Short enough that a frontend
/// polling every second sees each second's numbers.
const FRESH: Duration = Duration::from_millis(500);

/// The figures a Machine object shows as properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    CpuUsageNSec,
    MemoryCurrent,
    TasksCurrent,
    IoReadBytes,
    IoWriteBytes,
    RxBytes,
    TxBytes,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Figures {
    pub scope: ScopeFigures,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl Figures {
    pub const UNKNOWN: Figures = Figures {
        scope: ScopeFigures::UNKNOWN,
        rx_bytes: UNKNOWN_FIGURE,
        tx_bytes: UNKNOWN_FIGURE,
    };

    pub fn get(&self, figure: Figure) -> u64 {
        match figure {
            Figure::CpuUsageNSec => self.scope.cpu_usage_nsec,
            Figure::MemoryCurrent => self.scope.memory_current,
            Figure::TasksCurrent => self.scope.tasks_current,
            Figure::IoReadBytes => self.scope.io_read_bytes,
            Figure::IoWriteBytes => self.scope.io_write_bytes,
            Figure::RxBytes => self.rx_bytes,
            Figure::TxBytes => self.tx_bytes,
        }
    }
}

/// A machine's figures as last read, kept with the machine.
#[derive(Default)]
pub struct Cache(Mutex<Option<Entry>>);

struct Entry {
    at: Instant,
    /// The run they belong to: a restarted machine's new run starts from its own numbers.
    leader: u32,
    figures: Figures,
}

impl Cache {
    fn fresh(&self, leader: u32, now: Instant) -> Option<Figures> {
        let entry = self.0.lock().expect("figures lock");
        entry
            .as_ref()
            .filter(|e| e.leader == leader && now.duration_since(e.at) < FRESH)
            .map(|e| e.figures)
    }

    fn store(&self, leader: u32, at: Instant, figures: Figures) {
        *self.0.lock().expect("figures lock") = Some(Entry {
            at,
            leader,
            figures,
        });
    }
}

/// What reading one machine's figures takes, so the read can run on another thread.
struct Source {
    unit: String,
    veth: Option<String>,
}

impl Source {
    fn read(&self, mode: CgroupMode, net: &dyn NetHost) -> Figures {
        let scope = cgroup_figures::read(Path::new("/sys/fs/cgroup"), mode, &self.unit);
        let link = self.veth.as_deref().and_then(|v| net.link_stats(v));
        Figures {
            scope,
            rx_bytes: link.map_or(UNKNOWN_FIGURE, |l| l.rx_bytes),
            tx_bytes: link.map_or(UNKNOWN_FIGURE, |l| l.tx_bytes),
        }
    }
}

impl Daemon {
    /// The live figures of `m`: unknown unless it runs; else those read within
    /// [`FRESH`], or read now. Reading is a handful of kernfs files, no D-Bus, so it is
    /// done in place.
    pub fn figures(&self, m: &Machine) -> Figures {
        let Some(source) = self.figure_source(m) else {
            return Figures::UNKNOWN;
        };
        let leader = m.run().leader;
        let now = Instant::now();
        if let Some(figures) = m.figures.fresh(leader, now) {
            return figures;
        }
        let figures = source.read(self.host.cgroup_mode, self.net.as_ref());
        m.figures.store(leader, now, figures);
        figures
    }

    /// Reads the figures of every running machine of `machines` that has none fresh, all
    /// in one blocking task, so the readers that follow (a batch's GetAll per machine)
    /// find them cached.
    pub async fn prefetch_figures(&self, machines: &[Arc<Machine>]) {
        let now = Instant::now();
        let stale: Vec<(Arc<Machine>, u32, Source)> = machines
            .iter()
            .filter_map(|m| {
                let source = self.figure_source(m)?;
                let leader = m.run().leader;
                m.figures
                    .fresh(leader, now)
                    .is_none()
                    .then(|| (m.clone(), leader, source))
            })
            .collect();
        if stale.is_empty() {
            return;
        }
        let (mode, net) = (self.host.cgroup_mode, self.net.clone());
        let read = tokio::task::spawn_blocking(move || {
            let at = Instant::now();
            for (m, leader, source) in &stale {
                m.figures
                    .store(*leader, at, source.read(mode, net.as_ref()));
            }
        });
        if let Err(e) = read.await {
            // Each reader then reads its own machine's figures itself.
            tracing::warn!("cannot read the machines' figures in one pass: {e}");
        }
    }

    /// What to read for `m`, or None when it does not run (nothing to count).
    fn figure_source(&self, m: &Machine) -> Option<Source> {
        if !m.state().is_active() {
            return None;
        }
        Some(Source {
            unit: m.unit.clone(),
            veth: self.host_interface(m),
        })
    }
}
