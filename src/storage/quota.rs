//! btrfs subvolumes and their quotas for machine trees. Where /var/lib/berth/machines is
//! btrfs, every machine's rootfs is a subvolume of its own (as machined makes the images
//! in /var/lib/machines); a disk quota is that subvolume's qgroup limit on referenced
//! bytes, which counts a tree's files whoever owns them (a machine's files belong to many
//! users, shifted into a range when it is unprivileged) and holds root as well.
//!
//! Project quotas (ext4, XFS) would do the same on those file systems; they are not here
//! because the kernels berth is built and tested on lack them (no CONFIG_QFMT_V2, no
//! CONFIG_XFS_QUOTA), and an untested quota is one that silently does not hold.

use nix::sys::stat::Mode;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

const BTRFS_SUPER_MAGIC: i64 = 0x9123_683e;
/// The inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID).
const SUBVOLUME_ROOT_INO: u64 = 256;
/// `BTRFS_QGROUP_LIMIT_MAX_RFER`: the limit is on referenced bytes.
const LIMIT_MAX_RFER: u64 = 1;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

/// `struct btrfs_ioctl_fs_info_args`.
#[repr(C)]
struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    nodesize: u32,
    sectorsize: u32,
    clone_alignment: u32,
    csum_type: u16,
    csum_size: u16,
    flags: u64,
    generation: u64,
    metadata_uuid: [u8; 16],
    reserved: [u8; 944],
}

/// `struct btrfs_ioctl_qgroup_limit_args` (its `struct btrfs_qgroup_limit` inlined).
#[repr(C)]
#[derive(Default)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

nix::ioctl_write_ptr!(subvol_create, 0x94, 14, VolArgs);
nix::ioctl_readwrite!(ino_lookup, 0x94, 18, InoLookupArgs);
nix::ioctl_read!(fs_info, 0x94, 31, FsInfoArgs);
// The kernel declares it _IOR although it only reads the argument.
nix::ioctl_read!(qgroup_limit, 0x94, 43, QgroupLimitArgs);

/// Whether `dir` is on btrfs.
pub fn is_btrfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir).is_ok_and(|s| s.filesystem_type().0 == BTRFS_SUPER_MAGIC)
}

/// Whether `dir` is the root of a btrfs subvolume.
pub fn is_subvolume(dir: &Path) -> bool {
    is_btrfs(dir)
        && std::fs::symlink_metadata(dir).is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.is_dir() && m.ino() == SUBVOLUME_ROOT_INO
        })
}

/// Makes `path` (whose parent is on btrfs) an empty subvolume, owned by root, mode 0700
/// as a plain directory made for a tree would be.
pub fn create_subvolume(path: &Path) -> Result<(), String> {
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(p), Some(n)) => (p, n.as_encoded_bytes()),
        _ => return Err(format!("{}: no parent directory", path.display())),
    };
    let mut args = VolArgs {
        fd: 0,
        name: [0; 4088],
    };
    if name.len() >= args.name.len() {
        return Err(format!("{}: name too long", path.display()));
    }
    args.name[..name.len()].copy_from_slice(name);
    let dir = open_dir(parent)?;
    // SAFETY: the ioctl reads one btrfs_ioctl_vol_args, NUL-terminated name included.
    unsafe { subvol_create(dir.as_raw_fd(), &args) }
        .map_err(|e| format!("cannot create subvolume {}: {e}", path.display()))?;
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        path,
        Mode::from_bits_truncate(0o700),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .map_err(|e| format!("{}: {e}", path.display()))
}

/// Why a disk quota cannot be given to trees under `dir`, if it cannot.
pub fn check_supported(dir: &Path) -> Result<(), String> {
    let needs = || {
        format!(
            "disk quotas need {} on btrfs with quotas enabled (btrfs quota enable {0})",
            dir.display()
        )
    };
    if !is_btrfs(dir) {
        return Err(format!("{}; it is not btrfs", needs()));
    }
    if !qgroups_dir(&open_dir(dir)?)?.is_dir() {
        return Err(format!("{}; quotas are off there", needs()));
    }
    Ok(())
}

