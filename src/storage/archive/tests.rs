//! These run as root on the development VM: owners, device nodes, `trusted.*` and
//! `security.capability` attributes are made for real in scratch directories under the
//! temporary directory.

use super::*;
use crate::error::Kind;
use crate::jobs::Progress;
use crate::storage::idmap::IdMap;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use tar::{EntryType, Header};

/// A directory under the temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("berth-archive-{what}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A new empty directory inside.
    fn dir(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::create_dir(&path).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let name = CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let ret = unsafe {
        libc::lsetxattr(
            c(path).as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        ret,
        0,
        "setxattr {name:?} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let dir = fs::File::open(path.parent().unwrap()).unwrap();
    let name = CString::new(path.file_name().unwrap().as_bytes()).unwrap();
    use std::os::fd::AsFd;
    super::fsx::list(super::fsx::Target::At(dir.as_fd(), &name))
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.into_string().unwrap(), v))
        .collect()
}

fn set_mtime(path: &Path, secs: i64) {
    let times = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid C string and array of two timespecs.
    let ret = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c(path).as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(ret, 0, "utimensat {}", path.display());
}

fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn mknod(path: &Path, kind: libc::mode_t, dev: libc::dev_t) {
    // SAFETY: valid C string.
    let ret = unsafe { libc::mknod(c(path).as_ptr(), kind | 0o640, dev) };
    assert_eq!(ret, 0, "mknod {}", path.display());
}

/// security.capability granting cap_net_raw (13), effective: what ping carries.
const CAP_NET_RAW: [u8; 20] = [
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// system.posix_acl_access: user::rw-, user:1234:r--, group::r--, mask::r--, other::r--.
fn acl() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 6u16, u32::MAX),
        (2, 4, 1234),
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

const SPARSE_SIZE: u64 = 8 << 20;

/// A small root filesystem with one of everything unpack must keep.
fn make_tree(root: &Path, devices: bool) {
    for dir in ["bin", "etc", "usr/lib/deep/er", "tmp", "empty", "var/log"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::write(root.join("bin/busybox"), vec![0x7f; 100_000]).unwrap();
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("bin/ping"), b"ping").unwrap();
    lchown(&root.join("bin/ping"), 0, 0);
    fs::set_permissions(root.join("bin/ping"), fs::Permissions::from_mode(0o755)).unwrap();
    set_xattr(&root.join("bin/ping"), "security.capability", &CAP_NET_RAW);
    fs::write(root.join("bin/su"), b"su").unwrap();
    lchown(&root.join("bin/su"), 0, 0);
    fs::set_permissions(root.join("bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(root.join("etc/shadow"), b"root:*:1::::::\n").unwrap();
    lchown(&root.join("etc/shadow"), 0, 42);
    fs::set_permissions(root.join("etc/shadow"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(root.join("etc/acl"), b"acl").unwrap();
    set_xattr(&root.join("etc/acl"), "system.posix_acl_access", &acl());
    fs::write(root.join("etc/tagged"), b"x").unwrap();
    set_xattr(&root.join("etc/tagged"), "user.berth", b"value\0with nul");
    set_xattr(&root.join("etc/tagged"), "trusted.berth", b"t");
    // PAX records hold any byte; a reader splitting them at newlines loses this one.
    set_xattr(&root.join("etc/tagged"), "user.lines", b"one\ntwo\n");
    set_xattr(&root.join("usr/lib"), "user.dir", b"d");
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir(root.join("home")).unwrap();
    lchown(&root.join("home"), 1000, 1000);
    fs::set_permissions(root.join("home"), fs::Permissions::from_mode(0o2750)).unwrap();
    fs::write(root.join("home/file"), b"user's").unwrap();
    lchown(&root.join("home/file"), 1000, 1000);
    // A name longer than the 100 bytes of a tar header, with a long link to it.
    let long = "d".repeat(60);
    fs::create_dir_all(root.join(&long).join(&long)).unwrap();
    fs::write(root.join(&long).join(&long).join("file"), b"long").unwrap();
    symlink(format!("/{long}/{long}/file"), root.join("long-link")).unwrap();
    symlink("busybox", root.join("bin/sh")).unwrap();
    symlink("/etc/shadow", root.join("etc/absolute")).unwrap();
    symlink("../../bin/busybox", root.join("usr/lib/up")).unwrap();
    lchown(&root.join("usr/lib/up"), 7, 8);
    fs::hard_link(root.join("bin/busybox"), root.join("usr/lib/busybox")).unwrap();
    fs::hard_link(
        root.join("bin/busybox"),
        root.join("usr/lib/deep/er/busybox"),
    )
    .unwrap();
    let sparse = fs::File::create(root.join("var/log/lastlog")).unwrap();
    sparse.set_len(SPARSE_SIZE).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"data in the middle", 4 << 20).unwrap();
    sparse.write_all_at(&[1; 5000], 1 << 20).unwrap();
    drop(sparse);
    fs::write(root.join("etc/empty-file"), b"").unwrap();
    // Names are bytes: neither UTF-8 nor free of newlines.
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"etc/caf\xe9\nline")),
        b"latin-1",
    )
    .unwrap();
    mknod(&root.join("tmp/fifo"), libc::S_IFIFO, 0);
    if devices {
        mknod(&root.join("null"), libc::S_IFCHR, libc::makedev(1, 3));
        mknod(&root.join("loop9"), libc::S_IFBLK, libc::makedev(7, 9));
    }
    // Dates last, deepest first, as writing in a directory changes its mtime.
    let mut all: Vec<PathBuf> = walk(root);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, path) in all.iter().enumerate() {
        set_mtime(path, 1_500_000_000 + i as i64 * 1000);
    }
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let path = out[i].clone();
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            let mut children: Vec<_> = fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            out.extend(children);
        }
        i += 1;
    }
    out
}

