//! Host paths bound into a machine (CreateMachine's `Binds a(ssb)`): the checks made when
//! the machine is created, and the resolution of a target inside the machine's root that
//! PID 1 repeats at every start.
//!
//! A target is resolved with `openat2(RESOLVE_BENEATH)` from a descriptor of the root:
//! symlinks that stay below the root are followed (`lib -> usr/lib`), while an absolute
//! one or one climbing out with `..` is refused as an escape. The machine's root owns its
//! tree and may plant such a link between create and start, so PID 1 resolves again, and
//! mounts on the descriptor it got, never on a path walked a second time.

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// One bind: the host's `source` on `target` inside the machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

impl Bind {
    /// "SOURCE:TARGET" (":ro" added for a read-only one), as `--bind` takes it.
    pub fn shown(&self) -> String {
        format!(
            "{}:{}{}",
            self.source.display(),
            self.target.display(),
            if self.read_only { " (read-only)" } else { "" }
        )
    }

    /// The checks that need no machine: an absolute source that exists, an absolute
    /// target without `..` that is not the root itself. Returns whether the source is a
    /// directory (the target made for it is one too).
    pub fn check_paths(&self) -> Result<bool, String> {
        let source = self.source.display();
        if !self.source.is_absolute() {
            return Err(format!("bind source {source}: give an absolute path"));
        }
        let meta = std::fs::metadata(&self.source).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("bind source {source} does not exist"),
            _ => format!("bind source {source}: {e}"),
        })?;
        self.relative_target()?;
        Ok(meta.is_dir())
    }

    /// The target relative to the machine's root: its normal components only.
    fn relative_target(&self) -> Result<PathBuf, String> {
        let target = self.target.display();
        if !self.target.is_absolute() {
            return Err(format!(
                "bind target {target}: give an absolute path inside the machine"
            ));
        }
        let mut rel = PathBuf::new();
        for c in self.target.components() {
            match c {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(name) => rel.push(name),
                Component::ParentDir => {
                    return Err(format!("bind target {target}: '..' is not allowed"));
                }
                Component::Prefix(_) => unreachable!("no prefixes on Unix"),
            }
        }
        if rel.as_os_str().is_empty() {
            return Err(format!(
                "bind target {target}: the machine's root itself cannot be a target"
            ));
        }
        Ok(rel)
    }
}

/// The checks of each of `binds`, and of their targets inside the tree at `rootfs` (a
/// template's or a machine's files, as the machine will see them). Nothing is created.
pub fn check(binds: &[Bind], rootfs: &Path) -> Result<(), String> {
    let root = open_root(rootfs)?;
    for (i, b) in binds.iter().enumerate() {
        b.check_paths()?;
        if binds[..i].iter().any(|o| o.target == b.target) {
            return Err(format!("bind target {} is given twice", b.target.display()));
        }
        resolve(root.as_fd(), b, None)?;
    }
    Ok(())
}

fn open_root(rootfs: &Path) -> Result<OwnedFd, String> {
    nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", rootfs.display()))
}

