//! copy-to and copy-from: one file, symlink or tree travels as a plain tar stream whose
//! only top-level member is the thing copied, packed by [`archive::pack_entry`] and
//! received by [`receive`]; berthd runs one end inside a machine's root, berthctl the
//! other in the caller's file system.
//!
//! A path inside a machine is always resolved from a descriptor on the machine's root with
//! `RESOLVE_IN_ROOT`, so symlinks the machine planted (`/escape -> /etc`) lead to the
//! machine's own /etc, never the host's; the final component is not followed when it is
//! the source (a symlink is copied as a symlink, as `cp -r` does), nor when it is replaced.
//! What arrives is unpacked into a fresh directory beside the destination and renamed
//! into place, so a half-received tree never shows under the destination's name.

use super::archive::{self, UnpackOptions};
use crate::error::{Error, IoContext, Result};
use crate::jobs::Progress;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, RenameFlags, ResolveFlag, openat, openat2, renameat2};
use nix::sys::stat::{Mode, SFlag, fstatat, mkdirat};
use std::ffi::{CStr, CString, OsStr};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A path split for copying: the directory it is in and its last component, or no
/// component when it can only name a directory (`/`, `/var/www/`, `..`).
#[derive(Debug, PartialEq, Eq)]
pub struct Split<'a> {
    pub parent: &'a str,
    pub name: Option<&'a str>,
}

/// Splits `path` (a machine's or the caller's; relative ones are relative to ".").
pub fn split(path: &str) -> Split<'_> {
    let dir_only = |parent| Split { parent, name: None };
    if path.ends_with('/') {
        return dir_only(path);
    }
    let (parent, last) = match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (".", path),
    };
    if last.is_empty() || last == "." || last == ".." {
        return dir_only(path);
    }
    Split {
        parent,
        name: Some(last),
    }
}

/// A path inside a machine as a client gave it: absolute, as machinectl takes them, so a
/// relative one is not silently taken from some directory.
pub fn check_machine_path(path: &str) -> Result<()> {
    if !path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "path {} inside the machine must be absolute",
            crate::names::shown(path)
        )));
    }
    if path.contains('\0') {
        return Err(Error::InvalidArgument(
            "a path inside the machine cannot hold a NUL byte".into(),
        ));
    }
    Ok(())
}

