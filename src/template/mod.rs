//! Templates: root filesystems built once into `templates/NAME/rootfs` and copied for
//! each machine. A template is built into a dot-directory and renamed into place, so a
//! half-built template is never used.

pub mod busybox;
pub mod init;

use crate::error::{Error, IoContext, Result};
use std::path::{Path, PathBuf};

/// What a template knows about the machines made from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateInfo {
    pub name: &'static str,
    /// argv of PID 1 when the machine gives no Command.
    pub init: &'static [&'static str],
    /// Signal asking that init to shut down.
    pub halt_signal: i32,
}

pub const KNOWN: &[TemplateInfo] = &[busybox::INFO];

pub fn info(name: &str) -> Result<&'static TemplateInfo> {
    KNOWN.iter().find(|t| t.name == name).ok_or_else(|| {
        let known: Vec<_> = KNOWN.iter().map(|t| t.name).collect();
        Error::NoSuchTemplate(format!(
            "no template named {name:?}; available: {}",
            known.join(", ")
        ))
    })
}

pub fn rootfs_of(templates_dir: &Path, name: &str) -> PathBuf {
    templates_dir.join(name).join("rootfs")
}

/// Builds the template if it is not cached yet; returns its rootfs. Blocking: call it
/// from a blocking thread.
pub fn ensure(templates_dir: &Path, name: &str) -> Result<PathBuf> {
    let info = info(name)?;
    let rootfs = rootfs_of(templates_dir, info.name);
    if rootfs.is_dir() {
        return Ok(rootfs);
    }
    std::fs::create_dir_all(templates_dir).at("cannot create", templates_dir)?;
    let staging = templates_dir.join(format!(".{}.build-{}", info.name, std::process::id()));
    let _ = crate::storage::copy::remove_tree(&staging);
    let built = (|| {
        std::fs::create_dir(&staging).at("cannot create", &staging)?;
        match info.name {
            "busybox" => busybox::build(&staging.join("rootfs")),
            other => Err(Error::NoSuchTemplate(format!(
                "template {other:?} has no builder"
            ))),
        }?;
        std::fs::rename(&staging, templates_dir.join(info.name)).at("cannot rename", &staging)
    })();
    if let Err(e) = built {
        let _ = crate::storage::copy::remove_tree(&staging);
        return Err(e.context(format!("cannot build template {}", info.name)));
    }
    Ok(rootfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_template_lists_the_known_ones() {
        match info("ubuntu") {
            Err(Error::NoSuchTemplate(m)) => {
                assert!(m.contains("ubuntu") && m.contains("busybox"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(info("busybox").unwrap().name, "busybox");
    }
}