/// All a tree's metadata and contents, by path; hard links as the first path of their
/// inode.
fn snapshot(root: &Path, with_xattrs: bool) -> BTreeMap<PathBuf, String> {
    let mut inodes = BTreeMap::new();
    let mut out = BTreeMap::new();
    for path in walk(root) {
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let meta = fs::symlink_metadata(&path).unwrap();
        let ft = meta.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("link -> {:?}", fs::read_link(&path).unwrap())
        } else if ft.is_file() {
            let data = fs::read(&path).unwrap();
            let sum: u64 = data
                .iter()
                .enumerate()
                .map(|(i, b)| (i as u64 + 1) * *b as u64)
                .sum();
            format!("file {} bytes sum {sum}", data.len())
        } else if ft.is_fifo() {
            "fifo".into()
        } else {
            format!("node {:o} {:x}", meta.mode() & libc::S_IFMT, meta.rdev())
        };
        let first = if meta.nlink() > 1 && !ft.is_dir() {
            inodes
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| rel.clone())
                .clone()
        } else {
            rel.clone()
        };
        let mode = if ft.is_symlink() {
            0
        } else {
            meta.mode() & 0o7777
        };
        out.insert(
            rel,
            format!(
                "{what} mode {mode:o} owner {}:{} mtime {} xattrs {:?} inode of {}",
                meta.uid(),
                meta.gid(),
                meta.mtime(),
                if with_xattrs {
                    xattrs(&path)
                } else {
                    BTreeMap::new()
                },
                first.display()
            ),
        );
    }
    out
}

fn assert_same_tree(a: &Path, b: &Path) {
    assert_same_tree_but(a, b, true)
}

fn assert_same_tree_but(a: &Path, b: &Path, with_xattrs: bool) {
    let (sa, sb) = (snapshot(a, with_xattrs), snapshot(b, with_xattrs));
    for (path, meta) in &sa {
        assert_eq!(Some(meta), sb.get(path), "{} differs", path.display());
    }
    assert_eq!(
        sa.len(),
        sb.len(),
        "{:?} vs {:?}",
        sa.keys().collect::<Vec<_>>(),
        sb.keys().collect::<Vec<_>>()
    );
}

fn keep() -> UnpackOptions {
    UnpackOptions {
        specials: Specials::Keep,
        reserve_bytes: 0,
        ..UnpackOptions::default()
    }
}

fn packed(root: &Path, opts: &PackOptions) -> Vec<u8> {
    let mut out = Vec::new();
    pack(root, &mut out, opts, &Progress::new()).unwrap();
    out
}

fn plain() -> PackOptions {
    PackOptions {
        compression: Compression::None,
        ..PackOptions::default()
    }
}

fn unpack_err(archive: &[u8], root: &Path, opts: &UnpackOptions) -> crate::error::Error {
    unpack(archive, root, opts, &Progress::new()).unwrap_err()
}

#[test]
fn round_trips_a_tree_in_every_compression() {
    let s = Scratch::new("round");
    let src = s.dir("src");
    make_tree(&src, true);
    for compression in [
        Compression::None,
        Compression::Gzip,
        Compression::Xz,
        Compression::Zstd,
    ] {
        let opts = PackOptions {
            compression,
            ..PackOptions::default()
        };
        let progress = Progress::new();
        let mut archive = Vec::new();
        pack(&src, &mut archive, &opts, &progress).unwrap();
        assert_eq!(Compression::detect(&archive), Some(compression));
        assert!(progress.total() > SPARSE_SIZE);
        assert_eq!(progress.done(), progress.total());

        let dst = s.dir(&format!("dst-{}", compression.name()));
        let progress = Progress::new();
        let summary = unpack(archive.as_slice(), &dst, &keep(), &progress).unwrap();
        assert_eq!(
            progress.done(),
            archive.len() as u64,
            "counts the compressed input"
        );
        assert_eq!(summary.skipped_devices, 0);
        assert!(summary.entries > 30, "{summary:?}");
        assert_same_tree(&src, &dst);
        let lastlog = fs::metadata(dst.join("var/log/lastlog")).unwrap();
        assert!(
            lastlog.blocks() * 512 < SPARSE_SIZE / 2,
            "holes stay holes: {} blocks",
            lastlog.blocks()
        );
    }
}

