//! Freezing a machine on v1 and hybrid hosts, where systemd's FreezeUnit refuses: berth
//! uses the v1 freezer controller itself. systemd does not manage that controller, so the
//! scope has no cgroup there; berth makes `machine.slice/<unit>` in the freezer hierarchy,
//! moves every process of the scope into it, and writes FROZEN or THAWED to its
//! freezer.state. The processes stay in that cgroup after a thaw (a later fork inherits
//! it, so the next freeze needs no race with new processes); the directory goes when the
//! machine ends.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the kernel may report FREEZING (a task in an uninterruptible sleep, say)
/// before berth gives up and thaws again.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Rounds of moving processes: each round moves what forked meanwhile; a scope that keeps
/// producing processes outside the freezer cgroup faster than that is a fork bomb.
const MAX_MOVE_ROUNDS: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreezerState {
    Thawed,
    Freezing,
    Frozen,
}

impl FreezerState {
    pub fn parse(text: &str) -> Option<FreezerState> {
        match text.trim() {
            "THAWED" => Some(FreezerState::Thawed),
            "FREEZING" => Some(FreezerState::Freezing),
            "FROZEN" => Some(FreezerState::Frozen),
            _ => None,
        }
    }

    fn as_kernel(self) -> &'static str {
        match self {
            FreezerState::Thawed => "THAWED",
            FreezerState::Freezing => "FREEZING",
            FreezerState::Frozen => "FROZEN",
        }
    }
}

/// The mount point of the v1 hierarchy whose super options include `option` ("freezer",
/// "name=systemd"), from /proc/self/mountinfo content: where it is mounted differs
/// between hosts (controllers co-mounted or not).
pub fn v1_mount(mountinfo: &str, option: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        let (fstype, superopts) = (fields.get(sep + 1)?, fields.get(sep + 3)?);
        let mount = fields.get(4)?;
        (*fstype == "cgroup" && superopts.split(',').any(|o| o == option))
            .then(|| PathBuf::from(mount))
    })
}

/// The scope's path in the hierarchy of `controllers` ("name=systemd", "" for cgroup2),
/// from /proc/PID/cgroup of one of its processes: the prefix ending in the unit, since an
/// init inside may have moved itself into a cgroup below the scope (its own init.scope).
pub fn scope_path(proc_cgroup: &str, controllers: &str, unit: &str) -> Option<String> {
    let path = proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        (ctrls == controllers).then_some(path)
    })?;
    let mut out = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        out.push('/');
        out.push_str(part);
        if part == unit {
            return Some(out);
        }
    }
    None
}

/// The scope's directory in the name=systemd hierarchy, found through `pid`, one of its
/// processes (the machine's leader).
pub fn tracked_scope_dir(pid: u32, unit: &str) -> io::Result<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let mount = v1_mount(&mountinfo, "name=systemd").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "this host mounts no v1 name=systemd hierarchy",
        )
    })?;
    Ok(mount.join(scope_of(pid, "name=systemd", unit)?.trim_start_matches('/')))
}

/// Whether the scope `unit`, which `pid` is in, is frozen on the unified hierarchy
/// (systemd's FreezeUnit), as its cgroup.freeze says.
pub fn unified_frozen(pid: u32, unit: &str) -> io::Result<bool> {
    let path = scope_of(pid, "", unit)?;
    let file = Path::new("/sys/fs/cgroup")
        .join(path.trim_start_matches('/'))
        .join("cgroup.freeze");
    let text = fs::read_to_string(&file).map_err(|e| at(&file, e))?;
    Ok(text.trim() == "1")
}

fn scope_of(pid: u32, controllers: &str, unit: &str) -> io::Result<String> {
    let file = format!("/proc/{pid}/cgroup");
    let text = fs::read_to_string(&file).map_err(|e| at(Path::new(&file), e))?;
    scope_path(&text, controllers, unit).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("process {pid} is not in {unit}"),
        )
    })
}

