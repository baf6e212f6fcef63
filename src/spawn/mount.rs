//! The machine's filesystem view, built by PID 1 inside its new mount namespace: the
//! rootfs bind-mounted on itself, /proc (with /proc/sys read-only but for the
//! per-namespace /proc/sys/net), read-only /sys, a minimal /dev, tmpfs /run and /tmp
//! (each tmpfs bounded in size and inodes as nspawn bounds them),
//! then pivot_root so the host's mounts are gone from view.

use super::protocol::SpawnRequest;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

/// Sizes and inode counts of the tmpfs mounts a machine gets, systemd-nspawn's (from
/// systemd's mount-util.h). Without them each tmpfs may grow to half of the host's RAM and
/// as many inodes as that holds, /dev and /dev/shm and /run alike, for every machine.
/// Percentages are of the host's RAM; pages a machine writes count against its own
/// MemoryMax as well.
///
/// /dev holds device nodes, symlinks and no regular files to speak of: 4M, 64k inodes
/// (TMPFS_LIMITS_PRIVATE_DEV).
const DEV_TMPFS: &str = "size=4m,nr_inodes=64k";
/// /dev/shm and /tmp are nspawn's "nested" tmpfs: 10% of RAM, 400k inodes (one per 4K
/// page of 10% of 16G; NESTED_TMPFS_LIMITS). /tmp takes its size from TmpSize instead.
const SHM_TMPFS: &str = "size=10%,nr_inodes=400k";
const TMP_INODES: &str = "nr_inodes=400k";
/// /run: 20% of RAM, 800k inodes, enough for a systemd inside to re-execute even on a
/// 256M host (TMPFS_LIMITS_RUN).
const RUN_TMPFS: &str = "size=20%,nr_inodes=800k";

/// The /tmp mount's options: TmpSize when given (else the kernel's default, half of RAM,
/// as before TmpSize existed), always nspawn's inode limit.
fn tmp_options(tmp_size: Option<u64>) -> String {
    match tmp_size {
        Some(size) => format!("mode=1777,size={size},{TMP_INODES}"),
        None => format!("mode=1777,{TMP_INODES}"),
    }
}

/// Device nodes a machine gets, bind-mounted from the host so no mknod is needed (that
/// keeps working once user namespaces arrive). The scope's DeviceAllow list
/// (systemd/scope.rs) names the same nodes: nothing else can be opened.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// /proc files about the whole host's kernel (memory, keys, symbols, timers, scheduler)
/// that a machine sees empty, as nspawn and LXC hide them.
const PROC_HIDDEN: [&str; 7] = [
    "kcore",
    "keys",
    "key-users",
    "kallsyms",
    "timer_list",
    "sched_debug",
    "latency_stats",
];

/// /proc directories that configure host hardware and file systems: read-only.
const PROC_READ_ONLY: [&str; 7] = ["acpi", "apm", "asound", "bus", "fs", "irq", "scsi"];

/// sysfs directories hidden behind an empty read-only tmpfs: firmware tables and
/// variables (EFI) are the host's.
const SYS_HIDDEN: [&str; 1] = ["firmware"];

/// The machine's rootfs as a detached mount, made by the spawn helper while it is still
/// privileged: a clone of the directory, idmapped through the machine's user namespace
/// when it has one and its files are not chowned. PID 1 never walks the path to it
/// (/var/lib/berth is 0700, closed to an unprivileged root): it attaches the tree on a
/// staging tmpfs of its own and works from the tree's descriptor.
pub struct RootTree {
    tree: OwnedFd,
}

/// Where PID 1 attaches its root before pivoting: a tmpfs it mounts over /tmp of the
/// copied host tree, gone with the old root.
const STAGING: &str = "/tmp";
const STAGED_ROOT: &str = "/tmp/root";

impl RootTree {
    pub fn clone_of(rootfs: &Path, idmap: Option<&OwnedFd>) -> Result<RootTree, String> {
        let c_path = CString::new(rootfs.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("{}: NUL in path", rootfs.display()))?;
        // SAFETY: plain syscall with a valid C string; the result is a new descriptor.
        let tree = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                c_path.as_ptr(),
                libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32,
            )
        };
        if tree < 0 {
            return Err(format!(
                "open_tree({}): {}",
                rootfs.display(),
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: a fresh descriptor from the kernel.
        let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
        if let Some(userns) = idmap {
            idmap_tree(&tree, userns)
                .map_err(|e| format!("idmapping {}: {e}", rootfs.display()))?;
        }
        Ok(RootTree { tree })
    }

    /// Mounts the tree in this mount namespace and makes it the working directory.
    fn attach(&self) -> Result<(), String> {
        mnt(
            Some("tmpfs"),
            STAGING,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0700"),
        )?;
        mkdir(Path::new(STAGED_ROOT))?;
        let target = CString::new(STAGED_ROOT).expect("no NUL");
        // SAFETY: plain syscall with a valid descriptor and strings.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                self.tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if r < 0 {
            return Err(format!(
                "mounting the machine's root: {}",
                std::io::Error::last_os_error()
            ));
        }
        // The tree's descriptor now names the root of the attached mount.
        nix::unistd::fchdir(&self.tree).map_err(|e| format!("fchdir to the root: {e}"))
    }
}

