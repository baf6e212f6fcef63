//! The machine's filesystem view, built by PID 1 inside its new mount namespace: the
//! rootfs bind-mounted on itself, /proc (with /proc/sys read-only but for the
//! per-namespace /proc/sys/net when the machine has its own network namespace),
//! read-only /sys (the host's, bound, when it shares the host's network), the host's cgroup hierarchies mounted
//! again inside the machine's cgroup namespace (its scope is their root; only the
//! hierarchies a systemd tracks processes in are writable), a minimal /dev, tmpfs /run
//! and /tmp (each tmpfs bounded in size and inodes as nspawn bounds them), a read-only
//! /run/host telling the machine who runs it (systemd's container interface),
//! then pivot_root so the host's mounts are gone from view.

use super::binds::{self, Bind};
use super::protocol::{CONTAINER_MANAGER, SpawnRequest};
use crate::net::NetMode;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
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

/// /sys/fs/cgroup on a v1 or hybrid host: a tmpfs holding only the hierarchies' mount
/// points and links.
const CGROUP_TMPFS: &str = "mode=0755,size=1m,nr_inodes=1k";
/// /run/host: a few small files from the host.
const RUN_HOST_TMPFS: &str = "mode=0755,size=1m,nr_inodes=1k";

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

/// What a machine takes from the host's view of the system, read by the spawn helper
/// while it still sees the host's files: the cgroup hierarchies to mount again inside the
/// machine's cgroup namespace, and the host's os-release for /run/host/os-release.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostView {
    pub cgroups: Vec<Hierarchy>,
    /// Symbolic links in /sys/fs/cgroup (cpu -> cpu,cpuacct): name and target.
    pub cgroup_links: Vec<(String, String)>,
    pub os_release: Option<String>,
}

/// A cgroup hierarchy mounted below /sys/fs/cgroup on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// Its mount point relative to /sys/fs/cgroup; empty for a unified host's cgroup2.
    pub dir: String,
    /// None for cgroup2; for v1 the options that name the hierarchy ("memory",
    /// "none,name=systemd").
    pub v1_options: Option<String>,
}

impl Hierarchy {
    /// Whether the machine may write to it: cgroup2 and v1's name=systemd, where a
    /// systemd inside makes its units' cgroups below its scope. The v1 controllers hold
    /// the limits the host's systemd set, and stay read-only.
    pub fn writable(&self) -> bool {
        match &self.v1_options {
            None => true,
            Some(o) => o.split(',').any(|w| w == "name=systemd"),
        }
    }
}

