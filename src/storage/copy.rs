//! Copying and removing root filesystem trees: a template into a new machine (shifted
//! into the machine's user range where the file system cannot idmap), clones (moved from
//! one range to another), snapshots and their restore, and the template `directory`
//! method (an existing tree, even `/`).
//!
//! A rootfs is a system image, so the copy keeps everything the system can tell apart:
//! owners, modes with setuid/setgid/sticky, extended attributes (file capabilities, POSIX
//! ACLs, SELinux labels), hardlinks, device nodes and FIFOs, holes of sparse files, and
//! the access and modification times of everything. Sockets are skipped: they mean
//! nothing without the process that bound them.
//!
//! The walk works on directory file descriptors only (`openat` with `O_NOFOLLOW`, `*at`
//! calls by name): a symlink is never followed below the source's root, so a link loop
//! is copied as links, and a tree changed while it is copied cannot make us write
//! outside `dst`. It is also what makes it fast: no path is resolved from the root again
//! per file, and a file costs fewer system calls than `cp -a` spends on it (data moves
//! by FICLONE where the file system shares extents, else by copy_file_range, else by
//! read and write with one buffer).

use crate::error::{Error, Result};
use crate::jobs::Progress;
use crate::storage::idmap::IdMap;
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, fstatat,
    futimens, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat};
use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How to copy. The default is a plain faithful copy.
#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Applied to every owner and group (and to the IDs inside POSIX ACLs and the root ID
    /// of namespaced file capabilities): [`IdMap::shift`] gives a machine whose user
    /// namespace starts at host ID BASE, on a file system that cannot idmap, the tree as
    /// the template had it; [`IdMap::between`] moves a shifted machine's tree into another
    /// range. IDs outside the map's source range become `nobody` (see [`IdMap`]).
    pub ids: IdMap,
    /// For copying a live system (the directory method, physical to virtual): the
    /// source's top-level /proc, /sys, /dev, /run and /tmp are made as empty directories
    /// with their owner and mode, since their contents belong to the running host.
    pub skip_host_dirs: bool,
    /// A mount point inside the source (a file or directory on another device, as
    /// `cp -x` tells them: a btrfs subvolume counts) is an error naming it, rather than
    /// copying another file system into the machine. The directories `skip_host_dirs`
    /// empties are not checked.
    pub one_file_system: bool,
    /// The destination exists already as an empty directory (a btrfs subvolume made for
    /// the tree) and is copied into, its owner and mode set from the source's as a new
    /// one's are.
    pub into_existing: bool,
}

/// The top-level directories [`CopyOptions::skip_host_dirs`] leaves empty.
pub const HOST_DIRS: [&str; 5] = ["proc", "sys", "dev", "run", "tmp"];

/// What a tree holds, each inode counted once (hardlinks are one file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeSize {
    /// The sum of regular files' sizes (`st_size`): what [`copy_tree`] reports to its
    /// [`Progress`], so the right total for it. A sparse file counts its holes.
    pub apparent_bytes: u64,
    /// Disk space the tree takes (`st_blocks`, of every inode, directories included), as
    /// `du` shows it: what a template's SizeBytes means.
    pub allocated_bytes: u64,
    /// Every inode, the root directory and skipped sockets included.
    pub entries: u64,
}

/// Copies the directory `src` to `dst`, which must not exist yet (copies never merge into
/// a tree): `dst` is made with mode 0700 and gets `src`'s owner and mode at the end, as
/// every directory does once its contents are in.
///
/// `src` itself may be a symlink to a directory; nothing below it is followed. Regular
/// files' bytes are counted into `progress` as they are written (set its total from
/// [`tree_size`]'s `apparent_bytes`), and a cancel through it stops the copy between two
/// files (or two chunks of a big file) with [`Error::Cancelled`]. On any error `dst` may
/// be left partial: the caller copies into a staging directory and removes it. An error
/// names the one path it is about: the source file for reading, the copy for writing.
///
/// If `dst` lies inside `src` (copying `/`), it is skipped rather than copied into
/// itself.
pub fn copy_tree(src: &Path, dst: &Path, opts: &CopyOptions, progress: &Progress) -> Result<()> {
    let mut noatime = noatime();
    let src_root = open_quietly(AT_FDCWD, src, dir_flags(), &mut noatime)
        .map_err(|e| Error::io("cannot copy", src, e.into()))?;
    let src_st = fstat(&src_root).map_err(|e| Error::io("cannot copy", src, e.into()))?;
    if !opts.into_existing {
        nix::unistd::mkdir(dst, Mode::from_bits_truncate(0o700))
            .map_err(|e| Error::io("cannot create", dst, e.into()))?;
    }
    let dst_root = nix::fcntl::open(dst, subdir_flags(), Mode::empty())
        .map_err(|e| Error::io("cannot open", dst, e.into()))?;
    let dst_st = fstat(&dst_root).map_err(|e| Error::io("cannot open", dst, e.into()))?;
    // A default ACL on dst's parent was inherited; below dst it would be inherited again
    // by files whose source has none. The source's own ACLs come back at the end.
    for acl in ["system.posix_acl_default", "system.posix_acl_access"] {
        match xattr::FileExt::remove_xattr(&Fd(dst_root.as_fd()), acl) {
            Err(e) if !absent_xattr(&e) => return Err(Error::io("cannot set up", dst, e)),
            _ => {}
        }
    }
    let mut copier = Copier {
        opts,
        progress,
        src,
        dst,
        rel: PathBuf::new(),
        root_dev: src_st.st_dev,
        dst_id: (dst_st.st_dev, dst_st.st_ino),
        dst_root: dst_root.as_fd(),
        links: HashMap::new(),
        buf: Vec::new(),
        no_reflink: Vec::new(),
        copy_file_range: true,
        noatime,
    };
    let mut src_dir =
        Dir::from_fd(src_root).map_err(|e| copier.fail("cannot copy", Side::Src, e))?;
    copier.copy_contents(&mut src_dir, dst_root.as_fd(), true)?;
    copier.finish(
        Node::Fd(src_dir.as_fd()),
        Node::Fd(dst_root.as_fd()),
        &src_st,
    )
}

/// Measures what [`copy_tree`] with the same options would copy (the top-level host
/// directories are counted but not entered; a mount point is an error with
/// `one_file_system`). `ids` does not matter here.
pub fn tree_size(path: &Path, opts: &CopyOptions) -> Result<TreeSize> {
    let mut noatime = noatime();
    let root = open_quietly(AT_FDCWD, path, dir_flags(), &mut noatime)
        .map_err(|e| Error::io("cannot measure", path, e.into()))?;
    let st = fstat(&root).map_err(|e| Error::io("cannot measure", path, e.into()))?;
    let mut m = Measure {
        opts,
        root: path,
        rel: PathBuf::new(),
        root_dev: st.st_dev,
        seen: HashSet::new(),
        noatime,
        size: TreeSize {
            apparent_bytes: 0,
            allocated_bytes: allocated(&st),
            entries: 1,
        },
    };
    let mut dir = Dir::from_fd(root).map_err(|e| Error::io("cannot measure", path, e.into()))?;
    m.walk(&mut dir, true)?;
    Ok(m.size)
}

