//! Snapshots of stopped machines, as `lxc-snapshot` keeps them: `machines/NAME/snapshots/
//! SNAP/` holds a copy of the rootfs and `snapshot.toml` (created, comment). Restore puts
//! a snapshot's tree back under the machine (its files as they were, in the machine's
//! range), or makes a new machine of it (with a range of its own, if the machine has one,
//! and the files moved into it where they are shifted on disk). Every step is
//! staged under a dot-name and renamed, so a crash leaves no half snapshot or tree.

use super::machine::Machine;
use super::{Daemon, now_usec};
use crate::error::{Error, IoContext, Result};
use crate::names;
use crate::security::users;
use crate::store;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::info;

pub const SNAPSHOTS_DIR: &str = "snapshots";
const SNAPSHOT_FILE: &str = "snapshot.toml";
/// Comments are for people; a bound keeps config files and replies small.
const MAX_COMMENT: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SnapshotInfo {
    pub name: String,
    /// usec since the epoch.
    pub created_at: u64,
    #[serde(default)]
    pub comment: String,
}

fn snapshot_dir(m: &Machine, snap: &str) -> PathBuf {
    m.dir.join(SNAPSHOTS_DIR).join(snap)
}

fn validate_snapshot_name(snap: &str) -> Result<()> {
    names::validate_machine_name(snap)
        .map_err(|e| Error::InvalidName(e.replace("machine name", "snapshot name")))
}

fn no_snapshot(m: &Machine, snap: &str) -> Error {
    Error::InvalidArgument(format!(
        "machine {} has no snapshot {} (berthctl snapshots {} lists them)",
        m.name,
        names::shown(snap),
        m.name
    ))
}

fn read_info(dir: &Path) -> Result<SnapshotInfo> {
    let file = dir.join(SNAPSHOT_FILE);
    let text = std::fs::read_to_string(&file).at("cannot read", &file)?;
    toml::from_str(&text).map_err(|e| {
        Error::Failed(format!(
            "{}: {}",
            file.display(),
            e.message().lines().next().unwrap_or("invalid")
        ))
    })
}

