//! BuildTemplate's work: one [`BuildSpec`] per method, checked before the Job starts,
//! then run into a staging rootfs on a blocking thread, reporting into the Job's
//! Progress. Undoing is the caller's: it removes the staging directory whatever failed.

use super::{Method, busybox, debootstrap};
use crate::error::{Error, Result};
use crate::jobs::Progress;
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
            let file = std::fs::File::from(fd);
            // A regular file tells its size, and so how far the unpacking has come.
            if let Ok(meta) = file.metadata()
                && meta.is_file()
            {
                progress.set_total(meta.len());
            }
            let summary = crate::storage::archive::unpack(
                file,
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
            if !source.is_dir() {
                return Err(Error::InvalidArgument(format!(
                    "Source {}: not a directory",
                    source.display()
                )));
            }
            crate::rootfs::copy_tree(&source, rootfs)
        }
    }
}

/// Bytes a tree takes on disk, hard links once; 0 where it can't be read.
pub fn size_of(path: &Path) -> u64 {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}