/// Removes `path` and everything below it; a path that does not exist is no error.
/// Symlinks are removed, never followed (`path` itself included), and the removal never
/// descends into another file system mounted inside the tree (or on `path` itself): that
/// is an error naming the mount point, so a stray bind mount of host files is not
/// emptied. A btrfs subvolume inside the tree is no mount point: it is removed. Directories a
/// non-root caller cannot enter or change (mode 000, 0555) are opened up first.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let dir = match nix::fcntl::open(path, subdir_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::ENOTDIR | Errno::ELOOP) => {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            };
        }
        Err(Errno::EACCES) => {
            nix::sys::stat::fchmodat(
                AT_FDCWD,
                path,
                Mode::from_bits_truncate(0o700),
                FchmodatFlags::NoFollowSymlink,
            )?;
            nix::fcntl::open(path, subdir_flags(), Mode::empty())?
        }
        Err(e) => return Err(e.into()),
    };
    let mount = mount_of(dir.as_fd())?;
    let parent = nix::fcntl::openat(&dir, "..", dir_flags(), Mode::empty())?;
    if mount_of(parent.as_fd())? != mount {
        return Err(io::Error::other(format!(
            "{} is a mount point: not removing another file system's files",
            path.display()
        )));
    }
    let mut remover = Remover {
        root: path,
        rel: PathBuf::new(),
        mount,
    };
    remover
        .empty(&mut Dir::from_fd(dir)?)
        .map_err(|e| match e.raw_os_error() {
            // Say where below `path` it failed.
            Some(_) => io::Error::new(
                e.kind(),
                format!("{}: {e}", path.join(&remover.rel).display()),
            ),
            None => e,
        })?;
    match std::fs::remove_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Which mount a directory (or file) is on: its mount ID where the kernel tells it (5.8), else its
/// device. The ID tells a btrfs subvolume (a device of its own) from a mount point.
pub(crate) fn mount_of(dir: BorrowedFd) -> io::Result<(bool, u64)> {
    // SAFETY: statx fills the struct it is given; an all-zero statx is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let r = unsafe {
        libc::statx(
            dir.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    if r == 0 && stx.stx_mask & libc::STATX_MNT_ID != 0 {
        return Ok((true, stx.stx_mnt_id));
    }
    Ok((false, fstat(dir)?.st_dev))
}

/// Reading must not change the source (a snapshot's atimes, a template's): O_NOATIME,
/// which only the owner or root may ask for.
fn noatime() -> OFlag {
    if nix::unistd::geteuid().is_root() {
        OFlag::O_NOATIME
    } else {
        OFlag::empty()
    }
}

/// Opens a source file or directory with `noatime`, or from then on without it where the
/// file system refuses it (one that squashes root).
fn open_quietly<P: ?Sized + nix::NixPath>(
    dir: BorrowedFd,
    name: &P,
    flags: OFlag,
    noatime: &mut OFlag,
) -> nix::Result<OwnedFd> {
    match nix::fcntl::openat(dir, name, flags | *noatime, Mode::empty()) {
        Err(Errno::EPERM) if !noatime.is_empty() => {
            *noatime = OFlag::empty();
            nix::fcntl::openat(dir, name, flags, Mode::empty())
        }
        other => other,
    }
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
}

fn subdir_flags() -> OFlag {
    dir_flags() | OFlag::O_NOFOLLOW
}

fn allocated(st: &FileStat) -> u64 {
    (st.st_blocks as u64).saturating_mul(512)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn absent_xattr(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::ENODATA | Errno::EOPNOTSUPP)
    )
}

/// A directory's entries, read in one go so the directory can be worked on by name while
/// its stream is not borrowed: names NUL-terminated in one buffer, with their types.
struct Names {
    bytes: Vec<u8>,
    entries: Vec<(usize, usize, Option<Type>)>,
}

impl Names {
    fn read(dir: &mut Dir) -> nix::Result<Names> {
        let mut names = Names {
            bytes: Vec::new(),
            entries: Vec::new(),
        };
        for entry in dir.iter() {
            let entry = entry?;
            let name = entry.file_name().to_bytes_with_nul();
            if name == b".\0" || name == b"..\0" {
                continue;
            }
            let start = names.bytes.len();
            names.bytes.extend_from_slice(name);
            names
                .entries
                .push((start, names.bytes.len(), entry.file_type()));
        }
        Ok(names)
    }

    fn iter(&self) -> impl Iterator<Item = (&CStr, Option<Type>)> {
        self.entries.iter().map(|&(start, end, ty)| {
            let name = CStr::from_bytes_with_nul(&self.bytes[start..end]).expect("one NUL");
            (name, ty)
        })
    }
}

fn os(name: &CStr) -> &OsStr {
    OsStr::from_bytes(name.to_bytes())
}

/// Which tree an error is about.
#[derive(Clone, Copy)]
enum Side {
    Src,
    Dst,
}

/// A borrowed descriptor that the `xattr` crate can work on.
struct Fd<'a>(BorrowedFd<'a>);

impl AsRawFd for Fd<'_> {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl xattr::FileExt for Fd<'_> {}

/// A file to read or set metadata on: open (files, directories), or by name in an open
/// directory (symlinks, device nodes, FIFOs, which we never open).
#[derive(Clone, Copy)]
enum Node<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a CStr),
}

impl Node<'_> {
    /// For the xattr calls that only take paths: the directory through /proc, the name
    /// not followed (the `l*xattr` calls).
    fn proc_path(dir: BorrowedFd, name: &CStr) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        p.push(os(name));
        p
    }

    fn list_xattrs(self) -> io::Result<xattr::XAttrs> {
        match self {
            Node::Fd(fd) => xattr::FileExt::list_xattr(&Fd(fd)),
            Node::At(dir, name) => xattr::list(Self::proc_path(dir, name)),
        }
    }

    fn get_xattr(self, key: &OsStr) -> io::Result<Option<Vec<u8>>> {
        match self {
            Node::Fd(fd) => xattr::FileExt::get_xattr(&Fd(fd), key),
            Node::At(dir, name) => xattr::get(Self::proc_path(dir, name), key),
        }
    }

    fn set_xattr(self, key: &OsStr, value: &[u8]) -> io::Result<()> {
        match self {
            Node::Fd(fd) => xattr::FileExt::set_xattr(&Fd(fd), key, value),
            Node::At(dir, name) => xattr::set(Self::proc_path(dir, name), key, value),
        }
    }
}

struct Copier<'a> {
    opts: &'a CopyOptions,
    progress: &'a Progress,
    src: &'a Path,
    dst: &'a Path,
    /// Where the walk is, relative to both roots: errors name it, hardlinks record it.
    rel: PathBuf,
    root_dev: u64,
    dst_id: (u64, u64),
    dst_root: BorrowedFd<'a>,
    /// The first copy of each multiply-linked inode (by source device and inode), as a
    /// path below `dst`, for `linkat`.
    links: HashMap<(u64, u64), PathBuf>,
    /// The read/write buffer, made on first use and reused.
    buf: Vec<u8>,
    /// Source devices where FICLONE failed for a reason that holds for every file.
    no_reflink: Vec<u64>,
    /// Whether copy_file_range still works between these file systems.
    copy_file_range: bool,
    noatime: OFlag,
}