/// How a directory inside a machine is opened: every component, symlinks included,
/// resolved as if `root` were `/`; no /proc magic links, which would lead out.
fn in_root(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

const DIR: OFlag = OFlag::O_RDONLY.union(OFlag::O_DIRECTORY);

/// Where something is, for [`open_dir`]: a machine's root (paths resolved inside it), or
/// the caller's own file system (paths as the caller's shell would take them).
#[derive(Clone, Copy)]
pub enum Base<'a> {
    Root(&'a OwnedFd),
    Host,
}

/// The directory at `path` below `base`.
pub fn open_dir(base: Base<'_>, path: &str) -> nix::Result<OwnedFd> {
    let fd = match base {
        Base::Root(root) => {
            let rel = path.trim_start_matches('/');
            let rel = if rel.is_empty() { "." } else { rel };
            let fd = openat2(root, rel, in_root(DIR))?;
            refuse_pseudo(&fd)?;
            fd
        }
        // The caller's own files, which it may read and write as it likes.
        Base::Host => nix::fcntl::open(path, DIR | OFlag::O_CLOEXEC, Mode::empty())?,
    };
    Ok(fd)
}

/// Kernel file systems (procfs, sysfs, cgroupfs, ...) mounted inside a running machine
/// answer berthd as the host's root: /proc/kcore, /proc/sys/kernel/core_pattern. A
/// machine's root could lead a copy there with a symlink; nothing in them is a file to copy.
fn refuse_pseudo(fd: &OwnedFd) -> nix::Result<()> {
    let kind = nix::sys::statfs::fstatfs(fd)?.filesystem_type().0 as i64;
    const PSEUDO: [i64; 10] = [
        0x9fa0,     // proc
        0x62656572, // sysfs
        0x27e0eb,   // cgroup
        0x63677270, // cgroup2
        0x1cd1,     // devpts
        0x73636673, // securityfs
        0x64626720, // debugfs
        0x74726163, // tracefs
        0xcafe4a11, // bpf
        0xde5e81e4, // efivarfs
    ];
    if PSEUDO.contains(&kind) {
        return Err(Errno::EPERM);
    }
    Ok(())
}

/// What `errno` from opening `path` means to the one who asked for it.
pub fn open_error(path: &str, where_: &str, e: Errno) -> Error {
    let shown = crate::names::shown(path);
    match e {
        Errno::ENOENT => Error::InvalidArgument(format!("{shown} does not exist{where_}")),
        Errno::ENOTDIR => {
            Error::InvalidArgument(format!("{shown}: a component is not a directory{where_}"))
        }
        Errno::EPERM => Error::InvalidArgument(format!(
            "{shown} is on a kernel file system{where_}; only files can be copied"
        )),
        e => Error::Failed(format!(
            "cannot open {shown}{where_}: {}",
            io::Error::from(e)
        )),
    }
}

/// The thing at `path` to be sent: its directory and its name, which is not followed.
/// `where_` (" in machine web") goes into messages.
pub fn source(base: Base<'_>, path: &str, where_: &str) -> Result<(OwnedFd, CString)> {
    let trimmed = path.trim_end_matches('/');
    let split = split(if trimmed.is_empty() { path } else { trimmed });
    let Some(name) = split.name else {
        return Err(Error::InvalidArgument(format!(
            "cannot copy {}{where_}: name a file or directory by its own name",
            crate::names::shown(path)
        )));
    };
    let dir = open_dir(base, split.parent).map_err(|e| open_error(path, where_, e))?;
    let name = CString::new(name)
        .map_err(|_| Error::InvalidArgument("a path cannot hold a NUL byte".into()))?;
    fstatat(&dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| open_error(path, where_, e))?;
    Ok((dir, name))
}

/// Where what is received at `path` goes, as `cp -r` decides: into `path` with the
/// sender's name when `path` ends in `/` or is a directory (a symlink to one inside the
/// same root counts), else to `path` itself.
pub fn destination(base: Base<'_>, path: &str, where_: &str) -> Result<(OwnedFd, Option<CString>)> {
    let split = split(path);
    let Some(name) = split.name else {
        let dir = open_dir(base, path).map_err(|e| open_error(path, where_, e))?;
        return Ok((dir, None));
    };
    match open_dir(base, path) {
        Ok(dir) => return Ok((dir, None)),
        Err(Errno::ENOENT | Errno::ENOTDIR) => {}
        Err(e) => return Err(open_error(path, where_, e)),
    }
    let dir = open_dir(base, split.parent).map_err(|e| open_error(split.parent, where_, e))?;
    let name = CString::new(name)
        .map_err(|_| Error::InvalidArgument("a path cannot hold a NUL byte".into()))?;
    Ok((dir, Some(name)))
}

/// Unpacks the tar stream `input` (one top-level member) into directory `dir` (shown as
/// `shown` in messages) as `name`, or under the member's own name. A file or symlink
/// already there is replaced, as `cp` does; a directory is not (say where to put it).
/// Returns the name written.
pub fn receive(
    input: impl Read,
    dir: &OwnedFd,
    shown: &str,
    name: Option<&CStr>,
    opts: &UnpackOptions,
    progress: &Progress,
) -> Result<CString> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let staging = CString::new(format!(".berth-copy-{}-{nanos:x}", std::process::id()))
        .expect("no NUL in a number");
    // 0700 and owned by whoever receives: an unprivileged machine can't look in or
    // plant anything while the tree is incomplete.
    mkdirat(dir, staging.as_c_str(), Mode::from_bits_truncate(0o700))
        .map_err(io::Error::from)
        .at("cannot make a directory in", Path::new(shown))?;
    let result = receive_into(input, dir, &staging, shown, name, opts, progress);
    // Whatever is left (all of it on error) goes; the directory is reached through the
    // descriptor, so a symlink swapped in for `dir` meanwhile changes nothing.
    let left = PathBuf::from(format!(
        "/proc/self/fd/{}/{}",
        dir.as_raw_fd(),
        staging.to_string_lossy()
    ));
    if let Err(e) = super::copy::remove_tree(&left) {
        tracing::warn!("cannot remove {shown}/{}: {e}", staging.to_string_lossy());
    }
    result
}

