//! Which cgroup hierarchy the host runs, and where a process's cgroups live. systemd owns
//! the cgroups; berth only reads them, and joins a machine's cgroups when it executes a
//! command inside it. The one exception is the v1 freezer, which systemd leaves alone
//! (freezer.rs).

pub mod figures;
pub mod freezer;

use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CgroupMode {
    Unified,
    Hybrid,
    Legacy,
}

impl CgroupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupMode::Unified => "unified",
            CgroupMode::Hybrid => "hybrid",
            CgroupMode::Legacy => "legacy",
        }
    }

    /// The same test systemd does (cg_unified_cached): the filesystem type of
    /// /sys/fs/cgroup, then of /sys/fs/cgroup/unified.
    pub fn detect(root: &Path) -> std::io::Result<CgroupMode> {
        use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
        let top = statfs(root).map_err(std::io::Error::from)?;
        if top.filesystem_type() == CGROUP2_SUPER_MAGIC {
            return Ok(CgroupMode::Unified);
        }
        match statfs(&root.join("unified")) {
            Ok(s) if s.filesystem_type() == CGROUP2_SUPER_MAGIC => Ok(CgroupMode::Hybrid),
            _ => Ok(CgroupMode::Legacy),
        }
    }
}

/// The files of a delegated cgroup that its new owner writes to run the subtree: moving
/// processes (cgroup.procs, cgroup.threads, v1's tasks) and enabling controllers below it
/// (cgroup.subtree_control). Its limits stay the host's, as systemd leaves them when it
/// delegates a cgroup to a user; so does v1's notify_on_release (it would run the host's
/// release agent).
const DELEGATED_FILES: [&str; 4] = [
    "cgroup.procs",
    "cgroup.threads",
    "cgroup.subtree_control",
    "tasks",
];

/// The hierarchies a systemd tracks its processes in: the unified one, and on v1 hosts
/// the name=systemd one (hybrid hosts have both).
pub fn tracking_hierarchies(root: &Path, mode: CgroupMode) -> Vec<PathBuf> {
    match mode {
        CgroupMode::Unified => vec![root.to_path_buf()],
        CgroupMode::Hybrid => vec![root.join("systemd"), root.join("unified")],
        CgroupMode::Legacy => vec![root.join("systemd")],
    }
}

/// Hands `cgroup` (a path like /machine.slice/machine-box.scope) to `owner` in the
/// hierarchies processes are tracked in, as systemd-nspawn does for a container in a user
/// namespace: its root (host ID `owner`) can then make cgroups below it and move its
/// processes between them. The controller hierarchies stay the host's.
pub fn delegate(root: &Path, mode: CgroupMode, cgroup: &str, owner: u32) -> std::io::Result<()> {
    let rel = cgroup.trim_start_matches('/');
    for hierarchy in tracking_hierarchies(root, mode) {
        let dir = hierarchy.join(rel);
        chown(&dir, owner)?;
        for file in DELEGATED_FILES {
            match chown(&dir.join(file), owner) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
    }
    Ok(())
}

fn chown(path: &Path, owner: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(owner), Some(owner))
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// One line of /proc/PID/cgroup turned into the directory of that cgroup.
#[derive(Debug, PartialEq, Eq)]
pub struct CgroupDir {
    pub controllers: String,
    pub path: PathBuf,
}

/// Maps /proc/PID/cgroup content to directories under `root` (normally /sys/fs/cgroup).
/// v1 hierarchies are mounted under their controller list ("cpu,cpuacct", "systemd" for
/// name=systemd); the v2 line ("0::") is at the root on unified hosts and at "unified"
/// on hybrid ones.
pub fn cgroup_dirs(proc_cgroup: &str, root: &Path, mode: CgroupMode) -> Vec<CgroupDir> {
    let mut dirs = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        let base = if ctrls.is_empty() {
            match mode {
                CgroupMode::Unified => root.to_path_buf(),
                CgroupMode::Hybrid => root.join("unified"),
                CgroupMode::Legacy => continue,
            }
        } else {
            if mode == CgroupMode::Unified {
                continue;
            }
            root.join(ctrls.strip_prefix("name=").unwrap_or(ctrls))
        };
        dirs.push(CgroupDir {
            controllers: ctrls.to_string(),
            path: base.join(rel),
        });
    }
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "12:pids:/machine.slice/machine-box.scope\n\
        4:memory:/machine.slice/machine-box.scope\n\
        1:name=systemd:/machine.slice/machine-box.scope\n\
        0::/machine.slice/machine-box.scope\n";

    #[test]
    fn hybrid_lines_map_to_each_hierarchy() {
        let dirs = cgroup_dirs(HYBRID, Path::new("/sys/fs/cgroup"), CgroupMode::Hybrid);
        let paths: Vec<_> = dirs.iter().map(|d| d.path.display().to_string()).collect();
        assert_eq!(
            paths,
            [
                "/sys/fs/cgroup/pids/machine.slice/machine-box.scope",
                "/sys/fs/cgroup/memory/machine.slice/machine-box.scope",
                "/sys/fs/cgroup/systemd/machine.slice/machine-box.scope",
                "/sys/fs/cgroup/unified/machine.slice/machine-box.scope",
            ]
        );
    }

    #[test]
    fn unified_uses_only_the_v2_line() {
        let dirs = cgroup_dirs(HYBRID, Path::new("/sys/fs/cgroup"), CgroupMode::Unified);
        assert_eq!(dirs.len(), 1);
        assert_eq!(
            dirs[0].path,
            Path::new("/sys/fs/cgroup/machine.slice/machine-box.scope")
        );
    }

    #[test]
    fn delegation_chowns_the_tracking_hierarchies_only() {
        let root = std::env::temp_dir().join(format!("berth-delegate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let cg = "machine.slice/machine-box.scope";
        for h in ["systemd", "unified", "memory"] {
            std::fs::create_dir_all(root.join(h).join(cg)).unwrap();
            for f in ["cgroup.procs", "memory.limit_in_bytes", "notify_on_release"] {
                std::fs::write(root.join(h).join(cg).join(f), "").unwrap();
            }
        }
        // Only root can give files away; elsewhere this checks just the error path.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(delegate(&root, CgroupMode::Hybrid, &format!("/{cg}"), 4242).is_err());
            std::fs::remove_dir_all(&root).unwrap();
            return;
        }
        delegate(&root, CgroupMode::Hybrid, &format!("/{cg}"), 4242).unwrap();
        use std::os::unix::fs::MetadataExt;
        let owner = |p: &str| std::fs::metadata(root.join(p)).unwrap().uid();
        for h in ["systemd", "unified"] {
            assert_eq!(owner(&format!("{h}/{cg}")), 4242);
            assert_eq!(owner(&format!("{h}/{cg}/cgroup.procs")), 4242);
            assert_eq!(owner(&format!("{h}/{cg}/notify_on_release")), 0);
            assert_eq!(owner(&format!("{h}/{cg}/memory.limit_in_bytes")), 0);
        }
        assert_eq!(owner(&format!("memory/{cg}")), 0);
        assert_eq!(owner(&format!("memory/{cg}/cgroup.procs")), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert!(cgroup_dirs("nonsense\n", Path::new("/x"), CgroupMode::Hybrid).is_empty());
    }
}
