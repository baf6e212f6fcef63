//! Export and import, the tar and directory template methods, and what hostile archives
//! and sources get: a clear one-line error naming the bad entry, and nothing left.

mod common;

use common::{CgroupMode, TestHost, assert_in_own_range, assert_no_leftovers, boot_with_berth};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Every path below `root` with what must survive a copy: type and mode, owner, link
/// count, symlink target, extended attributes, mtime.
fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let target = std::fs::read_link(&path)
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            let mut attrs: Vec<String> = xattr::list(&path)
                .map(|names| {
                    names
                        .map(|n| {
                            let v = xattr::get(&path, &n).ok().flatten().unwrap_or_default();
                            format!("{}={v:?}", n.to_string_lossy())
                        })
                        .collect()
                })
                .unwrap_or_default();
            attrs.sort();
            let mtime = if meta.is_dir() { 0 } else { meta.mtime() };
            out.insert(
                rel,
                format!(
                    "{:o} {}:{} n{} {target} {attrs:?} {mtime}",
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    if meta.is_dir() { 0 } else { meta.nlink() }
                ),
            );
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

fn machine_rootfs(host: &TestHost, name: &str) -> std::path::PathBuf {
    host.path(&format!("/var/lib/berth/machines/{name}/rootfs"))
}

#[test]
fn export_import_round_trip_and_the_tar_method() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "export_import_round_trip") else {
        return;
    };
    // Privileged: the export of a machine whose files are shifted on disk (unprivileged,
    // on the test host's overlayfs) is not there yet.
    host.okw(
        "berthctl create web --template busybox --memory 64M --hostname www --private-users no",
    );
    // Things a plain copy loses: setuid, owners, hard links, xattrs, a FIFO.
    let root = machine_rootfs(&host, "web");
    host.ok(&["sh", "-c", &format!(
        "cd {r} && echo hi > srv && chown 1000:1000 srv && chmod 4755 srv && ln srv srv.link && \
         mkfifo run-fifo",
        r = "/var/lib/berth/machines/web/rootfs"
    )]);
    assert!(root.join("srv.link").exists(), "the tree was prepared");
    xattr::set(root.join("srv"), "user.note", b"hello").unwrap();
    // cap_net_raw+ep, as ping has it: a file capability (v2).
    let cap = [
        1u8, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    xattr::set(root.join("bin/busybox"), "security.capability", &cap).unwrap();
    let before = listing(&root);

    for format in ["tar", "tar.gz", "tar.xz", "tar.zst"] {
        let file = format!("/var/tmp/web.{format}");
        host.ok(&["berthctl", "export", "web", &file, "--no-progress"]);
        let copy = format!("copy-{}", format.replace('.', "-"));
        host.ok(&["berthctl", "import", &file, &copy, "--no-progress"]);
        let after = listing(&machine_rootfs(&host, &copy));
        let differ: Vec<_> = before
            .iter()
            .filter(|(k, v)| {
                // The copy has its own machine ID; hostname is www in both.
                k.as_str() != "etc/machine-id" && after.get(*k) != Some(*v)
            })
            .map(|(k, v)| format!("{k}: {v} vs {:?}", after.get(k)))
            .collect();
        assert!(differ.is_empty(), "{format}: trees differ: {differ:#?}");
        assert_eq!(before.len(), after.len(), "{format}: same entries");
        // Its settings came along; its identity did not.
        let status = host.okw(&format!("berthctl status {copy} --json"));
        assert!(status.contains("67108864"), "{status}");
        assert!(
            host.read(&format!("/var/lib/berth/machines/{copy}/config.toml"))
                .unwrap()
                .contains("hostname = \"www\"")
        );
        host.okw(&format!("berthctl start {copy}"));
        host.okw(&format!("berthctl exec {copy} -- /bin/true"));
        host.okw(&format!("berthctl remove --force {copy}"));
    }

    // --rootfs-only to stdout: a plain rootfs tarball GNU tar reads, and the tar method
    // builds a template from it on stdin.
    host.ok(&[
        "sh",
        "-c",
        "berthctl export web - --rootfs-only --format tar > /var/tmp/rootfs.tar",
    ]);
    let listed = host.ok(&["tar", "-tf", "/var/tmp/rootfs.tar"]);
    assert!(
        listed
            .lines()
            .any(|l| l.trim_start_matches("./") == "bin/busybox"),
        "{listed}"
    );
    assert!(!listed.contains("config.toml"), "rootfs only");
    // machinectl takes it as it is (systemd-importd), here xz-compressed.
    host.ok(&[
        "sh",
        "-c",
        "berthctl export web - --rootfs-only --format tar.xz > /var/tmp/rootfs.tar.xz",
    ]);
    host.ok(&[
        "machinectl",
        "import-tar",
        "/var/tmp/rootfs.tar.xz",
        "imported",
    ]);
    assert!(
        host.path("/var/lib/machines/imported/bin/busybox").exists(),
        "machinectl imported it"
    );
    host.ok(&["machinectl", "remove", "imported"]);
    host.ok(&[
        "sh",
        "-c",
        "berthctl template build fromtar --method tar --file - --no-progress < /var/tmp/rootfs.tar",
    ]);
    host.okw("berthctl create t1 --template fromtar");
    host.okw("berthctl start t1");
    let out = host.run(&["berthctl", "exec", "t1", "--", "cat", "/srv"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hi",
        "{}; {}",
        String::from_utf8_lossy(&out.stderr),
        host.ok(&[
            "ls",
            "-la",
            "/var/lib/berth/templates/fromtar/rootfs/",
            "/var/lib/berth/machines/t1/rootfs"
        ])
    );
    host.okw("berthctl remove --force t1");
    host.okw("berthctl template remove fromtar");

    let e = host.fails(&["berthctl", "export", "web", "/var/tmp/x.zip"]);
    assert!(e.contains("cannot tell the format"), "{e}");
    assert!(!host.path("/var/tmp/x.zip").exists(), "no file left");
    host.okw("berthctl start web");
    let e = host.fails(&["berthctl", "export", "web", "/var/tmp/running.tar"]);
    assert!(e.contains("stop it before you export it"), "{e}");
    assert!(
        !host.path("/var/tmp/running.tar").exists(),
        "no half archive left"
    );
    host.okw("berthctl remove --force web");
    assert_no_leftovers(&host);
}

/// Archives made to hurt: each refused with the bad entry named, and no template, no
/// staging directory, nothing outside the tree written.
#[test]
fn hostile_archives_and_sources_are_refused() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "hostile_archives") else {
        return;
    };
    let maker = r#"