fn beneath(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// An O_PATH descriptor of `b`'s target below `root`, made when missing if `create` says
/// what to make (Some(true): a directory, Some(false): an empty file); with None only
/// checked, and Ok(None) when part of it does not exist yet.
pub fn resolve(
    root: BorrowedFd<'_>,
    b: &Bind,
    create: Option<bool>,
) -> Result<Option<OwnedFd>, String> {
    let rel = b.relative_target()?;
    let target = b.target.display();
    let why = |e: Errno, at: &Path| match e {
        Errno::EXDEV => format!(
            "bind target {target}: /{} leads out of the machine's root through a symbolic link",
            at.display()
        ),
        Errno::ENOTDIR => format!("bind target {target}: /{} is not a directory", at.display()),
        Errno::ELOOP => format!(
            "bind target {target}: too many symbolic links at /{}",
            at.display()
        ),
        e => format!("bind target {target}: /{}: {e}", at.display()),
    };
    let parts: Vec<&OsStr> = rel.iter().collect();
    let mut at = PathBuf::new();
    for (i, name) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        at.push(name);
        let flags = if last {
            OFlag::O_PATH
        } else {
            OFlag::O_PATH | OFlag::O_DIRECTORY
        };
        match openat2(root, &at, beneath(flags)) {
            Ok(fd) if last => return Ok(Some(fd)),
            Ok(_) => continue,
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(why(e, &at)),
        }
        let Some(dir_source) = create else {
            return Ok(None);
        };
        // The parent was resolved beneath the root just now; `name` is created in it
        // without following anything (mkdirat and O_EXCL never follow a last symlink).
        let parent = match at.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => openat2(root, p, beneath(OFlag::O_PATH | OFlag::O_DIRECTORY))
                .map_err(|e| why(e, p))?,
            None => root.try_clone_to_owned().map_err(|e| format!("dup: {e}"))?,
        };
        let made = if last && !dir_source {
            nix::fcntl::openat(
                &parent,
                *name,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
                Mode::from_bits_truncate(0o644),
            )
            .map(drop)
        } else {
            nix::sys::stat::mkdirat(&parent, *name, Mode::from_bits_truncate(0o755))
        };
        match made {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(format!(
                    "bind target {target}: cannot create /{}: {e}",
                    at.display()
                ));
            }
        }
        if last {
            return openat2(root, &at, beneath(flags))
                .map(Some)
                .map_err(|e| why(e, &at));
        }
        openat2(root, &at, beneath(flags)).map_err(|e| why(e, &at))?;
    }
    unreachable!("a relative target has at least one component")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn bind(source: &str, target: &str) -> Bind {
        Bind {
            source: source.into(),
            target: target.into(),
            read_only: false,
        }
    }

    #[test]
    fn paths_are_checked_before_any_tree() {
        assert_eq!(bind("/", "/mnt").check_paths(), Ok(true));
        let err = |b: Bind| b.check_paths().unwrap_err();
        assert!(err(bind("srv", "/mnt")).contains("srv: give an absolute path"));
        assert!(err(bind("/no/such/dir", "/mnt")).contains("/no/such/dir does not exist"));
        assert!(err(bind("/", "mnt")).contains("target mnt: give an absolute path"));
        assert!(err(bind("/", "/a/../../etc")).contains("'..' is not allowed"));
        assert!(err(bind("/", "/")).contains("root itself"));
        assert!(err(bind("/", "/./")).contains("root itself"));
    }

    #[test]
    fn targets_resolve_inside_the_root_and_are_made() {
        let dir = std::env::temp_dir().join(format!("berth-binds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = dir.as_path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("/tmp", root.join("escape")).unwrap();
        symlink("../..", root.join("usr/up")).unwrap();
        std::fs::write(root.join("file"), "").unwrap();
        let fd = open_root(root).unwrap();
        let fd = fd.as_fd();

        // Checked only: what exists is resolved, what does not is fine.
        assert!(resolve(fd, &bind("/", "/usr/lib"), None).unwrap().is_some());
        assert!(resolve(fd, &bind("/", "/lib/x/y"), None).unwrap().is_none());
        let err = |target: &str| resolve(fd, &bind("/", target), None).unwrap_err();
        assert!(err("/escape/x").contains("/escape leads out of the machine's root"));
        assert!(err("/escape").contains("/escape leads out"));
        assert!(err("/usr/up/etc").contains("leads out"));
        assert!(err("/file/x").contains("/file is not a directory"));
        assert!(check(&[bind("/", "/escape/db")], root).is_err());
        assert!(
            check(&[bind("/", "/a"), bind("/etc", "/a")], root)
                .unwrap_err()
                .contains("given twice")
        );

        // Made: directories along the way, the last one as the source is.
        resolve(fd, &bind("/", "/lib/x/y"), Some(true))
            .unwrap()
            .unwrap();
        assert!(root.join("usr/lib/x/y").is_dir());
        resolve(fd, &bind("/etc/hostname", "/srv/f"), Some(false))
            .unwrap()
            .unwrap();
        assert!(root.join("srv/f").is_file());
        assert!(resolve(fd, &bind("/", "/escape/x"), Some(true)).is_err());
        // A dangling link is no place to create anything.
        symlink("/nowhere", root.join("dangling")).unwrap();
        assert!(resolve(fd, &bind("/", "/dangling"), Some(true)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
