//! A machine's disk quota (storage/quota.rs): the qgroup limit of its rootfs subvolume,
//! given at create (create.rs) or with SetDiskQuota; read back for status with the
//! machine's other tree facts (figures.rs).

use super::{Daemon, Event};
use crate::error::{Error, Result};
use crate::storage::quota;
use std::sync::Arc;
use tracing::info;

impl Daemon {
    /// NotSupported, naming what the file system lacks, unless machines' trees can be
    /// held to a quota.
    pub(super) async fn check_quota_supported(&self) -> Result<()> {
        let dir = self.paths.machines_dir();
        tokio::task::spawn_blocking(move || quota::check_supported(&dir))
            .await
            .map_err(|e| Error::failed("checking disk quotas", e))?
            .map_err(Error::NotSupported)
    }

    /// Sets (or with 0 removes) the disk quota of `name`; it applies at once, also while
    /// the machine runs.
    pub async fn set_disk_quota(self: &Arc<Self>, name: &str, bytes: u64) -> Result<()> {
        let (m, _op) = self.locked(name).await?;
        m.usable()?;
        let mut cfg = m.config();
        if cfg.base.is_some() {
            return Err(Error::InvalidArgument(format!(
                "machine {name} is ephemeral: its writes go to memory, not to a tree of its own"
            )));
        }
        if bytes > 0 {
            self.check_quota_supported().await?;
        }
        let rootfs = m.dir.join(crate::store::ROOTFS_DIR);
        let machine = name.to_string();
        tokio::task::spawn_blocking(move || {
            if !quota::is_subvolume(&rootfs) {
                return Err(Error::NotSupported(format!(
                    "the files of machine {machine} are not a btrfs subvolume of their own \
                     (it was made where /var/lib/berth/machines was not btrfs, or imported)"
                )));
            }
            quota::set_limit(&rootfs, bytes).map_err(Error::Failed)
        })
        .await
        .map_err(|e| Error::failed("setting the disk quota", e))??;
        cfg.disk_quota = (bytes > 0).then_some(bytes);
        crate::store::save_config(&m.dir, &cfg)
            .map_err(|e| e.context(format!("cannot save the disk quota of {name}")))?;
        m.set_config(cfg);
        info!("machine {name}: disk quota {bytes} bytes");
        self.emit(Event::LimitsChanged(name.to_string()));
        Ok(())
    }
}
