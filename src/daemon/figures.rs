//! Live figures of running machines, decided in one place: CPU, memory, tasks and I/O
//! from the scope's cgroup files (crate::cgroup::figures), RX/TX from the host side of a
//! bridged machine's veth (sysfs). Neither asks systemd, so no reader waits on PID 1 and
//! none costs a D-Bus call per machine. Beside them, what any machine's tree says
//! ([`TreeFacts`]: the signal its init halts on, the bytes btrfs counts for it), which is
//! path lookups and an ioctl per read.
//!
//! Every reader goes through [`Daemon::figures`] and [`Daemon::tree_facts`]: a Get of one
//! property, a GetAll, each machine of GetManagedObjects, ListMachinesDetailed. One
//! machine's figures (and its tree facts) are read together and serve every reader for
//! [`FRESH`], so a GetAll reads each file once, not once per property. A batch first
//! reads all its machines in one blocking task ([`Daemon::prefetch_figures`]) and then
//! finds them cached. berthd reads nothing while nobody asks: no timer, no idle CPU.

use super::Daemon;
use super::machine::Machine;
use crate::api::UNKNOWN_FIGURE;
use crate::cgroup::CgroupMode;
use crate::cgroup::figures::{self as cgroup_figures, ScopeFigures};
use crate::net::NetHost;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// What a machine's tree says, running or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeFacts {
    /// The signal a stop sends its PID 1: the configured one, else its init's.
    pub halt_signal: i32,
    /// Bytes its tree takes and its quota (0: none), where btrfs counts them.
    pub disk_usage: Option<(u64, u64)>,
}

/// A machine's figures and tree facts as last read, kept with the machine.
#[derive(Default)]
pub struct Cache {
    figures: Mutex<Option<Entry>>,
    tree: Mutex<Option<(Instant, TreeFacts)>>,
    /// Its own tree is not on btrfs: no usage to ask for, now or later (the tree stays
    /// on the file system of the machine's directory).
    not_btrfs: AtomicBool,
}

struct Entry {
    at: Instant,
    /// The run they belong to: a restarted machine's new run starts from its own numbers.
    leader: u32,
    figures: Figures,
}

impl Cache {
    fn fresh(&self, leader: u32, now: Instant) -> Option<Figures> {
        let entry = self.figures.lock().expect("figures lock");
        entry
            .as_ref()
            .filter(|e| e.leader == leader && now.duration_since(e.at) < FRESH)
            .map(|e| e.figures)
    }

    fn store(&self, leader: u32, at: Instant, figures: Figures) {
        *self.figures.lock().expect("figures lock") = Some(Entry {
            at,
            leader,
            figures,
        });
    }

    fn fresh_tree(&self, now: Instant) -> Option<TreeFacts> {
        let entry = self.tree.lock().expect("tree facts lock");
        entry
            .filter(|(at, _)| now.duration_since(*at) < FRESH)
            .map(|(_, facts)| facts)
    }

    fn store_tree(&self, at: Instant, facts: TreeFacts) {
        *self.tree.lock().expect("tree facts lock") = Some((at, facts));
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

/// A machine of a batch with what of it is not fresh: its figures (of the run of that
/// leader), its tree facts.
type Stale = (Arc<Machine>, Option<(u32, Source)>, Option<TreeSource>);

/// What reading one machine's tree facts takes, so the read can run on another thread.
struct TreeSource {
    /// The tree it runs on (an ephemeral machine's base), where its init is.
    rootfs: PathBuf,
    /// PID 1's program, as the config gives it (empty: the default init).
    init: Vec<String>,
    halt_signal: Option<i32>,
    /// Its own tree, whose usage btrfs may count; None when known not to be on btrfs.
    own_tree: Option<PathBuf>,
}

impl TreeSource {
    fn of(m: &Machine) -> TreeSource {
        let own_tree = (!m.figures.not_btrfs.load(Ordering::Relaxed))
            .then(|| m.dir.join(crate::store::ROOTFS_DIR));
        let (base, init, halt_signal) = m.with_config(|c| {
            (
                c.base.clone(),
                c.command.first().cloned().into_iter().collect(),
                c.halt_signal,
            )
        });
        TreeSource {
            rootfs: base.unwrap_or_else(|| m.dir.join(crate::store::ROOTFS_DIR)),
            init,
            halt_signal,
            own_tree,
        }
    }

    fn read(&self, cache: &Cache) -> TreeFacts {
        let disk_usage = match self.own_tree.as_deref().map(crate::storage::quota::usage) {
            Some(Ok(Some(usage))) => Some(usage),
            Some(Ok(None)) => {
                cache.not_btrfs.store(true, Ordering::Relaxed);
                None
            }
            Some(Err(_)) | None => None,
        };
        TreeFacts {
            halt_signal: crate::template::init::halt_signal(
                &self.rootfs,
                &self.init,
                self.halt_signal,
            ),
            disk_usage,
        }
    }
}

impl Daemon {
    /// What `m`'s tree says: read within [`FRESH`], or read now, in place (path lookups
    /// and memory-only ioctls, like the figures' kernfs reads).
    pub fn tree_facts(&self, m: &Machine) -> TreeFacts {
        let now = Instant::now();
        if let Some(facts) = m.figures.fresh_tree(now) {
            return facts;
        }
        let facts = TreeSource::of(m).read(&m.figures);
        m.figures.store_tree(now, facts);
        facts
    }

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

    /// Reads the figures of every running machine of `machines` that has none fresh, and
    /// the tree facts of every one that has none fresh, all in one blocking task, so the
    /// readers that follow (a batch's GetAll per machine) find them cached.
    pub async fn prefetch_figures(&self, machines: &[Arc<Machine>]) {
        let now = Instant::now();
        let stale: Vec<Stale> = machines
            .iter()
            .filter_map(|m| {
                let figures = self.figure_source(m).and_then(|source| {
                    let leader = m.run().leader;
                    m.figures
                        .fresh(leader, now)
                        .is_none()
                        .then_some((leader, source))
                });
                let tree = m
                    .figures
                    .fresh_tree(now)
                    .is_none()
                    .then(|| TreeSource::of(m));
                (figures.is_some() || tree.is_some()).then(|| (m.clone(), figures, tree))
            })
            .collect();
        if stale.is_empty() {
            return;
        }
        let (mode, net) = (self.host.cgroup_mode, self.net.clone());
        let read = tokio::task::spawn_blocking(move || {
            let at = Instant::now();
            for (m, figures, tree) in &stale {
                if let Some((leader, source)) = figures {
                    m.figures
                        .store(*leader, at, source.read(mode, net.as_ref()));
                }
                if let Some(source) = tree {
                    m.figures.store_tree(at, source.read(&m.figures));
                }
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
