//! Tar archives of root filesystems: [`unpack`] for the tar template method and machine
//! import, [`pack`] for export.
//!
//! Archives come from callers berthd does not trust with the host, so [`unpack`] writes
//! only below the directory it is given: every parent directory is opened from that root
//! with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, every
//! final component is created with `O_EXCL`/`O_NOFOLLOW` or its `*at` equivalent after
//! removing what was there, and nothing is ever addressed by a joined path string. An
//! entry it refuses stops the unpacking with an error naming the entry; what was written
//! until then stays in the root for the caller to remove.
//!
//! The format written is GNU tar's (GNU long names, GNU sparse entries for files with
//! holes) with PAX `SCHILY.xattr.*` records for extended attributes, which GNU tar
//! (`--xattrs`), libarchive and `machinectl import-tar` read. Owners are numeric only;
//! [`PackOptions::ids`] and [`UnpackOptions::ids`] map them (and the IDs in ACLs and v3
//! file capabilities) between a shifted machine's range on disk and its own view.

mod fsx;
mod pack;
mod unpack;

#[cfg(test)]
mod tests;

pub use pack::{ExtraFile, PackOptions, pack, pack_entry};
pub use unpack::{Specials, Summary, UnpackOptions, unpack, unpack_then};

use crate::error::{Error, Result};
use crate::jobs::Progress;

/// A caller's archive as [`unpack`]'s input. Unpacking counts the bytes it reads, so the
/// size of a regular file is the Progress total; a pipe's is not known.
pub fn input_from(fd: std::os::fd::OwnedFd, progress: &Progress) -> std::fs::File {
    let file = std::fs::File::from(fd);
    if let Ok(meta) = file.metadata()
        && meta.is_file()
    {
        progress.set_total(meta.len());
    }
    file
}

/// Reads and writes go through buffers this large: few system calls per megabyte, and
/// big enough blocks for the compressors to work on.
const BUF_SIZE: usize = 256 * 1024;

/// How an archive's bytes are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    /// The compression of an archive starting with `head`, from its magic numbers: never
    /// from a file name, which berthd does not get (archives come as descriptors). A plain
    /// tar is recognized by its "ustar" magic at offset 257, so `head` should hold at least
    /// 262 bytes; anything unrecognized is `None` ("unknown format").
    pub fn detect(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(b"\xfd7zXZ\0") {
            Some(Compression::Xz)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if has_tar_magic(head) {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// The compression a client names for an export: "tar", "tar.gz" or "gz", "tar.xz" or
    /// "xz", "tar.zst", "zst" or "zstd".
    pub fn from_format(name: &str) -> Result<Compression> {
        Ok(match name {
            "tar" => Compression::None,
            "tar.gz" | "gz" => Compression::Gzip,
            "tar.xz" | "xz" => Compression::Xz,
            "tar.zst" | "zst" | "zstd" => Compression::Zstd,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown archive format {}; the formats are tar, tar.gz (gz), \
                     tar.xz (xz) and tar.zst (zst, zstd)",
                    crate::names::shown(other)
                )));
            }
        })
    }

    /// The name people know the format by, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }
}

/// A ustar header (POSIX "ustar\0" or GNU "ustar  ") starts the data.
fn has_tar_magic(head: &[u8]) -> bool {
    head.get(257..262) == Some(b"ustar")
}

/// An archive member's name as it may appear in a message: valid UTF-8 is quoted and
/// escaped as Rust's Debug does (no control characters reach a log or terminal), other
/// bytes as `\xNN`. Not cut short, unlike [`crate::names::shown`]: the end of a path is
/// what tells entries apart.
fn shown(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("\"{}\"", name.escape_ascii()),
    }
}

/// A byte count for people: "3.2 GiB".
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
