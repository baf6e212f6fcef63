//! CreateMachine: validate everything first, build the template if needed, then make the
//! machine's directory in a staging place and rename it into place, so a machine either
//! exists whole or not at all.

use super::machine::Machine;
use super::{Daemon, now_usec, validate};
use crate::error::{Error, IoContext, Result};
use crate::limits::Limits;
use crate::security::users::{self, Ownership, UserRange, Users};
use crate::security::{Confinement, Settings};
use crate::storage::idmap::IdMap;
use crate::storage::quota;
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
    pub binds: Vec<crate::spawn::binds::Bind>,
    pub security: Settings,
    pub private_users: users::Request,
    pub network: crate::net::NetRequest,
    /// berth's PID 1 under the Command; None: on for a Command.
    pub init: Option<bool>,
    /// Bytes its tree may take on disk.
    pub disk_quota: Option<u64>,
}

impl Daemon {
    pub async fn create(
        self: &Arc<Self>,
        name: &str,
        template_name: &str,
        opts: CreateOptions,
    ) -> Result<Arc<Machine>> {
        names::validate_machine_name(name).map_err(Error::InvalidName)?;
        template::validate_name(template_name)?;
        // Refuse limits this host can't apply now, not at the first start.
        crate::systemd::properties::limit_properties(&opts.limits, self.host.flavor)?;
        Confinement::new(&opts.security).map_err(Error::InvalidArgument)?;
        // PID 1's argv as it will be exec'ed: /sbin/init when no Command is given.
        validate::command(
            validate::CREATE,
            &template::init::pid1_argv(&opts.command),
            &opts.environment,
        )?;
        if let Some(h) = &opts.hostname {
            names::validate_machine_name(h)
                .map_err(|e| Error::InvalidArgument(format!("Hostname: {e}")))?;
        }
        if opts.disk_quota.is_some() {
            if opts.ephemeral {
                return Err(Error::InvalidArgument(
                    "DiskQuota: an ephemeral machine writes to memory, not to a tree of its \
                     own on disk; its /tmp size and memory limit bound it"
                        .into(),
                ));
            }
            self.check_quota_supported().await?;
        }
        let _reservation = self.reserve(name)?;
        let (mut users, _range) = self.users_for(opts.private_users)?;
        let (network, _lease) = {
            let _net = self.net_lock.lock().await;
            self.net_for(name, &opts.network, None)?
        };
        // Held until the copy is done: the template can't be removed under it.
        let _in_use = self.templates_in_use.read().await;
        let template_rootfs = self.template_rootfs(template_name).await?;
        // Against the template: the machine's tree starts as its copy (or overlay).
        // PID 1 resolves each target again at every start.
        if !opts.binds.is_empty() {
            let (binds, root) = (opts.binds.clone(), template_rootfs.clone());
            tokio::task::spawn_blocking(move || crate::spawn::binds::check(&binds, &root))
                .await
                .map_err(|e| Error::failed("checking the binds", e))?
                .map_err(Error::InvalidArgument)?;
        }
        // Ephemeral: an overlay on the template, nothing copied. In a user namespace the
        // template must be idmapped as the overlay's lower layer, which needs a file
        // system that can; else it is a copy, shifted like any other machine's files.
        let overlay = opts.ephemeral && overlay_possible(users, &template_rootfs);
        if overlay && let Some(u) = users.as_mut() {
            u.ownership = Ownership::Idmap;
        }

        let machine_id = crate::machine_id::new().map_err(Error::Failed)?;
        let mut config = MachineConfig {
            name: name.to_string(),
            template: template_name.to_string(),
            hostname: opts.hostname.unwrap_or_else(|| name.to_string()),
            command: opts.command,
            environment: opts.environment,
            created_at: now_usec(),
            autostart: opts.autostart,
            ephemeral: opts.ephemeral,
            halt_signal: opts.halt_signal,
            stop_timeout_usec: opts.stop_timeout_usec,
            tmp_size: opts.tmp_size,
            binds: opts.binds,
            security: opts.security,
            users,
            machine_id: Some(machine_id),
            base: overlay.then(|| template_rootfs.clone()),
            limits: opts.limits,
            network,
            init: opts.init,
            disk_quota: opts.disk_quota,
        };
        // A template's files are as a machine sees them (its root 0).
        let ids = ids_between(None, config.users);
        let final_dir = self
            .make_machine_dir(&mut config, template_rootfs, ids)
            .await?;
        let m = Arc::new(Machine::new(final_dir, config));
        self.insert(m.clone());
        self.refresh_dns(m.config().network.bridge.as_deref()).await;
        info!("machine {name}: created from template {template_name}");
        Ok(m)
    }