import io, os, sys, tarfile
d = "/var/tmp/evil"
os.makedirs(d, exist_ok=True)
def tar(name, entries, mode="w"):
    with tarfile.open(f"{d}/{name}", mode) as t:
        for ti, data in entries:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
def f(name, data=b"x"):
    ti = tarfile.TarInfo(name); ti.size = len(data); return (ti, data)
def link(name, target, kind):
    ti = tarfile.TarInfo(name); ti.type = kind; ti.linkname = target; return (ti, None)
tar("dotdot.tar", [f("ok"), f("../escaped")])
tar("absolute.tar", [f("/etc/evil")])
tar("through-symlink.tar", [link("evil", "/etc", tarfile.SYMTYPE), f("evil/passwd")])
tar("hardlink-out.tar", [link("h", "/etc/shadow", tarfile.LNKTYPE)])
tar("hardlink-up.tar", [link("h", "../../etc/shadow", tarfile.LNKTYPE)])
good = io.BytesIO()
with tarfile.open(fileobj=good, mode="w") as t:
    ti, data = f("a", b"y" * 100000); t.addfile(ti, io.BytesIO(data))
raw = good.getvalue()
open(f"{d}/truncated.tar", "wb").write(raw[:5000])
open(f"{d}/unknown.tar", "wb").write(os.urandom(4096))
open(f"{d}/empty.tar", "wb").write(b"")
bomb = tarfile.TarInfo("bomb"); bomb.size = 100 << 30
open(f"{d}/bomb.tar", "wb").write(bomb.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 4096)
"#;
    host.ok(&["python3", "-c", maker]);
    host.ok(&[
        "sh",
        "-c",
        "cd /var/tmp/evil && tar -cf - -C /etc hostname | zstd -q > good.tar.zst && \
        head -c 20 good.tar.zst > corrupt.tar.zst && head -c 3000 /dev/urandom >> corrupt.tar.zst",
    ]);
    for (file, says) in [
        ("dotdot.tar", "../escaped"),
        ("absolute.tar", "/etc/evil"),
        ("through-symlink.tar", "evil/passwd"),
        ("hardlink-out.tar", "/etc/shadow"),
        ("hardlink-up.tar", "../../etc/shadow"),
        ("truncated.tar", "a"),
        ("unknown.tar", "not a tar archive"),
        ("empty.tar", "empty"),
        ("bomb.tar", "free"),
        ("corrupt.tar.zst", "zstd"),
    ] {
        let path = format!("/var/tmp/evil/{file}");
        let e = host.fails(&[
            "berthctl",
            "template",
            "build",
            "bad",
            "--method",
            "tar",
            "--file",
            &path,
            "--no-progress",
        ]);
        assert!(e.contains(says), "{file}: {e}");
        assert!(
            !host.path("/var/lib/berth/templates/bad").exists(),
            "{file}: no template"
        );
        let e = host.fails(&["berthctl", "import", &path, "badm", "--no-progress"]);
        assert!(e.contains(says), "import {file}: {e}");
    }
    assert!(!host.path("/etc/evil").exists() && !host.path("/var/tmp/escaped").exists());
    assert_ne!(
        host.read("/etc/passwd").unwrap(),
        "x",
        "never written through a symlink"
    );
    let e = host.fails(&[
        "berthctl",
        "template",
        "build",
        "bad",
        "--method",
        "tar",
        "--file",
        "/nonexistent.tar",
    ]);
    assert!(e.contains("cannot open /nonexistent.tar"), "{e}");

    // Directory sources: a symlink loop, a mount point inside, a file, nothing there.
    host.ok(&[
        "sh",
        "-c",
        "mkdir -p /var/tmp/src/sub && echo a > /var/tmp/src/file && \
        ln -s loop /var/tmp/loop 2>/dev/null; ln -sfn /var/tmp/loop2 /var/tmp/loop1; \
        ln -sfn /var/tmp/loop1 /var/tmp/loop2; mount -t tmpfs other /var/tmp/src/sub",
    ]);
    for (source, says) in [
        ("/var/tmp/loop1", "/var/tmp/loop1"),
        ("/var/tmp/src", "/var/tmp/src/sub"),
        ("/var/tmp/src/file", "/var/tmp/src/file"),
        ("/var/tmp/nothing", "/var/tmp/nothing"),
    ] {
        let e = host.fails(&[
            "berthctl",
            "template",
            "build",
            "bad",
            "--method",
            "directory",
            "--source",
            source,
            "--no-progress",
        ]);
        assert!(e.contains(says), "{source}: {e}");
    }
    host.ok(&["umount", "/var/tmp/src/sub"]);
    let listed = host.okw("berthctl template list --json");
    assert_eq!(listed.trim(), "[]", "{listed}");
    let dots: Vec<_> = std::fs::read_dir(host.path("/var/lib/berth/templates"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(dots.is_empty(), "nothing staged left: {dots:?}");
    let machines: Vec<_> = std::fs::read_dir(host.path("/var/lib/berth/machines"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(machines.is_empty(), "no import left: {machines:?}");
    assert_no_leftovers(&host);
}

/// An unprivileged machine on the host's overlay (its files shifted on disk): its export
/// holds the machine's own view, root 0, and an import of it gets a range of its own
/// with the files shifted into it.
#[test]
fn export_import_of_an_unprivileged_machine() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "export_import_unprivileged") else {
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
        "echo one > /srv-data && chown 1000:1001 /srv-data && chmod 4750 /srv-data",
    ]);
    host.okw("berthctl stop un");
    let owned = ("/srv-data", 1000, 1001);
    let base = assert_in_own_range(&host, "un", &[], owned);

    host.ok(&[
        "berthctl",
        "export",
        "un",
        "/var/tmp/un.tar",
        "--no-progress",
    ]);
    let listed = host.ok(&["tar", "--numeric-owner", "-tvf", "/var/tmp/un.tar"]);
    let owner_of = |name: &str| {
        let line = listed
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} archived: {listed}"));
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(
        owner_of("rootfs/bin/busybox"),
        "0/0",
        "the machine's own view"
    );
    assert_eq!(owner_of("rootfs/srv-data"), "1000/1001");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("-rwsr-x---") && l.ends_with(" rootfs/srv-data")),
        "setuid kept: {listed}"
    );

    host.ok(&[
        "berthctl",
        "import",
        "/var/tmp/un.tar",
        "un2",
        "--no-progress",
    ]);
    let base2 = assert_in_own_range(&host, "un2", &[base], owned);
    let srv = std::fs::metadata(machine_rootfs(&host, "un2").join("srv-data")).unwrap();
    assert_eq!(srv.mode() & 0o7777, 0o4750, "setuid survives the shift");
    host.okw("berthctl start un2");
    assert_eq!(host.okw("berthctl exec un2 -- cat /srv-data"), "one\n");
    host.okw("berthctl stop un2");

    // Repacked by GNU tar with config.toml last: shifted after unpacking instead.
    host.ok(&[
        "sh",
        "-c",
        "mkdir /var/tmp/x && tar -xpf /var/tmp/un.tar -C /var/tmp/x && \
         tar -cf /var/tmp/repacked.tar -C /var/tmp/x rootfs config.toml && rm -r /var/tmp/x",
    ]);
    let listed = host.ok(&["tar", "-tf", "/var/tmp/repacked.tar"]);
    assert_eq!(listed.lines().last(), Some("config.toml"), "{listed}");
    host.ok(&[
        "berthctl",
        "import",
        "/var/tmp/repacked.tar",
        "un3",
        "--no-progress",
    ]);
    assert_in_own_range(&host, "un3", &[base, base2], owned);
    let shifted_by_copy: Vec<String> = host
        .journal("berthd")
        .lines()
        .filter(|l| l.contains("shifting them by a copy"))
        .map(String::from)
        .collect();
    assert!(
        shifted_by_copy.len() == 1 && shifted_by_copy[0].contains(".un3.import-"),
        "only the repacked archive needed the copy: {shifted_by_copy:?}"
    );

    for m in ["un", "un2", "un3"] {
        host.okw(&format!("berthctl remove {m}"));
    }
    assert_no_leftovers(&host);
}
