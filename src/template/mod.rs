//! Templates: root filesystems built once into `templates/NAME/` (its `rootfs/` and a
//! `template.toml` saying how it was made) and copied for each machine. A template is
//! built in a dot-directory and renamed into place, so a half-built template is never
//! used and a crash leaves only a dot-directory that berthd removes at start.
//!
//! The methods (build.rs): `busybox` (one static binary, built on first use),
//! `debootstrap` (debootstrap.rs), `tar` (an archive from the caller's file descriptor)
//! and `directory` (a copy of a tree on the host).

pub mod build;
pub mod busybox;
pub mod debootstrap;
pub mod init;

use crate::error::{Error, IoContext, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "template.toml";
pub const ROOTFS_DIR: &str = "rootfs";

/// How a template's tree was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Busybox,
    Debootstrap,
    Tar,
    Directory,
}

impl Method {
    pub const ALL: [Method; 4] = [
        Method::Busybox,
        Method::Debootstrap,
        Method::Tar,
        Method::Directory,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Busybox => "busybox",
            Method::Debootstrap => "debootstrap",
            Method::Tar => "tar",
            Method::Directory => "directory",
        }
    }

    pub fn parse(s: &str) -> Result<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<_> = Method::ALL.iter().map(|m| m.as_str()).collect();
                Error::InvalidArgument(format!(
                    "unknown template method {}; use one of {}",
                    crate::names::shown(s),
                    all.join(", ")
                ))
            })
    }
}

/// `template.toml`: what a built template is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TemplateConfig {
    pub name: String,
    pub method: Method,
    /// The build's options as given (suite, mirror, source ...), for people to read.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// usec since the epoch.
    pub created_at: u64,
    /// Bytes the rootfs takes on disk.
    pub size_bytes: u64,
}

pub fn template_dir(templates_dir: &Path, name: &str) -> PathBuf {
    templates_dir.join(name)
}

pub fn rootfs_of(templates_dir: &Path, name: &str) -> PathBuf {
    template_dir(templates_dir, name).join(ROOTFS_DIR)
}

/// Template names follow machine names' rules: they become object paths and directory
/// names.
pub fn validate_name(name: &str) -> Result<()> {
    crate::names::validate_machine_name(name)
        .map_err(|e| Error::InvalidName(e.replace("machine name", "template name")))
}

/// Reads a built template. A tree from before template.toml existed is the busybox one.
pub fn load(templates_dir: &Path, name: &str) -> Result<TemplateConfig> {
    let dir = template_dir(templates_dir, name);
    let file = dir.join(CONFIG_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let cfg: TemplateConfig = toml::from_str(&text).map_err(|e| {
                Error::Failed(format!(
                    "{}: {}",
                    file.display(),
                    e.message().lines().next().unwrap_or("invalid")
                ))
            })?;
            if cfg.name != name {
                return Err(Error::Failed(format!(
                    "{} names template {}, not {}",
                    file.display(),
                    crate::names::shown(&cfg.name),
                    crate::names::shown(name)
                )));
            }
            Ok(cfg)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == busybox::NAME => {
            if dir.join(ROOTFS_DIR).is_dir() {
                Ok(TemplateConfig {
                    name: name.to_string(),
                    method: Method::Busybox,
                    options: BTreeMap::new(),
                    created_at: 0,
                    size_bytes: 0,
                })
            } else {
                Err(no_such(name))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(no_such(name)),
        Err(e) => Err(Error::io("cannot read", file, e)),
    }
}

pub fn no_such(name: &str) -> Error {
    Error::NoSuchTemplate(format!(
        "no template named {}; berthctl template list shows them, berthctl template build makes one",
        crate::names::shown(name)
    ))
}

/// The names of the built templates (dot-directories are builds under way or leftovers).
pub fn list(templates_dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(templates_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(Error::io("cannot list", templates_dir, e)),
    };
    for entry in entries {
        let entry = entry.at("cannot list", templates_dir)?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with('.') && entry.path().is_dir() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Writes the staging directory's template.toml and renames it into place: from here
/// on the template exists whole.
pub fn install(staging: &Path, templates_dir: &Path, cfg: &TemplateConfig) -> Result<()> {
    let text = toml::to_string(cfg).map_err(|e| Error::failed("cannot write template.toml", e))?;
    crate::store::write_atomic(&staging.join(CONFIG_FILE), text.as_bytes())?;
    let dest = template_dir(templates_dir, &cfg.name);
    if dest.exists() {
        return Err(Error::AlreadyExists(cfg.name.clone()));
    }
    std::fs::rename(staging, &dest).at("cannot rename into place", staging)
}

/// The busybox template, built on first use so `create --template busybox` needs no
/// build step. Blocking: call it from a blocking thread.
pub fn ensure_busybox(templates_dir: &Path) -> Result<PathBuf> {
    let rootfs = rootfs_of(templates_dir, busybox::NAME);
    if !rootfs.is_dir() {
        let staging =
            templates_dir.join(format!(".{}.build-{}", busybox::NAME, std::process::id()));
        build::build_into(
            templates_dir,
            &staging,
            busybox::NAME,
            build::BuildSpec::Busybox,
            &crate::jobs::Progress::new(),
        )?;
    }
    Ok(rootfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_and_unknown_ones_list_the_known() {
        assert_eq!(Method::parse("tar").unwrap(), Method::Tar);
        let e = Method::parse("rsync").unwrap_err().to_string();
        assert!(e.contains("rsync") && e.contains("debootstrap"), "{e}");
    }

    #[test]
    fn load_reads_lists_and_refuses_mismatched_names() {
        let dir = std::env::temp_dir().join(format!("berth-tpl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("deb/rootfs")).unwrap();
        std::fs::create_dir_all(dir.join(".half.build-1")).unwrap();
        let cfg = TemplateConfig {
            name: "deb".into(),
            method: Method::Debootstrap,
            options: BTreeMap::from([("suite".into(), "bookworm".into())]),
            created_at: 5,
            size_bytes: 7,
        };
        std::fs::write(
            dir.join("deb/template.toml"),
            toml::to_string(&cfg).unwrap(),
        )
        .unwrap();
        assert_eq!(load(&dir, "deb").unwrap(), cfg);
        assert_eq!(list(&dir).unwrap(), vec!["deb".to_string()]);
        assert_eq!(
            load(&dir, "nope").unwrap_err().kind(),
            crate::error::Kind::NoSuchTemplate
        );

        std::fs::create_dir_all(dir.join("other")).unwrap();
        std::fs::copy(
            dir.join("deb/template.toml"),
            dir.join("other/template.toml"),
        )
        .unwrap();
        let e = load(&dir, "other").unwrap_err().to_string();
        assert!(e.contains("names template \"deb\""), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
