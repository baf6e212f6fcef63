//! Where berthd keeps things. Every path can be moved (flags, environment or
//! /etc/berth/berthd.toml) so tests and packagers need no patching.

use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/berth/berthd.toml";

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Paths {
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_runtime_dir")]
    pub runtime_dir: PathBuf,
    /// The subnet of the network berthd makes on its first start (berth0).
    #[serde(default = "default_subnet")]
    pub default_subnet: String,
}

fn default_subnet() -> String {
    crate::net::DEFAULT_SUBNET.to_string()
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/berth")
}

fn default_runtime_dir() -> PathBuf {
    PathBuf::from("/run/berth")
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            state_dir: default_state_dir(),
            runtime_dir: default_runtime_dir(),
            default_subnet: default_subnet(),
        }
    }
}

impl Paths {
    /// Reads the config file if it exists; a missing file means defaults, a broken one is
    /// an error so that a typo never silently moves the state directory.
    pub fn load(config: &Path) -> Result<Paths, String> {
        match std::fs::read_to_string(config) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", config.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Paths::default()),
            Err(e) => Err(format!("{}: {e}", config.display())),
        }
    }

    pub fn machines_dir(&self) -> PathBuf {
        self.state_dir.join("machines")
    }

    pub fn templates_dir(&self) -> PathBuf {
        self.state_dir.join("templates")
    }

    pub fn machine_dir(&self, name: &str) -> PathBuf {
        self.machines_dir().join(name)
    }

    pub fn runtime_machines_dir(&self) -> PathBuf {
        self.runtime_dir.join("machines")
    }

    /// Machines' console logs (`berthctl logs`): in /run, as they are about what runs
    /// since boot and must survive a restart of berthd, not of the host.
    pub fn console_dir(&self) -> PathBuf {
        self.runtime_dir.join("console")
    }

    pub fn console_log(&self, machine: &str) -> PathBuf {
        self.console_dir().join(format!("{machine}.log"))
    }

    pub fn networks_dir(&self) -> PathBuf {
        self.state_dir.join("networks")
    }

    /// dnsmasq's files: beside the runtime directory (`/run/berth-dns`), not in it, as
    /// dnsmasq reads them as its own unprivileged user and the runtime directory is
    /// private.
    pub fn dns_dir(&self) -> PathBuf {
        let mut name = self
            .runtime_dir
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "berth".into());
        name.push("-dns");
        self.runtime_dir.with_file_name(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_overrides_and_rejects_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("berth-paths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("berthd.toml");
        std::fs::write(&file, "state-dir = \"/srv/berth\"\n").unwrap();
        let p = Paths::load(&file).unwrap();
        assert_eq!(p.state_dir, PathBuf::from("/srv/berth"));
        assert_eq!(p.runtime_dir, PathBuf::from("/run/berth"));
        std::fs::write(&file, "stat-dir = \"/srv\"\n").unwrap();
        let err = Paths::load(&file).unwrap_err();
        assert!(err.contains("stat-dir"), "{err}");
        assert_eq!(
            Paths::load(&dir.join("missing.toml")).unwrap().state_dir,
            PathBuf::from("/var/lib/berth")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