impl Copier<'_> {
    fn fail(&self, what: &str, side: Side, e: impl Into<io::Error>) -> Error {
        let root = match side {
            Side::Src => self.src,
            Side::Dst => self.dst,
        };
        let path = if self.rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&self.rel)
        };
        Error::io(what, path, e.into())
    }

    fn copy_contents(&mut self, src: &mut Dir, dst: BorrowedFd, top: bool) -> Result<()> {
        let names = Names::read(src).map_err(|e| self.fail("cannot read", Side::Src, e))?;
        for (name, ty) in names.iter() {
            self.progress.check("the copy")?;
            self.rel.push(os(name));
            self.copy_entry(src.as_fd(), dst, name, ty, top)?;
            self.rel.pop();
        }
        Ok(())
    }

    fn copy_entry(
        &mut self,
        sdir: BorrowedFd,
        ddir: BorrowedFd,
        name: &CStr,
        ty: Option<Type>,
        top: bool,
    ) -> Result<()> {
        // Files and directories are opened first and stat'ed by descriptor (what we
        // stat is what we copy); if the entry changed type since readdir, stat by name.
        let flags = match ty {
            Some(Type::Socket) => return Ok(()),
            Some(Type::File) => Some(file_flags()),
            Some(Type::Directory) => Some(subdir_flags()),
            _ => None,
        };
        let opened = flags.and_then(|f| self.open_src(sdir, name, f).ok());
        let st = match &opened {
            Some(fd) => fstat(fd),
            None => fstatat(sdir, name, AtFlags::AT_SYMLINK_NOFOLLOW),
        }
        .map_err(|e| self.fail("cannot copy", Side::Src, e))?;
        let kind = kind(&st);
        let emptied = top
            && kind == SFlag::S_IFDIR
            && self.opts.skip_host_dirs
            && HOST_DIRS.iter().any(|d| d.as_bytes() == name.to_bytes());
        if kind == SFlag::S_IFDIR && (st.st_dev, st.st_ino) == self.dst_id {
            return Ok(());
        }
        // Directories only: overlayfs reports a non-directory's st_dev as that of the
        // layer it lives on, so files of one overlay differ from its root.
        if self.opts.one_file_system
            && !emptied
            && kind == SFlag::S_IFDIR
            && st.st_dev != self.root_dev
        {
            return Err(self.mount_point());
        }
        if kind != SFlag::S_IFDIR && st.st_nlink > 1 && self.link(&st, ddir, name)? {
            return Ok(());
        }
        match kind {
            SFlag::S_IFDIR => {
                let fd = match opened {
                    Some(fd) => fd,
                    None => self
                        .open_src(sdir, name, subdir_flags())
                        .map_err(|e| self.fail("cannot copy", Side::Src, e))?,
                };
                self.copy_dir(fd, &st, ddir, name, emptied)?;
            }
            SFlag::S_IFREG => {
                let fd = match opened {
                    Some(fd) => fd,
                    None => {
                        let fd = self
                            .open_src(sdir, name, file_flags())
                            .map_err(|e| self.fail("cannot copy", Side::Src, e))?;
                        // Opened after the stat: it must still be that file.
                        let now = fstat(&fd).map_err(|e| self.fail("cannot copy", Side::Src, e))?;
                        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
                            let e = io::Error::other("it was replaced while being copied");
                            return Err(self.fail("cannot copy", Side::Src, e));
                        }
                        fd
                    }
                };
                self.copy_file(fd, &st, ddir, name)?;
            }
            SFlag::S_IFLNK => {
                let target = nix::fcntl::readlinkat(sdir, name)
                    .map_err(|e| self.fail("cannot read link", Side::Src, e))?;
                nix::unistd::symlinkat(target.as_os_str(), ddir, name)
                    .map_err(|e| self.fail("cannot create", Side::Dst, e))?;
                self.finish(Node::At(sdir, name), Node::At(ddir, name), &st)?;
            }
            SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                mknodat(
                    ddir,
                    name,
                    kind,
                    Mode::from_bits_truncate(0o600),
                    st.st_rdev,
                )
                .map_err(|e| self.fail("cannot create", Side::Dst, e))?;
                self.finish(Node::At(sdir, name), Node::At(ddir, name), &st)?;
            }
            _ => return Ok(()), // a socket
        }
        if kind != SFlag::S_IFDIR && st.st_nlink > 1 {
            self.links.insert((st.st_dev, st.st_ino), self.rel.clone());
        }
        Ok(())
    }

    fn open_src(&mut self, dir: BorrowedFd, name: &CStr, flags: OFlag) -> nix::Result<OwnedFd> {
        open_quietly(dir, name, flags, &mut self.noatime)
    }

    fn mount_point(&self) -> Error {
        let path = self.src.join(&self.rel);
        Error::InvalidArgument(format!(
            "{} is a mount point inside the tree being copied, which must be one file system",
            path.display()
        ))
    }

    /// Links `name` to the copy of an inode already copied; false if this is its first.
    fn link(&self, st: &FileStat, ddir: BorrowedFd, name: &CStr) -> Result<bool> {
        let Some(first) = self.links.get(&(st.st_dev, st.st_ino)) else {
            return Ok(false);
        };
        nix::unistd::linkat(self.dst_root, first, ddir, name, AtFlags::empty())
            .map_err(|e| self.fail("cannot link", Side::Dst, e))?;
        Ok(true)
    }

    fn copy_dir(
        &mut self,
        src: OwnedFd,
        st: &FileStat,
        ddir: BorrowedFd,
        name: &CStr,
        emptied: bool,
    ) -> Result<()> {
        // 0700 until its contents are in: nobody looks into a half-made directory.
        mkdirat(ddir, name, Mode::from_bits_truncate(0o700))
            .map_err(|e| self.fail("cannot create", Side::Dst, e))?;
        let dst = nix::fcntl::openat(ddir, name, subdir_flags(), Mode::empty())
            .map_err(|e| self.fail("cannot open", Side::Dst, e))?;
        if emptied {
            return self.finish(Node::Fd(src.as_fd()), Node::Fd(dst.as_fd()), st);
        }
        let mut dir = Dir::from_fd(src).map_err(|e| self.fail("cannot read", Side::Src, e))?;
        self.copy_contents(&mut dir, dst.as_fd(), false)?;
        self.finish(Node::Fd(dir.as_fd()), Node::Fd(dst.as_fd()), st)
    }

    fn copy_file(
        &mut self,
        src: OwnedFd,
        st: &FileStat,
        ddir: BorrowedFd,
        name: &CStr,
    ) -> Result<()> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let dst = nix::fcntl::openat(ddir, name, flags, Mode::from_bits_truncate(0o600))
            .map_err(|e| self.fail("cannot create", Side::Dst, e))?;
        let size = st.st_size.max(0) as u64;
        let counted = if size == 0 || self.reflink(src.as_fd(), dst.as_fd(), st) {
            0
        } else if allocated(st) < size {
            self.copy_sparse(src.as_fd(), dst.as_fd(), st.st_size)?
        } else {
            // Up to the size stat'ed: the rest of the metadata is from then too, and
            // no call is spent to learn where the end is.
            self.copy_range(src.as_fd(), dst.as_fd(), 0, Some(st.st_size))?
        };
        self.progress.add(size.saturating_sub(counted));
        // After the data: a write clears setuid bits and file capabilities.
        self.finish(Node::Fd(src.as_fd()), Node::Fd(dst.as_fd()), st)
    }

    /// Shares the extents (btrfs, XFS, bcachefs): the whole file, holes included.
    fn reflink(&mut self, src: BorrowedFd, dst: BorrowedFd, st: &FileStat) -> bool {
        if self.no_reflink.contains(&st.st_dev) {
            return false;
        }
        // SAFETY: FICLONE takes the source descriptor as its argument; both are open.
        let r = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
        if r == 0 {
            return true;
        }
        // Not supported here, or across these mounts: don't ask again for this device.
        // Other errors (EINVAL for one odd file) only mean this file is copied.
        if matches!(
            Errno::last(),
            Errno::EOPNOTSUPP | Errno::ENOTTY | Errno::EXDEV | Errno::ENOSYS
        ) {
            self.no_reflink.push(st.st_dev);
        }
        false
    }

    /// Copies only the data extents and sets the size: holes stay holes. Returns the
    /// bytes counted into progress.
    fn copy_sparse(&mut self, src: BorrowedFd, dst: BorrowedFd, size: i64) -> Result<u64> {
        use nix::unistd::{Whence, lseek};
        let mut off = 0;
        let mut counted = 0;
        while off < size {
            let data = match lseek(src, off, Whence::SeekData) {
                Ok(d) => d,
                Err(Errno::ENXIO) => break, // only a hole is left
                Err(Errno::EINVAL | Errno::EOPNOTSUPP) if off == 0 => {
                    // No SEEK_DATA here: copy it whole.
                    return self.copy_range(src, dst, 0, None);
                }
                Err(e) => return Err(self.fail("cannot read", Side::Src, e)),
            };
            let hole = lseek(src, data, Whence::SeekHole)
                .map_err(|e| self.fail("cannot read", Side::Src, e))?;
            counted += self.copy_range(src, dst, data, Some(hole))?;
            off = hole;
        }
        nix::unistd::ftruncate(dst, size).map_err(|e| self.fail("cannot write", Side::Dst, e))?;
        Ok(counted)
    }

    /// Copies bytes from `off` to `end` (or to the end of the file), counting them into
    /// progress and checking for a cancel between chunks. Returns the bytes counted.
    fn copy_range(
        &mut self,
        src: BorrowedFd,
        dst: BorrowedFd,
        mut off: i64,
        end: Option<i64>,
    ) -> Result<u64> {
        const CHUNK: usize = 64 << 20;
        let mut counted = 0;
        let mut cfr = self.copy_file_range;
        loop {
            let want = match end {
                Some(end) if off >= end => break,
                Some(end) => ((end - off) as usize).min(CHUNK),
                None => CHUNK,
            };
            let n = if cfr {
                let (mut i, mut o) = (off, off);
                match nix::fcntl::copy_file_range(src, Some(&mut i), dst, Some(&mut o), want) {
                    Ok(n) => n,
                    Err(Errno::EINTR) => continue,
                    Err(e @ (Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL)) => {
                        // EINVAL is about this file (a pseudo file); the others about
                        // the pair of file systems.
                        if e != Errno::EINVAL {
                            self.copy_file_range = false;
                        }
                        cfr = false;
                        continue;
                    }
                    Err(e) => return Err(self.fail(data_error(e), data_side(e), e)),
                }
            } else {
                self.read_write(src, dst, off, want)?
            };
            if n == 0 {
                break;
            }
            off += n as i64;
            counted += n as u64;
            self.progress.add(n as u64);
            if n == CHUNK {
                self.progress.check("the copy")?;
            }
        }
        Ok(counted)
    }

    fn read_write(
        &mut self,
        src: BorrowedFd,
        dst: BorrowedFd,
        off: i64,
        want: usize,
    ) -> Result<usize> {
        if self.buf.is_empty() {
            self.buf = vec![0; 256 << 10];
        }
        let len = want.min(self.buf.len());
        let n = loop {
            match nix::sys::uio::pread(src, &mut self.buf[..len], off) {
                Err(Errno::EINTR) => continue,
                other => break other.map_err(|e| self.fail("cannot read", Side::Src, e))?,
            }
        };
        let mut written = 0;
        while written < n {
            match nix::sys::uio::pwrite(dst, &self.buf[written..n], off + written as i64) {
                Ok(w) => written += w,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(self.fail("cannot write", Side::Dst, e)),
            }
        }
        Ok(n)
    }

    /// Gives the copy the source's owner (mapped), extended attributes, mode and times,
    /// in the order that keeps each: chown clears setuid bits and file capabilities, and
    /// setting those last would change the times.
    fn finish(&self, src: Node, dst: Node, st: &FileStat) -> Result<()> {
        let ids = self.opts.ids;
        let uid = Some(Uid::from_raw(ids.map(st.st_uid)));
        let gid = Some(Gid::from_raw(ids.map(st.st_gid)));
        match dst {
            Node::Fd(fd) => fchown(fd, uid, gid),
            Node::At(dir, name) => fchownat(dir, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW),
        }
        .map_err(|e| self.fail("cannot set the owner of", Side::Dst, e))?;
        self.copy_xattrs(src, dst)?;
        let is_link = kind(st) == SFlag::S_IFLNK;
        if !is_link {
            let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
            match dst {
                Node::Fd(fd) => fchmod(fd, mode),
                Node::At(dir, name) => fchmodat(dir, name, mode, FchmodatFlags::FollowSymlink),
            }
            .map_err(|e| self.fail("cannot set the mode of", Side::Dst, e))?;
        }
        let atime = TimeSpec::new(st.st_atime, st.st_atime_nsec);
        let mtime = TimeSpec::new(st.st_mtime, st.st_mtime_nsec);
        match dst {
            Node::Fd(fd) => futimens(fd, &atime, &mtime),
            Node::At(dir, name) => {
                utimensat(dir, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
            }
        }
        .map_err(|e| self.fail("cannot set the times of", Side::Dst, e))
    }

    fn copy_xattrs(&self, src: Node, dst: Node) -> Result<()> {
        let names = match src.list_xattrs() {
            Ok(names) => names,
            Err(e) if absent_xattr(&e) => return Ok(()),
            Err(e) => {
                return Err(self.fail("cannot list the extended attributes of", Side::Src, e));
            }
        };
        for key in names {
            let value = src.get_xattr(&key).map_err(|e| {
                self.fail(
                    &format!(
                        "cannot read extended attribute {} of",
                        key.to_string_lossy()
                    ),
                    Side::Src,
                    e,
                )
            })?;
            // Gone since it was listed.
            let Some(mut value) = value else { continue };
            self.opts.ids.map_xattr(key.as_bytes(), &mut value);
            dst.set_xattr(&key, &value).map_err(|e| {
                self.fail(
                    &format!("cannot set extended attribute {} of", key.to_string_lossy()),
                    Side::Dst,
                    e,
                )
            })?;
        }
        Ok(())
    }
}

