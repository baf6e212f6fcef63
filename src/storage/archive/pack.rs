//! Packing a tree into an archive: walked by descriptor, never following a symlink, so a
//! running machine that swaps a directory for a link to the host's /etc while it is
//! exported gets its own link archived, not the host's files.

use super::fsx::{self, Target};
use super::{BUF_SIZE, Compression};
use crate::error::{Error, IoContext, Result};
use crate::jobs::Progress;
use crate::storage::idmap::IdMap;
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, major, minor};
use nix::unistd::{Whence, dup, lseek};
use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use tar::{EntryType, GnuExtSparseHeader, Header};

/// A file written at the top of the archive beside the tree (an export's config.toml),
/// owned by root, dated now.
#[derive(Clone, Debug)]
pub struct ExtraFile {
    pub path: PathBuf,
    pub data: Vec<u8>,
    pub mode: u32,
}

#[derive(Clone, Debug)]
pub struct PackOptions {
    pub compression: Compression,
    /// The directory the tree goes under in the archive ("rootfs" for an export), or none:
    /// a plain rootfs tarball whose members are "./", "bin", "etc/passwd", ...
    pub prefix: Option<PathBuf>,
    pub extra_files: Vec<ExtraFile>,
    /// Applied to the tree's owners and groups and to the IDs inside its POSIX ACLs and
    /// namespaced file capabilities as they are written: [`IdMap::unshift`] archives a
    /// machine whose files are shifted on disk as the machine sees them (its root 0), as
    /// if it were privileged. IDs outside the map's range are archived as `nobody`.
    pub ids: IdMap,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            compression: Compression::Zstd,
            prefix: None,
            extra_files: Vec::new(),
            ids: IdMap::IDENTITY,
        }
    }
}

/// zstd's default level: near gzip's ratio at many times its speed.
const ZSTD_LEVEL: i32 = 3;
/// xz's default preset.
const XZ_LEVEL: u32 = 6;
/// More segments than this and a file is archived whole: the map would outweigh the holes.
const SPARSE_MAX_SEGMENTS: usize = 4096;

/// Writes the tree at `root` to `output` as a tar archive: [`PackOptions::extra_files`]
/// first, then the tree's root directory and everything below it, each directory's
/// entries sorted by name. Owners are numeric; hard links are link entries; device nodes
/// and FIFOs are kept; sockets are skipped. Progress counts file bytes against the total
/// of the tree's regular file sizes.
pub fn pack(
    root: &Path,
    output: impl Write,
    opts: &PackOptions,
    progress: &Progress,
) -> Result<()> {
    let root_fd = open(root, OPEN_DIR, Mode::empty())
        .map_err(io::Error::from)
        .at("cannot open", root)?;
    let extra: u64 = opts.extra_files.iter().map(|f| f.data.len() as u64).sum();
    progress.set_total(extra + regular_bytes(&root_fd, progress)?);

    let encoder = Encoder::new(opts.compression, output).map_err(write_error)?;
    let mut packer = Packer {
        builder: tar::Builder::new(encoder),
        root,
        ids: opts.ids,
        progress,
        links: HashMap::new(),
        buf: vec![0; BUF_SIZE],
        mount: None,
    };
    for file in &opts.extra_files {
        packer.extra(file)?;
    }
    let top = opts.prefix.as_ref().map(|p| {
        let mut bytes = p.as_os_str().as_bytes().to_vec();
        while bytes.len() > 1 && bytes.ends_with(b"/") {
            bytes.pop();
        }
        bytes
    });
    let st = fstat(&root_fd)
        .map_err(io::Error::from)
        .at("cannot read", root)?;
    packer.dir(root_fd, &st, top, Vec::new())?;
    packer
        .builder
        .into_inner()
        .and_then(Encoder::finish)
        .map_err(write_error)
}

