//! Rename of a stopped machine, as `machinectl rename` does it. Everything keyed by the
//! name follows: its directory (snapshots inside it), config, hostname when it was the
//! name, object path, scope unit, veth and MAC (derived from the name at the next
//! start), dnsmasq's hosts; its lease, autostart and limits stay in the config.
//!
//! The directory's name is the machine's identity (load.rs), so the rename(2) of the
//! directory is the commit point. The config naming the new machine is written first
//! beside the old one under a dot-name, then the directory is renamed, then that file
//! replaces config.toml. A crash before the directory's rename leaves the old machine
//! whole (the dot-file is a leftover that load clears); a crash after it leaves a
//! directory whose pending config names it, which load puts in place
//! ([`finish_interrupted_rename`]). Never a machine that names another.

use super::Daemon;
use super::machine::Machine;
use crate::error::{Error, IoContext, Result};
use crate::names;
use crate::store::{self, MachineConfig};
use std::path::Path;
use std::sync::Arc;
use tracing::{info, warn};

/// The config a rename will put in place once the directory carries its name.
const RENAMED_CONFIG: &str = ".config.toml.renamed";

impl Daemon {
    pub async fn rename(self: &Arc<Self>, name: &str, new_name: &str) -> Result<Arc<Machine>> {
        names::validate_machine_name(new_name).map_err(Error::InvalidName)?;
        let (m, _op) = self.locked(name).await?;
        if let Some(problem) = m.problem() {
            return Err(Error::InvalidState(format!(
                "machine {name} is broken ({problem}); repair or remove it instead of renaming it"
            )));
        }
        if m.state().is_active() {
            return Err(Error::InvalidState(format!(
                "machine {name} is {}; stop it before you rename it",
                m.state().as_str()
            )));
        }
        // An overlay's lower layer must not move: ephemeral clones name it by path.
        self.check_no_overlay_on(&m.dir, &format!("rename {name}"))?;
        let _reservation = self.reserve(new_name)?;

        let old = m.config();
        let config = MachineConfig {
            name: new_name.to_string(),
            hostname: if old.hostname == old.name {
                new_name.to_string()
            } else {
                old.hostname.clone()
            },
            ..old.clone()
        };
        let new_dir = self.paths.machine_dir(new_name);
        let (from, to, cfg) = (m.dir.clone(), new_dir.clone(), config.clone());
        tokio::task::spawn_blocking(move || move_machine(&from, &to, &cfg))
            .await
            .map_err(|e| Error::failed("rename crashed", e))?
            .map_err(|e| e.context(format!("cannot rename machine {name} to {new_name}")))?;

        // The name is the machine's now; the rest follows best effort, as the machine
        // itself is whole.
        if config.hostname != old.hostname && config.base.is_none() {
            let rootfs = new_dir.join(store::ROOTFS_DIR);
            if rootfs.join("etc").is_dir()
                && let Err(e) =
                    super::create::write_etc(&rootfs, "hostname", &config.hostname, config.users)
            {
                warn!("machine {new_name}: cannot update /etc/hostname: {e}");
            }
        }
        store::remove_runtime(&self.paths.runtime_machines_dir(), name);
        self.console_rename(name, new_name);
        let renamed = Arc::new(Machine::new(new_dir, config));
        self.replace(name, renamed.clone());
        self.refresh_dns(renamed.config().network.bridge.as_deref())
            .await;
        info!("machine {name}: renamed to {new_name}");
        Ok(renamed)
    }
}

/// Moves machine directory `from` to `to` (which must not exist) with `cfg` as its
/// config, in the order the module's comment explains.
fn move_machine(from: &Path, to: &Path, cfg: &MachineConfig) -> Result<()> {
    let pending = from.join(RENAMED_CONFIG);
    let text = toml::to_string(cfg)
        .map_err(|e| Error::failed(format!("cannot write {}", pending.display()), e))?;
    store::write_atomic(&pending, text.as_bytes())?;
    if let Err(e) = rename_noreplace(from, to) {
        let _ = std::fs::remove_file(&pending);
        return Err(e);
    }
    let parent = to.parent().unwrap_or(Path::new("/"));
    let done = std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .at("cannot sync", parent)
        .and_then(|()| put_in_place(to));
    if let Err(e) = done {
        // Back to where it was: the old config still names the old directory.
        if std::fs::rename(to, from).is_ok() {
            let _ = std::fs::remove_file(from.join(RENAMED_CONFIG));
        }
        return Err(e);
    }
    Ok(())
}

/// Makes the pending config of `dir` its config.toml.
fn put_in_place(dir: &Path) -> Result<()> {
    let pending = dir.join(RENAMED_CONFIG);
    std::fs::rename(&pending, dir.join(store::CONFIG_FILE)).at("cannot rename", &pending)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .at("cannot sync", dir)
}

/// rename(2) that never replaces: an empty directory of the new name made behind berth's
/// back would otherwise be silently overwritten.
fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) | Err(nix::errno::Errno::ENOTEMPTY) => Err(
            Error::AlreadyExists(to.file_name().unwrap_or_default().to_string_lossy().into()),
        ),
        // A file system without the flag: the reservation already checked the name.
        Err(nix::errno::Errno::EINVAL) => std::fs::rename(from, to).at("cannot rename", from),
        Err(e) => Err(std::io::Error::from(e)).at("cannot rename", from),
    }
}

/// At berthd's start: a rename interrupted after its directory's rename is finished (the
/// pending config names the directory, so the rename happened); one interrupted before
/// it leaves a pending config naming another machine, a leftover cleared after this.
pub(super) fn finish_interrupted_rename(dir: &Path) {
    let pending = dir.join(RENAMED_CONFIG);
    let Ok(text) = std::fs::read_to_string(&pending) else {
        return;
    };
    let Ok(cfg) = toml::from_str::<MachineConfig>(&text) else {
        return;
    };
    if dir.file_name() == Some(std::ffi::OsStr::new(&cfg.name)) {
        warn!(
            "{}: finishing an interrupted rename to {}",
            dir.display(),
            cfg.name
        );
        if let Err(e) = put_in_place(dir) {
            warn!("{e}");
        }
    }
}