/// The freezer cgroup of one machine's scope.
#[derive(Debug)]
pub struct Freezer {
    dir: PathBuf,
}

impl Freezer {
    /// The freezer cgroup of `unit` on this host; an error when no v1 freezer is mounted.
    pub fn of(unit: &str) -> io::Result<Freezer> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
        let mount = v1_mount(&mountinfo, "freezer").ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "this host mounts no v1 freezer hierarchy",
            )
        })?;
        Ok(Freezer::under(&mount, unit))
    }

    /// Where berth keeps `unit` in the freezer hierarchy mounted at `mount`: the same
    /// place systemd gives it in the hierarchies it manages.
    pub fn under(mount: &Path, unit: &str) -> Freezer {
        Freezer {
            dir: mount.join("machine.slice").join(unit),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Moves every process of the scope whose name=systemd cgroup is `scope_dir` (and the
    /// cgroups below it) into this cgroup, then freezes it and waits until the kernel says
    /// FROZEN. A freeze that does not settle is undone.
    pub fn freeze(&self, scope_dir: &Path) -> io::Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| at(&self.dir, e))?;
        self.gather(scope_dir)?;
        self.write_state(FreezerState::Frozen)?;
        if let Err(e) = self.settle(FreezerState::Frozen) {
            let _ = self.write_state(FreezerState::Thawed);
            return Err(e);
        }
        Ok(())
    }

    pub fn thaw(&self) -> io::Result<()> {
        self.write_state(FreezerState::Thawed)?;
        self.settle(FreezerState::Thawed)
    }

    /// The freezer's state; None when berth never made the cgroup (never frozen).
    pub fn state(&self) -> io::Result<Option<FreezerState>> {
        let file = self.dir.join("freezer.state");
        match fs::read_to_string(&file) {
            Ok(text) => Ok(FreezerState::parse(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(at(&file, e)),
        }
    }

    /// Removes the cgroup once its processes are gone; one that was never made is fine.
    /// The last exiting tasks may keep it busy a moment, so EBUSY is retried briefly.
    pub fn remove(&self) -> io::Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(POLL_INTERVAL)
                }
                Err(e) => return Err(at(&self.dir, e)),
            }
        }
    }

    /// Repeats moving until a read of the scope finds no process outside: a process
    /// forked before its parent was moved shows up in the next read, one forked after
    /// inherits this cgroup.
    fn gather(&self, scope_dir: &Path) -> io::Result<()> {
        let procs_file = self.dir.join("cgroup.procs");
        for _ in 0..MAX_MOVE_ROUNDS {
            let inside: HashSet<u32> = read_pids(&procs_file)?.into_iter().collect();
            let outside: Vec<u32> = tree_pids(scope_dir)?
                .into_iter()
                .filter(|p| !inside.contains(p))
                .collect();
            if outside.is_empty() {
                return Ok(());
            }
            for pid in outside {
                match fs::write(&procs_file, pid.to_string()) {
                    Ok(()) => {}
                    // It exited between the read and the move.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(at(&procs_file, e)),
                }
            }
        }
        Err(io::Error::other(format!(
            "{} keeps forking new processes; gave up moving them into {} after {MAX_MOVE_ROUNDS} rounds",
            scope_dir.display(),
            self.dir.display()
        )))
    }

    fn write_state(&self, state: FreezerState) -> io::Result<()> {
        let file = self.dir.join("freezer.state");
        fs::write(&file, state.as_kernel()).map_err(|e| at(&file, e))
    }

    /// Waits until freezer.state reads `want`; the kernel reports FREEZING while tasks
    /// are still on their way into the refrigerator.
    fn settle(&self, want: FreezerState) -> io::Result<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let now = self.state()?;
            if now == Some(want) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} still reads {} after {}s, not {}",
                        self.dir.join("freezer.state").display(),
                        now.map_or("nothing", FreezerState::as_kernel),
                        SETTLE_TIMEOUT.as_secs(),
                        want.as_kernel()
                    ),
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn read_pids(file: &Path) -> io::Result<Vec<u32>> {
    let text = fs::read_to_string(file).map_err(|e| at(file, e))?;
    Ok(parse_pids(&text))
}

