//! State on disk. A machine is a directory `machines/NAME/` holding `config.toml` and
//! `rootfs/`; runtime facts (its leader PID) live under /run/berth so they vanish with a
//! reboot. Writes are atomic (temp file, fsync, rename, fsync dir): a crash never leaves
//! a torn config.

use crate::error::{Error, IoContext, Result};
use crate::limits::Limits;
use crate::security::Settings;
use crate::security::users::Users;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "config.toml";
pub const ROOTFS_DIR: &str = "rootfs";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MachineConfig {
    pub name: String,
    pub template: String,
    pub hostname: String,
    /// argv of PID 1; empty means the template's init.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub environment: Vec<String>,
    /// µs since the epoch.
    pub created_at: u64,
    #[serde(default)]
    pub autostart: bool,
    #[serde(default)]
    pub ephemeral: bool,
    /// Signal that asks PID 1 to shut down; None picks by init (see daemon).
    #[serde(default)]
    pub halt_signal: Option<i32>,
    #[serde(default)]
    pub stop_timeout_usec: Option<u64>,
    #[serde(default)]
    pub tmp_size: Option<u64>,
    /// Host paths bound into the machine at every start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<crate::spawn::binds::Bind>,
    #[serde(default)]
    pub security: Settings,
    /// The machine's own user namespace; None: privileged (its root is the host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Users>,
    /// The machine's ID (crate::machine_id), in its /etc/machine-id since creation; None
    /// for machines made before berth gave them one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// An ephemeral machine's read-only tree (a template's or a stopped machine's
    /// rootfs): it runs on an overlay of it and has no rootfs of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<PathBuf>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub network: crate::net::MachineNet,
    /// berth's own PID 1 under the Command (see [`MachineConfig::berth_init`]); None
    /// takes the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    /// Bytes the machine's tree (a btrfs subvolume, storage/quota.rs) may take on disk;
    /// None: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_quota: Option<u64>,
}

impl MachineConfig {
    /// What stands in for the config of a machine whose own cannot be read.
    pub fn placeholder(name: &str) -> MachineConfig {
        MachineConfig {
            name: name.to_string(),
            template: String::new(),
            hostname: name.to_string(),
            command: Vec::new(),
            environment: Vec::new(),
            created_at: 0,
            autostart: false,
            ephemeral: false,
            halt_signal: None,
            stop_timeout_usec: None,
            tmp_size: None,
            binds: Vec::new(),
            security: Settings::default(),
            users: None,
            machine_id: None,
            base: None,
            limits: Limits::default(),
            network: crate::net::MachineNet::default(),
            init: None,
            disk_quota: None,
        }
    }

    /// Whether berth's PID 1 runs the Command as PID 2: on unless turned off, and only for
    /// a Command that is not an init itself (`/lib/systemd/systemd`, `/sbin/init`), since
    /// an init reaps and handles signals itself, and systemd must be PID 1 to boot.
    pub fn berth_init(&self) -> bool {
        let Some(program) = self.command.first() else {
            return false;
        };
        let name = program.rsplit('/').next().unwrap_or_default();
        let is_init = matches!(name, "init" | "systemd");
        self.init.unwrap_or(!is_init)
    }
}

/// What berthd needs to find a running machine again after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeState {
    pub leader: u32,
    /// The leader's start time (field 22 of /proc/PID/stat), so a recycled PID is not
    /// mistaken for the machine.
    pub leader_start_time: u64,
    /// A one-shot run's machine (RunMachine): it lives as long as the call that waits
    /// for it, which does not outlive the berthd that answers it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run: bool,
}

pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_io(path, data).at("cannot write", path)
}

fn write_atomic_io(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        // Private: a config may hold secrets in its Environment.
        let mut f = std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn save_config(machine_dir: &Path, config: &MachineConfig) -> Result<()> {
    let path = machine_dir.join(CONFIG_FILE);
    let text = toml::to_string(config)
        .map_err(|e| Error::failed(format!("cannot write {}", path.display()), e))?;
    write_atomic(&path, text.as_bytes())
}

pub fn load_config(machine_dir: &Path) -> Result<MachineConfig> {
    let path = machine_dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).at("cannot read", &path)?;
    toml::from_str(&text)
        .map_err(|e| Error::Failed(format!("{}: {}", path.display(), one_line(&e, &text))))
}

