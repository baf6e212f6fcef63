//! Binds, /tmp's size, the halt signal and the stop timeout from `berthctl create`, in a
//! test host: a read-write bind written inside and read on the host (unprivileged and
//! privileged), a read-only one, targets made inside, and the refusals: a missing source,
//! a target leading out of the root through a symlink (in a template at create, planted
//! in the machine's tree before a start).

mod common;

use common::{CgroupMode, TestHost, assert_no_leftovers, boot_with_berth};

/// PID 1 a shell that ends at once on SIGTERM.
const STOPS_FAST: &str = "trap 'exit 0' TERM; while :; do sleep 1; done";

fn create(host: &TestHost, name: &str, flags: &str) {
    let mut argv: Vec<&str> = vec!["berthctl", "create", name, "--template", "busybox"];
    argv.extend(flags.split_whitespace());
    argv.extend(["--", "/bin/sh", "-c", STOPS_FAST]);
    host.ok(&argv);
}

fn rootfs(name: &str) -> String {
    format!("/var/lib/berth/machines/{name}/rootfs")
}

#[test]
fn binds_tmp_size_and_stop_settings() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "binds_tmp_size_and_stop_settings") else {
        return;
    };
    // Open to everyone: in a user namespace the host's root owns it as nobody.
    host.okw("mkdir -p /srv/db /srv/ssl");
    host.okw("chmod 1777 /srv/db");
    host.ok(&["sh", "-c", "echo cert > /srv/ssl/cert"]);

    create(
        &host,
        "m",
        "--bind /srv/db:/var/lib/db --bind-ro /srv/ssl:/etc/ssl \
         --bind-ro /srv/ssl/cert:/opt/new/cert.pem \
         --tmp-size 32M --halt-signal SIGTERM --stop-timeout 30s",
    );
    let status = host.okw("berthctl status m");
    for line in [
        "/srv/db:/var/lib/db /srv/ssl:/etc/ssl (ro) /srv/ssl/cert:/opt/new/cert.pem (ro)",
        "Tmp size:       32M",
        "Halt signal:    SIGTERM",
        "Stop timeout:   30.000s",
    ] {
        assert!(status.contains(line), "{line} not in:\n{status}");
    }
    host.okw("berthctl start m");

    // Read-write: written inside, read on the host.
    host.shell_ok("m", "echo inside > /var/lib/db/f");
    assert_eq!(host.okw("cat /srv/db/f"), "inside\n");
    // Read-only: read, but not written.
    assert_eq!(host.shell_ok("m", "cat /etc/ssl/cert"), "cert\n");
    assert!(!host.shell("m", "echo x > /etc/ssl/t").status.success());
    assert!(
        !host
            .shell("m", "echo x > /opt/new/cert.pem")
            .status
            .success()
    );
    assert!(!host.path("/srv/ssl/t").exists());
    // Targets made inside: a directory for a directory, a file for a file.
    assert!(host.path(&format!("{}/var/lib/db", rootfs("m"))).is_dir());
    assert!(
        host.path(&format!("{}/opt/new/cert.pem", rootfs("m")))
            .is_file()
    );
    let mounts = host.shell_ok("m", "cat /proc/mounts");
    let tmp = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/tmp"))
        .unwrap_or_else(|| panic!("no /tmp in:\n{mounts}"));
    assert!(tmp.contains("size=32768k"), "{tmp}");
    let db = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/var/lib/db"))
        .unwrap_or_else(|| panic!("no /var/lib/db in:\n{mounts}"));
    assert!(db.contains("nosuid") && db.contains("nodev"), "{db}");
    host.okw("berthctl stop m");

    // Privileged: the same bind, the host's owners as they are.
    create(&host, "p", "--private-users no --bind /srv/db:/data");
    host.okw("berthctl start p");
    host.shell_ok("p", "echo privileged > /data/g && chown 0:0 /data/g");
    assert_eq!(host.okw("cat /srv/db/g"), "privileged\n");
    assert_eq!(host.okw("stat -c %u /srv/db/g"), "0\n");
    host.okw("berthctl stop p");

    // Ephemeral machines may have binds too: the target goes on the overlay.
    create(&host, "e", "--ephemeral --bind /srv/db:/data");
    host.okw("berthctl start e");
    assert_eq!(host.shell_ok("e", "cat /data/g"), "privileged\n");
    host.okw("berthctl stop e");

    // A symlink planted in the machine's tree after create, to lead the bind out: the
    // start fails naming it, and nothing is made or mounted outside.
    create(&host, "s", "--bind /srv/db:/mnt/out/db");
    let planted = format!("{}/mnt", rootfs("s"));
    host.ok(&["rm", "-rf", &planted]);
    host.ok(&["ln", "-s", "/tmp", &planted]);
    let e = host.failsw("berthctl start s");
    assert!(e.contains("/mnt leads out of the machine's root"), "{e}");
    assert!(!host.path("/tmp/out").exists());

    for m in ["m", "p", "s"] {
        host.ok(&["berthctl", "remove", m]);
    }
    assert_no_leftovers(&host);
}

#[test]
fn bad_binds_are_refused_at_create() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "bad_binds_are_refused_at_create") else {
        return;
    };
    host.okw("mkdir -p /srv/db /srv/tree/etc");
    host.okw("ln -s /tmp /srv/tree/escape");
    host.okw("ln -s ../.. /srv/tree/etc/up");
    host.okw("berthctl template build esc --method directory --source /srv/tree --no-progress");
    for (cmdline, says) in [
        (
            "berthctl create x -t esc --bind /srv/nothing:/db",
            "bind source /srv/nothing does not exist",
        ),
        (
            "berthctl create x -t esc --bind srv/db:/db",
            "bind source srv/db: give an absolute path",
        ),
        (
            "berthctl create x -t esc --bind /srv/db:db",
            "bind target db: give an absolute path",
        ),
        (
            "berthctl create x -t esc --bind /srv/db:/a/../../db",
            "'..' is not allowed",
        ),
        (
            "berthctl create x -t esc --bind /srv/db:/escape/db",
            "bind target /escape/db: /escape leads out of the machine's root",
        ),
        (
            "berthctl create x -t esc --bind-ro /srv/db:/etc/up/db",
            "/etc/up leads out of the machine's root",
        ),
        (
            "berthctl create x -t esc --bind /srv/db:/",
            "root itself cannot be a target",
        ),
        ("berthctl create x -t esc --tmp-size 0", "TmpSize"),
        ("berthctl create x -t esc --stop-timeout 2h", "one hour"),
    ] {
        let e = host.failsw(cmdline);
        assert!(e.contains(says), "{cmdline}: {e}");
    }
    // Refused by berthctl itself, with clap's usage lines.
    for (cmdline, says) in [
        ("berthctl create x -t esc --halt-signal SIGNOPE", "SIGNOPE"),
        ("berthctl create x -t esc --stop-timeout soon", "soon"),
        ("berthctl create x -t esc --bind :/db", ":/db"),
    ] {
        let out = host.runw(cmdline);
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && e.contains(says), "{cmdline}: {e}");
    }
    assert!(!host.path("/tmp/db").exists());
    assert!(!host.path("/var/lib/berth/machines/x").exists());
}
