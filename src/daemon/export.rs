//! Export: a stopped machine as a tar (plain, gzip, xz or zstd) written to the caller's
//! descriptor, as a Job. The whole machine is `config.toml` and `rootfs/`, which import
//! reads back; `rootfs_only` writes the tree alone, a rootfs tarball that `tar` and
//! `machinectl import-tar` take. Either holds the machine's own view of its files (its
//! root is 0), unshifted where they are shifted on disk. The machine stays locked (it
//! can't start) until done.

use super::Daemon;
use crate::error::{Error, Result};
use crate::jobs::{Job, Operation, Target};
use crate::storage::archive::{self, Compression, ExtraFile, PackOptions};
use crate::store;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

impl Daemon {
    pub async fn export(
        self: &Arc<Self>,
        name: &str,
        out: OwnedFd,
        format: &str,
        rootfs_only: bool,
    ) -> Result<Arc<Job>> {
        let compression = Compression::from_format(format)?;
        let (m, op) = self.locked(name).await?;
        let rootfs = self.stopped_rootfs(&m, "export")?;
        // The archive holds the machine as it sees itself (its root 0), whether its files
        // are shifted on disk or idmapped at start: import shifts them into a new range.
        let ids = super::create::ids_between(m.config().users, None);
        let config_text = std::fs::read(m.dir.join(store::CONFIG_FILE))
            .map_err(|e| Error::io("cannot read", m.dir.join(store::CONFIG_FILE), e))?;
        let opts = PackOptions {
            compression,
            prefix: (!rootfs_only).then(|| PathBuf::from(store::ROOTFS_DIR)),
            extra_files: if rootfs_only {
                Vec::new()
            } else {
                vec![ExtraFile {
                    path: PathBuf::from(store::CONFIG_FILE),
                    data: config_text,
                    mode: 0o600,
                }]
            },
            ids,
        };
        let job = self.new_job(
            Operation::ExportMachine,
            Target::Machine(name.to_string()),
            "bytes",
        );
        let progress = job.progress.clone();
        let name = name.to_string();
        self.run_job(job.clone(), async move {
            let _op = op;
            tokio::task::spawn_blocking(move || {
                archive::pack(&rootfs, std::fs::File::from(out), &opts, &progress)
            })
            .await
            .map_err(|e| Error::failed("export crashed", e))?
            .map_err(|e| e.context(format!("cannot export machine {name}")))?;
            Ok(format!("machine {name} exported"))
        });
        Ok(job)
    }
}