impl Daemon {
    pub async fn snapshot(&self, machine: &str, snap: &str, comment: &str) -> Result<()> {
        validate_snapshot_name(snap)?;
        if comment.len() > MAX_COMMENT || comment.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "snapshot comment: at most {MAX_COMMENT} bytes on one line"
            )));
        }
        let (m, _op) = self.locked(machine).await?;
        let rootfs = self.stopped_rootfs(&m, "snapshot")?;
        let dest = snapshot_dir(&m, snap);
        if dest.exists() {
            return Err(Error::AlreadyExists(format!(
                "snapshot {} of machine {machine}",
                names::shown(snap)
            )));
        }
        let info = SnapshotInfo {
            name: snap.to_string(),
            created_at: now_usec(),
            comment: comment.to_string(),
        };
        let parent = m.dir.join(SNAPSHOTS_DIR);
        let staging = parent.join(format!(".{snap}.snapshot-{}", std::process::id()));
        staged(staging, dest, move |staging| {
            std::fs::create_dir_all(staging).at("cannot create", staging)?;
            crate::storage::copy::copy_tree(
                &rootfs,
                &staging.join(store::ROOTFS_DIR),
                &Default::default(),
                &crate::jobs::Progress::new(),
            )?;
            let text = toml::to_string(&info).map_err(|e| Error::failed("snapshot.toml", e))?;
            store::write_atomic(&staging.join(SNAPSHOT_FILE), text.as_bytes())
        })
        .await
        .map_err(|e| e.context(format!("cannot snapshot machine {machine}")))?;
        info!("machine {machine}: snapshot {snap} taken");
        Ok(())
    }

    /// The machine's snapshots, oldest first.
    pub async fn snapshots(&self, machine: &str) -> Result<Vec<SnapshotInfo>> {
        let m = self.machine(machine)?;
        let dir = m.dir.join(SNAPSHOTS_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("cannot list", &dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            match read_info(&entry.path()) {
                Ok(info) => out.push(info),
                Err(e) => tracing::warn!("machine {machine}: snapshot {name}: {e}"),
            }
        }
        out.sort_by_key(|s| (s.created_at, s.name.clone()));
        Ok(out)
    }

    /// Puts snapshot `snap` back: over the machine's own tree when `new_machine` is empty,
    /// else as a new machine with the original's settings.
    pub async fn restore_snapshot(
        self: &Arc<Self>,
        machine: &str,
        snap: &str,
        new_machine: &str,
    ) -> Result<Option<Arc<Machine>>> {
        validate_snapshot_name(snap)?;
        let (m, _op) = self.locked(machine).await?;
        let dir = snapshot_dir(&m, snap);
        if !dir.join(SNAPSHOT_FILE).exists() {
            return Err(no_snapshot(&m, snap));
        }
        let source = dir.join(store::ROOTFS_DIR);
        if new_machine.is_empty() {
            let rootfs = self.stopped_rootfs(&m, "restore")?;
            self.check_no_overlay_on(&m.dir, &format!("restore {machine}"))?;
            let fresh = m
                .dir
                .join(format!(".rootfs.restore-{}", std::process::id()));
            let old = m.dir.join(format!(".rootfs.old-{}", std::process::id()));
            let (f, o, r) = (fresh.clone(), old.clone(), rootfs.clone());
            tokio::task::spawn_blocking(move || -> Result<()> {
                let _ = crate::storage::copy::remove_tree(&f);
                if let Err(e) = crate::storage::copy::copy_tree(
                    &source,
                    &f,
                    &Default::default(),
                    &crate::jobs::Progress::new(),
                ) {
                    let _ = crate::storage::copy::remove_tree(&f);
                    return Err(e);
                }
                std::fs::rename(&r, &o).at("cannot move aside", &r)?;
                std::fs::rename(&f, &r).at("cannot rename into place", &f)?;
                crate::storage::copy::remove_tree(&o).at("cannot delete", &o)
            })
            .await
            .map_err(|e| Error::failed("restore crashed", e))?
            .map_err(|e| e.context(format!("cannot restore {machine} to {snap}")))?;
            info!("machine {machine}: restored to snapshot {snap}");
            return Ok(None);
        }
        names::validate_machine_name(new_machine).map_err(Error::InvalidName)?;
        let from = m.config();
        let _reservation = self.reserve(new_machine)?;
        // A new machine needs a range of its own; the snapshot's files are as the machine
        // had them: in its range, where its files are shifted on disk.
        let (users, _range) = self.users_for(match from.users {
            Some(_) => users::Request::Pick,
            None => users::Request::No,
        })?;
        let ids = super::create::ids_between(from.users, users);
        let (network, _lease) = self.copied_network(new_machine, &from.network).await?;
        let mut config = crate::store::MachineConfig {
            network,
            ..super::create::copied_config(from, new_machine, users)?
        };
        let new_dir = self.make_machine_dir(&mut config, source, ids).await?;
        let made = Arc::new(Machine::new(new_dir, config));
        self.insert(made.clone());
        self.refresh_dns(made.config().network.bridge.as_deref())
            .await;
        info!("machine {new_machine}: restored from snapshot {snap} of {machine}");
        Ok(Some(made))
    }

    pub async fn remove_snapshot(&self, machine: &str, snap: &str) -> Result<()> {
        validate_snapshot_name(snap)?;
        let (m, _op) = self.locked(machine).await?;
        let dir = snapshot_dir(&m, snap);
        if !dir.exists() {
            return Err(no_snapshot(&m, snap));
        }
        let doomed = m
            .dir
            .join(SNAPSHOTS_DIR)
            .join(format!(".{snap}.remove-{}", std::process::id()));
        std::fs::rename(&dir, &doomed).at("cannot move aside", &dir)?;
        let d = doomed.clone();
        tokio::task::spawn_blocking(move || crate::storage::copy::remove_tree(&d))
            .await
            .map_err(|e| Error::failed("snapshot removal crashed", e))?
            .at("cannot delete", &doomed)?;
        info!("machine {machine}: snapshot {snap} removed");
        Ok(())
    }
}

/// Runs `make` into `staging` on a blocking thread and renames it to `dest`; on failure
/// removes `staging`.
async fn staged(
    staging: PathBuf,
    dest: PathBuf,
    make: impl FnOnce(&Path) -> Result<()> + Send + 'static,
) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        let _ = crate::storage::copy::remove_tree(&staging);
        let made = make(&staging).and_then(|()| {
            std::fs::rename(&staging, &dest).at("cannot rename into place", &staging)
        });
        if made.is_err() {
            let _ = crate::storage::copy::remove_tree(&staging);
        }
        made
    })
    .await
    .map_err(|e| Error::failed("snapshot crashed", e))?
}
