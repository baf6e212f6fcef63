//! Disk quotas (`--disk-quota`, issue 11) in a test host: refused clearly where the file
//! system can't hold them; with /var/lib/berth/machines on a btrfs with quotas enabled,
//! an unprivileged machine cannot write past its quota, `status` shows what it uses,
//! `set --disk-quota` changes the limit while it runs, and a clone gets a subvolume and a
//! quota of its own.

mod common;

use common::{CgroupMode, TestHost, assert_no_leftovers, boot_with_berth, wait_until};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// PID 1 a shell that ends at once on SIGTERM.
const STOPS_FAST: &str = "trap 'exit 0' TERM; while :; do sleep 1; done";

/// A loop device with a fresh btrfs, attached on this machine (the test host's /dev has no
/// loop devices); detached and deleted on drop.
struct QuotaDisk {
    image: PathBuf,
    device: String,
}

impl QuotaDisk {
    fn new(test: &str) -> QuotaDisk {
        let image = std::env::temp_dir().join(format!("berth-{test}-{}.img", std::process::id()));
        run("truncate", &["-s", "256M", image.to_str().unwrap()]);
        run("mkfs.btrfs", &["-q", "-f", image.to_str().unwrap()]);
        let device = run("losetup", &["--find", "--show", image.to_str().unwrap()])
            .trim()
            .to_string();
        QuotaDisk { image, device }
    }

    /// The device's minor number (loop devices are major 7).
    fn minor(&self) -> String {
        self.device.trim_start_matches("/dev/loop").to_string()
    }
}

impl Drop for QuotaDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn create(host: &TestHost, name: &str, flags: &str) -> std::process::Output {
    let mut argv: Vec<&str> = vec!["berthctl", "create", name, "--template", "busybox"];
    argv.extend(flags.split_whitespace());
    argv.extend(["--", "/bin/sh", "-c", STOPS_FAST]);
    host.run(&argv)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn disk_quota_holds_an_unprivileged_machine() {
    let Some(host) = boot_with_berth(
        CgroupMode::Hybrid,
        "disk_quota_holds_an_unprivileged_machine",
    ) else {
        return;
    };
    // The test host's files are on a tmpfs overlay: no quotas there.
    let out = create(&host, "q", "--disk-quota 8M");
    assert!(!out.status.success(), "a quota on a tmpfs was accepted");
    assert!(stderr(&out).contains("not btrfs"), "{}", stderr(&out));
    assert!(host.run(&["berthctl", "status", "q"]).status.code() != Some(0));

    let disk = QuotaDisk::new("quota");
    // machines/ on the quota disk, as an admin would mount it before berthd starts.
    host.run(&["systemctl", "stop", "berthd"]);
    host.ok(&[
        "sh",
        "-c",
        &format!(
            "mknod /dev/berth-quota b 7 {} && mkdir -p /var/lib/berth/machines && \
             mount /dev/berth-quota /var/lib/berth/machines && \
             chmod 700 /var/lib/berth/machines",
            disk.minor()
        ),
    ]);

    // btrfs, but quotas still off.
    let out = create(&host, "q", "--disk-quota 8M");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("quotas are off"), "{}", stderr(&out));
    host.okw("btrfs quota enable /var/lib/berth/machines");

    // An ephemeral machine has no tree of its own to hold.
    let out = create(&host, "e", "--ephemeral --disk-quota 8M");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ephemeral"), "{}", stderr(&out));

    let out = create(&host, "q", "--disk-quota 8M");
    assert!(out.status.success(), "{}", stderr(&out));
    host.okw("berthctl start q");
    let status = host.okw("berthctl status q");
    assert!(status.contains("used of 8M"), "{status}");

    // Writing 20 MiB stops at the quota; what was written stays under it.
    let out = host.shell("q", "dd if=/dev/zero of=/big bs=1M count=20 2>&1");
    assert!(!out.status.success(), "20M written under an 8M quota");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("quota"), "dd said: {said}");
    let size: u64 = host
        .shell_ok("q", "wc -c < /big")
        .trim()
        .parse()
        .expect("a size");
    assert!(size <= 8 << 20, "{size} bytes written under an 8M quota");

    // A larger limit applies while it runs.
    host.okw("berthctl set q --disk-quota 64M");
    host.shell_ok(
        "q",
        "rm /big && dd if=/dev/zero of=/big bs=1M count=20 2>&1",
    );
    let status = host.okw("berthctl status q");
    assert!(status.contains("used of 64M"), "{status}");
    // btrfs counts what a transaction committed.
    host.okw("btrfs filesystem sync /var/lib/berth/machines");
    // DiskUsage, like the other figures, answers for 500 ms from one read.
    let usage = || {
        host.okw("busctl get-property org.berth.Berth1 /org/berth/Berth1/machine/q org.berth.Berth1.Machine DiskUsage")
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
    };
    assert!(
        wait_until(
            "DiskUsage to count what was written",
            Duration::from_secs(5),
            || { usage().is_some_and(|n| n >= 20 << 20) }
        ),
        "DiskUsage below what was written: {:?}",
        usage()
    );
    host.okw("berthctl stop q");

    // A clone is a subvolume of its own with the same quota.
    host.okw("berthctl clone q c");
    let status = host.okw("berthctl status c");
    assert!(status.contains("used of 64M"), "{status}");
    let subvolumes = host.okw("btrfs subvolume list /var/lib/berth/machines");
    assert!(
        subvolumes.contains("path q/rootfs") && subvolumes.contains("path c/rootfs"),
        "{subvolumes}"
    );

    // Dropping the quota.
    host.okw("berthctl set c --disk-quota none");
    assert!(!host.okw("berthctl status c").contains("used of"));

    host.okw("berthctl remove q");
    host.okw("berthctl remove c");
    // The file system goes first: the leftovers check counts every mount under machines/.
    assert_eq!(host.okw("ls -A /var/lib/berth/machines"), "");
    host.run(&["systemctl", "stop", "berthd"]);
    host.ok(&["umount", "/var/lib/berth/machines"]);
    assert_no_leftovers(&host);
}
