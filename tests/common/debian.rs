//! A Debian template in a test host, built by berth's debootstrap method once per test
//! run and shared by every test that needs one: the first test to ask builds it for real
//! (in its host, through an uplink to the archive) and leaves a copy of the tree in the
//! target directory, which every host sees live; later hosts build their template from
//! that copy with the directory method, without the network.

use super::{TestHost, uplink::Uplink};
use std::fs;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub const SUITE: &str = "bookworm";
/// debootstrap of a minbase with systemd takes about a minute here; give it room.
const BUILD_LIMIT: Duration = Duration::from_secs(900);

/// Where this run's tree is kept: below the target directory (bound live into hosts),
/// one directory per nextest run so that each run builds once for real.
fn cache_dir() -> PathBuf {
    let run = std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| "local".into());
    super::host::test_cache_dir().join(format!("debian-{SUITE}-{run}"))
}

/// Removes the trees of earlier runs: 250 MB each.
fn forget_other_runs(keep: &std::path::Path) {
    let Some(parent) = keep.parent() else { return };
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if p != keep && name.starts_with("debian-") {
            let _ = fs::remove_dir_all(&p);
        }
    }
}

/// Builds a template NAME in `host` from Debian and returns NAME. The first caller of the
/// run builds it with debootstrap (and says so: true); the others copy the first's tree.
pub fn debian_template(host: &TestHost, name: &str) -> bool {
    let dir = cache_dir();
    fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let lock = fs::File::create(dir.with_extension("lock")).unwrap();
    // SAFETY: flock on a file we own; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let tree = dir.join("rootfs");
    if dir.join("ready").exists() {
        let out = host.run_for(
            BUILD_LIMIT,
            &[
                "berthctl",
                "template",
                "build",
                name,
                "--method",
                "directory",
                "--source",
                tree.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "directory build from the cached Debian tree: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return false;
    }
    forget_other_runs(&dir);
    let _uplink = Uplink::up(host);
    let out = host.run_for(
        BUILD_LIMIT,
        &[
            "berthctl",
            "template",
            "build",
            name,
            "--method",
            "debootstrap",
            "--suite",
            SUITE,
            "--no-progress",
        ],
    );
    assert!(
        out.status.success(),
        "debootstrap build failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        host.journal("berthd.service")
    );
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let built = host.path(&format!("/var/lib/berth/templates/{name}/rootfs"));
    let status = Command::new("cp")
        .arg("-a")
        .arg(&built)
        .arg(&tree)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "copying the built tree to {}",
        tree.display()
    );
    fs::write(dir.join("ready"), b"").unwrap();
    true
}
