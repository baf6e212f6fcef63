//! What berth needs to know about a machine's init: which program runs as PID 1 and which
//! signal asks it to power off. systemd halts on SIGRTMIN+3, busybox init on SIGUSR2 (its
//! SIGTERM means reboot); anything else gets SIGTERM.

use super::TemplateInfo;
use std::path::Path;

/// argv of PID 1: the machine's own command, else the template's init.
pub fn pid1_argv(command: &[String], template: &TemplateInfo) -> Vec<String> {
    if command.is_empty() {
        template.init.iter().map(|s| s.to_string()).collect()
    } else {
        command.to_vec()
    }
}

/// The signal that asks this machine's init to power off: the configured one, else
/// SIGRTMIN+3 for systemd, else what the template's init wants, else SIGTERM.
pub fn halt_signal(
    rootfs: &Path,
    command: &[String],
    template: Option<&TemplateInfo>,
    configured: Option<i32>,
) -> i32 {
    if let Some(s) = configured {
        return s;
    }
    let init = command
        .first()
        .map(String::as_str)
        .or_else(|| template.and_then(|t| t.init.first().copied()));
    let Some(init) = init else {
        return libc::SIGTERM;
    };
    if resolves_to_systemd(rootfs, init) {
        return libc::SIGRTMIN() + 3;
    }
    match template {
        Some(t) if command.is_empty() => t.halt_signal,
        _ => libc::SIGTERM,
    }
}

/// Whether `init` (a path inside the rootfs) is systemd, following symlinks within the
/// rootfs as /sbin/init usually is one.
pub fn resolves_to_systemd(rootfs: &Path, init: &str) -> bool {
    let mut path = init.to_string();
    for _ in 0..8 {
        if path.ends_with("/systemd") {
            return true;
        }
        let on_host = rootfs.join(path.trim_start_matches('/'));
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
            Err(_) => return false,
        }
    }
    false
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
    fn systemd_init_is_recognized_through_links() {
        let root = fake_root("links");
        assert!(resolves_to_systemd(&root, "/sbin/init"));
        assert!(resolves_to_systemd(&root, "/lib/systemd/systemd"));
        assert!(!resolves_to_systemd(&root, "/sbin/halt"));
        assert!(!resolves_to_systemd(&root, "/bin/sh"));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn halt_signal_by_init() {
        let root = fake_root("halt");
        let busybox = &crate::template::busybox::INFO;
        let sh = vec!["/bin/sh".to_string()];
        // The template's own init is systemd here (its /sbin/init links to it).
        assert_eq!(
            halt_signal(&root, &[], Some(busybox), None),
            libc::SIGRTMIN() + 3
        );
        assert_eq!(halt_signal(&root, &sh, Some(busybox), None), libc::SIGTERM);
        assert_eq!(
            halt_signal(&root, &sh, Some(busybox), Some(libc::SIGINT)),
            libc::SIGINT
        );
        let plain = std::env::temp_dir().join("berth-init-none");
        assert_eq!(halt_signal(&plain, &[], Some(busybox), None), libc::SIGUSR2);
        assert_eq!(halt_signal(&plain, &[], None, None), libc::SIGTERM);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