/// Writes one entry of directory `dir` (whose path `dir_path` is for messages) as the
/// archive's only top-level member, under its own name: a file, a symlink (not followed)
/// or a whole tree, for copy-to and copy-from. With `one_file_system`, what is mounted
/// below a tree is left out: in a running machine that can be a procfs or sysfs the
/// machine mounted, whose files berthd, as the host's root, must not read for it.
pub fn pack_entry(
    dir: &OwnedFd,
    dir_path: &Path,
    name: &CStr,
    output: impl Write,
    opts: &PackOptions,
    one_file_system: bool,
    progress: &Progress,
) -> Result<()> {
    let rel = name.to_bytes().to_vec();
    let path = dir_path.join(OsStr::from_bytes(&rel));
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)
        .at("cannot read", &path)?;
    let sub = match file_type(&st) {
        SFlag::S_IFDIR => Some(
            openat(dir, name, OPEN_DIR, Mode::empty())
                .map_err(io::Error::from)
                .at("cannot open", &path)?,
        ),
        _ => None,
    };
    progress.set_total(match &sub {
        Some(fd) => regular_bytes(fd, progress)?,
        None if file_type(&st) == SFlag::S_IFREG => st.st_size as u64,
        None => 0,
    });
    let encoder = Encoder::new(opts.compression, output).map_err(write_error)?;
    let mut packer = Packer {
        builder: tar::Builder::new(encoder),
        root: dir_path,
        ids: opts.ids,
        progress,
        links: HashMap::new(),
        buf: vec![0; BUF_SIZE],
        mount: None,
    };
    if one_file_system {
        let on = match &sub {
            Some(fd) => crate::storage::copy::mount_of(fd.as_fd()),
            None => crate::storage::copy::mount_of(dir.as_fd()),
        };
        packer.mount = Some(on.at("cannot read", &path)?);
    }
    let file = name.to_owned();
    match (sub, file_type(&st)) {
        (Some(fd), _) => {
            let st = fstat(&fd)
                .map_err(io::Error::from)
                .at("cannot read", &path)?;
            packer.dir(fd, &st, Some(rel.clone()), rel)?
        }
        (None, SFlag::S_IFREG) => packer.file(dir, &file, rel.clone(), &rel)?,
        (None, SFlag::S_IFLNK) => packer.symlink(dir, &file, &st, rel.clone(), &rel)?,
        (None, SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO) => {
            packer.node(dir, &file, &st, rel.clone(), &rel)?
        }
        _ => {
            return Err(Error::InvalidArgument(format!(
                "{} is a socket; there is nothing to copy",
                path.display()
            )));
        }
    }
    packer
        .builder
        .into_inner()
        .and_then(Encoder::finish)
        .map_err(write_error)
}

const OPEN_DIR: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn write_error(e: io::Error) -> Error {
    Error::Failed(format!("cannot write the archive: {e}"))
}

fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// The names in a directory, sorted, so the same tree makes the same archive.
fn names(dir: &OwnedFd) -> nix::Result<Vec<(CString, Option<Type>)>> {
    let mut dir = Dir::from_fd(dup(dir)?)?;
    let mut out = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            out.push((name.to_owned(), entry.file_type()));
        }
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The sizes of the regular files below `dir`, for the progress total: a best effort,
/// since what cannot be read now fails with a clear error in the real walk.
fn regular_bytes(dir: &OwnedFd, progress: &Progress) -> Result<u64> {
    regular_bytes_in(dir, progress, &mut HashSet::new())
}