fn file_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC
}

/// A failed copy_file_range: out of space on the copy's side, else reading the source.
fn data_side(e: Errno) -> Side {
    match e {
        Errno::ENOSPC | Errno::EDQUOT | Errno::EFBIG | Errno::EROFS => Side::Dst,
        _ => Side::Src,
    }
}

fn data_error(e: Errno) -> &'static str {
    match data_side(e) {
        Side::Dst => "cannot write",
        Side::Src => "cannot read",
    }
}

struct Measure<'a> {
    opts: &'a CopyOptions,
    root: &'a Path,
    rel: PathBuf,
    root_dev: u64,
    seen: HashSet<(u64, u64)>,
    noatime: OFlag,
    size: TreeSize,
}

impl Measure<'_> {
    fn fail(&self, e: Errno) -> Error {
        Error::io("cannot measure", self.root.join(&self.rel), e.into())
    }

    fn walk(&mut self, dir: &mut Dir, top: bool) -> Result<()> {
        let names = Names::read(dir).map_err(|e| self.fail(e))?;
        for (name, _) in names.iter() {
            self.rel.push(os(name));
            let st = fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(|e| self.fail(e))?;
            let is_dir = kind(&st) == SFlag::S_IFDIR;
            let emptied = top
                && is_dir
                && self.opts.skip_host_dirs
                && HOST_DIRS.iter().any(|d| d.as_bytes() == name.to_bytes());
            // Directories only, as in the copy: overlayfs files show their layer's st_dev.
            if self.opts.one_file_system && !emptied && is_dir && st.st_dev != self.root_dev {
                return Err(Error::InvalidArgument(format!(
                    "{} is a mount point inside the tree being copied, which must be one \
                     file system",
                    self.root.join(&self.rel).display()
                )));
            }
            if is_dir || st.st_nlink <= 1 || self.seen.insert((st.st_dev, st.st_ino)) {
                self.size.entries += 1;
                self.size.allocated_bytes += allocated(&st);
                if kind(&st) == SFlag::S_IFREG {
                    self.size.apparent_bytes += st.st_size.max(0) as u64;
                }
            }
            if is_dir && !emptied {
                let fd = open_quietly(dir.as_fd(), name, subdir_flags(), &mut self.noatime)
                    .map_err(|e| self.fail(e))?;
                let mut sub = Dir::from_fd(fd).map_err(|e| self.fail(e))?;
                self.walk(&mut sub, false)?;
            }
            self.rel.pop();
        }
        Ok(())
    }
}

