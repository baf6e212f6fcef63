//! PID 1's part of a machine's networking: its loopback, up in a network namespace of its
//! own, and the /etc/resolv.conf berthd chose for it. Everything else (a bridged
//! machine's eth0, the host's side) is berthd's, done from outside before Go.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Brings `lo` up in this process's network namespace. A new namespace's loopback starts
/// down, and much that runs in a machine (a resolver stub on 127.0.0.53, a database on
/// localhost) expects it up, as nspawn and LXC leave it. Needs CAP_NET_ADMIN over the
/// namespace: the machine's root has it, as its user namespace owns the netns.
pub fn loopback_up() -> Result<(), String> {
    // SAFETY: plain syscall; the result is a new descriptor or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!(
            "a socket to set lo up: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh descriptor from the kernel.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid ifreq: an empty name and zero flags.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo") {
        *dst = *src as libc::c_char;
    }
    let ioctl = |request, ifr: &mut libc::ifreq, what: &str| {
        // SAFETY: SIOCGIFFLAGS and SIOCSIFFLAGS take a pointer to an ifreq, which
        // outlives the call.
        let r = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, ifr as *mut libc::ifreq) };
        if r < 0 {
            Err(format!("{what} lo: {}", std::io::Error::last_os_error()))
        } else {
            Ok(())
        }
    };
    ioctl(libc::SIOCGIFFLAGS, &mut ifr, "reading the flags of")?;
    // SAFETY: SIOCGIFFLAGS filled in the flags member.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl(libc::SIOCSIFFLAGS, &mut ifr, "setting up")
}

/// Name of the file written beside resolv.conf and renamed over it, so the machine never
/// sees a half-written one.
const RESOLV_TMP: &str = ".resolv.conf.berth-tmp";

/// What became of resolv.conf in `etc`.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolv {
    Written,
    /// The machine manages its own: resolv.conf is a symbolic link (systemd-resolved's
    /// stub, resolvconf's file in /run).
    TheMachines,
    /// No `etc` directory: nothing there would read it.
    NoEtc,
}

/// Writes `text` as `etc`/resolv.conf, mode 0644, replacing a regular file atomically,
/// unless it is a symbolic link. Run by PID 1 after pivot_root, as the machine's root:
/// every path resolves inside the machine's tree (a link in its /etc cannot lead out) and
/// the file is the machine's root's.
pub fn write_resolv_conf(etc: &Path, text: &str) -> std::io::Result<Resolv> {
    if !etc.is_dir() {
        return Ok(Resolv::NoEtc);
    }
    let target = etc.join("resolv.conf");
    if fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
        return Ok(Resolv::TheMachines);
    }
    let tmp = etc.join(RESOLV_TMP);
    // A leftover of an earlier start that died between write and rename.
    let _ = fs::remove_file(&tmp);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| {
            // The mode given to open passed through the umask, inherited from berthd.
            f.set_permissions(fs::Permissions::from_mode(0o644))?;
            f.write_all(text.as_bytes())
        })
        .and_then(|()| fs::rename(&tmp, &target));
    match written {
        Ok(()) => Ok(Resolv::Written),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("berth-resolv-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    const TEXT: &str = "nameserver 10.0.3.1\n";

    #[test]
    fn a_regular_file_is_replaced_with_mode_0644() {
        let etc = scratch("regular");
        let target = etc.join("resolv.conf");
        fs::write(&target, "nameserver 192.0.2.1\n").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(write_resolv_conf(&etc, TEXT).unwrap(), Resolv::Written);
        assert_eq!(fs::read_to_string(&target).unwrap(), TEXT);
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
        assert!(!etc.join(RESOLV_TMP).exists());
        fs::remove_dir_all(&etc).unwrap();
    }

    #[test]
    fn a_missing_file_is_made_and_a_stale_temporary_replaced() {
        let etc = scratch("missing");
        // A leftover that is a link must not be written through.
        let elsewhere = etc.join("elsewhere");
        symlink(&elsewhere, etc.join(RESOLV_TMP)).unwrap();
        assert_eq!(write_resolv_conf(&etc, TEXT).unwrap(), Resolv::Written);
        assert_eq!(fs::read_to_string(etc.join("resolv.conf")).unwrap(), TEXT);
        assert!(!elsewhere.exists());
        fs::remove_dir_all(&etc).unwrap();
    }

    #[test]
    fn a_link_is_the_machines_own() {
        let etc = scratch("link");
        let stub = etc.join("stub-resolv.conf");
        fs::write(&stub, "nameserver 127.0.0.53\n").unwrap();
        symlink("stub-resolv.conf", etc.join("resolv.conf")).unwrap();
        assert_eq!(write_resolv_conf(&etc, TEXT).unwrap(), Resolv::TheMachines);
        assert_eq!(
            fs::read_to_string(&stub).unwrap(),
            "nameserver 127.0.0.53\n"
        );
        // A dangling link too: its target may appear once the machine's resolver runs.
        fs::remove_file(&stub).unwrap();
        assert_eq!(write_resolv_conf(&etc, TEXT).unwrap(), Resolv::TheMachines);
        assert!(!stub.exists());
        fs::remove_dir_all(&etc).unwrap();
    }

    #[test]
    fn no_etc_is_nothing_to_do() {
        let root = scratch("noetc");
        assert_eq!(
            write_resolv_conf(&root.join("etc"), TEXT).unwrap(),
            Resolv::NoEtc
        );
        assert!(!root.join("etc").exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_failed_write_leaves_no_temporary() {
        let etc = scratch("fails");
        // A directory cannot be renamed over by a file.
        fs::create_dir(etc.join("resolv.conf")).unwrap();
        assert!(write_resolv_conf(&etc, TEXT).is_err());
        assert!(!etc.join(RESOLV_TMP).exists());
        fs::remove_dir_all(&etc).unwrap();
    }
}