/// `seen`: inodes with several links counted already, as the archive holds them once.
fn regular_bytes_in(
    dir: &OwnedFd,
    progress: &Progress,
    seen: &mut HashSet<(u64, u64)>,
) -> Result<u64> {
    progress.check("packing the archive")?;
    let Ok(names) = names(dir) else { return Ok(0) };
    let mut total = 0;
    for (name, kind) in names {
        match kind {
            Some(Type::Directory) => {
                if let Ok(fd) = openat(dir, name.as_c_str(), OPEN_DIR, Mode::empty()) {
                    total += regular_bytes_in(&fd, progress, seen)?;
                }
            }
            Some(Type::File) | None => {
                if let Ok(st) = fstatat(dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    match file_type(&st) {
                        SFlag::S_IFREG
                            if st.st_nlink < 2 || seen.insert((st.st_dev, st.st_ino)) =>
                        {
                            total += st.st_size as u64
                        }
                        SFlag::S_IFDIR => {
                            if let Ok(fd) = openat(dir, name.as_c_str(), OPEN_DIR, Mode::empty()) {
                                total += regular_bytes_in(&fd, progress, seen)?;
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(total)
}

/// The data of a file as (offset, length) segments when it has holes worth skipping.
fn data_segments(file: &File, size: u64) -> io::Result<Option<Vec<(u64, u64)>>> {
    let fd = file.as_fd();
    let mut segments: Vec<(u64, u64)> = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let data = match lseek(fd, pos as i64, Whence::SeekData) {
            Ok(data) => data as u64,
            Err(Errno::ENXIO) => break,
            // A file system without SEEK_DATA (or a file shrinking meanwhile): whole.
            Err(_) => return Ok(None),
        };
        if data >= size {
            break;
        }
        let hole = match lseek(fd, data as i64, Whence::SeekHole) {
            Ok(hole) => (hole as u64).min(size),
            Err(_) => return Ok(None),
        };
        if hole <= data {
            return Ok(None);
        }
        segments.push((data, hole - data));
        if segments.len() > SPARSE_MAX_SEGMENTS {
            return Ok(None);
        }
        pos = hole;
    }
    if segments == [(0, size)] {
        return Ok(None);
    }
    // Readers expect all data but the last segment's in whole 512-byte blocks; file
    // systems allocate in larger blocks, so this holds but for odd cases: archive those whole.
    let n = segments.len();
    if segments
        .iter()
        .take(n.saturating_sub(1))
        .any(|(_, len)| len % 512 != 0)
    {
        return Ok(None);
    }
    // The map ends at the file's size, even when a hole does.
    if segments.last().is_none_or(|(off, len)| off + len < size) {
        segments.push((size, 0));
    }
    Ok(Some(segments))
}

/// A file's data as the archive gets it: the segments listed, each exactly as long as
/// listed (zeros stand in for what a file that shrank meanwhile no longer has), read in
/// large blocks; sparse extension headers, if any, come first.
struct Feed<'a> {
    file: File,
    prelude: Vec<u8>,
    prelude_pos: usize,
    segments: Vec<(u64, u64)>,
    index: usize,
    done: u64,
    buf: &'a mut [u8],
    start: usize,
    end: usize,
    progress: &'a Progress,
    read_error: bool,
}

impl Read for Feed<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.prelude_pos < self.prelude.len() {
            let n = (self.prelude.len() - self.prelude_pos).min(out.len());
            out[..n].copy_from_slice(&self.prelude[self.prelude_pos..self.prelude_pos + n]);
            self.prelude_pos += n;
            return Ok(n);
        }
        if self.start == self.end {
            let (offset, len) = loop {
                let Some(&(offset, len)) = self.segments.get(self.index) else {
                    return Ok(0);
                };
                if self.done < len {
                    break (offset, len);
                }
                self.index += 1;
                self.done = 0;
            };
            if self.progress.is_cancelled() {
                return Err(io::Error::other("cancelled"));
            }
            let want = (len - self.done).min(self.buf.len() as u64) as usize;
            let n = loop {
                match self.file.read_at(&mut self.buf[..want], offset + self.done) {
                    Ok(0) => {
                        self.buf[..want].fill(0);
                        break want;
                    }
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.read_error = true;
                        return Err(e);
                    }
                }
            };
            self.done += n as u64;
            self.start = 0;
            self.end = n;
            self.progress.add(n as u64);
        }
        let n = (self.end - self.start).min(out.len());
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

struct Packer<'a, W: Write> {
    builder: tar::Builder<Encoder<W>>,
    root: &'a Path,
    ids: IdMap,
    progress: &'a Progress,
    /// Files with more than one link, by (device, inode): the name archived first.
    links: HashMap<(u64, u64), Vec<u8>>,
    buf: Vec<u8>,
    /// The only mount walked, if set: directories and files on others are left out.
    /// A mount, not a device: overlayfs gives its files the devices of its layers.
    mount: Option<(bool, u64)>,
}

fn child(base: &Option<Vec<u8>>, name: &CStr) -> Vec<u8> {
    match base {
        None => name.to_bytes().to_vec(),
        Some(base) => [base.as_slice(), b"/", name.to_bytes()].concat(),
    }
}

impl<W: Write> Packer<'_, W> {
    /// A header with the file's mode, owners (mapped) and mtime.
    fn header(&self, st: &FileStat, kind: EntryType) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(self.ids.map(st.st_uid).into());
        h.set_gid(self.ids.map(st.st_gid).into());
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        h
    }

    /// Whether `fd` is on the one mount walked, if only one is.
    fn on_mount(&self, fd: &OwnedFd, rel: &[u8]) -> Result<bool> {
        let Some(mount) = self.mount else {
            return Ok(true);
        };
        Ok(crate::storage::copy::mount_of(fd.as_fd()).at("cannot read", self.path(rel))? == mount)
    }

    /// Where `rel` is on disk, for messages.
    fn path(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }

    fn extra(&mut self, file: &ExtraFile) -> Result<()> {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(file.mode & 0o7777);
        h.set_uid(0);
        h.set_gid(0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        h.set_mtime(now.map_or(0, |d| d.as_secs()));
        h.set_size(file.data.len() as u64);
        self.builder
            .append_data(&mut h, &file.path, file.data.as_slice())
            .map_err(write_error)?;
        self.progress.add(file.data.len() as u64);
        Ok(())
    }

    /// A PAX record per extended attribute, for the entry that follows. Names that are not
    /// UTF-8 cannot be PAX keys; no file system berth knows makes them.
    fn xattrs(&mut self, target: Target<'_>, rel: &[u8]) -> Result<()> {
        let attrs =
            fsx::list(target).at("cannot read the extended attributes of", self.path(rel))?;
        if attrs.is_empty() {
            return Ok(());
        }
        let ids = self.ids;
        let records: Vec<(String, Vec<u8>)> = attrs
            .into_iter()
            .filter_map(|(name, mut value)| {
                let name = name.to_str().ok()?;
                ids.map_xattr(name.as_bytes(), &mut value);
                Some((format!("SCHILY.xattr.{name}"), value))
            })
            .collect();
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(write_error)
    }

    /// Writes a link entry if this inode was archived before under another name.
    fn linked(&mut self, st: &FileStat, name: &[u8]) -> Result<bool> {
        if st.st_nlink < 2 {
            return Ok(false);
        }
        let key = (st.st_dev, st.st_ino);
        let Some(first) = self.links.get(&key) else {
            self.links.insert(key, name.to_vec());
            return Ok(false);
        };
        let mut h = self.header(st, EntryType::Link);
        let first = first.clone();
        self.builder
            .append_link(&mut h, OsStr::from_bytes(name), OsStr::from_bytes(&first))
            .map_err(write_error)?;
        Ok(true)
    }

    /// `name` is the directory's name in the archive (none: the root of a tarball without
    /// prefix), `rel` its path below the root.
    fn dir(
        &mut self,
        fd: OwnedFd,
        st: &FileStat,
        name: Option<Vec<u8>>,
        rel: Vec<u8>,
    ) -> Result<()> {
        self.progress.check("packing the archive")?;
        self.xattrs(Target::Fd(fd.as_fd()), &rel)?;
        let entry_name = match &name {
            Some(name) => [name.as_slice(), b"/"].concat(),
            None => b"./".to_vec(),
        };
        let mut h = self.header(st, EntryType::Directory);
        self.builder
            .append_data(&mut h, OsStr::from_bytes(&entry_name), io::empty())
            .map_err(write_error)?;
        let children = names(&fd)
            .map_err(io::Error::from)
            .at("cannot list", self.path(&rel))?;
        for (file, _) in children {
            self.progress.check("packing the archive")?;
            let child_name = child(&name, &file);
            let child_rel = child(&(!rel.is_empty()).then(|| rel.clone()), &file);
            let st = match fstatat(&fd, file.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::ENOENT) => continue, // removed since it was listed
                Err(e) => return Err(io::Error::from(e)).at("cannot read", self.path(&child_rel)),
            };
            match file_type(&st) {
                SFlag::S_IFDIR => {
                    let sub = match openat(&fd, file.as_c_str(), OPEN_DIR, Mode::empty()) {
                        Ok(sub) => sub,
                        // Replaced by something else since: archived as it was, or not.
                        Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => continue,
                        Err(e) => {
                            return Err(io::Error::from(e))
                                .at("cannot open", self.path(&child_rel));
                        }
                    };
                    if !self.on_mount(&sub, &child_rel)? {
                        continue;
                    }
                    let st = fstat(&sub)
                        .map_err(io::Error::from)
                        .at("cannot read", self.path(&child_rel))?;
                    self.dir(sub, &st, Some(child_name), child_rel)?;
                }
                SFlag::S_IFREG => self.file(&fd, &file, child_name, &child_rel)?,
                SFlag::S_IFLNK => self.symlink(&fd, &file, &st, child_name, &child_rel)?,
                SFlag::S_IFCHR | SFlag::S_IFBLK | SFlag::S_IFIFO => {
                    self.node(&fd, &file, &st, child_name, &child_rel)?
                }
                // Sockets belong to the processes that made them.
                _ => {}
            }
        }
        Ok(())
    }

    fn file(&mut self, dir: &OwnedFd, file: &CString, name: Vec<u8>, rel: &[u8]) -> Result<()> {
        // O_NONBLOCK, O_NOCTTY: if a FIFO or device took the file's place since fstatat,
        // opening it neither blocks nor changes anything; it is then skipped.
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY;
        let fd = match openat(dir, file.as_c_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ELOOP) => return Ok(()),
            Err(e) => return Err(io::Error::from(e)).at("cannot open", self.path(rel)),
        };
        let st = fstat(&fd)
            .map_err(io::Error::from)
            .at("cannot read", self.path(rel))?;
        if file_type(&st) != SFlag::S_IFREG || !self.on_mount(&fd, rel)? {
            return Ok(());
        }
        if self.linked(&st, &name)? {
            return Ok(());
        }
        self.xattrs(Target::Fd(fd.as_fd()), rel)?;
        let file = File::from(fd);
        let size = st.st_size as u64;
        let sparse = if (st.st_blocks as u64) * 512 < size {
            data_segments(&file, size).at("cannot read", self.path(rel))?
        } else {
            None
        };
        let mut h = self.header(&st, EntryType::Regular);
        let mut prelude = Vec::new();
        let segments = match sparse {
            None => {
                h.set_size(size);
                vec![(0, size)]
            }
            Some(segments) => {
                let stored: u64 = segments.iter().map(|(_, len)| len).sum();
                self.progress.add(size - stored);
                h.set_entry_type(EntryType::GNUSparse);
                h.set_size(stored);
                let gnu = h.as_gnu_mut().expect("a GNU header");
                gnu.set_real_size(size);
                let (first, rest) = segments.split_at(segments.len().min(gnu.sparse.len()));
                for (slot, (off, len)) in gnu.sparse.iter_mut().zip(first) {
                    slot.set_offset(*off);
                    slot.set_length(*len);
                }
                gnu.set_is_extended(!rest.is_empty());
                let chunks: Vec<_> = rest.chunks(21).collect();
                for (i, chunk) in chunks.iter().enumerate() {
                    let mut ext = GnuExtSparseHeader::new();
                    for (slot, (off, len)) in ext.sparse_mut().iter_mut().zip(*chunk) {
                        slot.set_offset(*off);
                        slot.set_length(*len);
                    }
                    ext.isextended[0] = u8::from(i + 1 < chunks.len());
                    prelude.extend_from_slice(ext.as_bytes());
                }
                segments
            }
        };
        let mut feed = Feed {
            file,
            prelude,
            prelude_pos: 0,
            segments,
            index: 0,
            done: 0,
            buf: &mut self.buf,
            start: 0,
            end: 0,
            progress: self.progress,
            read_error: false,
        };
        match self
            .builder
            .append_data(&mut h, OsStr::from_bytes(&name), &mut feed)
        {
            Ok(()) => Ok(()),
            Err(_) if self.progress.is_cancelled() => {
                Err(Error::Cancelled("packing the archive".into()))
            }
            Err(e) if feed.read_error => {
                Err(e).at("cannot read", self.root.join(OsStr::from_bytes(rel)))
            }
            Err(e) => Err(write_error(e)),
        }
    }

    fn symlink(
        &mut self,
        dir: &OwnedFd,
        file: &CString,
        st: &FileStat,
        name: Vec<u8>,
        rel: &[u8],
    ) -> Result<()> {
        let target = match readlinkat(dir, file.as_c_str()) {
            Ok(target) => target,
            Err(Errno::ENOENT | Errno::EINVAL) => return Ok(()), // gone or replaced
            Err(e) => return Err(io::Error::from(e)).at("cannot read", self.path(rel)),
        };
        if self.linked(st, &name)? {
            return Ok(());
        }
        self.xattrs(Target::At(dir.as_fd(), file.as_c_str()), rel)?;
        let mut h = self.header(st, EntryType::Symlink);
        self.builder
            .append_link(&mut h, OsStr::from_bytes(&name), &target)
            .map_err(write_error)
    }

    fn node(
        &mut self,
        dir: &OwnedFd,
        file: &CString,
        st: &FileStat,
        name: Vec<u8>,
        rel: &[u8],
    ) -> Result<()> {
        if self.linked(st, &name)? {
            return Ok(());
        }
        self.xattrs(Target::At(dir.as_fd(), file.as_c_str()), rel)?;
        let kind = match file_type(st) {
            SFlag::S_IFCHR => EntryType::Char,
            SFlag::S_IFBLK => EntryType::Block,
            _ => EntryType::Fifo,
        };
        let mut h = self.header(st, kind);
        if kind != EntryType::Fifo {
            let major = u32::try_from(major(st.st_rdev)).unwrap_or(u32::MAX);
            let minor = u32::try_from(minor(st.st_rdev)).unwrap_or(u32::MAX);
            h.set_device_major(major).map_err(write_error)?;
            h.set_device_minor(minor).map_err(write_error)?;
        }
        self.builder
            .append_data(&mut h, OsStr::from_bytes(&name), io::empty())
            .map_err(write_error)
    }
}

