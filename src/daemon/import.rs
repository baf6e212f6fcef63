//! ImportMachine: a new machine from a tar on the caller's descriptor, as a Job. A berth
//! export (`config.toml` and `rootfs/`) keeps its settings under the new name, with a
//! new machine ID, no autostart and, if it had one, a new user range; any other archive
//! is a root filesystem and gets the defaults. Unpacked into a dot-directory and renamed
//! into place, so a failure, Cancel or crash leaves nothing.

use super::machine::Machine;
use super::{Daemon, now_usec};
use crate::error::{Error, IoContext, Result};
use crate::jobs::{Job, Operation, Target};
use crate::names;
use crate::security::users::{self, Ownership};
use crate::storage::archive::{self, UnpackOptions};
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
            let (s, p) = (staging.clone(), progress.clone());
            let unpacked = tokio::task::spawn_blocking(move || unpack_into(&s, input, &p))
                .await
                .map_err(|e| Error::failed("import crashed", e))
                .and_then(|r| r);
            let made = match unpacked {
                Ok(exported) => daemon.install_import(&name, &staging, exported).await,
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

    /// Gives the unpacked machine its config and renames it into place.
    async fn install_import(
        self: &Arc<Self>,
        name: &str,
        staging: &Path,
        exported: Option<MachineConfig>,
    ) -> Result<()> {
        let machine_id = Some(crate::machine_id::new().map_err(Error::Failed)?);
        let from_users = exported.as_ref().and_then(|c| c.users);
        let (users, _range) = self.users_for(match from_users {
            Some(_) => users::Request::Pick,
            None => users::Request::No,
        })?;
        if matches!(users, Some(u) if u.ownership == Ownership::Chown) {
            return Err(Error::NotSupported(
                "the machine ran in a user namespace, and this file system has no idmapped \
                 mounts to map its files; importing it here is not supported yet"
                    .into(),
            ));
        }
        let config = match exported {
            Some(from) => MachineConfig {
                name: name.to_string(),
                hostname: if from.hostname == from.name {
                    name.to_string()
                } else {
                    from.hostname.clone()
                },
                created_at: now_usec(),
                autostart: false,
                ephemeral: false,
                users,
                machine_id,
                base: None,
                ..from
            },
            None => MachineConfig {
                created_at: now_usec(),
                machine_id,
                ..MachineConfig::placeholder(name)
            },
        };
        let rootfs = staging.join(store::ROOTFS_DIR);
        if let Some(id) = &config.machine_id
            && rootfs.join("etc").is_dir()
        {
            let file = rootfs.join("etc/machine-id");
            std::fs::write(&file, format!("{id}\n")).at("cannot write", &file)?;
        }
        store::save_config(staging, &config)?;
        let dest = self.paths.machine_dir(name);
        std::fs::rename(staging, &dest).at("cannot rename into place", staging)?;
        self.insert(Arc::new(Machine::new(dest, config)));
        Ok(())
    }
}

/// Unpacks into `staging/rootfs`; a berth export (config.toml and rootfs/ at its top) is
/// then moved up a level, and its config returned.
fn unpack_into(
    staging: &Path,
    input: OwnedFd,
    progress: &crate::jobs::Progress,
) -> Result<Option<MachineConfig>> {
    let _ = crate::storage::copy::remove_tree(staging);
    std::fs::create_dir(staging).at("cannot create", staging)?;
    let rootfs = staging.join(store::ROOTFS_DIR);
    std::fs::create_dir(&rootfs).at("cannot create", &rootfs)?;
    let file = std::fs::File::from(input);
    if let Ok(meta) = file.metadata()
        && meta.is_file()
    {
        progress.set_total(meta.len());
    }
    archive::unpack(file, &rootfs, &UnpackOptions::default(), progress)?;
    progress.set_done(progress.total());
    let inner = rootfs.join(store::ROOTFS_DIR);
    let config = rootfs.join(store::CONFIG_FILE);
    if !(inner.is_dir() && config.is_file()) {
        return Ok(None);
    }
    let cfg = store::load_config(&rootfs)
        .map_err(|e| e.context("the archive's config.toml is not a berth machine's"))?;
    let moved = staging.join(".inner");
    std::fs::rename(&inner, &moved).at("cannot move", &inner)?;
    crate::storage::copy::remove_tree(&rootfs).at("cannot remove", &rootfs)?;
    std::fs::rename(&moved, &rootfs).at("cannot move", &moved)?;
    Ok(Some(cfg))
}
