//! Facts about processes from /proc, and descriptor hygiene for berth's helpers.

/// Start time of a process in clock ticks since boot, or None if it is gone. With the
/// PID it names a process unambiguously, even after the PID is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable() {
        assert!(start_time(std::process::id()).is_some());
        assert!(start_time(u32::MAX).is_none());
    }
}
