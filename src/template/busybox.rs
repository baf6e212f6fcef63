//! The busybox template: one static busybox binary (Debian's busybox-static) with a link
//! per applet, a root user and an inittab that keeps busybox init idle until halted.

use crate::error::{Error, IoContext, Result};
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

pub const NAME: &str = "busybox";

const CANDIDATES: [&str; 3] = ["/bin/busybox", "/usr/bin/busybox", "/usr/sbin/busybox"];

const DIRS: [&str; 15] = [
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "etc/init.d",
    "dev",
    "proc",
    "sys",
    "tmp",
    "run",
    "root",
    "home",
    "mnt",
    "var/log",
    "var/tmp",
];

const INITTAB: &str = "::sysinit:/etc/init.d/rcS\n::shutdown:/bin/sync\n";
const RCS: &str = "#!/bin/sh\n# Runs once at boot; add services here.\n";

pub fn find_busybox() -> Result<PathBuf> {
    let found = CANDIDATES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::NotSupported(
                "the busybox template needs a static busybox on the host: install busybox-static"
                    .into(),
            )
        })?;
    let bytes = fs::read(found).at("cannot read", found)?;
    if elf_has_interpreter(&bytes) {
        return Err(Error::NotSupported(format!(
            "{} is dynamically linked and would not run inside a machine: install busybox-static",
            found.display()
        )));
    }
    Ok(found.to_path_buf())
}

/// True if the ELF64 file asks for a dynamic loader (has a PT_INTERP header).
fn elf_has_interpreter(bytes: &[u8]) -> bool {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if bytes.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum as usize).any(|i| {
        let off = phoff as usize + i * phentsize as usize;
        bytes.get(off..off + 4) == Some(&3u32.to_le_bytes())
    })
}

pub fn build(rootfs: &Path) -> Result<()> {
    let busybox = find_busybox()?;
    let mode = |path: &Path, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).at("cannot chmod", path)
    };
    let write = |path: &Path, text: &str| fs::write(path, text).at("cannot write", path);
    for d in DIRS {
        let dir = rootfs.join(d);
        fs::create_dir_all(&dir).at("cannot create", &dir)?;
    }
    for d in ["tmp", "var/tmp"] {
        mode(&rootfs.join(d), 0o1777)?;
    }
    mode(&rootfs.join("root"), 0o700)?;
    let target = rootfs.join("bin/busybox");
    fs::copy(&busybox, &target).at("cannot copy", &busybox)?;
    mode(&target, 0o755)?;

    let out = std::process::Command::new(&busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| Error::failed(format!("{} --list-full", busybox.display()), e))?;
    if !out.status.success() {
        return Err(Error::Failed(format!(
            "{} --list-full failed: {}",
            busybox.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let rel = applet.trim().trim_start_matches('/');
        if rel.is_empty() || rel == "bin/busybox" || rel.contains("..") {
            continue;
        }
        let link = rootfs.join(rel);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).at("cannot create", parent)?;
        }
        if link.symlink_metadata().is_err() {
            symlink("/bin/busybox", &link).at("cannot create", &link)?;
        }
    }
    write(&rootfs.join("etc/inittab"), INITTAB)?;
    let rcs = rootfs.join("etc/init.d/rcS");
    write(&rcs, RCS)?;
    mode(&rcs, 0o755)?;
    write(
        &rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
    )?;
    write(&rootfs.join("etc/group"), "root:x:0:\ntty:x:5:\n")?;
    write(&rootfs.join("etc/hostname"), "busybox\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf(with_interp: bool) -> Vec<u8> {
        let mut b = vec![0u8; 0x40 + 2 * 56];
        b[..5].copy_from_slice(b"\x7fELF\x02");
        b[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        b[0x40..0x44].copy_from_slice(&1u32.to_le_bytes());
        let t: u32 = if with_interp { 3 } else { 1 };
        b[0x40 + 56..0x40 + 60].copy_from_slice(&t.to_le_bytes());
        b
    }

    #[test]
    fn static_and_dynamic_elf_are_told_apart() {
        assert!(elf_has_interpreter(&elf(true)));
        assert!(!elf_has_interpreter(&elf(false)));
        assert!(!elf_has_interpreter(b"#!/bin/sh\n"));
        assert!(!elf_has_interpreter(&[]));
    }

    #[test]
    fn host_binaries_are_dynamic() {
        // /bin/sh on any Debian test machine is dynamically linked.
        let sh = fs::read("/bin/sh").unwrap();
        assert!(elf_has_interpreter(&sh));
    }
}
