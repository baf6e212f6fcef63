//! Clones and snapshots of machines: copies that keep the tree and settings, refusals
//! that name what was wrong, and nothing left behind.

mod common;

use common::{
    CgroupMode, TestHost, assert_in_own_range, assert_no_leftovers, boot_with_berth, wait_until,
};
use std::time::Duration;

fn file_in(host: &TestHost, machine: &str, path: &str) -> String {
    host.read(&format!("/var/lib/berth/machines/{machine}/rootfs{path}"))
        .unwrap_or_default()
}

#[test]
fn clone_and_snapshots() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "clone_and_snapshots") else {
        return;
    };
    // Privileged: clones of a machine whose files are shifted on disk (unprivileged, on
    // the test host's overlayfs) are not there yet.
    host.okw("berthctl create web --template busybox --memory 64M --private-users no");
    host.okw("berthctl start web");
    host.ok(&[
        "berthctl",
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo one > /srv-data",
    ]);
    let e = host.failsw("berthctl clone web web2");
    assert!(
        e.contains("web is running; stop it before you clone it"),
        "{e}"
    );
    let e = host.failsw("berthctl snapshot web s1");
    assert!(e.contains("stop it before you snapshot it"), "{e}");
    host.okw("berthctl stop web");

    // A clone: same tree and limits, its own name and hostname.
    host.okw("berthctl clone web web2");
    assert_eq!(file_in(&host, "web2", "/srv-data"), "one\n");
    assert_eq!(file_in(&host, "web2", "/etc/hostname"), "web2\n");
    let status = host.okw("berthctl status web2 --json");
    assert!(
        status.contains("67108864") || status.contains("64M"),
        "{status}"
    );
    host.okw("berthctl start web2");
    assert_eq!(host.okw("berthctl exec web2 -- hostname").trim(), "web2");
    host.okw("berthctl stop web2");
    let e = host.failsw("berthctl clone web web2");
    assert!(e.contains("already exists"), "{e}");
    let e = host.failsw("berthctl clone nope x");
    assert!(e.contains("no machine named \"nope\""), "{e}");

    // An ephemeral clone runs on an overlay of web's files (no copy) and goes away when
    // it stops; web stays as it was, and can't start or go while scratch exists.
    host.okw("berthctl clone web scratch --ephemeral");
    assert!(
        !host.path("/var/lib/berth/machines/scratch/rootfs").exists(),
        "nothing copied"
    );
    host.okw("berthctl start scratch");
    host.ok(&[
        "berthctl",
        "exec",
        "scratch",
        "--",
        "sh",
        "-c",
        "echo three > /srv-data",
    ]);
    assert_eq!(
        host.okw("berthctl exec scratch -- cat /srv-data"),
        "three\n"
    );
    assert_eq!(
        host.okw("berthctl exec scratch -- hostname").trim(),
        "scratch"
    );
    assert_eq!(
        file_in(&host, "web", "/srv-data"),
        "one\n",
        "the base is untouched"
    );
    let e = host.failsw("berthctl start web");
    assert!(
        e.contains("ephemeral machine scratch runs on an overlay"),
        "{e}"
    );
    let e = host.failsw("berthctl remove web");
    assert!(e.contains("scratch"), "{e}");
    host.okw("berthctl stop scratch");
    assert!(
        wait_until("scratch is gone", Duration::from_secs(10), || {
            !host.okw("berthctl list").contains("scratch")
        }),
        "ephemeral clone removed"
    );

    // Snapshots: taken, listed, restored over the machine and into a new one.
    host.ok(&[
        "berthctl",
        "snapshot",
        "web",
        "before",
        "--comment",
        "pre 13",
    ]);
    let listed = host.okw("berthctl snapshots web");
    assert!(
        listed.starts_with("NAME") && listed.contains("before") && listed.contains("pre 13"),
        "{listed}"
    );
    let e = host.failsw("berthctl snapshot web before");
    assert!(e.contains("already exists"), "{e}");
    host.okw("berthctl start web");
    host.ok(&[
        "berthctl",
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        "echo two > /srv-data",
    ]);
    let e = host.failsw("berthctl restore web before");
    assert!(e.contains("stop it before you restore it"), "{e}");
    host.okw("berthctl stop web");
    assert_eq!(file_in(&host, "web", "/srv-data"), "two\n");
    host.okw("berthctl restore web before --as web-old");
    assert_eq!(file_in(&host, "web-old", "/srv-data"), "one\n");
    host.okw("berthctl restore web before");
    assert_eq!(file_in(&host, "web", "/srv-data"), "one\n");
    let e = host.failsw("berthctl restore web nosuch");
    assert!(e.contains("has no snapshot \"nosuch\""), "{e}");
    host.okw("berthctl snapshot-remove web before");
    let json = host.okw("berthctl snapshots web --json");
    assert_eq!(json.trim(), "[]");
    let e = host.failsw("berthctl snapshot-remove web before");
    assert!(e.contains("has no snapshot"), "{e}");
    let e = host.failsw("berthctl snapshot web ../x");
    assert!(e.contains("snapshot name"), "{e}");

    // An ephemeral machine from a template: O(1), its writes gone with it, and the
    // template kept while it exists. Privileged: on the test host's overlayfs an
    // unprivileged one is a copy (tests/hybrid.rs has its overlay, on a tmpfs).
    host.okw("berthctl template build bb --method busybox");
    host.okw("berthctl create eph --template bb --ephemeral --private-users no");
    assert!(
        !host.path("/var/lib/berth/machines/eph/rootfs").exists(),
        "nothing copied"
    );
    let e = host.failsw("berthctl template remove bb");
    assert!(
        e.contains("ephemeral machine eph runs on an overlay"),
        "{e}"
    );
    host.okw("berthctl start eph");
    host.ok(&[
        "berthctl",
        "exec",
        "eph",
        "--",
        "sh",
        "-c",
        "echo x > /etc/motd && rm /bin/ls",
    ]);
    assert!(
        host.path("/var/lib/berth/templates/bb/rootfs/bin/ls")
            .exists()
    );
    assert!(
        !host
            .path("/var/lib/berth/templates/bb/rootfs/etc/motd")
            .exists()
    );
    host.okw("berthctl stop eph");
    assert!(
        wait_until("eph is gone", Duration::from_secs(10), || {
            !host.okw("berthctl list").contains("eph")
        }),
        "ephemeral machine removed"
    );
    host.okw("berthctl template remove bb");

    for m in ["web", "web2", "web-old"] {
        host.okw(&format!("berthctl remove {m}"));
    }
    assert_no_leftovers(&host);
}

