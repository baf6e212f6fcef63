//! The user namespace of an unprivileged machine, as the spawn helper makes it: a
//! short-lived holder process unshares the namespace so that the still privileged helper
//! can write its uid and gid maps (a process cannot map more than itself into its own new
//! namespace) and open it; with that namespace the helper idmaps the machine's rootfs
//! (mount::RootTree), then joins it, becomes its root, and creates the machine's other
//! namespaces from inside, so they belong to the machine's root.

use crate::security::users::UserRange;
use caps::CapSet;
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Gid, Uid, fork, pipe2};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

/// A new user namespace mapping 0..count to `range`.
pub fn create(range: UserRange) -> Result<OwnedFd, String> {
    let (ready_r, ready_w) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (hold_r, hold_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the spawn helper is single-threaded.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(ready_r);
            drop(hold_w);
            let ok = unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = File::from(ready_w).write_all(if ok { b"y" } else { b"n" });
            // Held until the helper has what it needs: EOF when it lets go.
            let _ = File::from(hold_r).read(&mut [0u8; 1]);
            // SAFETY: leave without the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(hold_r);
            let mut answer = [0u8; 1];
            let unshared = File::from(ready_r)
                .read(&mut answer)
                .map(|n| n == 1 && answer[0] == b'y');
            let made = match unshared {
                Ok(true) => map_and_open(child.as_raw() as u32, range),
                _ => Err("unshare(user): the kernel refused a new user namespace".to_string()),
            };
            drop(hold_w);
            let _ = waitpid(child, None);
            made
        }
    }
}

fn map_and_open(pid: u32, range: UserRange) -> Result<OwnedFd, String> {
    for map in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{map}");
        std::fs::write(&path, range.map_line()).map_err(|e| format!("{path}: {e}"))?;
    }
    let path = format!("/proc/{pid}/ns/user");
    File::open(&path)
        .map(OwnedFd::from)
        .map_err(|e| format!("{path}: {e}"))
}

/// Joins `userns` and becomes its root, so what this process creates from here
/// (namespaces, files) belongs to the machine's root. Joining gives a full bounding set
/// in the namespace; what this process's own set lacked is dropped again, so a host
/// whose bounding set is smaller gives unprivileged machines less too, as privileged
/// ones (the machine's confinement narrows it further before exec).
pub fn enter(userns: &impl AsFd) -> Result<(), String> {
    let bounding =
        caps::read(None, CapSet::Bounding).map_err(|e| format!("reading the bounding set: {e}"))?;
    setns(userns, CloneFlags::CLONE_NEWUSER).map_err(|e| format!("setns(user): {e}"))?;
    for cap in caps::runtime::thread_all_supported() {
        if !bounding.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
    }
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| format!("setresgid(0): {e}"))?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| format!("setresuid(0): {e}"))
}

/// Whether `pid` lives in another user namespace than this process.
pub fn differs_from_ours(pid: u32) -> Result<bool, String> {
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/user"))
        .map_err(|e| format!("/proc/{pid}/ns/user: {e}"))?;
    let ours =
        std::fs::metadata("/proc/self/ns/user").map_err(|e| format!("/proc/self/ns/user: {e}"))?;
    use std::os::unix::fs::MetadataExt;
    Ok((theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()))
}