/// A TOML error as one line, with where it is: the parser's own Display draws the line
/// with a caret over several lines, which does not fit a journal line or an error reply.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// Machine directories, with a config or not; dot-entries are berth's in-progress work.
pub fn list_machine_dirs(machines_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    let entries = match std::fs::read_dir(machines_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dirs),
        Err(e) => return Err(Error::io("cannot list", machines_dir, e)),
    };
    for entry in entries {
        let entry = entry.at("cannot list", machines_dir)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.path().is_dir() {
            dirs.push(entry.path());
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Leftovers (dot-entries) of creations, removals or template builds that a crash
/// interrupted.
pub fn list_leftovers(machines_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(machines_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect()
}

pub fn runtime_file(runtime_machines_dir: &Path, name: &str) -> PathBuf {
    runtime_machines_dir.join(format!("{name}.json"))
}

pub fn save_runtime(dir: &Path, name: &str, state: &RuntimeState) -> Result<()> {
    std::fs::create_dir_all(dir).at("cannot create", dir)?;
    let data = serde_json::to_vec(state).expect("runtime state serializes");
    write_atomic(&runtime_file(dir, name), &data)
}

pub fn load_runtime(dir: &Path, name: &str) -> Option<RuntimeState> {
    let data = std::fs::read(runtime_file(dir, name)).ok()?;
    serde_json::from_slice(&data).ok()
}

pub fn remove_runtime(dir: &Path, name: &str) {
    let _ = std::fs::remove_file(runtime_file(dir, name));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn config_round_trips_through_disk() {
        let dir = tempdir("cfg");
        let limits = crate::limits::from_pairs([
            (
                "MemoryMax".to_owned(),
                crate::limits::RawValue::Text("64M".into()),
            ),
            (
                "CPUShares".to_owned(),
                crate::limits::RawValue::Unsigned(256),
            ),
        ])
        .unwrap();
        let cfg = MachineConfig {
            name: "box".into(),
            template: "busybox".into(),
            hostname: "box".into(),
            command: vec!["/bin/sh".into()],
            environment: vec!["A=1".into()],
            created_at: 1,
            autostart: false,
            ephemeral: false,
            halt_signal: None,
            stop_timeout_usec: Some(5_000_000),
            tmp_size: None,
            binds: Vec::new(),
            network: crate::net::MachineNet {
                mode: crate::net::NetMode::Bridge,
                bridge: Some("berth0".into()),
                address: Some("10.0.3.7/24".parse().unwrap()),
                static_address: true,
                ports: vec!["tcp:8080:80".parse().unwrap()],
            },
            security: Settings {
                capabilities: vec!["CAP_SYS_TIME".into()],
                ..Default::default()
            },
            users: Some(Users {
                range: crate::security::users::UserRange {
                    base: 524288,
                    count: 65536,
                },
                ownership: crate::security::users::Ownership::Chown,
            }),
            machine_id: Some("0123456789abcdef0123456789abcdef".into()),
            base: Some("/var/lib/berth/templates/deb/rootfs".into()),
            limits,
            init: Some(false),
            disk_quota: Some(1 << 30),
        };
        save_config(&dir, &cfg).unwrap();
        assert_eq!(load_config(&dir).unwrap(), cfg);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(CONFIG_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "configs hold secrets");
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(leftovers.len(), 1, "no temp files stay behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn berth_init_is_on_for_a_command_unless_turned_off() {
        let mut cfg = MachineConfig::placeholder("box");
        assert!(!cfg.berth_init(), "a machine's own init needs none");
        cfg.init = Some(true);
        assert!(!cfg.berth_init(), "ignored without a Command");
        cfg.command = vec!["/bin/sh".into()];
        assert!(cfg.berth_init());
        cfg.init = None;
        assert!(cfg.berth_init(), "on by default for a Command");
        cfg.init = Some(false);
        assert!(!cfg.berth_init());
        cfg.init = None;
        cfg.command = vec!["/lib/systemd/systemd".into()];
        assert!(!cfg.berth_init(), "an init as the Command is PID 1 itself");
        cfg.init = Some(true);
        assert!(cfg.berth_init(), "unless asked");
    }

    #[test]
    fn broken_config_names_the_file() {
        let dir = tempdir("broken");
        std::fs::write(dir.join(CONFIG_FILE), "name = [").unwrap();
        let err = load_config(&dir).unwrap_err().to_string();
        assert!(err.contains("config.toml"), "{err}");
        assert!(
            err.contains("line 1, column 9") && !err.contains('\n'),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn listing_skips_dot_entries_and_files_but_not_broken_machines() {
        let dir = tempdir("list");
        for d in ["a", ".b.tmp", "c"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("a").join(CONFIG_FILE), "").unwrap();
        std::fs::write(dir.join(".b.tmp").join(CONFIG_FILE), "").unwrap();
        std::fs::write(dir.join("stray-file"), "").unwrap();
        // c has no config: it is listed, to be shown broken rather than hidden.
        let found = list_machine_dirs(&dir).unwrap();
        assert_eq!(found, vec![dir.join("a"), dir.join("c")]);
        assert_eq!(list_leftovers(&dir), vec![dir.join(".b.tmp")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
