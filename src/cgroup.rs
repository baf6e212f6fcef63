//! Which cgroup hierarchy the host runs, and where a process's cgroups live. systemd owns
//! the cgroups; berth only reads them, and joins a machine's cgroups when it executes a
//! command inside it.

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
    fn garbage_lines_are_skipped() {
        assert!(cgroup_dirs("nonsense\n", Path::new("/x"), CgroupMode::Hybrid).is_empty());
    }
}