/// The compressor the archive is written through, behind a buffer so the tar writer's
/// 512-byte headers and small blocks do not each become a write to the caller's fd.
enum Encoder<W: Write> {
    Plain(BufWriter<W>),
    Gzip(flate2::write::GzEncoder<BufWriter<W>>),
    Xz(liblzma::write::XzEncoder<BufWriter<W>>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<W>>),
}

impl<W: Write> Encoder<W> {
    fn new(compression: Compression, output: W) -> io::Result<Self> {
        let out = BufWriter::with_capacity(BUF_SIZE, output);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        Ok(match compression {
            Compression::None => Encoder::Plain(out),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::default(),
            )),
            Compression::Xz => {
                let stream = liblzma::stream::MtStreamBuilder::new()
                    .preset(XZ_LEVEL)
                    .check(liblzma::stream::Check::Crc64)
                    .threads(threads)
                    .encoder()
                    .map_err(io::Error::other)?;
                Encoder::Xz(liblzma::write::XzEncoder::new_stream(out, stream))
            }
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)?;
                enc.include_checksum(true)?;
                if threads > 1 {
                    enc.multithread(threads)?;
                }
                Encoder::Zstd(enc)
            }
        })
    }

    fn finish(self) -> io::Result<()> {
        let mut out = match self {
            Encoder::Plain(out) => out,
            Encoder::Gzip(enc) => enc.finish()?,
            Encoder::Xz(enc) => enc.finish()?,
            Encoder::Zstd(enc) => enc.finish()?,
        };
        out.flush()
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Xz(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Xz(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}