fn parse_pids(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// PIDs in the cgroup `dir` and every cgroup below it (an init inside makes its own).
fn tree_pids(dir: &Path) -> io::Result<Vec<u32>> {
    let mut pids = read_pids(&dir.join("cgroup.procs"))?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                // A cgroup removed meanwhile has no processes to move.
                if let Ok(found) = read_pids(&e.path().join("cgroup.procs")) {
                    pids.extend(found);
                }
                stack.push(e.path());
            }
        }
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 30 0:23 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755\n\
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n\
27 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd\n\
31 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct\n\
33 25 0:31 / /sys/fs/cgroup/freezer rw,nosuid shared:17 - cgroup cgroup rw,freezer\n";

    #[test]
    fn finds_v1_hierarchies_by_their_option() {
        assert_eq!(
            v1_mount(MOUNTINFO, "freezer").unwrap(),
            Path::new("/sys/fs/cgroup/freezer")
        );
        assert_eq!(
            v1_mount(MOUNTINFO, "name=systemd").unwrap(),
            Path::new("/sys/fs/cgroup/systemd")
        );
        assert_eq!(
            v1_mount(MOUNTINFO, "cpuacct").unwrap(),
            Path::new("/sys/fs/cgroup/cpu,cpuacct")
        );
        // "cpu" is an option of the co-mounted hierarchy, not a prefix match of "cpuacct".
        assert_eq!(v1_mount(MOUNTINFO, "pids"), None);
        // A cgroup2 mount never counts as a v1 hierarchy.
        assert_eq!(v1_mount(MOUNTINFO, "nsdelegate"), None);
    }

    #[test]
    fn scope_path_stops_at_the_unit() {
        let procs = "6:freezer:/\n\
            1:name=systemd:/machine.slice/machine-box.scope/init.scope\n\
            0::/machine.slice/machine-box.scope/init.scope\n";
        for ctrls in ["name=systemd", ""] {
            assert_eq!(
                scope_path(procs, ctrls, "machine-box.scope").as_deref(),
                Some("/machine.slice/machine-box.scope")
            );
        }
        assert_eq!(
            scope_path(procs, "name=systemd", "machine-other.scope"),
            None
        );
        assert_eq!(scope_path(procs, "freezer", "machine-box.scope"), None);
    }

    #[test]
    fn freezer_state_parses_the_kernel_words() {
        assert_eq!(FreezerState::parse("FROZEN\n"), Some(FreezerState::Frozen));
        assert_eq!(
            FreezerState::parse("FREEZING\n"),
            Some(FreezerState::Freezing)
        );
        assert_eq!(FreezerState::parse("THAWED\n"), Some(FreezerState::Thawed));
        assert_eq!(FreezerState::parse("frozen"), None);
    }

    #[test]
    fn the_freezer_cgroup_mirrors_systemds_place() {
        let f = Freezer::under(Path::new("/sys/fs/cgroup/freezer"), "machine-box.scope");
        assert_eq!(
            f.dir(),
            Path::new("/sys/fs/cgroup/freezer/machine.slice/machine-box.scope")
        );
    }

    #[test]
    fn gathering_reads_the_whole_scope_tree() {
        let root = std::env::temp_dir().join(format!("berth-freezer-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let scope = root.join("machine-box.scope");
        fs::create_dir_all(scope.join("init.scope")).unwrap();
        fs::write(scope.join("cgroup.procs"), "").unwrap();
        fs::write(scope.join("init.scope/cgroup.procs"), "7\n9\n").unwrap();
        let mut pids = tree_pids(&scope).unwrap();
        pids.sort();
        assert_eq!(pids, [7, 9]);
        let never = Freezer::under(&root, "machine-none.scope");
        assert_eq!(never.state().unwrap(), None);
        never.remove().unwrap();
        fs::remove_dir_all(&root).unwrap();
    }
}