/// A POSIX ACL value (system.posix_acl_access) with a named user: user::rw-, user:ID:r--,
/// group::r--, mask::r--, other::r--.
fn acl(user: u32) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, user),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend(tag.to_le_bytes());
        v.extend(perm.to_le_bytes());
        v.extend(id.to_le_bytes());
    }
    v
}

/// A machine in a user namespace, on the host's overlay (its files shifted on disk):
/// a clone and a snapshot restored as a new machine each get a range of their own, their
/// files moved into it; restored over itself, it keeps its range.
#[test]
fn copies_of_an_unprivileged_machine_get_their_own_range() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "copies_of_unprivileged") else {
        return;
    };
    host.okw("berthctl create un --template busybox --private-users pick");
    host.okw("berthctl start un");
    host.ok(&[
        "berthctl",
        "exec",
        "un",
        "--",
        "sh",
        "-c",
        "echo one > /srv-data && chown 1000:1001 /srv-data",
    ]);
    host.okw("berthctl stop un");
    let owned = ("/srv-data", 1000, 1001);
    let base = assert_in_own_range(&host, "un", &[], owned);
    // An ACL naming the machine's user 1234 (set from the host: busybox has no setfacl).
    let acl_file = |m: &str| host.path(&format!("/var/lib/berth/machines/{m}/rootfs/srv-data"));
    xattr::set(acl_file("un"), "system.posix_acl_access", &acl(base + 1234)).unwrap();

    host.okw("berthctl clone un un2");
    let base2 = assert_in_own_range(&host, "un2", &[base], owned);
    assert_eq!(file_in(&host, "un2", "/srv-data"), "one\n");
    assert_eq!(file_in(&host, "un2", "/etc/hostname"), "un2\n");
    assert_eq!(
        xattr::get(acl_file("un2"), "system.posix_acl_access").unwrap(),
        Some(acl(base2 + 1234)),
        "the ACL's user moved with the files"
    );

    host.okw("berthctl snapshot un before");
    host.okw("berthctl start un");
    host.ok(&[
        "berthctl",
        "exec",
        "un",
        "--",
        "sh",
        "-c",
        "echo two > /srv-data",
    ]);
    host.okw("berthctl stop un");
    host.okw("berthctl restore un before --as un3");
    let base3 = assert_in_own_range(&host, "un3", &[base, base2], owned);
    assert_eq!(file_in(&host, "un3", "/srv-data"), "one\n");
    assert_eq!(
        xattr::get(acl_file("un3"), "system.posix_acl_access").unwrap(),
        Some(acl(base3 + 1234))
    );
    // Over itself: the snapshot's files as they were, in the range it keeps.
    host.okw("berthctl restore un before");
    assert_eq!(file_in(&host, "un", "/srv-data"), "one\n");
    assert_eq!(
        assert_in_own_range(&host, "un", &[base2, base3], owned),
        base
    );

    for m in ["un", "un2", "un3"] {
        host.okw(&format!("berthctl remove {m}"));
    }
    assert_no_leftovers(&host);
}
