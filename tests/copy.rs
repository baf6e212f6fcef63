//! copy-to and copy-from in a test host: files and trees into and out of an unprivileged
//! busybox machine, running and stopped, owners as the machine sees them, and symlinks
//! the machine planted never leading to the host's files.

mod common;

use common::{CgroupMode, TestHost, assert_no_leftovers, boot_with_berth};
use std::fs;

fn exec(host: &TestHost, cmd: &str) -> String {
    host.ok(&["berthctl", "exec", "web", "--", "/bin/sh", "-c", cmd])
}

/// /src in the host: index.html, and site/ with a.txt (root's) and sub/b.txt (uid 1000's).
fn sources(host: &TestHost) {
    fs::create_dir_all(host.path("/src/site/sub")).unwrap();
    fs::create_dir_all(host.path("/out")).unwrap();
    fs::write(host.path("/src/index.html"), "hello\n").unwrap();
    fs::write(host.path("/src/site/a.txt"), "a\n").unwrap();
    fs::write(host.path("/src/site/sub/b.txt"), "b\n").unwrap();
    host.okw("chown -R 1000:1000 /src/site/sub");
}

fn web(host: &TestHost) {
    host.okw("berthctl create web --template busybox");
    host.okw("berthctl start web");
    exec(host, "mkdir -p /var/www /srv");
}

#[test]
fn files_and_trees_go_in_and_out_with_their_owners() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "copy_in_and_out") else {
        return;
    };
    sources(&host);
    web(&host);

    // Into a running machine: a file into a directory, a tree to a new name.
    host.okw("berthctl copy-to web /src/index.html /var/www/");
    assert_eq!(exec(&host, "cat /var/www/index.html"), "hello\n");
    host.okw("berthctl copy-to web /src/site /srv/site");
    assert_eq!(
        exec(&host, "cat /srv/site/a.txt /srv/site/sub/b.txt"),
        "a\nb\n"
    );
    assert_eq!(
        exec(
            &host,
            "stat -c %u:%g /srv/site/a.txt /srv/site/sub /srv/site/sub/b.txt"
        ),
        "0:0\n1000:1000\n1000:1000\n"
    );
    // A file replaces a file, as cp does.
    fs::write(host.path("/src/index.html"), "again\n").unwrap();
    host.okw("berthctl copy-to web /src/index.html /var/www/index.html");
    assert_eq!(exec(&host, "cat /var/www/index.html"), "again\n");
    // The machine's /tmp is its own tmpfs: what its processes see is what is copied.
    host.okw("berthctl copy-to web /src/index.html /tmp/");
    assert_eq!(exec(&host, "cat /tmp/index.html"), "again\n");

    // Out of it: a file into a directory, a tree to a new name, owners as inside.
    host.okw("berthctl copy-from web /etc/hostname /out/");
    assert_eq!(host.read("/out/hostname").unwrap().trim(), "web");
    exec(
        &host,
        "echo inside > /tmp/t && chown 1000:1000 /srv/site/a.txt",
    );
    host.okw("berthctl copy-from web /tmp/t /out/t2");
    assert_eq!(host.read("/out/t2").unwrap(), "inside\n");
    host.okw("berthctl copy-from web /srv/site /out/");
    let listing = host.okw("ls -lnR /out");
    assert_eq!(
        host.read("/out/site/sub/b.txt").ok().as_deref(),
        Some("b\n"),
        "{listing}"
    );
    assert_eq!(
        host.okw("stat -c %u:%g /out/site/a.txt /out/site/sub/b.txt /out/site"),
        "1000:1000\n1000:1000\n0:0\n"
    );

    // A stopped machine: its rootfs on disk, shifted; the owners show right once started.
    host.okw("berthctl stop web");
    host.okw("berthctl copy-to web /src/site /srv/stopped");
    host.okw("berthctl copy-from web /var/www/index.html /out/stopped.html");
    assert_eq!(host.read("/out/stopped.html").unwrap(), "again\n");
    host.okw("berthctl start web");
    assert_eq!(
        exec(
            &host,
            "stat -c %u /srv/stopped/a.txt /srv/stopped/sub/b.txt"
        ),
        "0\n1000\n"
    );
    assert_eq!(exec(&host, "cat /srv/stopped/sub/b.txt"), "b\n");

    host.okw("berthctl stop web");
    host.okw("berthctl remove web");
    assert_no_leftovers(&host);
}

#[test]
fn symlinks_inside_lead_nowhere_outside() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "copy_escapes") else {
        return;
    };
    sources(&host);
    fs::write(host.path("/tmp/hostsecret"), "secret\n").unwrap();
    web(&host);
    exec(
        &host,
        "ln -s /tmp /escape && ln -s /tmp/hostsecret /link && echo mine > /tmp/minefile",
    );

    // Through /escape -> /tmp: the machine's /tmp, not the host's.
    host.okw("berthctl copy-to web /src/index.html /escape/x");
    assert_eq!(exec(&host, "cat /tmp/x"), "hello\n");
    assert!(
        !host.path("/tmp/x").exists(),
        "copy-to wrote the host's /tmp"
    );
    host.okw("berthctl copy-from web /escape/minefile /out/");
    assert_eq!(host.read("/out/minefile").unwrap(), "mine\n");
    // The host's file is not reached through either link.
    let e = host.failsw("berthctl copy-from web /escape/hostsecret /out/");
    assert!(e.contains("does not exist in machine web"), "{e}");
    assert!(!host.path("/out/hostsecret").exists());
    host.okw("berthctl copy-from web /link /out/");
    let link = fs::symlink_metadata(host.path("/out/link")).unwrap();
    assert!(link.file_type().is_symlink(), "a symlink is copied as one");
    // Kernel file systems mounted inside answer as the host's root: refused.
    exec(&host, "ln -s /proc/sys/kernel /k");
    let e = host.failsw("berthctl copy-from web /k/core_pattern /out/");
    assert!(e.contains("kernel file system"), "{e}");

    // Bad input: one line each.
    let e = host.failsw("berthctl copy-to web /src/nope /tmp/");
    assert!(e.contains("does not exist"), "{e}");
    let e = host.failsw("berthctl copy-from web /nope /out/");
    assert!(e.contains("does not exist in machine web"), "{e}");
    let e = host.failsw("berthctl copy-to web /src/index.html tmp/y");
    assert!(e.contains("must be absolute"), "{e}");
    let e = host.failsw("berthctl copy-to web /src/index.html /nodir/y");
    assert!(e.contains("does not exist in machine web"), "{e}");
    // A tree onto an existing directory's same name is refused, not merged.
    host.okw("berthctl copy-to web /src/site /srv/");
    let e = host.failsw("berthctl copy-to web /src/site /srv/");
    assert!(e.contains("already exists"), "{e}");

    host.okw("berthctl stop web");
    host.okw("berthctl remove web");
    assert_no_leftovers(&host);
}
