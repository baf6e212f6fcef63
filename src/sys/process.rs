//! Facts about processes from /proc, and descriptor hygiene for berth's helpers.

/// Start time of a process in clock ticks since boot, or None if it is gone. With the
/// PID it names a process unambiguously, even after the PID is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Of `pids`, the one that is PID 1 of a PID namespace nested the least below ours (a
/// machine's init, not the init of a container inside it); else the lowest PID.
pub fn namespace_init(pids: &[u32]) -> Option<u32> {
    let depth_if_init = |pid: u32| -> Option<usize> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let nspid: Vec<&str> = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))?
            .split_whitespace()
            .collect();
        (nspid.len() > 1 && nspid.last() == Some(&"1")).then_some(nspid.len())
    };
    pids.iter()
        .filter_map(|&p| depth_if_init(p).map(|d| (d, p)))
        .min()
        .map(|(_, p)| p)
        .or_else(|| pids.iter().min().copied())
}

/// Closes every descriptor from `first` up. The helpers call it first thing: berthd may
/// hold descriptors received from D-Bus clients (Execute's stdio) that a concurrently
/// spawned helper inherits, and nothing of that kind may reach a machine or keep a
/// client's pipe open.
pub fn close_fds_from(first: u32) {
    // SAFETY: close_range only closes descriptors; callers own none at or above `first`.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32);
    }
}

/// The soft limit of open descriptors what berth starts gets: FD_SETSIZE, past which
/// select() fails, and systemd's default for every service for that reason.
pub const NOFILE_SOFT: u64 = 1024;

/// Raises this process's soft limit of open descriptors to its hard limit, as berthd
/// needs: it holds a pidfd and console descriptors for every running machine, and a
/// few hundred machines pass the usual 1024. Returns the soft limit in force afterwards.
pub fn raise_nofile() -> std::io::Result<u64> {
    let mut limit = nofile()?;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        set_nofile(&limit)?;
    }
    Ok(limit.rlim_cur)
}

/// Lowers the soft limit of open descriptors back to [`NOFILE_SOFT`]: the helpers call
/// it first, so nothing they start in a machine inherits berthd's raised limit, as
/// systemd resets its own raised limit for what it starts.
pub fn restore_nofile() {
    if let Ok(mut limit) = nofile()
        && limit.rlim_cur > NOFILE_SOFT
    {
        limit.rlim_cur = NOFILE_SOFT;
        let _ = set_nofile(&limit);
    }
}

fn nofile() -> std::io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(limit)
}

fn set_nofile(limit: &libc::rlimit) -> std::io::Result<()> {
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_namespace_init_the_lowest_pid_leads() {
        // The test's own processes are in our PID namespace: none is a namespace's init.
        let me = std::process::id();
        assert_eq!(namespace_init(&[me, 1]), Some(1));
        assert_eq!(namespace_init(&[]), None);
    }

    #[test]
    fn own_start_time_is_readable() {
        assert!(start_time(std::process::id()).is_some());
        assert!(start_time(u32::MAX).is_none());
    }
}
