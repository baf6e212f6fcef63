//! BuildTemplate's work: one [`BuildSpec`] per method, checked before the Job starts,
//! then run into a staging rootfs on a blocking thread, reporting into the Job's
//! Progress. Undoing is the caller's: it removes the staging directory whatever failed.

use super::{Method, ROOTFS_DIR, TemplateConfig, busybox, debootstrap, install};
use crate::error::{Error, Result};
use crate::jobs::Progress;
use crate::storage::copy::{self, CopyOptions};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// What to build, with its options already checked.
#[derive(Debug)]
pub enum BuildSpec {
    Busybox,
    Debootstrap(debootstrap::Options),
    /// The caller's open archive: berthd never opens a caller's path.
    Tar(OwnedFd),
    Directory(PathBuf),
}

impl BuildSpec {
    pub fn method(&self) -> Method {
        match self {
            BuildSpec::Busybox => Method::Busybox,
            BuildSpec::Debootstrap(_) => Method::Debootstrap,
            BuildSpec::Tar(_) => Method::Tar,
            BuildSpec::Directory(_) => Method::Directory,
        }
    }

    /// The options as template.toml records them.
    pub fn recorded_options(&self) -> BTreeMap<String, String> {
        match self {
            BuildSpec::Busybox | BuildSpec::Tar(_) => BTreeMap::new(),
            BuildSpec::Debootstrap(o) => o.recorded(),
            BuildSpec::Directory(source) => {
                BTreeMap::from([("source".into(), source.display().to_string())])
            }
        }
    }

    /// What the Job's Progress counts.
    pub fn unit(&self) -> &'static str {
        match self {
            BuildSpec::Debootstrap(_) => "steps",
            _ => "bytes",
        }
    }
}

/// Makes `rootfs` (which does not exist yet) by the spec's method.
pub fn run(spec: BuildSpec, rootfs: &Path, progress: &Progress) -> Result<()> {
    match spec {
        BuildSpec::Busybox => busybox::build(rootfs),
        BuildSpec::Debootstrap(opts) => debootstrap::run(&opts, rootfs, progress),
        BuildSpec::Tar(fd) => {
            std::fs::create_dir(rootfs).map_err(|e| Error::io("cannot create", rootfs, e))?;
            let summary = crate::storage::archive::unpack(
                crate::storage::archive::input_from(fd, progress),
                rootfs,
                &crate::storage::archive::UnpackOptions::default(),
                progress,
            )?;
            tracing::info!(
                "unpacked {} entries, {} bytes ({} device nodes skipped: /dev is made at start)",
                summary.entries,
                summary.bytes,
                summary.skipped_devices
            );
            progress.set_done(progress.total());
            Ok(())
        }
        BuildSpec::Directory(source) => {
            // VServer's rsync method: what a host makes at boot (/proc, /sys, /dev, /run,
            // /tmp) comes empty, and another file system inside is an error naming it.
            let opts = CopyOptions {
                skip_host_dirs: true,
                one_file_system: true,
                ..Default::default()
            };
            let size = copy::tree_size(&source, &opts)?;
            progress.set_total(size.apparent_bytes);
            copy::copy_tree(&source, rootfs, &opts, progress)
        }
    }
}

/// Builds template `name` by `spec` in `staging`, a dot-directory of `templates_dir` made
/// here, and installs it (template.toml, then the rename into place); on failure removes
/// `staging`. Blocking: call it from a blocking thread.
pub fn build_into(
    templates_dir: &Path,
    staging: &Path,
    name: &str,
    spec: BuildSpec,
    progress: &Progress,
) -> Result<TemplateConfig> {
    let options = spec.recorded_options();
    let method = spec.method();
    let built = (|| -> Result<TemplateConfig> {
        std::fs::create_dir_all(templates_dir)
            .map_err(|e| Error::io("cannot create", templates_dir, e))?;
        let _ = copy::remove_tree(staging);
        std::fs::create_dir(staging).map_err(|e| Error::io("cannot create", staging, e))?;
        let rootfs = staging.join(ROOTFS_DIR);
        run(spec, &rootfs, progress)?;
        progress.check("template build")?;
        let cfg = TemplateConfig {
            name: name.to_string(),
            method,
            options,
            created_at: crate::daemon::now_usec(),
            size_bytes: size_of(&rootfs),
        };
        install(staging, templates_dir, &cfg)?;
        Ok(cfg)
    })();
    if built.is_err()
        && let Err(e) = copy::remove_tree(staging)
    {
        tracing::warn!("template {name}: cannot remove {}: {e}", staging.display());
    }
    built.map_err(|e| e.context(format!("cannot build template {name}")))
}

/// Bytes a tree takes on disk, hard links once; 0 where it can't be read.
pub fn size_of(path: &Path) -> u64 {
    copy::tree_size(path, &CopyOptions::default())
        .map(|s| s.allocated_bytes)
        .unwrap_or(0)
}