struct Remover<'a> {
    root: &'a Path,
    rel: PathBuf,
    mount: (bool, u64),
}

impl Remover<'_> {
    fn empty(&mut self, dir: &mut Dir) -> io::Result<()> {
        let names = Names::read(dir)?;
        let mut opened_up = false;
        for (name, ty) in names.iter() {
            self.rel.push(os(name));
            if ty != Some(Type::Directory) {
                match nix::unistd::unlinkat(
                    dir.as_fd(),
                    name,
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                ) {
                    Ok(()) | Err(Errno::ENOENT) => {
                        self.rel.pop();
                        continue;
                    }
                    Err(Errno::EACCES) if !opened_up => {
                        // A directory we may not write to: allow it, then try again.
                        fchmod(dir.as_fd(), Mode::from_bits_truncate(0o700))?;
                        opened_up = true;
                        nix::unistd::unlinkat(
                            dir.as_fd(),
                            name,
                            nix::unistd::UnlinkatFlags::NoRemoveDir,
                        )
                        .or_else(|e| if e == Errno::ENOENT { Ok(()) } else { Err(e) })?;
                        self.rel.pop();
                        continue;
                    }
                    Err(Errno::EISDIR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let fd = match nix::fcntl::openat(dir.as_fd(), name, subdir_flags(), Mode::empty()) {
                Err(Errno::EACCES) => {
                    fchmodat(
                        dir.as_fd(),
                        name,
                        Mode::from_bits_truncate(0o700),
                        FchmodatFlags::FollowSymlink,
                    )?;
                    nix::fcntl::openat(dir.as_fd(), name, subdir_flags(), Mode::empty())?
                }
                Err(Errno::ENOENT) => {
                    self.rel.pop();
                    continue;
                }
                other => other?,
            };
            if mount_of(fd.as_fd())? != self.mount {
                return Err(io::Error::other(format!(
                    "{} is a mount point: not removing another file system's files",
                    self.root.join(&self.rel).display()
                )));
            }
            self.empty(&mut Dir::from_fd(fd)?)?;
            match nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(Errno::EACCES) if !opened_up => {
                    fchmod(dir.as_fd(), Mode::from_bits_truncate(0o700))?;
                    opened_up = true;
                    nix::unistd::unlinkat(
                        dir.as_fd(),
                        name,
                        nix::unistd::UnlinkatFlags::RemoveDir,
                    )?;
                }
                Err(e) => return Err(e.into()),
            }
            self.rel.pop();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;
    use crate::storage::idmap::OVERFLOW_ID;
    use nix::sys::stat::UtimensatFlags::NoFollowSymlink;
    use std::fs;
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
    use std::sync::Arc;

    /// A directory of its own for one test, removed (with remove_tree) when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!("berth-copy-{tag}-{}", std::process::id()));
            let _ = remove_tree(&p);
            fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }

        fn join(&self, rel: &str) -> PathBuf {
            self.0.join(rel)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = remove_tree(&self.0);
        }
    }

    fn copy(src: &Path, dst: &Path, opts: &CopyOptions) -> Result<()> {
        copy_tree(src, dst, opts, &Progress::new())
    }

    fn times(path: &Path, secs: i64) {
        utimensat(
            AT_FDCWD,
            path,
            &TimeSpec::new(secs, 123_456_789),
            &TimeSpec::new(secs + 7, 987_654_321),
            NoFollowSymlink,
        )
        .unwrap();
    }

    fn own(path: &Path, uid: u32, gid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
    }

    fn mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn io_error(e: &Error) -> (&Path, io::ErrorKind) {
        match e {
            Error::Io { path, source, .. } => (path, source.kind()),
            other => panic!("not an I/O error: {other}"),
        }
    }

    /// Everything a faithful copy keeps, one line per path (sorted), stat'ed before it
    /// is read; hardlinks shown as the first path of their inode. Sockets are left out:
    /// the copy skips them.
    pub(super) fn listing(root: &Path) -> Vec<String> {
        fn walk(
            root: &Path,
            rel: &Path,
            first: &mut HashMap<(u64, u64), String>,
            out: &mut Vec<String>,
        ) {
            let path = root.join(rel);
            let m = fs::symlink_metadata(&path).unwrap();
            let ft = m.file_type();
            if ft.is_socket() {
                return;
            }
            let shown = rel.display().to_string();
            // Reading a symlink sets its atime (the copy keeps the one it saw first).
            let atime = if ft.is_symlink() {
                "-".to_string()
            } else {
                format!("{}.{}", m.atime(), m.atime_nsec())
            };
            let mut line = format!(
                "{shown:?} {:o} {}:{} nlink={} rdev={:x} mtime={}.{} atime={atime}",
                m.mode(),
                m.uid(),
                m.gid(),
                m.nlink(),
                m.rdev(),
                m.mtime(),
                m.mtime_nsec(),
            );
            let mut xattrs: Vec<_> = xattr::list(&path)
                .unwrap()
                .map(|k| {
                    let v = xattr::get(&path, &k).unwrap().unwrap_or_default();
                    format!("{}={v:02x?}", k.to_string_lossy())
                })
                .collect();
            xattrs.sort();
            line += &format!(" xattrs={xattrs:?}");
            if !ft.is_dir() && m.nlink() > 1 {
                let f = first
                    .entry((m.dev(), m.ino()))
                    .or_insert_with(|| shown.clone());
                line += &format!(" first={f:?}");
            }
            if ft.is_symlink() {
                line += &format!(" -> {:?}", fs::read_link(&path).unwrap());
            } else if ft.is_file() {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                // Reading must not change the atimes compared.
                let mut f = fs::OpenOptions::new();
                f.read(true).custom_flags(libc::O_NOATIME);
                let mut data = Vec::new();
                io::Read::read_to_end(&mut f.open(&path).unwrap(), &mut data).unwrap();
                data.hash(&mut h);
                line += &format!(" size={} data={:x}", m.size(), h.finish());
            }
            out.push(line);
            if ft.is_dir() {
                let mut names: Vec<_> = fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                names.sort();
                for n in names {
                    walk(root, &rel.join(n), first, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(root, Path::new(""), &mut HashMap::new(), &mut out);
        out
    }

    /// Returns how many paths were compared.
    fn assert_same(src: &Path, dst: &Path) -> usize {
        let (a, b) = (listing(src), listing(dst));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y);
        }
        assert_eq!(a.len(), b.len(), "{a:#?}\n{b:#?}");
        a.len()
    }

    // An ACL (version 2, entries of tag, perm, id) with a named user and group.
    const ACL_USER: u16 = 0x02;
    const ACL_GROUP: u16 = 0x08;
    const USER_OBJ: u16 = 0x01;
    const GROUP_OBJ: u16 = 0x04;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;

    fn acl(user: u32, group: u32) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (USER_OBJ, 6, u32::MAX),
            (ACL_USER, 4, user),
            (GROUP_OBJ, 4, u32::MAX),
            (ACL_GROUP, 5, group),
            (MASK, 5, u32::MAX),
            (OTHER, 4, u32::MAX),
        ] {
            v.extend(tag.to_le_bytes());
            v.extend((perm as u16).to_le_bytes());
            v.extend(id.to_le_bytes());
        }
        v
    }

    /// CAP_NET_BIND_SERVICE, effective; v3 with a root ID when one is given.
    fn cap(rootid: Option<u32>) -> Vec<u8> {
        let rev: u32 = if rootid.is_some() {
            0x0300_0000
        } else {
            0x0200_0000
        };
        let mut v = (rev | 1).to_le_bytes().to_vec();
        for word in [1u32 << 10, 0, 0, 0] {
            v.extend(word.to_le_bytes());
        }
        if let Some(r) = rootid {
            v.extend(r.to_le_bytes());
        }
        v
    }

    /// A small rootfs with one of everything a copy must keep.
    fn odd_tree(src: &Path) {
        fs::create_dir_all(src.join("usr/bin")).unwrap();
        fs::create_dir_all(src.join("etc/skel")).unwrap();
        fs::write(src.join("etc/hostname"), "template\n").unwrap();
        fs::write(src.join("etc/empty"), "").unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(src.join("usr/bin/tool"), &big).unwrap();
        // setuid, owned by someone else, with a v2 and a v3 file capability.
        let su = src.join("usr/bin/su");
        fs::write(&su, b"\x7fELF").unwrap();
        own(&su, 1000, 1001);
        mode(&su, 0o4755);
        xattr::set(&su, "security.capability", &cap(None)).unwrap();
        let ping = src.join("usr/bin/ping");
        fs::write(&ping, b"\x7fELF ping").unwrap();
        xattr::set(&ping, "security.capability", &cap(Some(1000))).unwrap();
        // hardlinks across directories, one of three names on a setgid file
        fs::hard_link(src.join("usr/bin/tool"), src.join("usr/bin/tool-alias")).unwrap();
        fs::hard_link(src.join("usr/bin/tool"), src.join("etc/skel/tool")).unwrap();
        mode(&src.join("usr/bin/tool"), 0o2711);
        // ACLs on a file and a directory (access and default), user xattrs
        fs::write(src.join("etc/shared"), "x").unwrap();
        xattr::set(
            src.join("etc/shared"),
            "system.posix_acl_access",
            &acl(1234, 5678),
        )
        .unwrap();
        xattr::set(src.join("etc/shared"), "user.note", b"kept").unwrap();
        fs::create_dir(src.join("srv")).unwrap();
        xattr::set(
            src.join("srv"),
            "system.posix_acl_default",
            &acl(1234, 5678),
        )
        .unwrap();
        xattr::set(src.join("srv"), "user.dir", b"d").unwrap();
        // sticky, setgid and closed directories
        fs::create_dir(src.join("tmp")).unwrap();
        mode(&src.join("tmp"), 0o1777);
        fs::create_dir(src.join("srv/team")).unwrap();
        own(&src.join("srv/team"), 0, 1001);
        mode(&src.join("srv/team"), 0o2770);
        fs::create_dir_all(src.join("root/.ssh")).unwrap();
        fs::write(src.join("root/.ssh/key"), "secret").unwrap();
        mode(&src.join("root/.ssh/key"), 0o600);
        mode(&src.join("root/.ssh"), 0o000);
        mode(&src.join("root"), 0o700);
        // symlinks: relative, absolute (never followed out), loops, dangling, with an
        // xattr and an owner of their own
        symlink("tool", src.join("usr/bin/tool-link")).unwrap();
        symlink("/etc/passwd", src.join("etc/abs")).unwrap();
        symlink("loop-b", src.join("etc/loop-a")).unwrap();
        symlink("loop-a", src.join("etc/loop-b")).unwrap();
        symlink(".", src.join("etc/self")).unwrap();
        symlink("../..", src.join("etc/skel/up")).unwrap();
        symlink("nowhere", src.join("etc/dangling")).unwrap();
        xattr::set(src.join("etc/abs"), "trusted.berth", b"link").unwrap();
        own(&src.join("etc/dangling"), 7, 8);
        // device nodes and a FIFO, one with an xattr; a hardlinked FIFO; a socket
        fs::create_dir(src.join("dev")).unwrap();
        let null = nix::sys::stat::makedev(1, 3);
        mknodat(
            AT_FDCWD,
            &src.join("dev/null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            null,
        )
        .unwrap();
        let loop0 = nix::sys::stat::makedev(7, 0);
        mknodat(
            AT_FDCWD,
            &src.join("dev/loop0"),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o660),
            loop0,
        )
        .unwrap();
        own(&src.join("dev/loop0"), 0, 6);
        nix::unistd::mkfifo(&src.join("dev/fifo"), Mode::from_bits_truncate(0o620)).unwrap();
        xattr::set(src.join("dev/fifo"), "trusted.fifo", b"f").unwrap();
        fs::hard_link(src.join("dev/fifo"), src.join("dev/fifo2")).unwrap();
        let sock = std::os::unix::net::UnixListener::bind(src.join("dev/sock")).unwrap();
        drop(sock);
        // sparse: a hole, 4 KiB of data, a hole to the end
        let sparse = fs::File::create(src.join("var-sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&sparse, &[7; 4096], 32 << 20).unwrap();
        drop(sparse);
        // times last, children before parents as the copy does
        let mut paths: Vec<PathBuf> = Vec::new();
        fn all(p: &Path, out: &mut Vec<PathBuf>) {
            if fs::symlink_metadata(p).unwrap().is_dir() {
                for e in fs::read_dir(p).unwrap() {
                    all(&e.unwrap().path(), out);
                }
            }
            out.push(p.to_path_buf());
        }
        all(src, &mut paths);
        for (i, p) in paths.iter().enumerate() {
            times(p, 1_000_000_000 + i as i64 * 1000);
        }
    }

    #[test]
    fn copies_a_tree_faithfully() {
        let s = Scratch::new("faithful");
        let src = s.join("src");
        odd_tree(&src);
        // A default ACL above dst is not inherited into the copy.
        let parent = s.join("acl-parent");
        fs::create_dir(&parent).unwrap();
        xattr::set(&parent, "system.posix_acl_default", &acl(4321, 8765)).unwrap();
        let dst = parent.join("dst");
        let progress = Progress::new();
        let atimes = |root: &Path| {
            ["", "usr", "usr/bin/tool", "etc/hostname", "root/.ssh"]
                .map(|p| fs::symlink_metadata(root.join(p)).unwrap().atime())
        };
        let before = atimes(&src);
        let size = tree_size(&src, &CopyOptions::default()).unwrap();
        copy_tree(&src, &dst, &CopyOptions::default(), &progress).unwrap();
        assert_eq!(atimes(&src), before, "reading leaves the source as it was");
        assert_same(&src, &dst);
        assert_eq!(
            progress.done(),
            size.apparent_bytes,
            "progress counts file bytes"
        );

        let sparse = fs::metadata(dst.join("var-sparse")).unwrap();
        assert_eq!(sparse.len(), 64 << 20);
        assert!(
            sparse.blocks() * 512 <= 64 << 10,
            "holes stay holes: {}",
            sparse.blocks()
        );
        assert!(!dst.join("dev/sock").exists(), "sockets are skipped");
        assert!(
            fs::symlink_metadata(dst.join("dev/fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_eq!(
            fs::read_link(dst.join("etc/abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        let su = fs::metadata(dst.join("usr/bin/su")).unwrap();
        assert_eq!(
            (su.mode() & 0o7777, su.uid(), su.gid()),
            (0o4755, 1000, 1001)
        );
        assert_eq!(
            xattr::get(dst.join("usr/bin/su"), "security.capability").unwrap(),
            Some(cap(None))
        );
        let tool = fs::metadata(dst.join("etc/skel/tool")).unwrap();
        assert_eq!(
            tool.ino(),
            fs::metadata(dst.join("usr/bin/tool")).unwrap().ino()
        );
        assert_eq!(tool.nlink(), 3);
    }

    #[test]
    fn maps_owners_acls_and_namespaced_capabilities() {
        let s = Scratch::new("shift");
        let src = s.join("src");
        odd_tree(&src);
        // An ID no 64K range holds, as a stray owner, group and ACL entry.
        fs::write(src.join("etc/stray"), "").unwrap();
        own(&src.join("etc/stray"), 70_000, 1);
        xattr::set(
            src.join("etc/stray"),
            "system.posix_acl_access",
            &acl(70_000, 2),
        )
        .unwrap();
        let dst = s.join("dst");
        let range = crate::security::users::UserRange {
            base: 100_000,
            count: 65536,
        };
        let shift = range.base;
        let shifted = |ids| CopyOptions {
            ids,
            ..Default::default()
        };
        copy(&src, &dst, &shifted(IdMap::shift(range))).unwrap();
        let (a, b) = (listing(&src), listing(&dst));
        assert_eq!(a.len(), b.len());
        let ids = |root: &Path, rel: &str| {
            let m = fs::symlink_metadata(root.join(rel)).unwrap();
            (m.uid(), m.gid())
        };
        for rel in [
            "",
            "usr/bin/su",
            "etc/dangling",
            "dev/loop0",
            "srv/team",
            "root/.ssh/key",
        ] {
            let (u, g) = ids(&src, rel);
            assert_eq!(ids(&dst, rel), (u + shift, g + shift), "{rel:?}");
        }
        assert_eq!(
            ids(&dst, "etc/stray"),
            (OVERFLOW_ID, shift + 1),
            "outside the range: nobody"
        );
        assert_eq!(
            xattr::get(dst.join("etc/stray"), "system.posix_acl_access").unwrap(),
            Some(acl(OVERFLOW_ID, shift + 2))
        );
        let m = fs::metadata(dst.join("usr/bin/su")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4755, "setuid survives the chown");
        assert_eq!(
            xattr::get(dst.join("usr/bin/su"), "security.capability").unwrap(),
            Some(cap(None)),
            "a v2 capability holds in every namespace: kept"
        );
        assert_eq!(
            xattr::get(dst.join("usr/bin/ping"), "security.capability").unwrap(),
            Some(cap(Some(1000 + shift)))
        );
        assert_eq!(
            xattr::get(dst.join("etc/shared"), "system.posix_acl_access").unwrap(),
            Some(acl(1234 + shift, 5678 + shift))
        );
        assert_eq!(
            xattr::get(dst.join("srv"), "system.posix_acl_default").unwrap(),
            Some(acl(1234 + shift, 5678 + shift))
        );

        // Into another range (a clone), and back to the machine's own view (an export):
        // everything but the stray comes back as it was.
        let other = crate::security::users::UserRange {
            base: 300_000,
            count: 65536,
        };
        let moved = s.join("moved");
        copy(&dst, &moved, &shifted(IdMap::between(range, other))).unwrap();
        assert_eq!(ids(&moved, "usr/bin/su"), (301_000, 301_001));
        assert_eq!(
            xattr::get(moved.join("usr/bin/ping"), "security.capability").unwrap(),
            Some(cap(Some(301_000)))
        );
        let back = s.join("back");
        copy(&moved, &back, &shifted(IdMap::unshift(other))).unwrap();
        fs::remove_file(src.join("etc/stray")).unwrap();
        assert_eq!(ids(&back, "etc/stray"), (OVERFLOW_ID, 1));
        fs::remove_file(back.join("etc/stray")).unwrap();
        // Removing the stray changed its directory's times: compare without /etc's line,
        // and without atimes (listing a tree reads its directories).
        let without_etc = |root: &Path| {
            let mut l = listing(root);
            l.retain(|line| !line.starts_with("\"etc\" "));
            l.iter()
                .map(|line| {
                    let (head, rest) = line.split_once(" atime=").unwrap();
                    let (_, tail) = rest.split_once(" xattrs=").unwrap();
                    format!("{head} xattrs={tail}")
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(without_etc(&src), without_etc(&back));
    }

    #[test]
    fn measures_each_inode_once() {
        let s = Scratch::new("size");
        let src = s.join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("a"), [1; 10_000]).unwrap();
        fs::hard_link(src.join("a"), src.join("b")).unwrap();
        fs::create_dir(src.join("d")).unwrap();
        fs::write(src.join("d/c"), [1; 5]).unwrap();
        symlink("a", src.join("l")).unwrap();
        let sparse = fs::File::create(src.join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        let size = tree_size(&src, &CopyOptions::default()).unwrap();
        assert_eq!(size.entries, 6, "root, a (= b), d, d/c, l, sparse");
        assert_eq!(size.apparent_bytes, 10_005 + (1 << 30));
        assert!(
            size.allocated_bytes >= 3 * 4096 && size.allocated_bytes < 1 << 20,
            "{size:?}"
        );
        let e = tree_size(&s.join("missing"), &CopyOptions::default()).unwrap_err();
        assert_eq!(io_error(&e).1, io::ErrorKind::NotFound);
    }

    #[test]
    fn host_dirs_are_kept_empty_at_the_top_only() {
        let s = Scratch::new("host");
        let src = s.join("src");
        for d in [
            "proc/1",
            "sys/kernel",
            "dev/pts",
            "run/lock",
            "tmp/x",
            "usr/proc",
            "var/tmp",
        ] {
            fs::create_dir_all(src.join(d)).unwrap();
            fs::write(src.join(d).join("f"), "f").unwrap();
        }
        own(&src.join("run"), 0, 3);
        mode(&src.join("run"), 0o751);
        mode(&src.join("tmp"), 0o1777);
        let opts = CopyOptions {
            skip_host_dirs: true,
            ..Default::default()
        };
        let size = tree_size(&src, &opts).unwrap();
        assert_eq!(
            size.entries,
            1 + 5 + 2 + 4,
            "root, host dirs, usr, var, 2 × (dir, f)"
        );
        let dst = s.join("dst");
        copy(&src, &dst, &opts).unwrap();
        for d in HOST_DIRS {
            assert_eq!(fs::read_dir(dst.join(d)).unwrap().count(), 0, "{d} empty");
        }
        let run = fs::metadata(dst.join("run")).unwrap();
        assert_eq!((run.mode() & 0o7777, run.gid()), (0o751, 3));
        assert_eq!(
            fs::metadata(dst.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        assert!(dst.join("usr/proc/f").exists() && dst.join("var/tmp/f").exists());
    }

    #[test]
    fn copying_into_the_source_skips_the_copy() {
        let s = Scratch::new("inside");
        let src = s.join("src");
        fs::create_dir_all(src.join("var/lib")).unwrap();
        fs::write(src.join("etc"), "x").unwrap();
        let dst = src.join("var/lib/copy");
        copy(&src, &dst, &CopyOptions::default()).unwrap();
        assert!(dst.join("etc").is_file());
        assert!(dst.join("var/lib").is_dir());
        assert!(!dst.join("var/lib/copy").exists());
    }

    #[test]
    fn a_symlinked_root_is_followed_and_nothing_below() {
        let s = Scratch::new("rootlink");
        fs::create_dir(s.join("real")).unwrap();
        fs::write(s.join("real/f"), "f").unwrap();
        symlink("real", s.join("link")).unwrap();
        copy(&s.join("link"), &s.join("dst"), &CopyOptions::default()).unwrap();
        assert_eq!(fs::read(s.join("dst/f")).unwrap(), b"f");
    }

    #[test]
    fn bad_sources_and_destinations_are_named() {
        let s = Scratch::new("errors");
        let opts = CopyOptions::default();
        let missing = s.join("missing");
        let e = copy(&missing, &s.join("d1"), &opts).unwrap_err();
        assert_eq!(io_error(&e), (missing.as_path(), io::ErrorKind::NotFound));
        assert!(!e.to_string().contains('\n'));
        assert!(!s.join("d1").exists(), "nothing made for a missing source");

        symlink("loop2", s.join("loop1")).unwrap();
        symlink("loop1", s.join("loop2")).unwrap();
        let e = copy(&s.join("loop1"), &s.join("d2"), &opts).unwrap_err();
        assert_eq!(io_error(&e).0, s.join("loop1"));
        assert!(e.to_string().contains("symbolic links"), "{e}");

        fs::write(s.join("file"), "").unwrap();
        let e = copy(&s.join("file"), &s.join("d3"), &opts).unwrap_err();
        assert_eq!(
            io_error(&e),
            (s.join("file").as_path(), io::ErrorKind::NotADirectory)
        );

        let src = s.join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), "new").unwrap();
        let dst = s.join("dst");
        fs::create_dir(&dst).unwrap();
        fs::write(dst.join("old"), "old").unwrap();
        let e = copy(&src, &dst, &opts).unwrap_err();
        assert_eq!(io_error(&e), (dst.as_path(), io::ErrorKind::AlreadyExists));
        assert!(!dst.join("f").exists(), "never merges");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot create {}: ", dst.display())),
            "{e}"
        );
    }

    #[test]
    fn an_unreadable_file_is_named() {
        // Write-only to root too; nothing else in the tree fails.
        let s = Scratch::new("unreadable");
        let e = copy(
            Path::new("/proc/sys/vm"),
            &s.join("dst"),
            &CopyOptions::default(),
        )
        .unwrap_err();
        let (path, kind) = io_error(&e);
        assert_eq!(kind, io::ErrorKind::PermissionDenied, "{e}");
        assert!(
            path.starts_with("/proc/sys/vm/") && path.file_name().is_some(),
            "{e}"
        );
        assert!(
            e.to_string().starts_with("cannot copy /proc/sys/vm/"),
            "{e}"
        );
    }

    #[test]
    fn cancel_stops_between_files() {
        let s = Scratch::new("cancel");
        let src = s.join("src");
        fs::create_dir(&src).unwrap();
        for i in 0..3000 {
            fs::write(src.join(format!("f{i}")), [0; 512]).unwrap();
        }
        let progress = Arc::new(Progress::new());
        let watcher = {
            let p = progress.clone();
            std::thread::spawn(move || {
                while p.done() == 0 {
                    std::hint::spin_loop();
                }
                p.cancel();
            })
        };
        let dst = s.join("dst");
        let e = copy_tree(&src, &dst, &CopyOptions::default(), &progress).unwrap_err();
        watcher.join().unwrap();
        assert_eq!(e.kind(), Kind::Cancelled, "{e}");
        let copied = fs::read_dir(&dst).unwrap().count();
        assert!(copied > 0 && copied < 3000, "stopped midway: {copied}");

        let cancelled = Progress::new();
        cancelled.cancel();
        let e = copy_tree(&src, &s.join("dst2"), &CopyOptions::default(), &cancelled).unwrap_err();
        assert!(matches!(e, Error::Cancelled(_)));
    }

    /// Runs `f` on a thread of its own in a private mount namespace, which goes away
    /// with the thread (and its mounts with it).
    fn in_mount_namespace(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .unwrap();
            f()
        })
        .join()
        .unwrap();
    }

    #[test]
    fn mount_points_are_refused_with_one_file_system() {
        let s = Scratch::new("mounts");
        let src = s.join("src");
        fs::create_dir_all(src.join("var/cache")).unwrap();
        fs::create_dir_all(src.join("proc")).unwrap();
        let base = s.0.clone();
        in_mount_namespace(move || {
            let tmpfs = |at: &Path| {
                nix::mount::mount(
                    Some("tmpfs"),
                    at,
                    Some("tmpfs"),
                    nix::mount::MsFlags::empty(),
                    None::<&str>,
                )
                .unwrap();
            };
            tmpfs(&src.join("proc"));
            tmpfs(&src.join("var/cache"));
            fs::write(src.join("var/cache/data"), "mounted").unwrap();
            let strict = CopyOptions {
                one_file_system: true,
                skip_host_dirs: true,
                ..Default::default()
            };
            let e = copy(&src, &base.join("dst"), &strict).unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidArgument);
            assert_eq!(
                e.to_string(),
                format!(
                    "{} is a mount point inside the tree being copied, which must be one file system",
                    src.join("var/cache").display()
                )
            );
            let e = tree_size(&src, &strict).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&src.join("var/cache").display().to_string())
            );

            copy(&src, &base.join("all"), &CopyOptions::default()).unwrap();
            assert_eq!(
                fs::read(base.join("all/var/cache/data")).unwrap(),
                b"mounted"
            );

            // Removal never empties a mounted file system, inside the tree or the tree.
            let e = remove_tree(&src).unwrap_err().to_string();
            let (proc, cache) = (src.join("proc"), src.join("var/cache"));
            assert!(
                [proc, cache].iter().any(|m| e
                    == format!(
                        "{} is a mount point: not removing another file system's files",
                        m.display()
                    )),
                "{e}"
            );
            let e = remove_tree(&src.join("var/cache")).unwrap_err();
            assert!(e.to_string().contains("is a mount point"), "{e}");
            assert!(src.join("var/cache/data").exists());
            nix::mount::umount(&src.join("var/cache")).unwrap();
            nix::mount::umount(&src.join("proc")).unwrap();
        });
    }

    #[test]
    fn remove_tree_never_follows_links_out() {
        let s = Scratch::new("remove");
        let outside = s.join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "keep").unwrap();
        let tree = s.join("tree");
        fs::create_dir_all(tree.join("a/b")).unwrap();
        symlink(&outside, tree.join("a/dirlink")).unwrap();
        symlink(outside.join("keep"), tree.join("a/b/filelink")).unwrap();
        symlink("..", tree.join("a/b/up")).unwrap();
        mode(&tree.join("a/b"), 0o000);
        // The path itself a symlink: only the link goes.
        symlink(&outside, s.join("link-to-outside")).unwrap();
        remove_tree(&s.join("link-to-outside")).unwrap();
        assert!(outside.join("keep").exists());
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert!(outside.join("keep").exists());
        remove_tree(&tree).unwrap();
        fs::write(s.join("plain"), "").unwrap();
        remove_tree(&s.join("plain")).unwrap();
        assert!(!s.join("plain").exists());
    }

    #[test]
    fn remove_tree_opens_up_closed_directories_when_not_root() {
        let s = Scratch::new("closed");
        let home = s.join("home");
        let tree = home.join("tree");
        fs::create_dir_all(tree.join("locked/inner")).unwrap();
        fs::write(tree.join("locked/inner/f"), "").unwrap();
        fs::create_dir_all(tree.join("readonly")).unwrap();
        fs::write(tree.join("readonly/f"), "").unwrap();
        for p in [
            "",
            "locked",
            "locked/inner",
            "locked/inner/f",
            "readonly",
            "readonly/f",
        ] {
            own(&tree.join(p), 65534, 65534);
        }
        own(&home, 65534, 65534);
        mode(&tree.join("locked/inner"), 0o000);
        mode(&tree.join("locked"), 0o000);
        mode(&tree.join("readonly"), 0o555);
        let t = tree.clone();
        std::thread::spawn(move || {
            // This thread alone becomes nobody, without capabilities (raw system calls:
            // the C library would change every thread).
            // SAFETY: plain system calls on this thread's own credentials.
            unsafe {
                assert_eq!(libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534), 0);
                assert_eq!(libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534), 0);
            }
            remove_tree(&t).unwrap();
        })
        .join()
        .unwrap();
        assert!(!tree.exists());
    }
}
