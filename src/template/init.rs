//! What berth needs to know about a machine's init: which program runs as PID 1 and which
//! signal asks it to power off. Both come from the machine's own tree, not from the
//! template it was made from (which may be gone): systemd halts on SIGRTMIN+3, busybox
//! init on SIGUSR2 (its SIGTERM means reboot); anything else gets SIGTERM, which berth's
//! own PID 1 passes on to a Command it runs as PID 2 (src/spawn/init.rs).

use std::path::Path;

/// PID 1 when a machine gives no Command, as in every distribution and in the busybox
/// template.
pub const DEFAULT_INIT: &str = "/sbin/init";

/// argv of PID 1: the machine's own command, else /sbin/init.
pub fn pid1_argv(command: &[String]) -> Vec<String> {
    if command.is_empty() {
        vec![DEFAULT_INIT.to_string()]
    } else {
        command.to_vec()
    }
}

/// The signal that asks this machine's init to power off: the configured one, else by
/// what PID 1's program is inside `rootfs`.
pub fn halt_signal(rootfs: &Path, command: &[String], configured: Option<i32>) -> i32 {
    if let Some(s) = configured {
        return s;
    }
    let init = command.first().map(String::as_str).unwrap_or(DEFAULT_INIT);
    match resolve(rootfs, init) {
        Some(p) if p.ends_with("/systemd") => libc::SIGRTMIN() + 3,
        // Only busybox's own init: a Command that is some other applet gets SIGTERM.
        Some(p) if p.ends_with("/busybox") && init.ends_with("/init") => libc::SIGUSR2,
        _ => libc::SIGTERM,
    }
}

/// `init` (a path inside the rootfs) with the symlinks on its last component followed
/// within the rootfs, as /sbin/init usually is one.
pub fn resolve(rootfs: &Path, init: &str) -> Option<String> {
    let mut path = init.to_string();
    for _ in 0..8 {
        let on_host = rootfs.join(path.trim_start_matches('/'));
        // readlink alone, no stat first: every HaltSignal read (each machine of a
        // GetManagedObjects) comes here.
        match std::fs::read_link(&on_host) {
            Ok(target) => {
                let t = target.to_string_lossy().to_string();
                path = if t.starts_with('/') {
                    t
                } else {
                    let parent = Path::new(&path).parent().unwrap_or(Path::new("/"));
                    parent.join(t).to_string_lossy().to_string()
                };
            }
            // Not a link; or not there, where a dangling link still tells what it meant
            // (merged /usr trees link /lib).
            Err(_) => return Some(path),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fake_root(tag: &str) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("berth-init-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sbin")).unwrap();
        std::fs::create_dir_all(root.join("lib/systemd")).unwrap();
        symlink("../lib/systemd/systemd", root.join("sbin/init")).unwrap();
        symlink("/bin/busybox", root.join("sbin/halt")).unwrap();
        root
    }

    #[test]
    fn init_is_resolved_through_links() {
        let root = fake_root("links");
        assert_eq!(
            resolve(&root, "/sbin/init").as_deref(),
            Some("/sbin/../lib/systemd/systemd")
        );
        assert_eq!(
            resolve(&root, "/sbin/halt").as_deref(),
            Some("/bin/busybox")
        );
        assert_eq!(resolve(&root, "/bin/sh").as_deref(), Some("/bin/sh"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn halt_signal_by_init() {
        let root = fake_root("halt");
        let sh = vec!["/bin/sh".to_string()];
        assert_eq!(halt_signal(&root, &[], None), libc::SIGRTMIN() + 3);
        assert_eq!(halt_signal(&root, &sh, None), libc::SIGTERM);
        assert_eq!(halt_signal(&root, &sh, Some(libc::SIGINT)), libc::SIGINT);

        let bb = std::env::temp_dir().join(format!("berth-init-bb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&bb);
        std::fs::create_dir_all(bb.join("sbin")).unwrap();
        symlink("/bin/busybox", bb.join("sbin/init")).unwrap();
        assert_eq!(halt_signal(&bb, &[], None), libc::SIGUSR2);
        let halt = vec!["/sbin/halt".to_string()];
        assert_eq!(halt_signal(&root, &halt, None), libc::SIGTERM);
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&bb).unwrap();
    }
}
