//! A Debian (bookworm) template for tests that boot systemd inside a machine.
//!
//! TEMPORARY: until `berthctl template build` exists, the tree is made once on this
//! machine with debootstrap (kept in /var/tmp/berth-debian, or BERTH_DEBIAN_TREE) and
//! copied into the host's templates directory, where berth takes a directory
//! `templates/NAME/rootfs` for a template that boots /sbin/init (src/template/mod.rs,
//! `lookup`). When template building lands, this body becomes a `template build`.

use super::TestHost;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The template's name inside every host.
pub const NAME: &str = "debian";

/// Makes the Debian template available to berth in `host`; returns its name.
pub fn debian_template(host: &TestHost) -> String {
    let tree = debian_tree();
    let templates = host.path("/var/lib/berth/templates");
    fs::create_dir_all(&templates).expect("templates directory in the host");
    let staging = templates.join(format!(".{NAME}.copy"));
    let dir = templates.join(NAME);
    if dir.join("rootfs").is_dir() {
        return NAME.to_string();
    }
    // Written from outside through /proc/PID/root: the host's overlay may not show a
    // tree that debootstrap made after the host booted.
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).unwrap();
    let out = Command::new("cp")
        .arg("-a")
        .arg(&tree)
        .arg(staging.join("rootfs"))
        .output()
        .expect("cp runs");
    assert!(
        out.status.success(),
        "copying {} into the host: {}",
        tree.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    fs::rename(&staging, &dir).unwrap();
    NAME.to_string()
}

/// The debootstrapped tree on this machine, made once (under a lock, so that concurrent
/// test processes build it only once).
fn debian_tree() -> PathBuf {
    let tree = std::env::var_os("BERTH_DEBIAN_TREE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/berth-debian"));
    let lock_path = tree.with_extension("lock");
    let lock =
        fs::File::create(&lock_path).unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
    // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    if !tree.join("sbin/init").exists() {
        build(&tree);
    }
    drop(lock);
    tree
}

fn build(tree: &Path) {
    let staging = tree.with_extension("build");
    let _ = fs::remove_dir_all(&staging);
    eprintln!(
        "building a Debian tree in {} with debootstrap (once)",
        tree.display()
    );
    let status = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=systemd,systemd-sysv,dbus,iproute2,procps",
            "bookworm",
        ])
        .arg(&staging)
        .status()
        .expect("debootstrap runs (apt-get install debootstrap)");
    assert!(status.success(), "debootstrap failed: {status}");
    fs::rename(&staging, tree).unwrap();
}