/// Limits the subvolume `subvol` to `bytes` referenced (0: no limit).
pub fn set_limit(subvol: &Path, bytes: u64) -> Result<(), String> {
    let dir = open_dir(subvol)?;
    let mut args = QgroupLimitArgs {
        // 0: the qgroup of the subvolume the descriptor is in.
        qgroupid: 0,
        flags: LIMIT_MAX_RFER,
        max_rfer: if bytes == 0 { u64::MAX } else { bytes },
        ..Default::default()
    };
    // SAFETY: the ioctl reads one btrfs_ioctl_qgroup_limit_args.
    unsafe { qgroup_limit(dir.as_raw_fd(), &mut args) }
        .map_err(|e| format!("cannot set the disk quota of {}: {e}", subvol.display()))?;
    Ok(())
}

/// Bytes the subvolume `subvol` references and its limit (0: none), as btrfs counts
/// them (/sys/fs/btrfs/FSID/qgroups/0_ID); None when `subvol` is not on btrfs at all,
/// which no later call can change. Memory only (the ioctl asks for the subvolume's own
/// root, which btrfs answers without a tree search), so cheap enough to be read in place.
pub fn usage(subvol: &Path) -> Result<Option<(u64, u64)>, String> {
    let dir = open_dir(subvol)?;
    let mut args = InoLookupArgs {
        treeid: 0,
        objectid: SUBVOLUME_ROOT_INO,
        name: [0; 4080],
    };
    // SAFETY: the ioctl reads and writes one btrfs_ioctl_ino_lookup_args.
    match unsafe { ino_lookup(dir.as_raw_fd(), &mut args) } {
        Ok(_) => {}
        Err(nix::errno::Errno::ENOTTY) => return Ok(None),
        Err(e) => return Err(format!("{}: not a btrfs subvolume: {e}", subvol.display())),
    }
    let qgroup = qgroups_dir(&dir)?.join(format!("0_{}", args.treeid));
    let read = |file: &str| -> Result<u64, String> {
        let path = qgroup.join(file);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        text.trim()
            .parse()
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let max = read("max_referenced")?;
    Ok(Some((
        read("referenced")?,
        if max == u64::MAX { 0 } else { max },
    )))
}

/// /sys/fs/btrfs/FSID/qgroups of the file system `dir` is on; there only while quotas
/// are enabled.
fn qgroups_dir(dir: &OwnedFd) -> Result<PathBuf, String> {
    // SAFETY: FsInfoArgs is plain integers and bytes; all zero is valid.
    let mut info: FsInfoArgs = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one btrfs_ioctl_fs_info_args.
    unsafe { fs_info(dir.as_fd().as_raw_fd(), &mut info) }
        .map_err(|e| format!("cannot read the btrfs file system's ID: {e}"))?;
    Ok(PathBuf::from("/sys/fs/btrfs")
        .join(uuid(&info.fsid))
        .join("qgroups"))
}

fn uuid(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn open_dir(dir: &Path) -> Result<OwnedFd, String> {
    nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_structs_have_the_kernels_sizes() {
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<InoLookupArgs>(), 4096);
        assert_eq!(std::mem::size_of::<FsInfoArgs>(), 1024);
        assert_eq!(std::mem::size_of::<QgroupLimitArgs>(), 48);
    }

    #[test]
    fn fsids_read_as_sysfs_names_them() {
        let id = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
            0x66, 0x77,
        ];
        assert_eq!(uuid(&id), "01234567-89ab-cdef-0011-223344556677");
    }

    #[test]
    fn a_file_system_without_quotas_is_named() {
        let err = check_supported(Path::new("/proc")).unwrap_err();
        assert!(err.contains("/proc") && err.contains("not btrfs"), "{err}");
        assert!(!is_subvolume(Path::new("/proc")));
    }
}
