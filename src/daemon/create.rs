//! CreateMachine: validate everything first, build the template if needed, then make the
//! machine's directory in a staging place and rename it into place, so a machine either
//! exists whole or not at all.

use super::machine::Machine;
use super::{Daemon, now_usec, validate};
use crate::error::{Error, IoContext, Result};
use crate::limits::Limits;
use crate::security::users::{self, Ownership, UserRange, Users};
use crate::security::{Confinement, Settings};
use crate::store::{self, MachineConfig};
use crate::{names, template};
use std::path::Path;
use std::sync::Arc;
use tracing::info;

/// CreateMachine's options, already type-checked by the dbus layer.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    pub hostname: Option<String>,
    pub command: Vec<String>,
    pub environment: Vec<String>,
    pub autostart: bool,
    pub ephemeral: bool,
    pub limits: Limits,
    pub halt_signal: Option<i32>,
    pub stop_timeout_usec: Option<u64>,
    pub tmp_size: Option<u64>,
    pub security: Settings,
    pub private_users: users::Request,
}

impl Daemon {
    pub async fn create(
        self: &Arc<Self>,
        name: &str,
        template_name: &str,
        opts: CreateOptions,
    ) -> Result<Arc<Machine>> {
        names::validate_machine_name(name).map_err(Error::InvalidName)?;
        let info = template::info(template_name)?;
        // Refuse limits this host can't apply now, not at the first start.
        crate::systemd::properties::limit_properties(&opts.limits, self.host.flavor)?;
        Confinement::new(&opts.security).map_err(Error::InvalidArgument)?;
        // PID 1's argv as it will be exec'ed: the template's init when no Command is given.
        validate::command(
            validate::CREATE,
            &template::init::pid1_argv(&opts.command, info),
            &opts.environment,
        )?;
        if let Some(h) = &opts.hostname {
            names::validate_machine_name(h)
                .map_err(|e| Error::InvalidArgument(format!("Hostname: {e}")))?;
        }
        let _reservation = self.reserve(name)?;
        let (users, _range) = self.users_for(opts.private_users)?;
        let templates_dir = self.paths.templates_dir();
        let template_rootfs = {
            let _build = self.template_builds.lock().await;
            tokio::task::spawn_blocking(move || template::ensure(&templates_dir, info.name))
                .await
                .map_err(|e| Error::failed("template build crashed", e))??
        };

        let config = MachineConfig {
            name: name.to_string(),
            template: info.name.to_string(),
            hostname: opts.hostname.unwrap_or_else(|| name.to_string()),
            command: opts.command,
            environment: opts.environment,
            created_at: now_usec(),
            autostart: opts.autostart,
            ephemeral: opts.ephemeral,
            halt_signal: opts.halt_signal,
            stop_timeout_usec: opts.stop_timeout_usec,
            tmp_size: opts.tmp_size,
            security: opts.security,
            users,
            limits: opts.limits,
        };
        let final_dir = self.paths.machine_dir(name);
        let staging = self
            .paths
            .machines_dir()
            .join(format!(".{name}.create-{}", std::process::id()));
        let cfg = config.clone();
        let dest = final_dir.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let made = (|| {
                std::fs::create_dir(&staging).at("cannot create", &staging)?;
                let rootfs = staging.join(store::ROOTFS_DIR);
                // On a file system that cannot idmap, the files are shifted once, here.
                let shift = match cfg.users {
                    Some(u) if u.ownership == Ownership::Chown => u.range.base,
                    _ => 0,
                };
                let opts = crate::storage::copy::CopyOptions {
                    shift,
                    ..Default::default()
                };
                let progress = crate::jobs::Progress::new();
                crate::storage::copy::copy_tree(&template_rootfs, &rootfs, &opts, &progress)?;
                let hostname = rootfs.join("etc/hostname");
                std::fs::write(&hostname, format!("{}\n", cfg.hostname))
                    .at("cannot write", &hostname)?;
                store::save_config(&staging, &cfg)?;
                std::fs::rename(&staging, &dest).at("cannot rename into place", &staging)
            })();
            if made.is_err() {
                let _ = crate::storage::copy::remove_tree(&staging);
            }
            made
        })
        .await
        .map_err(|e| Error::failed("machine creation crashed", e))?
        .map_err(|e| e.context(format!("cannot create machine {name}")))?;

        let m = Arc::new(Machine::new(final_dir, config));
        self.insert(m.clone());
        info!("machine {name}: created from template {template_name}");
        Ok(m)
    }

    /// The user namespace a new machine gets, with its range held until the machine is
    /// registered (two creations must not pick the same range).
    fn users_for(
        self: &Arc<Self>,
        request: users::Request,
    ) -> Result<(Option<Users>, Option<RangeReservation>)> {
        if request == users::Request::No {
            return Ok((None, None));
        }
        let mut pending = self.pending_ranges.lock().expect("ranges lock");
        let machines: Vec<UserRange> = self
            .machines()
            .iter()
            .filter_map(|m| m.config().users.map(|u| u.range))
            .chain(pending.iter().copied())
            .collect();
        let taken = users::Taken::read(Path::new("/etc"), machines);
        let range = match request {
            users::Request::No => unreachable!("answered above"),
            users::Request::Pick => taken.pick().map_err(Error::Failed)?,
            users::Request::Range(r) => taken.check(r).map_err(Error::InvalidArgument)?,
        };
        pending.push(range);
        let ownership = ownership_on(&self.paths.machines_dir());
        let users = Users { range, ownership };
        Ok((
            Some(users),
            Some(RangeReservation {
                daemon: self.clone(),
                range,
            }),
        ))
    }

    fn reserve(self: &Arc<Self>, name: &str) -> Result<Reservation> {
        let exists = self
            .machines
            .lock()
            .expect("machines lock")
            .contains_key(name)
            || self.paths.machine_dir(name).exists();
        let mut reserved = self.reserved.lock().expect("reserved lock");
        if exists || !reserved.insert(name.to_string()) {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        Ok(Reservation {
            daemon: self.clone(),
            name: name.to_string(),
        })
    }
}

/// Idmapped mounts where the file system supports them (the kernel's FS_ALLOW_IDMAP:
/// ext4, xfs, btrfs, tmpfs), else files shifted by chown; overlayfs, often the root of
/// containers and test hosts, cannot idmap.
fn ownership_on(dir: &Path) -> Ownership {
    use nix::sys::statfs::{BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC};
    match nix::sys::statfs::statfs(dir) {
        Ok(fs)
            if [
                EXT4_SUPER_MAGIC,
                XFS_SUPER_MAGIC,
                BTRFS_SUPER_MAGIC,
                TMPFS_MAGIC,
            ]
            .contains(&fs.filesystem_type()) =>
        {
            Ownership::Idmap
        }
        _ => Ownership::Chown,
    }
}

struct RangeReservation {
    daemon: Arc<Daemon>,
    range: UserRange,
}

impl Drop for RangeReservation {
    fn drop(&mut self) {
        let mut pending = self.daemon.pending_ranges.lock().expect("ranges lock");
        pending.retain(|r| *r != self.range);
    }
}

/// Holds a name for a creation under way; released however the creation ends.
struct Reservation {
    daemon: Arc<Daemon>,
    name: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.daemon
            .reserved
            .lock()
            .expect("reserved lock")
            .remove(&self.name);
    }
}
