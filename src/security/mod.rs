//! What a machine's processes may do beyond their namespaces: the capability bounding
//! set ([`caps`]) and the system call filter ([`seccomp`]). Both are worked out by the
//! daemon from the machine's settings, travel to the helpers in a [`Confinement`], and
//! are applied by every process berth starts inside the machine (PID 1, Execute) right
//! before it execs, after which nothing can lift them.
//!
//! The device policy is the scope's (DevicePolicy=closed, systemd/scope.rs) and the
//! masked kernel files are mounts (spawn/mount.rs).

pub mod caps;
pub mod seccomp;
pub mod users;

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A machine's confinement settings as stored and as given over D-Bus.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Settings {
    /// Capabilities kept on top of the default bounding set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Capabilities dropped from it (wins over `capabilities`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_capabilities: Vec<String>,
    /// Changes to the default system call filter: `name` allows, `~name` denies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_call_filter: Vec<String>,
}

/// What a helper applies before exec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// The bounding set, by capability name.
    pub capabilities: BTreeSet<String>,
    /// System calls answered with EPERM.
    pub denied_calls: BTreeSet<String>,
}

impl Confinement {
    /// Checks the settings and works out the confinement; errors name what was wrong.
    pub fn new(settings: &Settings) -> Result<Confinement, String> {
        Ok(Confinement {
            capabilities: caps::bounding_set(&settings.capabilities, &settings.drop_capabilities)?,
            denied_calls: seccomp::denied(&settings.system_call_filter)?,
        })
    }

    /// Filter first (installing it needs CAP_SYS_ADMIN, which the bounding set may drop
    /// for the payload), then the bounding set. Only ever called in a helper's
    /// single-threaded child right before exec.
    pub fn apply(&self) -> Result<(), String> {
        seccomp::install(&self.denied_calls)?;
        caps::restrict_to(&self.capabilities)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let ok = Confinement::new(&Settings::default()).unwrap();
        assert!(ok.capabilities.contains("CAP_SYS_ADMIN"));
        assert!(ok.denied_calls.contains("kexec_load"));
        let bad = Settings {
            drop_capabilities: vec!["CAP_TELEPORT".into()],
            ..Default::default()
        };
        assert!(Confinement::new(&bad).unwrap_err().contains("CAP_TELEPORT"));
        let bad = Settings {
            system_call_filter: vec!["~teleport".into()],
            ..Default::default()
        };
        assert!(Confinement::new(&bad).unwrap_err().contains("teleport"));
    }

    #[test]
    fn settings_round_trip_through_toml() {
        let s = Settings {
            capabilities: vec!["CAP_SYS_TIME".into()],
            drop_capabilities: vec![],
            system_call_filter: vec!["~ptrace".into()],
        };
        let text = toml::to_string(&s).unwrap();
        assert!(
            !text.contains("drop-capabilities"),
            "empty lists are left out: {text}"
        );
        assert_eq!(toml::from_str::<Settings>(&text).unwrap(), s);
        assert_eq!(toml::from_str::<Settings>("").unwrap(), Settings::default());
    }
}
