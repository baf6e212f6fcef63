//! The cgroups test hosts live in, on this machine: their names, and their removal. Each
//! host gets a cgroup `berth-test-<test pid>-<n>-<test start time>` in every hierarchy
//! (tests/host/boot.sh moves into it before unsharing), so that killing what is in that
//! tree and removing it, depth first, leaves nothing of the host; and so that what a
//! crashed test process left can be traced to its dead owner and removed by the next run.

use super::poll::wait_until;
use berth::sys::process::start_time as process_start_time;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

const PREFIX: &str = "berth-test-";
/// How long teardown keeps retrying rmdir; a killed host's last processes take a moment
/// to be reaped.
const RMDIR_TIMEOUT: Duration = Duration::from_secs(10);
/// An empty berth-test cgroup whose owner still runs may be a boot between mkdir and
/// joining it; only older ones are taken for debris.
const EMPTY_LEFTOVER_MIN_AGE: Duration = Duration::from_secs(30);

/// A new cgroup name for a host of this process, marked live (see `live_hosts`) until
/// `release` is called with it. Also names the host's state directory.
pub fn claim_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let me = std::process::id();
    let name = format!("{PREFIX}{me}-{n}-{}", process_start_time(me).unwrap_or(0));
    live_hosts().insert(name.clone());
    name
}

/// Ends the claim of `claim_name`: the name may now be taken for a leftover.
pub fn release(name: &str) {
    live_hosts().remove(name);
}

/// Hosts of this process that are booting or up, so that concurrent boots in other threads
/// never take them for leftovers.
fn live_hosts() -> MutexGuard<'static, HashSet<String>> {
    static LIVE: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Every cgroup hierarchy (v1 and v2) mounted on this machine, from mountinfo, the same way
/// boot.sh finds them. (berth::cgroup maps a process's cgroups under one root it is given;
/// the harness needs every mount point, whatever this machine calls them.)
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(fstype), Some(mnt)) = (fields.get(sep + 1), fields.get(4)) else {
            continue;
        };
        if (*fstype == "cgroup" || *fstype == "cgroup2") && seen.insert(mnt.to_string()) {
            out.push(PathBuf::from(mnt));
        }
    }
    out
}

/// Removes what earlier, crashed runs left: every berth-test-* cgroup (in every hierarchy)
/// whose owning test process is gone, or which is empty and old, with its processes killed;
/// and the state directories of dead owners. Hosts of running test processes are left alone.
pub fn cleanup_leftovers() {
    let me = std::process::id();
    let mut doomed: HashSet<String> = HashSet::new();
    let mut spared: HashSet<String> = HashSet::new();
    let live = live_hosts().clone();
    for mount in cgroup_mounts() {
        let Ok(entries) = fs::read_dir(&mount) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(PREFIX) || doomed.contains(&name) || spared.contains(&name) {
                continue;
            }
            if live.contains(&name) {
                spared.insert(name); // this process's own host, booting or up
                continue;
            }
            // This process's names not in `live` are hosts it failed to tear down.
            let owner_alive = match parse_owner(&name) {
                Some((pid, start)) => pid != me && process_start_time(pid) == Some(start),
                None => false,
            };
            let dir = e.path();
            if !owner_alive
                || (cgroup_tree_pids(&dir).is_empty() && age(&dir) > EMPTY_LEFTOVER_MIN_AGE)
            {
                doomed.insert(name);
            } else {
                spared.insert(name);
            }
        }
    }
    for name in &doomed {
        if let Err(e) = remove_cgroup_everywhere(name) {
            eprintln!("warning: leftover test host {name} not fully removed: {e}");
        }
    }
    // A host's state directory has its cgroup's name and holds a file `cgroup` (boot.sh).
    if let Ok(entries) = fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with(PREFIX) || live.contains(&name) {
                continue;
            }
            let dead = match parse_owner(&name) {
                Some((pid, start)) => pid != me && process_start_time(pid) != Some(start),
                None => false,
            };
            if dead && e.path().join("cgroup").exists() {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Owner pid and owner start time from berth-test-<pid>-<n>-<start time>.
fn parse_owner(name: &str) -> Option<(u32, u64)> {
    let mut parts = name.strip_prefix(PREFIX)?.split('-');
    let pid = parts.next()?.parse().ok()?;
    let _n = parts.next()?;
    let start = parts.next()?.parse().ok()?;
    Some((pid, start))
}

fn age(dir: &Path) -> Duration {
    fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

/// Pids in the cgroup `dir` and all below it.
fn cgroup_tree_pids(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(s.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = fs::read_dir(&d) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| is_dir(&e.path()))
                    .map(|e| e.path()),
            );
        }
    }
    pids
}

fn is_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false)
}

/// Depth-first rmdir of `dir` and its sub-cgroups; Err with the first failure.
fn rmdir_tree(dir: &Path) -> io::Result<()> {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if is_dir(&e.path()) {
                rmdir_tree(&e.path())?;
            }
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Kills whatever still runs in cgroup `name` and removes it in every hierarchy.
pub fn remove_cgroup_everywhere(name: &str) -> Result<(), String> {
    let dirs: Vec<PathBuf> = cgroup_mounts()
        .into_iter()
        .map(|m| m.join(name))
        .filter(|d| d.exists())
        .collect();
    // What stopped the latest attempt: None while processes remained.
    let mut last_err = None;
    let removed = wait_until(&format!("cgroup {name} to go"), RMDIR_TIMEOUT, || {
        last_err = None;
        // Killing every member (the host's PID 1 among them) ends the pid namespace; the
        // rest are what run() or a crashed boot left in the tree.
        let mut any = false;
        for d in &dirs {
            for pid in cgroup_tree_pids(d) {
                any = true;
                kill(pid, libc::SIGKILL);
            }
        }
        if any {
            return false;
        }
        for d in &dirs {
            if let Err(e) = rmdir_tree(d) {
                last_err = Some(format!("rmdir under {}: {e}", d.display()));
            }
        }
        last_err.is_none()
    });
    if removed {
        return Ok(());
    }
    let pids: Vec<u32> = dirs.iter().flat_map(|d| cgroup_tree_pids(d)).collect();
    Err(last_err.unwrap_or_else(|| format!("processes {pids:?} survive SIGKILL")))
}

pub fn kill(pid: u32, sig: i32) {
    if pid > 1 {
        // SAFETY: kill has no memory-safety preconditions; errors (ESRCH) are expected.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }
}