fn receive_into(
    input: impl Read,
    dir: &OwnedFd,
    staging: &CStr,
    shown: &str,
    name: Option<&CStr>,
    opts: &UnpackOptions,
    progress: &Progress,
) -> Result<CString> {
    let stage = openat(
        dir,
        staging,
        DIR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
    .at("cannot open a directory in", Path::new(shown))?;
    // The magic link is followed as a middle component, which unpack's O_NOFOLLOW allows.
    let stage_path = PathBuf::from(format!("/proc/self/fd/{}/.", stage.as_raw_fd()));
    archive::unpack(input, &stage_path, opts, progress)?;
    let members = members(&stage).map_err(|e| {
        Error::Failed(format!(
            "cannot list what was received: {}",
            io::Error::from(e)
        ))
    })?;
    let [member] = members.as_slice() else {
        return Err(Error::InvalidArgument(format!(
            "the copy must hold one file or directory, not {}",
            members.len()
        )));
    };
    let target = name.unwrap_or(member.as_c_str());
    let shown_target = format!(
        "{}/{}",
        shown.trim_end_matches('/'),
        target.to_string_lossy()
    );
    match renameat2(
        &stage,
        member.as_c_str(),
        dir,
        target,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => return Ok(target.to_owned()),
        Err(Errno::EEXIST) => {}
        Err(e) => {
            return Err(Error::Failed(format!(
                "cannot put {shown_target} in place: {}",
                io::Error::from(e)
            )));
        }
    }
    let is_dir = |fd: &OwnedFd, n: &CStr| {
        fstatat(fd, n, AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
    };
    if is_dir(dir, target) || is_dir(&stage, member) {
        return Err(Error::InvalidArgument(format!(
            "{shown_target} already exists; remove it or copy into it (end the destination with /)"
        )));
    }
    renameat2(&stage, member.as_c_str(), dir, target, RenameFlags::empty()).map_err(|e| {
        Error::Failed(format!(
            "cannot put {shown_target} in place: {}",
            io::Error::from(e)
        ))
    })?;
    Ok(target.to_owned())
}

fn members(dir: &OwnedFd) -> nix::Result<Vec<CString>> {
    let mut d = nix::dir::Dir::from_fd(nix::unistd::dup(dir)?)?;
    let mut out = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let n = entry.file_name();
        if n != c"." && n != c".." {
            out.push(n.to_owned());
        }
    }
    Ok(out)
}

/// A name for messages about a received or sent entry.
pub fn shown_name(name: &CStr) -> String {
    crate::names::shown(&OsStr::from_bytes(name.to_bytes()).to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(parent: &str, name: Option<&str>) -> Split<'static> {
        Split {
            parent: Box::leak(parent.to_string().into_boxed_str()),
            name: name.map(|n| &*Box::leak(n.to_string().into_boxed_str())),
        }
    }

    /// A directory under the temporary directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(what: &str) -> Scratch {
            let dir =
                std::env::temp_dir().join(format!("berth-transfer-{what}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn paths_split_as_cp_reads_them() {
        assert_eq!(split("/var/www/"), s("/var/www/", None));
        assert_eq!(split("/var/www"), s("/var", Some("www")));
        assert_eq!(split("/x"), s("/", Some("x")));
        assert_eq!(split("/"), s("/", None));
        assert_eq!(split("index.html"), s(".", Some("index.html")));
        assert_eq!(split("./"), s("./", None));
        assert_eq!(split("a/.."), s("a/..", None));
        assert_eq!(split("."), s(".", None));
        assert_eq!(split("dir/f"), s("dir", Some("f")));
    }

    #[test]
    fn machine_paths_are_absolute() {
        assert!(check_machine_path("/etc/hostname").is_ok());
        assert!(check_machine_path("etc/hostname").is_err());
        assert!(check_machine_path("").is_err());
    }

    #[test]
    fn a_tree_goes_through_a_root_and_stays_inside() {
        let tmp = Scratch::new("tree");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("srv/tree/sub")).unwrap();
        std::fs::write(root.join("srv/tree/sub/f"), b"data").unwrap();
        std::os::unix::fs::symlink("/srv", root.join("escape")).unwrap();
        let root_fd = nix::fcntl::open(&root, DIR, Mode::empty()).unwrap();
        // Sent through the planted symlink: resolved inside the root.
        let (dir, name) = source(Base::Root(&root_fd), "/escape/tree", "").unwrap();
        let mut tar = Vec::new();
        let progress = Progress::default();
        archive::pack_entry(
            &dir,
            Path::new("/srv"),
            &name,
            &mut tar,
            &archive::PackOptions {
                compression: archive::Compression::None,
                ..Default::default()
            },
            true,
            &progress,
        )
        .unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let out_fd = nix::fcntl::open(&out, DIR, Mode::empty()).unwrap();
        let opts = UnpackOptions {
            reserve_bytes: 0,
            ..Default::default()
        };
        let got = receive(&tar[..], &out_fd, "out", Some(c"copy"), &opts, &progress).unwrap();
        assert_eq!(got.as_c_str(), c"copy");
        assert_eq!(std::fs::read(out.join("copy/sub/f")).unwrap(), b"data");
        // Nothing but the copy is left beside it.
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
        // A second copy onto the directory is refused, not merged.
        let e = receive(&tar[..], &out_fd, "out", Some(c"copy"), &opts, &progress).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    }

    #[test]
    fn destinations_follow_cp() {
        let tmp = Scratch::new("dest");
        std::fs::create_dir_all(tmp.path().join("d")).unwrap();
        std::os::unix::fs::symlink("/d", tmp.path().join("ld")).unwrap();
        let root = nix::fcntl::open(tmp.path(), DIR, Mode::empty()).unwrap();
        let b = Base::Root(&root);
        assert!(destination(b, "/d", "").unwrap().1.is_none());
        assert!(destination(b, "/ld", "").unwrap().1.is_none());
        assert_eq!(
            destination(b, "/d/new", "").unwrap().1.unwrap().as_c_str(),
            c"new"
        );
        assert!(destination(b, "/nope/new", "").is_err());
        assert!(
            source(b, "/nope", "")
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        assert!(source(b, "/", "").is_err());
    }
}
