//! ImportMachine: a new machine from a tar on the caller's descriptor, as a Job. A berth
//! export (`config.toml` and `rootfs/`) keeps its settings under the new name, with a
//! new machine ID, no autostart and, if it had one, a new user range (its files shifted
//! into it where this file system cannot idmap); any other archive
//! is a root filesystem and gets the defaults. Unpacked into a dot-directory and renamed
//! into place, so a failure, Cancel or crash leaves nothing.

use super::create::{RangeReservation, ids_between, write_etc};
use super::machine::Machine;
use super::{Daemon, now_usec};
use crate::error::{Error, IoContext, Result};
use crate::jobs::{Job, Operation, Target};
use crate::names;
use crate::security::users::{self, Users};
use crate::storage::archive::{self, UnpackOptions};
use crate::storage::idmap::IdMap;
use crate::store::{self, MachineConfig};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

impl Daemon {
    pub async fn import(self: &Arc<Self>, name: &str, input: OwnedFd) -> Result<Arc<Job>> {
        names::validate_machine_name(name).map_err(Error::InvalidName)?;
        let reservation = self.reserve(name)?;
        let job = self.new_job(
            Operation::ImportMachine,
            Target::Machine(name.to_string()),
            "bytes",
        );
        let daemon = self.clone();
        let progress = job.progress.clone();
        let name = name.to_string();
        self.run_job(job.clone(), async move {
            let _reservation = reservation;
            let staging = daemon
                .paths
                .machines_dir()
                .join(format!(".{name}.import-{}", std::process::id()));
            let (s, p, d) = (staging.clone(), progress.clone(), daemon.clone());
            let unpacked = tokio::task::spawn_blocking(move || d.unpack_into(&s, input, &p))
                .await
                .map_err(|e| Error::failed("import crashed", e))
                .and_then(|r| r);
            let made = match unpacked {
                Ok(unpacked) => daemon.install_import(&name, &staging, unpacked).await,
                Err(e) => Err(e),
            };
            if made.is_err() {
                let _ = crate::storage::copy::remove_tree(&staging);
            }
            made.map_err(|e| e.context(format!("cannot import machine {name}")))?;
            Ok(format!("machine {name} imported"))
        });
        Ok(job)
    }

    /// Unpacks into `staging/rootfs`; a berth export (config.toml and rootfs/ at its top)
    /// is then moved up a level, and its config returned. An export's config.toml comes
    /// first: if it had a user range, the new machine's is picked right after it, so the
    /// rest is shifted into that range as it is unpacked when this file system cannot
    /// idmap.
    fn unpack_into(
        self: &Arc<Self>,
        staging: &Path,
        input: OwnedFd,
        progress: &crate::jobs::Progress,
    ) -> Result<Unpacked> {
        let _ = crate::storage::copy::remove_tree(staging);
        std::fs::create_dir(staging).at("cannot create", staging)?;
        let rootfs = staging.join(store::ROOTFS_DIR);
        std::fs::create_dir(&rootfs).at("cannot create", &rootfs)?;
        let mut early = None;
        let file = archive::input_from(input, progress);
        archive::unpack_then(file, &rootfs, &UnpackOptions::default(), progress, || {
            // Read again below; a config.toml that is not a berth machine's fails there.
            let Ok(cfg) = store::load_config(&rootfs) else {
                return Ok(None);
            };
            let picked = self.users_for_import(Some(&cfg))?;
            let ids = ids_between(None, picked.0);
            early = Some(picked);
            Ok(Some(ids))
        })?;
        progress.set_done(progress.total());
        let inner = rootfs.join(store::ROOTFS_DIR);
        let config = rootfs.join(store::CONFIG_FILE);
        let shifted = early.is_some();
        let exported = if inner.is_dir() && config.is_file() {
            let cfg = store::load_config(&rootfs)
                .map_err(|e| e.context("the archive's config.toml is not a berth machine's"))?;
            let moved = staging.join(".inner");
            std::fs::rename(&inner, &moved).at("cannot move", &inner)?;
            crate::storage::copy::remove_tree(&rootfs).at("cannot remove", &rootfs)?;
            std::fs::rename(&moved, &rootfs).at("cannot move", &moved)?;
            Some(cfg)
        } else {
            None
        };
        let (users, range) = match early {
            Some(picked) => picked,
            None => self.users_for_import(exported.as_ref())?,
        };
        let ids = ids_between(None, users);
        if !shifted && !ids.is_identity() {
            // config.toml came later (an export repacked by other tools): shift by a copy.
            tracing::info!(
                "{}: config.toml follows the files; shifting them by a copy",
                staging.display()
            );
            shift_copy(staging, ids)?;
        }
        Ok(Unpacked {
            exported,
            users,
            _range: range,
        })
    }

    /// A new range when the exported machine had one (as an export shows it, its files
    /// are as the machine saw them: its root 0).
    fn users_for_import(
        self: &Arc<Self>,
        exported: Option<&MachineConfig>,
    ) -> Result<(Option<Users>, Option<RangeReservation>)> {
        self.users_for(match exported.and_then(|c| c.users) {
            Some(_) => users::Request::Pick,
            None => users::Request::No,
        })
    }

    /// Gives the unpacked machine its config and renames it into place.
    async fn install_import(
        self: &Arc<Self>,
        name: &str,
        staging: &Path,
        unpacked: Unpacked,
    ) -> Result<()> {
        let users = unpacked.users;
        let mut _lease = None;
        let config = match unpacked.exported {
            Some(from) => {
                let (network, lease) = self.copied_network(name, &from.network).await?;
                _lease = Some(lease);
                MachineConfig {
                    network,
                    // Unpacked into a plain directory: no subvolume to hold to a quota.
                    disk_quota: None,
                    ..super::create::copied_config(from, name, users)?
                }
            }
            None => MachineConfig {
                created_at: now_usec(),
                machine_id: Some(crate::machine_id::new().map_err(Error::Failed)?),
                users,
                ..MachineConfig::placeholder(name)
            },
        };
        let rootfs = staging.join(store::ROOTFS_DIR);
        if let Some(id) = &config.machine_id
            && rootfs.join("etc").is_dir()
        {
            write_etc(&rootfs, "machine-id", id, config.users)?;
        }
        store::save_config(staging, &config)?;
        let dest = self.paths.machine_dir(name);
        std::fs::rename(staging, &dest).at("cannot rename into place", staging)?;
        let bridge = config.network.bridge.clone();
        self.insert(Arc::new(Machine::new(dest, config)));
        self.refresh_dns(bridge.as_deref()).await;
        Ok(())
    }
}

/// What unpacking gave: an export's config, and the new machine's users with their range
/// held until the machine is registered.
struct Unpacked {
    exported: Option<MachineConfig>,
    users: Option<Users>,
    _range: Option<RangeReservation>,
}

/// Moves `staging/rootfs`'s IDs by `ids`, by copying it.
fn shift_copy(staging: &Path, ids: IdMap) -> Result<()> {
    let rootfs = staging.join(store::ROOTFS_DIR);
    let shifted = staging.join(".shifted");
    let opts = crate::storage::copy::CopyOptions {
        ids,
        ..Default::default()
    };
    crate::storage::copy::copy_tree(&rootfs, &shifted, &opts, &crate::jobs::Progress::new())?;
    crate::storage::copy::remove_tree(&rootfs).at("cannot remove", &rootfs)?;
    std::fs::rename(&shifted, &rootfs).at("cannot move", &shifted)
}
