//! berth: a machine manager built into systemd.
//!
//! `berthd` (src/bin/berthd.rs) serves the D-Bus API in [`dbus`], which calls the
//! orchestrator in [`daemon`]; that in turn uses one module per concern: [`store`] for
//! state on disk, [`template`] and [`storage`] for root filesystems, [`spawn`] for
//! namespaces and the machine's PID 1, [`systemd`] for its scope and limits. `berthctl`
//! is [`cli`] on top of the proxies in [`client`]. ARCHITECTURE.md follows one request
//! through these layers.

pub mod api;
pub mod cgroup;
pub mod cli;
pub mod client;
pub mod console;
pub mod daemon;
pub mod dbus;
pub mod error;
pub mod jobs;
pub mod limits;
pub mod machine_id;
pub mod names;
pub mod net;
pub mod paths;
pub mod revert;
pub mod security;
pub mod spawn;
pub mod storage;
pub mod store;
pub mod sys;
pub mod systemd;
pub mod template;