    /// Makes `machines/NAME` (NAME from `cfg`) with `cfg` and a copy of `source` as its
    /// rootfs, its IDs mapped by `ids` (from the source's range into the machine's, where
    /// either has its files shifted on disk: [`ids_between`]). Staged and renamed: the
    /// machine exists whole or not at all. Shared by create, clone and restore-as.
    /// On btrfs the rootfs is a subvolume of its own, limited to the machine's disk quota
    /// before anything is copied in.
    pub(super) async fn make_machine_dir(
        &self,
        cfg: &mut MachineConfig,
        source: std::path::PathBuf,
        ids: IdMap,
    ) -> Result<std::path::PathBuf> {
        let name = cfg.name.clone();
        // An overlay's writes go to memory: no tree of its own to hold to a quota.
        if cfg.base.is_some() {
            cfg.disk_quota = None;
        }
        let final_dir = self.paths.machine_dir(&name);
        let staging = self
            .paths
            .machines_dir()
            .join(format!(".{name}.create-{}", std::process::id()));
        let cfg = cfg.clone();
        let dest = final_dir.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let made = (|| {
                std::fs::create_dir(&staging).at("cannot create", &staging)?;
                if cfg.base.is_some() {
                    // Runs on an overlay of its base: its hostname and ID go on top then.
                    store::save_config(&staging, &cfg)?;
                    return std::fs::rename(&staging, &dest)
                        .at("cannot rename into place", &staging);
                }
                let rootfs = staging.join(store::ROOTFS_DIR);
                let subvolume = quota::is_btrfs(&staging);
                if subvolume {
                    quota::create_subvolume(&rootfs).map_err(Error::Failed)?;
                    if let Some(bytes) = cfg.disk_quota {
                        quota::set_limit(&rootfs, bytes).map_err(Error::Failed)?;
                    }
                } else if cfg.disk_quota.is_some() {
                    return Err(Error::NotSupported(
                        quota::check_supported(&staging).err().unwrap_or_default(),
                    ));
                }
                let opts = crate::storage::copy::CopyOptions {
                    ids,
                    into_existing: subvolume,
                    ..Default::default()
                };
                let progress = crate::jobs::Progress::new();
                crate::storage::copy::copy_tree(&source, &rootfs, &opts, &progress)?;
                if rootfs.join("etc").is_dir() {
                    write_etc(&rootfs, "hostname", &cfg.hostname, cfg.users)?;
                    // Its own ID, never the one a template or source was made with:
                    // copies must not share a journal directory or a D-Bus machine ID.
                    if let Some(id) = &cfg.machine_id {
                        write_etc(&rootfs, "machine-id", id, cfg.users)?;
                    }
                }
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
        Ok(final_dir)
    }

    /// The user namespace a new machine gets, with its range held until the machine is
    /// registered (two creations must not pick the same range).
    pub(super) fn users_for(
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

    pub(super) fn reserve(self: &Arc<Self>, name: &str) -> Result<Reservation> {
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

/// Writes `value` and a newline to the machine's /etc/NAME, owned (if it is new) by the
/// machine's root on disk: host root, or the range's base when its files are shifted.
pub(super) fn write_etc(
    rootfs: &Path,
    name: &str,
    value: &str,
    users: Option<Users>,
) -> Result<()> {
    let path = rootfs.join("etc").join(name);
    let existed = path.exists();
    std::fs::write(&path, format!("{value}\n")).at("cannot write", &path)?;
    if let Some(root) = shifted(users).map(|r| r.base)
        && !existed
    {
        std::os::unix::fs::chown(&path, Some(root), Some(root)).at("cannot chown", &path)?;
    }
    Ok(())
}

/// The range a machine's files are shifted into on disk: none when they are as the
/// machine sees them (a privileged machine, or one whose rootfs is idmapped at start).
fn shifted(users: Option<Users>) -> Option<UserRange> {
    users
        .filter(|u| u.ownership == Ownership::Chown)
        .map(|u| u.range)
}

/// How a tree's IDs move when the files of a machine with `from`'s users are copied
/// into one with `to`'s (create: `from` none, a template being as a machine sees it;
/// clone, restore as a new machine, import): from the range they are shifted into on
/// disk, if any, to the target's, if any. Files shown through an idmapped mount are on
/// disk as the machine sees them, as are a privileged machine's.
pub(super) fn ids_between(from: Option<Users>, to: Option<Users>) -> IdMap {
    match (shifted(from), shifted(to)) {
        (None, None) => IdMap::IDENTITY,
        (None, Some(to)) => IdMap::shift(to),
        (Some(from), None) => IdMap::unshift(from),
        (Some(from), Some(to)) => IdMap::between(from, to),
    }
}

/// The config of a new machine `name` made from machine `from`'s files (clone, a
/// snapshot restored as a new machine, import): `from`'s settings with an identity of
/// its own (a new ID, its creation time, `users`), no autostart, not ephemeral, no
/// base; a hostname that was the old machine's name follows the new one.
pub(super) fn copied_config(
    from: MachineConfig,
    name: &str,
    users: Option<Users>,
) -> Result<MachineConfig> {
    Ok(MachineConfig {
        name: name.to_string(),
        hostname: if from.hostname == from.name {
            name.to_string()
        } else {
            from.hostname.clone()
        },
        created_at: now_usec(),
        autostart: false,
        ephemeral: false,
        users,
        machine_id: Some(crate::machine_id::new().map_err(Error::Failed)?),
        base: None,
        ..from
    })
}

/// Whether an ephemeral machine with `users` can run on an overlay of `base`: always when
/// privileged; in a user namespace when `base` can be idmapped through it (the overlay's
/// lower layer, spawn/mount.rs).
pub(super) fn overlay_possible(users: Option<Users>, base: &Path) -> bool {
    users.is_none() || ownership_on(base) == Ownership::Idmap
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

pub(super) struct RangeReservation {
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
pub(super) struct Reservation {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::idmap::OVERFLOW_ID;

    fn users(base: u32, ownership: Ownership) -> Option<Users> {
        Some(Users {
            range: UserRange { base, count: 65536 },
            ownership,
        })
    }

    #[test]
    fn ids_move_between_the_ranges_files_are_shifted_into() {
        use Ownership::{Chown, Idmap};
        let a = 524_288;
        let b = 589_824;
        // (from, to, where 0, 1000 and a stray 70000 on the source's disk go)
        #[rustfmt::skip]
        let table: [(_, _, [u32; 3], [u32; 3]); 9] = [
            // privileged, or on disk as the machine sees them: nothing moves
            (None, None, [0, 1000, 70_000], [0, 1000, 70_000]),
            (None, users(b, Idmap), [0, 1000, 70_000], [0, 1000, 70_000]),
            (users(a, Idmap), users(b, Idmap), [0, 1000, 70_000], [0, 1000, 70_000]),
            // create, or into a shifted machine: up into its range
            (None, users(b, Chown), [0, 1000, 70_000], [b, b + 1000, OVERFLOW_ID]),
            (users(a, Idmap), users(b, Chown), [0, 1000, 70_000], [b, b + 1000, OVERFLOW_ID]),
            // shifted to shifted: range to range
            (users(a, Chown), users(b, Chown), [a, a + 1000, 70_000], [b, b + 1000, OVERFLOW_ID]),
            (users(a, Chown), users(a, Chown), [a, a + 1000, 0], [a, a + 1000, OVERFLOW_ID]),
            // shifted to unshifted: back down
            (users(a, Chown), users(b, Idmap), [a, a + 1000, 0], [0, 1000, OVERFLOW_ID]),
            (users(a, Chown), None, [a, a + 1000, 0], [0, 1000, OVERFLOW_ID]),
        ];
        for (from, to, ids, want) in table {
            let map = ids_between(from, to);
            assert_eq!(ids.map(|id| map.map(id)), want, "{from:?} -> {to:?}");
        }
    }
}