impl HostView {
    pub fn read() -> HostView {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let cgroups = cgroup_hierarchies(&mountinfo);
        let cgroup_links = std::fs::read_dir("/sys/fs/cgroup")
            .map(|dir| {
                dir.flatten()
                    .filter_map(|e| {
                        let target = std::fs::read_link(e.path()).ok()?;
                        Some((
                            e.file_name().to_str()?.to_string(),
                            target.to_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let os_release = ["/etc/os-release", "/usr/lib/os-release"]
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok());
        HostView {
            cgroups,
            cgroup_links,
            os_release,
        }
    }
}

/// The cgroup hierarchies mounted at or below /sys/fs/cgroup, from mountinfo text; the
/// last mount on a path is the one in view.
fn cgroup_hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut found: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(target), Some(fstype), Some(superopts)) =
            (fields.get(4), fields.get(sep + 1), fields.get(sep + 3))
        else {
            continue;
        };
        let Some(dir) = target
            .strip_prefix("/sys/fs/cgroup")
            .filter(|d| d.is_empty() || d.starts_with('/'))
            .map(|d| d.trim_start_matches('/'))
        else {
            continue;
        };
        // Escaped names (\040 for a space) and nested paths are no hierarchy's.
        if dir.contains(['\\', '/']) {
            continue;
        }
        let v1_options = match *fstype {
            "cgroup2" => None,
            "cgroup" => Some(v1_naming_options(superopts)),
            _ => continue,
        };
        found.retain(|h| h.dir != dir);
        found.push(Hierarchy {
            dir: dir.to_string(),
            v1_options,
        });
    }
    found
}

/// The options that name a v1 hierarchy again from its super options: controllers,
/// name= and flags, without rw/ro and the release agent (the host's); "none" first for a
/// named hierarchy without controllers, or the kernel would take every controller.
fn v1_naming_options(superopts: &str) -> String {
    const FLAGS: [&str; 5] = [
        "noprefix",
        "xattr",
        "clone_children",
        "cpuset_v2_mode",
        "favordynmods",
    ];
    let kept: Vec<&str> = superopts
        .split(',')
        .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent="))
        .collect();
    let controllers = kept
        .iter()
        .any(|o| !o.starts_with("name=") && !FLAGS.contains(o));
    let named = kept.iter().any(|o| o.starts_with("name="));
    if named && !controllers {
        format!("none,{}", kept.join(","))
    } else {
        kept.join(",")
    }
}

/// The machine's rootfs as a detached mount, made by the spawn helper while it is still
/// privileged: a clone of the directory, idmapped through the machine's user namespace
/// when it has one and its files are not chowned. PID 1 never walks the path to it
/// (/var/lib/berth is 0700, closed to an unprivileged root): it attaches the tree on a
/// staging tmpfs of its own and works from the tree's descriptor.
pub struct RootTree {
    source: TreeSource,
    binds: Vec<BindTree>,
    /// A clone of the console pty's slave (a file on the host's devpts), bound on the
    /// machine's /dev/console; None binds /dev/null there.
    console: Option<OwnedFd>,
}

/// A bind's source cloned by the spawn helper, which still sees the host's files as
/// root: an unprivileged machine's root could not reach a source below a directory
/// closed to others. PID 1 attaches it on the target it resolves in the machine's root.
struct BindTree {
    tree: OwnedFd,
    bind: Bind,
    /// Whether the source is a directory: what to make for a missing target.
    dir: bool,
}

enum TreeSource {
    Clone(OwnedFd),
    /// An ephemeral machine: a read-only clone of the base (idmapped through the
    /// machine's user namespace when it has one) as the lower layer of an overlay whose
    /// upper layer is on PID 1's staging tmpfs, so its writes live in the machine's own
    /// memory and vanish with its mount namespace. `etc` are files written on top
    /// (hostname, machine-id).
    Overlay {
        lower: OwnedFd,
        unprivileged: bool,
        etc: Vec<(String, String)>,
    },
}

/// Where PID 1 attaches its root before pivoting: a tmpfs it mounts over /tmp of the
/// copied host tree, gone with the old root. Mounted by PID 1, so in an unprivileged
/// machine it belongs to the machine's user namespace and its root may write there.
const STAGING: &str = "/tmp";
const STAGED_ROOT: &str = "/tmp/root";
/// An overlay's lower layer, attached beside the root so the overlay can name it; like
/// the staging tmpfs it is gone from view with the old root.
const STAGED_LOWER: &str = "/tmp/lower";

impl RootTree {
    pub fn clone_of(rootfs: &Path, idmap: Option<&OwnedFd>) -> Result<RootTree, String> {
        let tree = clone_tree(rootfs, idmap, false)?;
        Ok(RootTree {
            source: TreeSource::Clone(tree),
            binds: Vec::new(),
            console: None,
        })
    }

    /// Clones the source of each of `binds` (with its submounts), nosuid and nodev, and
    /// read-only through and through for a read-only bind. Not idmapped: a host
    /// directory's owners show as nobody in a user namespace.
    pub fn with_binds(mut self, binds: &[Bind]) -> Result<RootTree, String> {
        for bind in binds {
            let dir = bind.check_paths()?;
            let tree = clone_tree(&bind.source, None, bind.read_only)?;
            set_attributes(
                &tree,
                libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
                None,
            )
            .map_err(|e| format!("bind source {}: {e}", bind.source.display()))?;
            self.binds.push(BindTree {
                tree,
                bind: bind.clone(),
                dir,
            });
        }
        Ok(self)
    }

    /// Clones the mount of the pty slave `console` (the host's /dev/pts/N) for PID 1 to
    /// bind on the machine's /dev/console, as nspawn binds its container's console. Made
    /// here because a clone must be made in the mount namespace that holds the mount,
    /// which PID 1 has left.
    pub fn with_console(mut self, console: &OwnedFd) -> Result<RootTree, String> {
        // SAFETY: plain syscall with a valid descriptor and an empty C string.
        let tree = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                console.as_raw_fd(),
                c"".as_ptr(),
                libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32,
            )
        };
        if tree < 0 {
            return Err(format!(
                "open_tree(the console pty): {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: a fresh descriptor from the kernel.
        self.console = Some(unsafe { OwnedFd::from_raw_fd(tree as i32) });
        Ok(self)
    }

    /// An overlay on `lower` with a fresh upper layer, made when PID 1 attaches it; `lower`
    /// is idmapped through `idmap`, the machine's user namespace, when it has one. `etc`
    /// files (name, content) are written into the upper layer's /etc.
    pub fn overlay(
        lower: &Path,
        idmap: Option<&OwnedFd>,
        etc: Vec<(String, String)>,
    ) -> Result<RootTree, String> {
        let tree = clone_tree(lower, idmap, true)?;
        Ok(RootTree {
            source: TreeSource::Overlay {
                lower: tree,
                unprivileged: idmap.is_some(),
                etc,
            },
            binds: Vec::new(),
            console: None,
        })
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
        match &self.source {
            TreeSource::Clone(tree) => {
                attach_tree(tree, STAGED_ROOT).map_err(|e| format!("mounting the root: {e}"))?;
                // The tree's descriptor now names the root of the attached mount.
                nix::unistd::fchdir(tree).map_err(|e| format!("fchdir to the root: {e}"))
            }
            TreeSource::Overlay {
                lower,
                unprivileged,
                etc,
            } => attach_overlay(lower, *unprivileged, etc),
        }
    }
}

/// Mounts the detached `tree` on `target` in this mount namespace.
fn attach_tree(tree: &OwnedFd, target: &str) -> Result<(), String> {
    let target = CString::new(target).map_err(|_| "NUL in path".to_string())?;
    // SAFETY: plain syscall with a valid descriptor and strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(format!("move_mount: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// A detached clone of the tree at `path` (its submounts too), made while the spawn
/// helper still sees the host's mounts; idmapped through `idmap` when given, read-only
/// when `read_only` (an overlay's lower layer).
fn clone_tree(path: &Path, idmap: Option<&OwnedFd>, read_only: bool) -> Result<OwnedFd, String> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: NUL in path", path.display()))?;
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
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh descriptor from the kernel.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let mut attr_set = 0;
    if read_only {
        attr_set |= libc::MOUNT_ATTR_RDONLY;
    }
    if idmap.is_some() {
        attr_set |= libc::MOUNT_ATTR_IDMAP;
    }
    if attr_set != 0 {
        set_attributes(&tree, attr_set, idmap).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(tree)
}

/// The overlay root of an ephemeral machine: its lower layer attached beside the staged
/// root (the overlay takes layers by path; attached, the clone is in this mount
/// namespace, as overlayfs wants its layers), the upper and work directories on the
/// staging tmpfs. In a user namespace the overlay keeps its own attributes (whiteouts,
/// opaque directories) in user.overlay.* xattrs: trusted.* ones are the host root's.
fn attach_overlay(
    lower: &OwnedFd,
    unprivileged: bool,
    etc: &[(String, String)],
) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let upper = Path::new(STAGING).join("upper");
    let work = Path::new(STAGING).join("work");
    mkdir(Path::new(STAGED_LOWER))?;
    mkdir(&upper)?;
    mkdir(&work)?;
    attach_tree(lower, STAGED_LOWER).map_err(|e| format!("mounting the overlay's base: {e}"))?;
    // The merged root takes the upper root's owner and mode: make them the tree's (its
    // owner is already the machine's root, who made the directory).
    let meta = std::fs::metadata(STAGED_LOWER).map_err(|e| format!("the overlay's base: {e}"))?;
    std::fs::set_permissions(
        &upper,
        std::fs::Permissions::from_mode(meta.mode() & 0o7777),
    )
    .map_err(|e| format!("chmod {}: {e}", upper.display()))?;
    let mut options = format!(
        "lowerdir={STAGED_LOWER},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    if unprivileged {
        options.push_str(",userxattr");
    }
    mnt(
        Some("overlay"),
        STAGED_ROOT,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )?;
    std::env::set_current_dir(STAGED_ROOT).map_err(|e| format!("chdir to the root: {e}"))?;
    if Path::new("etc").is_dir() {
        for (name, content) in etc {
            let file = Path::new("etc").join(name);
            let _ = std::fs::remove_file(&file);
            std::fs::write(&file, format!("{content}\n"))
                .map_err(|e| format!("writing /etc/{name}: {e}"))?;
        }
    }
    Ok(())
}

/// Sets `attr_set` (MOUNT_ATTR_*) on the detached tree and its submounts; `idmap` is the
/// user namespace for MOUNT_ATTR_IDMAP.
fn set_attributes(tree: &OwnedFd, attr_set: u64, idmap: Option<&OwnedFd>) -> Result<(), String> {
    // SAFETY: all-zero is a valid mount_attr.
    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
    attr.attr_set = attr_set;
    if let Some(userns) = idmap {
        attr.userns_fd = userns.as_raw_fd() as u64;
    }
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
        let e = std::io::Error::last_os_error();
        return Err(match idmap {
            Some(_) => format!("{e} (this kernel or file system cannot idmap mounts)"),
            None => e.to_string(),
        });
    }
    Ok(())
}

/// Builds the machine's filesystem view in this (new) mount namespace, relative to the
/// attached root (the working directory from here), all but what depends on its scope:
/// PID 1 does this while systemd makes the scope, then [`finish_root`] once in it.
pub fn build_root(req: &SpawnRequest, root_tree: &RootTree, host: &HostView) -> Result<(), String> {
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
    // Kernel-global sysctls stay read-only; net sysctls are per network namespace, the
    // machine's own unless it shares the host's.
    let host_netns = req.network == NetMode::Host;
    let sys = proc.join("sys");
    bind(&sys, &sys)?;
    if !host_netns {
        bind(&sys.join("net"), &sys.join("net"))?;
    }
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
    if host_netns {
        bind_host_sys(&sysfs)?;
    } else {
        mnt(
            Some("sysfs"),
            &sysfs,
            Some("sysfs"),
            nosuid_nodev | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
            none,
        )?;
    }

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

    setup_dev(&root.join("dev"), root_tree.console.as_ref())?;

    let run = root.join("run");
    mkdir(&run)?;
    mnt(
        Some("tmpfs"),
        &run,
        Some("tmpfs"),
        nosuid_nodev,
        Some(format!("mode=0755,{RUN_TMPFS}").as_str()),
    )?;
    setup_run_host(&run.join("host"), req, host)?;
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
    Ok(())
}

/// The rest of [`build_root`], in the scope and in the machine's own cgroup namespace:
/// the cgroup hierarchies (mounted now, they show the scope as their root), the binds,
/// and pivot_root.
pub fn finish_root(root_tree: &RootTree, host: &HostView) -> Result<(), String> {
    setup_cgroups(&Path::new(".").join("sys/fs/cgroup"), host)?;
    // Last, so a bind below /run, /tmp or /sys/fs/cgroup lands on the machine's own
    // mount there, not under it.
    mount_binds(&root_tree.binds)?;
    pivot()
}

/// Attaches each bind on its target, resolved beneath the root (the working directory)
/// now: the tree may have changed since the machine was created, and its root may have
/// planted a symlink to lead the bind out. The mount goes on the descriptor resolved,
/// never on a path walked again.
fn mount_binds(list: &[BindTree]) -> Result<(), String> {
    if list.is_empty() {
        return Ok(());
    }
    let root = nix::fcntl::open(
        ".",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("opening the root: {e}"))?;
    for b in list {
        let target = binds::resolve(root.as_fd(), &b.bind, Some(b.dir))?
            .ok_or_else(|| format!("bind target {}: not made", b.bind.target.display()))?;
        let st = nix::sys::stat::fstat(&target)
            .map_err(|e| format!("bind target {}: {e}", b.bind.target.display()))?;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir != b.dir {
            let kind = |dir: bool| if dir { "a directory" } else { "a file" };
            return Err(format!(
                "bind target {} is {}, its source {} is {}",
                b.bind.target.display(),
                kind(is_dir),
                b.bind.source.display(),
                kind(b.dir)
            ));
        }
        // SAFETY: plain syscall with valid descriptors and empty C strings.
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                b.tree.as_raw_fd(),
                c"".as_ptr(),
                target.as_raw_fd(),
                c"".as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
            )
        };
        if r < 0 {
            return Err(format!(
                "binding {}: move_mount: {}",
                b.bind.shown(),
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// /sys for a machine in the host's network namespace: the host's own, bound read-only.
/// A fresh sysfs shows the network devices of the mounter's namespace, and the kernel
/// lets a user namespace mount one only if it owns that namespace; an unprivileged
/// machine does not own the host's, so it gets the host's sysfs as nspawn gives it
/// (privileged ones the same, so both kinds see one /sys). In a user namespace the host's
/// submounts below /sys are locked to it, so the bind must be recursive, and each of
/// them is made read-only too; the masks and cgroup mounts build_root and finish_root
/// put on top hide the host's below.
fn bind_host_sys(target: &Path) -> Result<(), String> {
    bind(Path::new("/sys"), target)?;
    let attr = libc::MOUNT_ATTR_RDONLY
        | libc::MOUNT_ATTR_NOSUID
        | libc::MOUNT_ATTR_NODEV
        | libc::MOUNT_ATTR_NOEXEC;
    let c_target = CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: NUL in path", target.display()))?;
    // SAFETY: all-zero is a valid mount_attr.
    let mut a: libc::mount_attr = unsafe { std::mem::zeroed() };
    a.attr_set = attr;
    // SAFETY: a valid C string and a mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c_target.as_ptr(),
            libc::AT_RECURSIVE | libc::AT_SYMLINK_NOFOLLOW,
            &a as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 {
        return Err(format!(
            "making {} read-only: {}",
            target.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The host's cgroup hierarchies, mounted afresh in the machine's cgroup namespace, so
/// each shows the machine's scope as its root (systemd's container interface: the
/// machine's own subtree writable, the rest of the tree not there or read-only). A
/// unified host gets one cgroup2 mount; a v1 or hybrid host a read-only tmpfs with each
/// hierarchy in it, as its /sys/fs/cgroup is.
fn setup_cgroups(target: &Path, host: &HostView) -> Result<(), String> {
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if host
        .cgroups
        .iter()
        .any(|h| h.dir.is_empty() && h.v1_options.is_none())
    {
        // On the host's /sys (host network) the target already is the host's cgroup2,
        // and the kernel refuses the same superblock stacked on the same mount point:
        // a tmpfs in between makes the new one a mount on that tmpfs.
        if nix::sys::statfs::statfs(target)
            .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        {
            mnt(
                Some("tmpfs"),
                target,
                Some("tmpfs"),
                flags,
                Some(CGROUP_TMPFS),
            )?;
        }
        return mnt(Some("cgroup2"), target, Some("cgroup2"), flags, None);
    }
    if host.cgroups.is_empty() {
        return Ok(());
    }
    mnt(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        flags,
        Some(CGROUP_TMPFS),
    )?;
    for h in host.cgroups.iter().filter(|h| !h.dir.is_empty()) {
        let dir = target.join(&h.dir);
        mkdir(&dir)?;
        let flags = if h.writable() {
            flags
        } else {
            flags | MsFlags::MS_RDONLY
        };
        match &h.v1_options {
            None => mnt(Some("cgroup2"), &dir, Some("cgroup2"), flags, None)?,
            Some(options) => mnt(
                Some("cgroup"),
                &dir,
                Some("cgroup"),
                flags,
                Some(options.as_str()),
            )?,
        }
    }
    for (name, to) in &host.cgroup_links {
        link(to, &target.join(name))?;
    }
    remount_ro(target)
}

/// /run/host, read-only: `container-manager` (what $container says), `container-uuid`
/// (the machine's ID) and the host's `os-release`, as systemd's container interface
/// describes them.
fn setup_run_host(dir: &Path, req: &SpawnRequest, host: &HostView) -> Result<(), String> {
    mkdir(dir)?;
    mnt(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(RUN_HOST_TMPFS),
    )?;
    let write = |name: &str, content: &str| {
        let path = dir.join(name);
        std::fs::write(&path, content)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)))
            .map_err(|e| format!("write {}: {e}", path.display()))
    };
    write("container-manager", &format!("{CONTAINER_MANAGER}\n"))?;
    if let Some(uuid) = req
        .machine_id
        .as_deref()
        .and_then(crate::machine_id::as_uuid)
    {
        write("container-uuid", &format!("{uuid}\n"))?;
    }
    if let Some(os_release) = &host.os_release {
        write("os-release", os_release)?;
    }
    remount_ro(dir)
}

fn setup_dev(dev: &Path, console_tree: Option<&OwnedFd>) -> Result<(), String> {
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
    let console = dev.join("console");
    touch(&console)?;
    match console_tree {
        Some(tree) => attach_tree(tree, &console.to_string_lossy())
            .map_err(|e| format!("binding the console on {}: {e}", console.display()))?,
        // No console pty: a sink, so inits that write to it don't fail.
        None => bind(Path::new("/dev/null"), &console)?,
    }

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

    const HYBRID: &str = "\
25 1 0:23 / /sys rw - sysfs sysfs rw
31 25 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
33 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 1 0:40 / /srv/sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";

    #[test]
    fn hybrid_hierarchies_are_found_with_their_names() {
        let found = cgroup_hierarchies(HYBRID);
        let v1 = |dir: &str, o: &str| Hierarchy {
            dir: dir.into(),
            v1_options: Some(o.into()),
        };
        assert_eq!(
            found,
            [
                v1("cpu,cpuacct", "cpu,cpuacct"),
                v1("cpuset", "cpuset,clone_children"),
                v1("systemd", "none,xattr,name=systemd"),
                Hierarchy {
                    dir: "unified".into(),
                    v1_options: None
                },
            ]
        );
        let writable: Vec<_> = found
            .iter()
            .filter(|h| h.writable())
            .map(|h| h.dir.as_str())
            .collect();
        assert_eq!(writable, ["systemd", "unified"]);
    }

    #[test]
    fn a_unified_host_has_one_hierarchy_at_the_top() {
        let info = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            cgroup_hierarchies(info),
            [Hierarchy {
                dir: String::new(),
                v1_options: None
            }]
        );
        // A later mount on the same path hides the earlier one.
        let info = format!("{HYBRID}60 25 0:50 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        assert!(
            cgroup_hierarchies(&info)
                .iter()
                .any(|h| h.dir.is_empty() && h.v1_options.is_none())
        );
    }

    #[test]
    fn tmp_keeps_its_size_and_gets_an_inode_limit() {
        assert_eq!(
            tmp_options(Some(1 << 20)),
            "mode=1777,size=1048576,nr_inodes=400k"
        );
        assert_eq!(tmp_options(None), "mode=1777,nr_inodes=400k");
    }
}
