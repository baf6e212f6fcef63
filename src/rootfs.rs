//! Copying root filesystem trees: templates into machines. Ownership, modes, symlinks and
//! timestamps are kept (a rootfs is a system image, not user files); device nodes and
//! sockets are skipped since /dev is built fresh at every start.

use crate::error::{IoContext, Result};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

/// Copies `src` to the new path `dst`; an error names the file that could not be copied.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    copy_tree_shifted(src, dst, 0)
}

/// Copies `src` to `dst` with every owner and group moved up by `shift`, for a machine
/// whose user namespace starts at host ID `shift` on a file system that cannot idmap.
pub fn copy_tree_shifted(src: &Path, dst: &Path, shift: u32) -> Result<()> {
    let meta = fs::symlink_metadata(src).at("cannot copy", src)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        fs::create_dir(dst).at("cannot create", dst)?;
        for entry in fs::read_dir(src).at("cannot copy", src)? {
            let entry = entry.at("cannot copy", src)?;
            copy_tree_shifted(&entry.path(), &dst.join(entry.file_name()), shift)?;
        }
    } else if ft.is_symlink() {
        symlink(fs::read_link(src).at("cannot copy", src)?, dst).at("cannot create", dst)?;
    } else if ft.is_file() {
        fs::copy(src, dst).at("cannot copy", src)?;
    } else {
        return Ok(());
    }
    let (uid, gid) = (
        meta.uid().saturating_add(shift),
        meta.gid().saturating_add(shift),
    );
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid)).at("cannot chown", dst)?;
    if !ft.is_symlink() {
        // After chown: chown clears setuid bits.
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .at("cannot chmod", dst)?;
    }
    Ok(())
}

/// Removes a tree without following symlinks out of it.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_files_links_dirs_and_modes() {
        let base = std::env::temp_dir().join(format!("berth-rootfs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let src = base.join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/busybox"), b"ELF").unwrap();
        fs::set_permissions(src.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("busybox", src.join("bin/sh")).unwrap();
        fs::create_dir(src.join("tmp")).unwrap();
        fs::set_permissions(src.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();

        let dst = base.join("dst");
        copy_tree(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("bin/busybox")).unwrap(), b"ELF");
        assert_eq!(
            fs::metadata(dst.join("bin/busybox")).unwrap().mode() & 0o7777,
            0o755
        );
        assert_eq!(
            fs::read_link(dst.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::metadata(dst.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );

        let err = copy_tree(&src, &dst).unwrap_err();
        assert!(
            matches!(&err, crate::error::Error::Io { source, path, .. }
                if source.kind() == io::ErrorKind::AlreadyExists && path == &dst),
            "never merges into a tree, and names where: {err}"
        );
        let shifted = base.join("shifted");
        copy_tree_shifted(&src, &shifted, 100_000).unwrap();
        let meta = fs::symlink_metadata(shifted.join("bin/sh")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (100_000, 100_000), "links too");
        assert_eq!(
            fs::metadata(shifted.join("tmp")).unwrap().mode() & 0o7777,
            0o1777,
            "modes kept"
        );
        remove_tree(&base).unwrap();
        remove_tree(&base).unwrap();
        assert!(!base.exists());
    }
}