#[test]
fn export_layout_has_a_prefix_and_extra_files() {
    let s = Scratch::new("prefix");
    let src = s.dir("src");
    make_tree(&src, false);
    let opts = PackOptions {
        compression: Compression::Zstd,
        prefix: Some("rootfs".into()),
        extra_files: vec![ExtraFile {
            path: "config.toml".into(),
            data: b"name = \"box\"\n".to_vec(),
            mode: 0o600,
        }],
        ..PackOptions::default()
    };
    let archive = packed(&src, &opts);
    let dst = s.dir("dst");
    unpack(archive.as_slice(), &dst, &keep(), &Progress::new()).unwrap();
    assert_eq!(
        fs::read(dst.join("config.toml")).unwrap(),
        b"name = \"box\"\n"
    );
    assert_eq!(
        fs::metadata(dst.join("config.toml")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_same_tree(&src, &dst.join("rootfs"));
}

fn gnu_tar(args: &[&str], stdin: Option<&[u8]>) -> (Vec<u8>, String) {
    let mut child = Command::new("tar")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("GNU tar is installed");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.map(<[u8]>::to_vec);
    let writer = std::thread::spawn(move || {
        if let Some(data) = data {
            let _ = input.write_all(&data);
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "tar {args:?}: {stderr}");
    (out.stdout, stderr)
}

#[test]
fn unpacks_what_gnu_tar_packs() {
    let s = Scratch::new("gnu-in");
    let src = s.dir("src");
    make_tree(&src, true);
    let src_arg = src.to_str().unwrap();
    // GNU tar writes extended attributes in the POSIX format only; sparse files as old
    // GNU sparse entries in its own, in one of three PAX layouts in POSIX's.
    for (format, sparse) in [
        ("gnu", "1.0"),
        ("posix", "0.0"),
        ("posix", "0.1"),
        ("posix", "1.0"),
    ] {
        let xattrs = if format == "posix" {
            "--xattrs-include=*"
        } else {
            "--no-xattrs"
        };
        let (archive, _) = gnu_tar(
            &[
                xattrs,
                "--numeric-owner",
                "--sparse",
                &format!("--sparse-version={sparse}"),
                &format!("--format={format}"),
                "-C",
                src_arg,
                "-cf",
                "-",
                ".",
            ],
            None,
        );
        let dst = s.dir(&format!("dst-{format}-{sparse}"));
        unpack(archive.as_slice(), &dst, &keep(), &Progress::new()).unwrap();
        assert_same_tree_but(&src, &dst, format == "posix");
        let lastlog = fs::metadata(dst.join("var/log/lastlog")).unwrap();
        assert!(
            lastlog.blocks() * 512 < SPARSE_SIZE / 2,
            "holes stay holes ({format})"
        );
    }
}

#[test]
fn unpacks_gnu_tar_compressed_by_the_usual_tools() {
    let s = Scratch::new("gnu-compressed");
    let src = s.dir("src");
    make_tree(&src, false);
    for tool in ["gzip", "xz", "zstd"] {
        let (archive, _) = gnu_tar(
            &[
                "--xattrs",
                "--xattrs-include=*",
                "--numeric-owner",
                "-I",
                tool,
                "-C",
                src.to_str().unwrap(),
                "-cf",
                "-",
                ".",
            ],
            None,
        );
        let dst = s.dir(&format!("dst-{tool}"));
        unpack(archive.as_slice(), &dst, &keep(), &Progress::new()).unwrap();
        assert_same_tree(&src, &dst);
    }
}

#[test]
fn gnu_tar_lists_and_extracts_what_pack_writes() {
    let s = Scratch::new("gnu-out");
    let src = s.dir("src");
    make_tree(&src, true);
    let archive = packed(&src, &plain());
    let (listing, stderr) = gnu_tar(&["-tvf", "-"], Some(&archive));
    assert_eq!(stderr, "", "tar -t complains");
    let listing = String::from_utf8(listing).unwrap();
    assert!(listing.contains("bin/sh -> busybox"), "{listing}");
    assert!(
        listing.contains("usr/lib/busybox link to bin/busybox"),
        "{listing}"
    );

    let dst = s.dir("dst");
    let (_, stderr) = gnu_tar(
        &[
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "-xpf",
            "-",
            "-C",
            dst.to_str().unwrap(),
        ],
        Some(&archive),
    );
    assert_eq!(stderr, "", "tar -x complains");
    assert_same_tree(&src, &dst);
}

#[test]
fn detects_compression_by_magic_and_formats_by_name() {
    let mut tar = vec![0u8; 512];
    tar[257..263].copy_from_slice(b"ustar\0");
    assert_eq!(Compression::detect(&tar), Some(Compression::None));
    assert_eq!(
        Compression::detect(&[0x1f, 0x8b, 8, 0]),
        Some(Compression::Gzip)
    );
    assert_eq!(Compression::detect(b"\xfd7zXZ\0\0"), Some(Compression::Xz));
    assert_eq!(
        Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
        Some(Compression::Zstd)
    );
    assert_eq!(Compression::detect(b"\x89PNG\r\n\x1a\n"), None);
    assert_eq!(Compression::detect(b""), None);
    for (name, c) in [
        ("tar", Compression::None),
        ("tar.gz", Compression::Gzip),
        ("gz", Compression::Gzip),
        ("tar.xz", Compression::Xz),
        ("xz", Compression::Xz),
        ("tar.zst", Compression::Zstd),
        ("zst", Compression::Zstd),
        ("zstd", Compression::Zstd),
    ] {
        assert_eq!(Compression::from_format(name).unwrap(), c);
    }
    let e = Compression::from_format("rar").unwrap_err();
    assert_eq!(e.kind(), Kind::InvalidArgument);
    assert!(e.to_string().contains("tar.zst"), "{e}");
}

/// One raw entry, written without the checks tar's builder makes.
struct Raw<'a> {
    name: &'a [u8],
    kind: EntryType,
    data: &'a [u8],
    link: &'a [u8],
    size: Option<u64>,
}

fn raw(name: &[u8], kind: EntryType) -> Raw<'_> {
    Raw {
        name,
        kind,
        data: b"",
        link: b"",
        size: None,
    }
}

fn raw_archive(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(e.name);
            old.linkname[..e.link.len()].copy_from_slice(e.link);
        }
        h.set_entry_type(e.kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(e.size.unwrap_or(e.data.len() as u64));
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(5).unwrap();
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(e.data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

fn file<'a>(name: &'a [u8], data: &'a [u8]) -> Raw<'a> {
    Raw {
        data,
        ..raw(name, EntryType::Regular)
    }
}

fn link<'a>(name: &'a [u8], kind: EntryType, target: &'a [u8]) -> Raw<'a> {
    Raw {
        link: target,
        ..raw(name, kind)
    }
}

fn assert_invalid(e: &crate::error::Error, words: &[&str]) {
    let shown = e.to_string();
    assert_eq!(e.kind(), Kind::InvalidArgument, "{shown}");
    assert!(!shown.contains('\n'), "one line: {shown}");
    for w in words {
        assert!(shown.contains(w), "{shown:?} lacks {w:?}");
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn refuses_dotdot_and_absolute_names() {
    let s = Scratch::new("dotdot");
    let root = s.dir("root");
    let e = unpack_err(
        &raw_archive(&[file(b"ok", b"1"), file(b"a/../../evil", b"x")]),
        &root,
        &keep(),
    );
    assert_invalid(&e, &["\"a/../../evil\"", "\"..\""]);
    assert!(!s.0.join("evil").exists());
    assert_eq!(
        names_in(&root),
        ["ok"],
        "what came before stays, nothing else"
    );

    let root = s.dir("root2");
    let e = unpack_err(
        &raw_archive(&[file(b"/etc/berth-test-evil", b"x")]),
        &root,
        &keep(),
    );
    assert_invalid(&e, &["\"/etc/berth-test-evil\"", "absolute"]);
    assert!(!Path::new("/etc/berth-test-evil").exists());
}

#[test]
fn never_writes_through_a_planted_symlink() {
    let s = Scratch::new("symlink");
    let outside = s.dir("outside");
    let outside_arg = outside.as_os_str().as_bytes();
    let root = s.dir("root");
    let e = unpack_err(
        &raw_archive(&[
            link(b"evil", EntryType::Symlink, outside_arg),
            file(b"evil/passwd", b"pwned"),
        ]),
        &root,
        &keep(),
    );
    assert_invalid(&e, &["\"evil/passwd\"", "symlink"]);
    assert!(names_in(&outside).is_empty());

    // Deeper, with the parent to be made: still refused.
    let root = s.dir("root2");
    let e = unpack_err(
        &raw_archive(&[
            link(b"evil", EntryType::Symlink, outside_arg),
            file(b"evil/new/passwd", b"pwned"),
        ]),
        &root,
        &keep(),
    );
    assert_invalid(&e, &["\"evil/new/passwd\"", "symlink"]);
    assert!(names_in(&outside).is_empty());

    // A later entry of the same name replaces the symlink rather than following it.
    fs::write(outside.join("target"), b"host file").unwrap();
    let target = outside.join("target");
    let root = s.dir("root3");
    let archive = raw_archive(&[
        link(b"f", EntryType::Symlink, target.as_os_str().as_bytes()),
        file(b"f", b"replaced"),
        link(b"d", EntryType::Symlink, outside_arg),
        raw(b"d/", EntryType::Directory),
    ]);
    unpack(archive.as_slice(), &root, &keep(), &Progress::new()).unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"host file");
    assert_eq!(fs::read(root.join("f")).unwrap(), b"replaced");
    assert!(fs::symlink_metadata(root.join("d")).unwrap().is_dir());
    assert_eq!(names_in(&outside), ["target"]);
}

#[test]
fn refuses_hard_links_out_of_the_archive() {
    let s = Scratch::new("hardlink");
    let outside = s.dir("outside");
    fs::write(outside.join("secret"), b"host").unwrap();
    let cases: Vec<(Vec<u8>, Vec<Raw<'static>>, &str)> = vec![
        (b"/etc/passwd".to_vec(), vec![], "not an earlier entry"),
        (
            b"../outside/secret".to_vec(),
            vec![],
            "not an earlier entry",
        ),
        (b"nonexistent".to_vec(), vec![], "not an earlier entry"),
    ];
    for (target, _, words) in &cases {
        let root = s.dir(&format!("root-{}", names_in(&s.0).len()));
        let e = unpack_err(
            &raw_archive(&[link(b"h", EntryType::Link, target)]),
            &root,
            &keep(),
        );
        assert_invalid(&e, &["\"h\"", words]);
        assert!(names_in(&root).is_empty());
    }
    let root = s.dir("root-via-link");
    let archive = raw_archive(&[
        link(b"dir", EntryType::Symlink, outside.as_os_str().as_bytes()),
        link(b"h", EntryType::Link, b"dir/secret"),
    ]);
    let e = unpack_err(&archive, &root, &keep());
    assert_invalid(&e, &["\"h\"", "\"dir/secret\"", "symlink"]);
    assert_eq!(fs::metadata(outside.join("secret")).unwrap().nlink(), 1);

    // A link to an earlier entry works, and "./" prefixes do not matter.
    let root = s.dir("root-ok");
    let archive = raw_archive(&[file(b"./a", b"data"), link(b"b", EntryType::Link, b"./a")]);
    unpack(archive.as_slice(), &root, &keep(), &Progress::new()).unwrap();
    assert_eq!(
        fs::metadata(root.join("b")).unwrap().ino(),
        fs::metadata(root.join("a")).unwrap().ino()
    );
}

#[test]
fn device_nodes_and_fifos_follow_the_specials_option() {
    let s = Scratch::new("specials");
    let archive = raw_archive(&[
        raw(b"dev/null", EntryType::Char),
        raw(b"fifo", EntryType::Fifo),
    ]);
    let refuse = UnpackOptions {
        specials: Specials::Refuse,
        reserve_bytes: 0,
        ..UnpackOptions::default()
    };
    let e = unpack_err(&archive, &s.dir("refuse"), &refuse);
    assert_invalid(&e, &["\"dev/null\"", "character device"]);
    let fifo_only = raw_archive(&[raw(b"fifo", EntryType::Fifo)]);
    assert_invalid(
        &unpack_err(&fifo_only, &s.dir("refuse2"), &refuse),
        &["\"fifo\"", "FIFO"],
    );

    let root = s.dir("skip");
    let skip = UnpackOptions {
        specials: Specials::SkipDevices,
        reserve_bytes: 0,
        ..UnpackOptions::default()
    };
    let summary = unpack(archive.as_slice(), &root, &skip, &Progress::new()).unwrap();
    assert_eq!(summary.skipped_devices, 1);
    assert!(!root.join("dev/null").exists());
    assert!(
        fs::symlink_metadata(root.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );

    let root = s.dir("keep");
    unpack(archive.as_slice(), &root, &keep(), &Progress::new()).unwrap();
    let null = fs::symlink_metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 5));
    assert_eq!(null.mode() & 0o7777, 0o644);
}

fn free_bytes(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    st.blocks_available() as u64 * st.fragment_size() as u64
}

/// A small tmpfs, so that free space does not move with what other tests write.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(path: PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&path).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0755").as_str()),
        )
        .expect("mount a tmpfs (the unit tests run as root)");
        Tmpfs(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn stops_a_tar_bomb_before_the_disk_fills() {
    let s = Scratch::new("bomb");
    let fs = Tmpfs::new(s.0.join("fs"), "16m");
    // One entry declaring more than is free: refused before any byte is read.
    let root = fs.0.join("one");
    std::fs::create_dir(&root).unwrap();
    let mut huge = raw(b"huge", EntryType::Regular);
    huge.size = Some(free_bytes(&root) * 2);
    let mut archive = raw_archive(&[huge]);
    archive.truncate(512);
    let e = unpack_err(&archive, &root, &keep());
    assert_eq!(e.kind(), Kind::Failed);
    let shown = e.to_string();
    assert!(
        shown.contains("\"huge\"") && shown.contains("needs") && shown.contains("free"),
        "{shown}"
    );
    assert!(names_in(&root).is_empty());

    // Many entries, each small, adding up past the reserve: stopped in the middle, with
    // the reserve left free.
    let root = fs.0.join("many");
    std::fs::create_dir(&root).unwrap();
    let data = vec![1u8; 1 << 20];
    let names: Vec<Vec<u8>> = (0..20).map(|i| format!("f{i:02}").into_bytes()).collect();
    let entries: Vec<Raw<'_>> = names.iter().map(|n| file(n, &data)).collect();
    let opts = UnpackOptions {
        specials: Specials::Keep,
        reserve_bytes: 8 << 20,
        ..UnpackOptions::default()
    };
    let e = unpack_err(&raw_archive(&entries), &root, &opts);
    assert!(
        e.to_string().contains("not enough space for entry \"f0"),
        "{e}"
    );
    let written = names_in(&root).len();
    assert!((5..=8).contains(&written), "{written} files written");
    assert!(free_bytes(&root) >= 8 << 20);
}

#[test]
fn reports_truncated_corrupt_unknown_and_empty_input() {
    let s = Scratch::new("broken");
    let src = s.dir("src");
    fs::write(src.join("a"), vec![7u8; 100_000]).unwrap();
    fs::write(src.join("b"), b"b").unwrap();
    let tar = packed(&src, &plain());

    // Cut in the middle of a's data, and right after the last entry's data.
    for cut in [2048, tar.len() - 1024] {
        let e = unpack_err(&tar[..cut], &s.dir(&format!("cut-{cut}")), &keep());
        assert_invalid(&e, &["truncated"]);
    }
    assert_invalid(
        &unpack_err(&tar[..tar.len() - 1024], &s.dir("cut-end"), &keep()),
        &["\"b\""],
    );
    assert_invalid(
        &unpack_err(&tar[..2048], &s.dir("cut-mid"), &keep()),
        &["in entry \"a\""],
    );

    let zst = packed(&src, &PackOptions::default());
    let e = unpack_err(&zst[..zst.len() / 2], &s.dir("cut-zst"), &keep());
    assert_invalid(&e, &["truncated"]);
    let mut corrupt = zst.clone();
    let n = corrupt.len();
    corrupt[n - 2] ^= 0xff; // the content checksum
    assert_invalid(
        &unpack_err(&corrupt, &s.dir("corrupt-zst"), &keep()),
        &["corrupt zstd data"],
    );
    let mut gz = Vec::new();
    pack(
        &src,
        &mut gz,
        &PackOptions {
            compression: Compression::Gzip,
            ..plain()
        },
        &Progress::new(),
    )
    .unwrap();
    let n = gz.len();
    gz[n - 6] ^= 0xff; // the CRC
    assert_invalid(
        &unpack_err(&gz, &s.dir("corrupt-gz"), &keep()),
        &["corrupt gzip data"],
    );

    let not_tar = "not a tar archive (plain, gzip, xz or zstd)";
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".repeat(40);
    assert_invalid(&unpack_err(&png, &s.dir("png"), &keep()), &[not_tar]);
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    assert_invalid(&unpack_err(&noise, &s.dir("noise"), &keep()), &[not_tar]);
    assert_invalid(&unpack_err(b"", &s.dir("empty"), &keep()), &["empty"]);
    let gz_of_png = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&png).unwrap();
        enc.finish().unwrap()
    };
    assert_invalid(
        &unpack_err(&gz_of_png, &s.dir("gz-png"), &keep()),
        &["not a tar archive", "gzip"],
    );
}

#[test]
fn a_write_only_descriptor_is_reported_as_unreadable() {
    let s = Scratch::new("wronly");
    let file = fs::File::create(s.0.join("archive.tar")).unwrap();
    let e = unpack(file, &s.dir("root"), &keep(), &Progress::new()).unwrap_err();
    assert_invalid(&e, &["cannot read the archive", "Bad file descriptor"]);
}

#[test]
fn later_entries_replace_earlier_ones() {
    let s = Scratch::new("replace");
    let root = s.dir("root");
    let archive = raw_archive(&[
        file(b"f", b"first"),
        file(b"f", b"second"),
        raw(b"d/", EntryType::Directory),
        file(b"d", b"now a file"),
        link(b"l", EntryType::Symlink, b"/etc/passwd"),
        link(b"l", EntryType::Symlink, b"/etc/group"),
    ]);
    unpack(archive.as_slice(), &root, &keep(), &Progress::new()).unwrap();
    assert_eq!(fs::read(root.join("f")).unwrap(), b"second");
    assert_eq!(fs::read(root.join("d")).unwrap(), b"now a file");
    assert_eq!(
        fs::read_link(root.join("l")).unwrap(),
        Path::new("/etc/group")
    );

    let root = s.dir("full");
    let archive = raw_archive(&[file(b"d/inside", b"x"), file(b"d", b"file")]);
    assert_invalid(
        &unpack_err(&archive, &root, &keep()),
        &["\"d\"", "not empty"],
    );
}

#[test]
fn missing_parents_are_made_and_file_parents_refused() {
    let s = Scratch::new("parents");
    let root = s.dir("root");
    unpack(
        raw_archive(&[file(b"a/b/c", b"x")]).as_slice(),
        &root,
        &keep(),
        &Progress::new(),
    )
    .unwrap();
    assert_eq!(fs::read(root.join("a/b/c")).unwrap(), b"x");
    let root = s.dir("root2");
    let e = unpack_err(
        &raw_archive(&[file(b"a", b"x"), file(b"a/b", b"y")]),
        &root,
        &keep(),
    );
    assert_invalid(&e, &["\"a/b\"", "not a directory"]);
}

#[test]
fn refuses_oversized_metadata() {
    let s = Scratch::new("meta");
    let mut pax = raw(b"pax", EntryType::XHeader);
    let body = vec![b'x'; 20 << 20];
    pax.data = &body;
    let archive = raw_archive(&[pax, file(b"f", b"x")]);
    assert_invalid(
        &unpack_err(&archive, &s.dir("root"), &keep()),
        &["metadata", "larger than"],
    );
}

#[test]
fn names_in_errors_are_escaped() {
    let s = Scratch::new("escape");
    let e = unpack_err(
        &raw_archive(&[file(b"\x1b[31mred/../../x", b"")]),
        &s.dir("root"),
        &keep(),
    );
    let shown = e.to_string();
    assert!(!shown.contains('\x1b'), "{shown:?}");
    assert!(shown.contains("\\u{1b}[31mred"), "{shown}");
    let e = unpack_err(
        &raw_archive(&[file(b"/\xff\xfe", b"")]),
        &s.dir("root2"),
        &keep(),
    );
    assert!(e.to_string().contains("\\xff\\xfe"), "{e}");
}

#[test]
fn cancel_stops_both_ways() {
    let s = Scratch::new("cancel");
    let src = s.dir("src");
    make_tree(&src, false);
    let cancelled = Progress::new();
    cancelled.cancel();
    let e = pack(&src, Vec::new(), &plain(), &cancelled).unwrap_err();
    assert_eq!(e.kind(), Kind::Cancelled);
    let archive = packed(&src, &plain());
    let e = unpack(archive.as_slice(), &s.dir("dst"), &keep(), &cancelled).unwrap_err();
    assert_eq!(e.kind(), Kind::Cancelled);
}

#[test]
fn reads_from_a_pipe_in_small_pieces() {
    // Detection must not rely on one read returning the whole head.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(7);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let s = Scratch::new("trickle");
    let src = s.dir("src");
    make_tree(&src, false);
    for opts in [plain(), PackOptions::default()] {
        let archive = packed(&src, &opts);
        let dst = s.dir(&format!("dst-{}", opts.compression.name()));
        unpack(Trickle(&archive), &dst, &keep(), &Progress::new()).unwrap();
        assert_same_tree(&src, &dst);
    }
}

const RANGE: crate::security::users::UserRange = crate::security::users::UserRange {
    base: 524_288,
    count: 65536,
};

/// security.capability v3 granting cap_net_raw in the user namespace whose root is `root`.
fn cap_v3(root: u32) -> Vec<u8> {
    let mut v = CAP_NET_RAW.to_vec();
    v[3] = 3;
    v.extend(root.to_le_bytes());
    v
}

/// `make_tree` as a machine sees it, plus a namespaced capability: of the root of a user
/// namespace inside the machine whose root is the machine's 1000. (One of the machine's
/// own root is a v2 capability to the kernel, which writes a v3 with root ID 0 as v2.)
fn machine_view(root: &Path) {
    make_tree(root, true);
    let mtime = fs::symlink_metadata(root.join("bin")).unwrap().mtime();
    fs::write(root.join("bin/newuidmap"), b"x").unwrap();
    set_xattr(
        &root.join("bin/newuidmap"),
        "security.capability",
        &cap_v3(1000),
    );
    set_mtime(&root.join("bin"), mtime);
}

/// The ACL `acl()` makes, its named user moved to `user`.
fn acl_of(user: u32) -> Vec<u8> {
    let mut v = acl();
    v[4 + 8 + 4..4 + 8 + 8].copy_from_slice(&user.to_le_bytes());
    v
}

#[test]
fn packs_a_shifted_tree_as_the_machine_sees_it() {
    use crate::storage::copy::{CopyOptions, copy_tree};
    let s = Scratch::new("pack-ids");
    let own = s.dir("own");
    machine_view(&own);
    // The tree on the disk of a machine whose files are shifted into RANGE.
    let shifted = s.0.join("shifted");
    let copy = CopyOptions {
        ids: IdMap::shift(RANGE),
        ..Default::default()
    };
    copy_tree(&own, &shifted, &copy, &Progress::new()).unwrap();
    assert_eq!(
        fs::metadata(shifted.join("home/file")).unwrap().uid(),
        RANGE.base + 1000
    );
    let opts = PackOptions {
        ids: IdMap::unshift(RANGE),
        ..plain()
    };
    let dst = s.dir("dst");
    unpack(
        packed(&shifted, &opts).as_slice(),
        &dst,
        &keep(),
        &Progress::new(),
    )
    .unwrap();
    assert_same_tree(&own, &dst);
    assert_eq!(
        xattrs(&dst.join("bin/newuidmap"))["security.capability"],
        cap_v3(1000)
    );

    // setcap by the machine's root writes a v3 of its range's base; archived, that is
    // the machine's root 0, which is v2 to whoever unpacks it as root.
    set_xattr(
        &shifted.join("bin/ping"),
        "security.capability",
        &cap_v3(RANGE.base),
    );
    let pax_cap = tar::Archive::new(packed(&shifted, &opts).as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap() == Path::new("bin/ping"))
        .and_then(|mut e| {
            e.pax_extensions().unwrap().and_then(|pax| {
                pax.map(|r| r.unwrap())
                    .find(|r| r.key() == Ok("SCHILY.xattr.security.capability"))
                    .map(|r| r.value_bytes().to_vec())
            })
        });
    assert_eq!(pax_cap, Some(cap_v3(0)));

    // An ID outside the range (host root's, say, after the host touched the tree) is
    // archived as nobody, as the machine saw it.
    lchown(&shifted.join("etc/shadow"), 0, RANGE.base + RANGE.count);
    let header = tar::Archive::new(packed(&shifted, &opts).as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .find(|e| e.path().unwrap() == Path::new("etc/shadow"))
        .map(|e| (e.header().uid().unwrap(), e.header().gid().unwrap()));
    assert_eq!(header, Some((65534, 65534)));
}

#[test]
fn unpacks_into_a_range_and_back() {
    let s = Scratch::new("unpack-ids");
    let own = s.dir("own");
    machine_view(&own);
    let stray = own.join("etc/stray");
    fs::write(&stray, b"").unwrap();
    lchown(&stray, 70_000, 0);
    set_xattr(&stray, "system.posix_acl_access", &acl_of(70_000));
    let archive = packed(&own, &plain());
    let shifted = s.dir("shifted");
    let opts = UnpackOptions {
        ids: IdMap::shift(RANGE),
        ..keep()
    };
    unpack(archive.as_slice(), &shifted, &opts, &Progress::new()).unwrap();
    let ids = |rel: &str| {
        let m = fs::symlink_metadata(shifted.join(rel)).unwrap();
        (m.uid(), m.gid())
    };
    let base = RANGE.base;
    assert_eq!(ids(""), (base, base));
    assert_eq!(ids("home/file"), (base + 1000, base + 1000));
    assert_eq!(ids("etc/shadow"), (base, base + 42));
    assert_eq!(
        ids("usr/lib/up"),
        (base + 7, base + 8),
        "a symlink's own owner"
    );
    assert_eq!(ids("null"), (base, base));
    assert_eq!(ids("etc/stray"), (65534, base), "outside the range: nobody");
    assert_eq!(
        fs::metadata(shifted.join("bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    let attrs = |rel: &str| xattrs(&shifted.join(rel));
    assert_eq!(
        attrs("etc/acl")["system.posix_acl_access"],
        acl_of(base + 1234)
    );
    assert_eq!(attrs("etc/stray")["system.posix_acl_access"], acl_of(65534));
    assert_eq!(
        attrs("bin/newuidmap")["security.capability"],
        cap_v3(base + 1000)
    );
    assert_eq!(
        attrs("bin/ping")["security.capability"],
        CAP_NET_RAW.to_vec(),
        "v2 names no ID"
    );

    // Packed back down, the tree is the one it was but for the stray.
    fs::remove_file(&stray).unwrap();
    fs::remove_file(shifted.join("etc/stray")).unwrap();
    let etc_mtime = fs::symlink_metadata(own.join("etc")).unwrap().mtime();
    set_mtime(&shifted.join("etc"), etc_mtime);
    let down = PackOptions {
        ids: IdMap::unshift(RANGE),
        ..plain()
    };
    let back = s.dir("back");
    unpack(
        packed(&shifted, &down).as_slice(),
        &back,
        &keep(),
        &Progress::new(),
    )
    .unwrap();
    assert_same_tree(&own, &back);
}

#[test]
fn the_mapping_can_be_chosen_after_the_first_entry() {
    let s = Scratch::new("after-first");
    let src = s.dir("src");
    make_tree(&src, false);
    let opts = PackOptions {
        prefix: Some("rootfs".into()),
        extra_files: vec![ExtraFile {
            path: "config.toml".into(),
            data: b"users\n".to_vec(),
            mode: 0o600,
        }],
        ..plain()
    };
    let archive = packed(&src, &opts);
    let dst = s.dir("dst");
    let mut seen = None;
    unpack_then(archive.as_slice(), &dst, &keep(), &Progress::new(), || {
        seen = Some(fs::read(dst.join("config.toml")).unwrap());
        Ok(Some(IdMap::shift(RANGE)))
    })
    .unwrap();
    assert_eq!(
        seen.as_deref(),
        Some(&b"users\n"[..]),
        "written before the call"
    );
    let uid = |rel: &str| fs::symlink_metadata(dst.join(rel)).unwrap().uid();
    assert_eq!(uid("config.toml"), 0, "the first entry as the options said");
    assert_eq!(uid("rootfs"), RANGE.base);
    assert_eq!(uid("rootfs/home/file"), RANGE.base + 1000);

    let e = unpack_then(
        archive.as_slice(),
        &s.dir("fails"),
        &keep(),
        &Progress::new(),
        || Err(crate::error::Error::Failed("no range left".into())),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "no range left");
}