fn idmap_tree(tree: &OwnedFd, userns: &OwnedFd) -> Result<(), String> {
    // SAFETY: all-zero is a valid mount_attr.
    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
    attr.attr_set = libc::MOUNT_ATTR_IDMAP;
    attr.userns_fd = userns.as_raw_fd() as u64;
    // SAFETY: attr is a valid mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 {
        return Err(format!(
            "{} (this kernel or file system cannot idmap mounts)",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Builds the machine's filesystem view in this (new) mount namespace, relative to the
/// attached root, and pivots into it.
pub fn setup_root(req: &SpawnRequest, root_tree: &RootTree) -> Result<(), String> {
    let none: Option<&str> = None;
    mnt(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)?;
    // pivot_root needs the new root to be a mount point; from here paths are relative.
    root_tree.attach()?;
    let root = Path::new(".");
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;

    let proc = root.join("proc");
    mkdir(&proc)?;
    mnt(
        Some("proc"),
        &proc,
        Some("proc"),
        nosuid_nodev | MsFlags::MS_NOEXEC,
        none,
    )?;
    // Kernel-global sysctls stay read-only; net sysctls are per network namespace.
    let sys = proc.join("sys");
    bind(&sys, &sys)?;
    bind(&sys.join("net"), &sys.join("net"))?;
    remount_ro(&sys)?;
    // Kernels without magic SysRq have no such file; the same for the others below.
    let sysrq = proc.join("sysrq-trigger");
    if sysrq.exists() {
        bind(&sysrq, &sysrq)?;
        remount_ro(&sysrq)?;
    }
    for name in PROC_HIDDEN {
        let file = proc.join(name);
        if file.exists() {
            bind(Path::new("/dev/null"), &file)?;
        }
    }
    for name in PROC_READ_ONLY {
        let dir = proc.join(name);
        if dir.is_dir() {
            bind(&dir, &dir)?;
            remount_ro(&dir)?;
        }
    }

    let sysfs = root.join("sys");
    mkdir(&sysfs)?;
    mnt(
        Some("sysfs"),
        &sysfs,
        Some("sysfs"),
        nosuid_nodev | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        none,
    )?;

    for name in SYS_HIDDEN {
        let dir = sysfs.join(name);
        if dir.is_dir() {
            mnt(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                nosuid_nodev | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
                Some("mode=0555"),
            )?;
        }
    }

    setup_dev(&root.join("dev"))?;

    let run = root.join("run");
    mkdir(&run)?;
    mnt(
        Some("tmpfs"),
        &run,
        Some("tmpfs"),
        nosuid_nodev,
        Some(format!("mode=0755,{RUN_TMPFS}").as_str()),
    )?;
    let tmp = root.join("tmp");
    mkdir(&tmp)?;
    let tmp_opts = tmp_options(req.tmp_size);
    mnt(
        Some("tmpfs"),
        &tmp,
        Some("tmpfs"),
        nosuid_nodev,
        Some(tmp_opts.as_str()),
    )?;

    pivot()
}

fn setup_dev(dev: &Path) -> Result<(), String> {
    mkdir(dev)?;
    mnt(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some(format!("mode=0755,{DEV_TMPFS}").as_str()),
    )?;
    for name in DEVICES {
        let target = dev.join(name);
        touch(&target)?;
        bind(&Path::new("/dev").join(name), &target)?;
    }
    // Until consoles land, the console is a sink so inits that write to it don't fail.
    let console = dev.join("console");
    touch(&console)?;
    bind(Path::new("/dev/null"), &console)?;

    let pts = dev.join("pts");
    mkdir(&pts)?;
    mnt(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    link("pts/ptmx", &dev.join("ptmx"))?;
    let shm = dev.join("shm");
    mkdir(&shm)?;
    mnt(
        Some("tmpfs"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode=1777,{SHM_TMPFS}").as_str()),
    )?;
    link("/proc/self/fd", &dev.join("fd"))?;
    for (i, name) in ["stdin", "stdout", "stderr"].iter().enumerate() {
        link(&format!("/proc/self/fd/{i}"), &dev.join(name))?;
    }
    Ok(())
}

fn pivot() -> Result<(), String> {
    // The working directory is the new root (RootTree::attach). pivot_root(".", ".") stacks the old root on top of the new one; detaching it
    // leaves only the machine's tree, without needing a put_old directory.
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detach old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))
}

fn mnt<S: AsRef<Path> + ?Sized, T: AsRef<Path> + ?Sized>(
    source: Option<&S>,
    target: &T,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    mount(
        source.map(|s| s.as_ref()),
        target.as_ref(),
        fstype,
        flags,
        data,
    )
    .map_err(|e| {
        format!(
            "mount {} on {} ({}): {e}",
            source.map_or("none".into(), |s| s.as_ref().display().to_string()),
            target.as_ref().display(),
            fstype.unwrap_or("bind/flags"),
        )
    })
}

fn bind(source: &Path, target: &Path) -> Result<(), String> {
    mnt(
        Some(source),
        target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
}

fn remount_ro(target: &Path) -> Result<(), String> {
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mnt(None::<&Path>, target, None, flags, None)
}

fn mkdir(path: &Path) -> Result<(), String> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!("mkdir {}: {e}", path.display())),
    }
}

fn touch(path: &Path) -> Result<(), String> {
    std::fs::File::create(path)
        .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o666)))
        .map_err(|e| format!("create {}: {e}", path.display()))
}

fn link(target: &str, path: &Path) -> Result<(), String> {
    symlink(target, path).map_err(|e| format!("symlink {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_keeps_its_size_and_gets_an_inode_limit() {
        assert_eq!(
            tmp_options(Some(1 << 20)),
            "mode=1777,size=1048576,nr_inodes=400k"
        );
        assert_eq!(tmp_options(None), "mode=1777,nr_inodes=400k");
    }
}
