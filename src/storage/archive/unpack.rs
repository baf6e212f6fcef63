//! Unpacking an archive into an empty directory, entry by entry, never writing outside it.
//!
//! Decisions, for a root filesystem from an untrusted archive:
//! - An absolute member name (`/etc/x`) is refused, not stripped as GNU tar does: tar
//!   strips the `/` when it makes an archive, so one that still has it was made by
//!   something else, and guessing what it meant is worse than saying no.
//! - A name with a `..` component, a name below a symlink (`evil -> /etc`, then
//!   `evil/passwd`) and a hard link to something that is not an earlier entry inside the
//!   root are refused; archives made by tar from a tree never need them.
//! - A later entry replaces an earlier one of the same name as GNU tar does (a file, a
//!   symlink, an empty directory); what was there is unlinked first, so a symlink an
//!   earlier entry planted is never followed. A non-empty directory is not replaced.
//! - Before each entry is written its size must fit in the target file system's free
//!   space less [`UnpackOptions::reserve_bytes`]; free space is read again (`fstatvfs`)
//!   whenever the bytes written since the last look could have used it up, so a tar bomb
//!   stops before the disk is full, with an error saying what was needed and what was free.

use super::fsx::{self, Target};
use super::{BUF_SIZE, Compression, has_tar_magic, human, shown};
use crate::error::{Error, IoContext, Result};
use crate::jobs::Progress;
use crate::storage::idmap::IdMap;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstatat, futimens, makedev,
    mkdirat, mknodat, utimensat,
};
use nix::sys::statvfs::fstatvfs;
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use std::cell::{Cell, RefCell};
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufReader, Cursor, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::rc::Rc;
use tar::EntryType;

/// What to do with device nodes and FIFOs in an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Specials {
    /// Refuse both: the unpacking fails with an error naming the entry.
    Refuse,
    /// Skip device nodes (berth builds a machine's /dev fresh at every start) and make
    /// FIFOs, which are ordinary files to the machine: the tar template method.
    SkipDevices,
    /// Make both as the archive says: importing an exported machine.
    Keep,
}

#[derive(Clone, Debug)]
pub struct UnpackOptions {
    pub specials: Specials,
    /// Stop before the target file system's free space would drop below this many bytes,
    /// so an archive larger than the disk leaves room for everything else on it.
    pub reserve_bytes: u64,
    /// Applied to every entry's owner and group and to the IDs inside its POSIX ACLs and
    /// namespaced file capabilities: [`IdMap::shift`] writes an archive of a machine as it
    /// sees itself (its root 0) onto the disk of a machine whose files are shifted into
    /// its range. IDs outside the map's range become `nobody`.
    pub ids: IdMap,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            specials: Specials::SkipDevices,
            reserve_bytes: 256 << 20,
            ids: IdMap::IDENTITY,
        }
    }
}

/// What an unpacking wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Files, directories, links and nodes written.
    pub entries: u64,
    /// Bytes of file contents, holes included.
    pub bytes: u64,
    /// Device nodes skipped under [`Specials::SkipDevices`].
    pub skipped_devices: u64,
    /// Extended attributes the target file system does not support (a warning is
    /// logged for each, as GNU tar does).
    pub skipped_xattrs: u64,
}

/// Names, links and PAX records of one entry are read into memory; a header claiming
/// more than this is an attack on berthd's memory, not a root filesystem.
const METADATA_MAX: u64 = 16 << 20;
/// xz dictionaries an archive may ask for: xz -9 needs 64 MiB to decode.
const XZ_MEMLIMIT: u64 = 512 << 20;
/// Runs of zeros this long (aligned in the read buffer) become holes.
const HOLE_GRAIN: usize = 64 * 1024;
/// File system space taken beyond its contents by each entry (inode, directory entry),
/// counted so that many empty files also find their limit.
const ENTRY_OVERHEAD: u64 = 4096;
/// Bytes written between two looks at the free space, even when there is much more.
const SPACE_RECHECK: u64 = 256 << 20;
/// After the end of the archive, this much of what follows is read, so a compressed
/// stream's checksum is checked; trailing data beyond it is ignored.
const TRAILER_MAX: u64 = 1 << 20;

/// Unpacks the tar archive read from `input` (plain, gzip, xz or zstd, detected from its
/// first bytes) into `root`, an existing empty directory. Progress counts the bytes read
/// from `input` as they are, compressed; `progress.check` is called between entries and
/// between blocks of a large file. On error `root` holds what was written so far, and
/// nothing outside it was touched.
pub fn unpack(
    input: impl Read,
    root: &Path,
    opts: &UnpackOptions,
    progress: &Progress,
) -> Result<Summary> {
    unpack_then(input, root, opts, progress, || Ok(None))
}

/// [`unpack`], calling `after_first` once the archive's first entry is written: a mapping
/// it returns applies to every later entry instead of [`UnpackOptions::ids`]. Import
/// reads an export's config.toml there (export writes it first) to learn whether the
/// machine had a user range, and so whether its files must be shifted into a new one.
pub fn unpack_then(
    input: impl Read,
    root: &Path,
    opts: &UnpackOptions,
    progress: &Progress,
    after_first: impl FnOnce() -> Result<Option<IdMap>>,
) -> Result<Summary> {
    let mut after_first = Some(after_first);
    let root_fd = open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
    .at("cannot open", root)?;
    let flow = Rc::new(Flow::default());
    let mut un = Unpacker {
        root: Rc::new(root_fd),
        opts,
        ids: opts.ids,
        progress,
        flow: flow.clone(),
        compression: Compression::None,
        last: None,
        inside: false,
        cache: None,
        dir_times: Vec::new(),
        space: Space {
            reserve: opts.reserve_bytes,
            budget: 0,
        },
        summary: Summary::default(),
        buf: vec![0; BUF_SIZE],
    };
    let stream = un.open_stream(input)?;
    let mut archive = tar::Archive::new(Decoded {
        inner: stream,
        flow: flow.clone(),
    });
    {
        let mut entries = archive.entries().map_err(|e| un.stream_error(e))?;
        loop {
            progress.check("unpacking the archive")?;
            flow.in_header.set(true);
            flow.header_bytes.set(0);
            flow.record.borrow_mut().clear();
            let start = flow.pos.get();
            let next = entries.next();
            flow.in_header.set(false);
            let mut entry = match next {
                None => break,
                Some(Ok(entry)) => entry,
                Some(Err(e)) => return Err(un.stream_error(e)),
            };
            let Some(pax) = pax_records(&flow.record.borrow(), start) else {
                un.inside = false;
                return Err(invalid(format!(
                    "corrupt tar archive {}: malformed PAX records",
                    un.place()
                )));
            };
            un.entry(&mut entry, pax)?;
            // What an entry's handler did not read (a skipped device's data, say).
            io::copy(&mut entry, &mut io::sink()).map_err(|e| un.stream_error(e))?;
            un.inside = false;
            if let Some(ids) = after_first.take().map(|f| f()).transpose()?.flatten() {
                un.ids = ids;
            }
        }
    }
    if flow.eof.get() {
        // tar stops quietly at the end of its input; a whole archive ends with zeros.
        return Err(un.truncated());
    }
    un.set_dir_times()?;
    let mut rest = archive.into_inner();
    io::copy(&mut (&mut rest).take(TRAILER_MAX), &mut io::sink())
        .map_err(|e| un.stream_error(e))?;
    Ok(un.summary)
}

/// What the readers saw, for telling a read error from corrupt data from a short archive.
#[derive(Default)]
struct Flow {
    read_failed: Cell<bool>,
    input_eof: Cell<bool>,
    decode_failed: Cell<bool>,
    eof: Cell<bool>,
    in_header: Cell<bool>,
    header_bytes: Cell<u64>,
    header_too_big: Cell<bool>,
    /// Bytes of the decoded stream read so far.
    pos: Cell<u64>,
    /// What the tar reader read while finding the next entry (its extension headers and
    /// their data): PAX records are parsed from it, as the tar crate splits them at
    /// newlines, which binary values (ACLs) and names may hold.
    record: RefCell<Vec<u8>>,
}

/// The caller's input, counted into the progress.
struct Input<'p, R> {
    inner: R,
    flow: Rc<Flow>,
    progress: &'p Progress,
}

impl<R: Read> Read for Input<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                if n == 0 && !buf.is_empty() {
                    self.flow.input_eof.set(true);
                }
                self.progress.add(n as u64);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.flow.read_failed.set(true);
                }
                Err(e)
            }
        }
    }
}

/// The decompressed tar stream, as the tar reader gets it.
struct Decoded<'p> {
    inner: Box<dyn Read + 'p>,
    flow: Rc<Flow>,
}

impl Read for Decoded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let flow = &self.flow;
        if flow.in_header.get() && flow.header_bytes.get() > METADATA_MAX {
            flow.header_too_big.set(true);
            return Err(io::Error::other("too much metadata"));
        }
        match self.inner.read(buf) {
            Ok(n) => {
                if n == 0 && !buf.is_empty() {
                    flow.eof.set(true);
                }
                flow.pos.set(flow.pos.get() + n as u64);
                if flow.in_header.get() {
                    flow.header_bytes.set(flow.header_bytes.get() + n as u64);
                    flow.record.borrow_mut().extend_from_slice(&buf[..n]);
                }
                Ok(n)
            }
            Err(e) => {
                if !flow.read_failed.get() && e.kind() != io::ErrorKind::Interrupted {
                    flow.decode_failed.set(true);
                }
                Err(e)
            }
        }
    }
}

/// Reads up to `len` bytes: fewer only at the end of the input.
fn read_head(r: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(len);
    r.take(len as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// The metadata of an entry that is applied to what it makes.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: TimeSpec,
    xattrs: Vec<(CString, Vec<u8>)>,
    /// PAX sparse records (GNU tar's `--sparse` in the POSIX format).
    sparse: PaxSparse,
    /// A link target from a PAX record, over the header's.
    link: Option<Vec<u8>>,
}

/// GNU tar's PAX sparse formats: 0.0 and 0.1 list the map in records, 1.0 at the start of
/// the entry's data; all give the file's real name and size in records.
#[derive(Default)]
struct PaxSparse {
    name: Option<Vec<u8>>,
    real_size: Option<u64>,
    major: Option<u64>,
    /// 0.1's "offset,length,offset,length..."
    map: Option<Vec<u8>>,
    /// 0.0's repeated offset and numbytes records, in order.
    numbers: Vec<u64>,
}

/// How a regular file's data lies in its entry.
enum Layout {
    /// As it is (holes of old GNU sparse entries come as zeros from the tar reader).
    Dense,
    /// These (offset, length) segments, then holes up to the real size.
    Segments(Vec<(u64, u64)>, u64),
    /// PAX sparse 1.0: the map is at the start of the data.
    MapInData(u64),
}

/// Maps and numbers of sparse entries are bounded like other metadata.
const SPARSE_MAP_MAX: usize = 1 << 20;

struct Space {
    reserve: u64,
    /// Bytes that may still be written before free space is looked at again.
    budget: u64,
}

struct Unpacker<'a> {
    root: Rc<OwnedFd>,
    opts: &'a UnpackOptions,
    /// The mapping in force: the options', or what `after_first` gave.
    ids: IdMap,
    progress: &'a Progress,
    flow: Rc<Flow>,
    compression: Compression,
    /// The entry being (or last) unpacked, shown, for errors about the stream.
    last: Option<String>,
    inside: bool,
    /// The directory the last entry went into: archives list a directory's files together.
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// Directories' mtimes, set at the end since writing their entries changes them.
    dir_times: Vec<(Vec<u8>, TimeSpec)>,
    space: Space,
    summary: Summary,
    buf: Vec<u8>,
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

/// An error of a system call on an entry, naming the entry.
fn failed(what: &str, name: &str, e: impl Into<io::Error>) -> Error {
    Error::Failed(format!("cannot {what} {name}: {}", e.into()))
}

/// An archive member's name made relative to the root: "./a//b/" is "a/b", "." is "".
fn relative(raw: &[u8], name: &str) -> Result<Vec<u8>> {
    if raw.starts_with(b"/") {
        return Err(invalid(format!(
            "entry {name} has an absolute path; refusing it (a root filesystem archive \
             holds relative paths, as `tar -C ROOT -c .` makes)"
        )));
    }
    if raw.contains(&0) {
        return Err(invalid(format!("entry {name} has a NUL byte in its name")));
    }
    let mut out = Vec::with_capacity(raw.len());
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => {
                return Err(invalid(format!(
                    "entry {name} has a \"..\" component; refusing it"
                )));
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

/// The parent's relative path and the last component.
fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (b"", rel),
    }
}

fn c_name(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("relative() refuses NUL bytes")
}

/// The PAX records of the entry the tar reader just found, from the bytes it read to
/// find it (`record`, starting at stream position `start`): its extension headers, each
/// followed by its data, then the entry's own header.
/// `None` if they are malformed.
fn pax_records(record: &[u8], start: u64) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    // Headers start on 512-byte boundaries; before the first lies the previous entry's
    // padding.
    let mut at = ((512 - start % 512) % 512) as usize;
    let mut records = Vec::new();
    while let Some(block) = record.get(at..at + 512) {
        let header = tar::Header::from_byte_slice(block);
        let kind = header.entry_type();
        if !(kind.is_pax_local_extensions() || kind.is_gnu_longname() || kind.is_gnu_longlink()) {
            break;
        }
        let size = usize::try_from(header.entry_size().ok()?).ok()?;
        let data = record.get(at + 512..at + 512 + size)?;
        if kind.is_pax_local_extensions() {
            records = parse_pax(data)?;
        }
        at += 512 + size.next_multiple_of(512);
    }
    Some(records)
}

/// PAX records, "LENGTH KEY=VALUE\n" each, the length counting the whole record: values
/// may hold any byte.
fn parse_pax(mut data: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    while !data.is_empty() && data[0] != 0 {
        let space = data.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&data[..space]).ok()?.parse().ok()?;
        let body = data.get(space + 1..len)?.strip_suffix(b"\n")?;
        let equals = body.iter().position(|b| *b == b'=')?;
        out.push((body[..equals].to_vec(), body[equals + 1..].to_vec()));
        data = &data[len..];
    }
    Some(out)
}

/// Segments that go forward without overlapping and end within the file.
fn check_segments(segments: Vec<(u64, u64)>, size: u64) -> Option<Vec<(u64, u64)>> {
    let mut end = 0u64;
    for (offset, len) in &segments {
        if *offset < end {
            return None;
        }
        end = offset.checked_add(*len)?;
    }
    (end <= size).then_some(segments)
}

fn sparse_layout(sparse: &PaxSparse, name: &str) -> Result<Layout> {
    let corrupt = || invalid(format!("entry {name} has a corrupt sparse map"));
    let Some(size) = sparse.real_size else {
        return Ok(Layout::Dense);
    };
    if sparse.major == Some(1) {
        return Ok(Layout::MapInData(size));
    }
    let numbers: Vec<u64> = match &sparse.map {
        Some(map) => {
            let text = std::str::from_utf8(map).map_err(|_| corrupt())?;
            text.split(',')
                .filter(|n| !n.is_empty())
                .map(|n| n.trim().parse().map_err(|_| corrupt()))
                .collect::<Result<_>>()?
        }
        None if !sparse.numbers.is_empty() => sparse.numbers.clone(),
        None => return Ok(Layout::Dense),
    };
    if !numbers.len().is_multiple_of(2) || numbers.len() > 2 * SPARSE_MAP_MAX {
        return Err(corrupt());
    }
    let pairs = numbers.chunks(2).map(|p| (p[0], p[1])).collect();
    let segments = check_segments(pairs, size).ok_or_else(corrupt)?;
    Ok(Layout::Segments(segments, size))
}

/// A PAX time, "SECONDS[.FRACTION]", possibly negative.
fn pax_time(value: &[u8]) -> Option<TimeSpec> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut nanos: i64 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    nanos *= 10i64.pow(9 - digits.len() as u32);
    if secs < 0 || text.starts_with('-') {
        // -1.5 is 1.5 s before the epoch: -2 s + 0.5 s.
        if nanos > 0 {
            return Some(TimeSpec::new(secs - 1, 1_000_000_000 - nanos));
        }
    }
    Some(TimeSpec::new(secs, nanos))
}

const OPEN_DIR: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Opening a directory inside the root: no symlink anywhere, no escape even if one
/// appeared. (Without O_NOFOLLOW: with it a final symlink fails as "not a directory",
/// without it RESOLVE_NO_SYMLINKS fails it as ELOOP, which the messages tell apart.)
fn in_root() -> OpenHow {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    OpenHow::new().flags(flags).resolve(
        ResolveFlag::RESOLVE_IN_ROOT
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    )
}

impl<'a> Unpacker<'a> {
    /// Detects the compression and puts the decoder in place; the tar reader reads
    /// through what this returns.
    fn open_stream<R: Read + 'a>(&mut self, input: R) -> Result<Box<dyn Read + 'a>> {
        let mut raw = Input {
            inner: input,
            flow: self.flow.clone(),
            progress: self.progress,
        };
        let head = read_head(&mut raw, 512).map_err(|e| self.stream_error(e))?;
        if head.is_empty() {
            return Err(invalid("the archive is empty".into()));
        }
        let empty_tar = head.len() == 512 && head.iter().all(|b| *b == 0);
        let compression = match Compression::detect(&head) {
            Some(c) => c,
            None if empty_tar => Compression::None,
            None => {
                return Err(invalid(
                    "not a tar archive (plain, gzip, xz or zstd)".into(),
                ));
            }
        };
        self.compression = compression;
        let buffered = BufReader::with_capacity(BUF_SIZE, Cursor::new(head).chain(raw));
        let mut decoded: Box<dyn Read + 'a> = match compression {
            Compression::None => return Ok(Box::new(buffered)),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
            Compression::Xz => {
                let stream = liblzma::stream::Stream::new_stream_decoder(
                    XZ_MEMLIMIT,
                    liblzma::stream::CONCATENATED,
                )
                .map_err(|e| Error::failed("cannot start the xz decoder", e))?;
                Box::new(liblzma::bufread::XzDecoder::new_stream(buffered, stream))
            }
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(buffered)
                    .map_err(|e| Error::failed("cannot start the zstd decoder", e))?,
            ),
        };
        let mut inner = Decoded {
            inner: decoded,
            flow: self.flow.clone(),
        };
        let head = read_head(&mut inner, 512).map_err(|e| self.stream_error(e))?;
        decoded = inner.inner;
        if head.is_empty() {
            return Err(invalid(format!(
                "the archive is empty (its {} data holds nothing)",
                compression.name()
            )));
        }
        if !has_tar_magic(&head) && !head.iter().all(|b| *b == 0) {
            return Err(invalid(format!(
                "not a tar archive: its {} data holds something else",
                compression.name()
            )));
        }
        Ok(Box::new(Cursor::new(head).chain(decoded)))
    }

    /// Where in the archive the stream broke, for messages.
    fn place(&self) -> String {
        match (&self.last, self.inside) {
            (Some(name), true) => format!("in entry {name}"),
            (Some(name), false) => format!("after entry {name}"),
            (None, _) => "before its first entry".into(),
        }
    }

    fn truncated(&self) -> Error {
        invalid(format!(
            "the archive is truncated: it ends early {}",
            self.place()
        ))
    }

    /// An error reading the archive, told apart by which reader saw it first.
    fn stream_error(&self, e: io::Error) -> Error {
        let flow = &self.flow;
        if flow.read_failed.get() {
            return match e.raw_os_error() {
                Some(libc::EBADF) | Some(libc::EINVAL) => invalid(format!(
                    "cannot read the archive: {e} (is it open for reading?)"
                )),
                _ => Error::Failed(format!("cannot read the archive: {e}")),
            };
        }
        if flow.decode_failed.get() {
            if flow.input_eof.get() && e.kind() == io::ErrorKind::UnexpectedEof {
                return self.truncated();
            }
            return invalid(format!(
                "corrupt {} data {}: {e}",
                self.compression.name(),
                self.place()
            ));
        }
        if flow.header_too_big.get() {
            return invalid(format!(
                "the archive's metadata {} is larger than {}; refusing it",
                self.place(),
                human(METADATA_MAX)
            ));
        }
        if flow.eof.get() {
            return self.truncated();
        }
        invalid(format!("corrupt tar archive {}: {e}", self.place()))
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        pax: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<()> {
        let record = |key: &[u8]| {
            pax.iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let raw = record(b"path").unwrap_or_else(|| entry.path_bytes().into_owned());
        let name = shown(&raw);
        self.last = Some(name.clone());
        self.inside = true;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind == EntryType::new(b'V') {
            // Global PAX records and GNU volume labels describe no file.
            return Ok(());
        }
        // The tar reader found the entry's data by the size it parsed; the wrong one
        // would put the next header somewhere in the data.
        if let Some(size) = record(b"size")
            && !kind.is_gnu_sparse()
            && std::str::from_utf8(&size).ok().and_then(|v| v.parse().ok()) != Some(entry.size())
        {
            return Err(invalid(format!(
                "entry {name} has a PAX size record the tar reader cannot follow; refusing it"
            )));
        }
        let mut meta = self.meta(entry, &pax, &name)?;
        meta.link = record(b"linkpath");
        let mut layout = Layout::Dense;
        let (raw, name) = match meta.sparse.name.take() {
            // The header's name is a made-up "GNUSparseFile.0/NAME".
            Some(real) if kind.is_file() => {
                let name = shown(&real);
                self.last = Some(name.clone());
                (real, name)
            }
            _ => (raw, name),
        };
        if kind.is_file() {
            layout = sparse_layout(&meta.sparse, &name)?;
        }
        let rel = relative(&raw, &name)?;
        let is_dir_name = raw.ends_with(b"/");
        match kind {
            EntryType::Directory => self.dir(&rel, &name, &meta)?,
            EntryType::Regular | EntryType::Continuous if is_dir_name => {
                // Pre-POSIX archives mark directories by the trailing slash alone.
                self.dir(&rel, &name, &meta)?
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, &rel, &name, &meta, layout)?
            }
            EntryType::Symlink => self.symlink(entry, &rel, &name, &meta)?,
            EntryType::Link => self.hardlink(entry, &rel, &name, &meta)?,
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.node(entry, &rel, &name, &meta)?
            }
            other => {
                return Err(invalid(format!(
                    "entry {name} is of a type berth does not unpack ({:?})",
                    other.as_byte() as char
                )));
            }
        }
        Ok(())
    }

    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        pax: &[(Vec<u8>, Vec<u8>)],
        name: &str,
    ) -> Result<Meta> {
        let header = entry.header();
        let bad = |e: io::Error| invalid(format!("entry {name} has a corrupt header: {e}"));
        let id = |v: u64| {
            u32::try_from(v)
                .map_err(|_| invalid(format!("entry {name} has owner {v}, out of range")))
        };
        let mut uid = id(header.uid().map_err(bad)?)?;
        let mut gid = id(header.gid().map_err(bad)?)?;
        let mode = header.mode().map_err(bad)? & 0o7777;
        let mut mtime = TimeSpec::new(header.mtime().map_err(bad)?.min(i64::MAX as u64) as i64, 0);
        let mut xattrs = Vec::new();
        let mut sparse = PaxSparse::default();
        let number = |v: &[u8]| -> Result<u64> {
            std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| invalid(format!("entry {name} has a corrupt sparse map")))
        };
        {
            for (key, value) in pax {
                let (key, value) = (key.as_slice(), value.as_slice());
                let owner = |v: &[u8]| {
                    let v: u64 = std::str::from_utf8(v)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| invalid(format!("entry {name} has a corrupt owner")))?;
                    id(v)
                };
                match key {
                    b"uid" => uid = owner(value)?,
                    b"gid" => gid = owner(value)?,
                    b"GNU.sparse.name" => sparse.name = Some(value.to_vec()),
                    b"GNU.sparse.realsize" | b"GNU.sparse.size" => {
                        sparse.real_size = Some(number(value)?)
                    }
                    b"GNU.sparse.major" => sparse.major = Some(number(value)?),
                    b"GNU.sparse.map" => sparse.map = Some(value.to_vec()),
                    b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                        if sparse.numbers.len() >= SPARSE_MAP_MAX {
                            return Err(invalid(format!(
                                "entry {name} has too large a sparse map"
                            )));
                        }
                        sparse.numbers.push(number(value)?);
                    }
                    _ => {}
                }
                if key == b"mtime" {
                    if let Some(t) = pax_time(value) {
                        mtime = t;
                    }
                } else if let Some(attr) = key.strip_prefix(b"SCHILY.xattr.") {
                    let attr = CString::new(attr).map_err(|_| {
                        invalid(format!(
                            "entry {name} has an extended attribute name with a NUL byte"
                        ))
                    })?;
                    let mut value = value.to_vec();
                    self.ids.map_xattr(attr.as_bytes(), &mut value);
                    xattrs.push((attr, value));
                }
            }
        }
        Ok(Meta {
            uid: self.ids.map(uid),
            gid: self.ids.map(gid),
            mode,
            mtime,
            xattrs,
            sparse,
            link: None,
        })
    }

    /// The directory `rel` inside the root, made (0755, as GNU tar does) where missing.
    fn dir_at(&mut self, rel: &[u8], name: &str) -> Result<Rc<OwnedFd>> {
        if rel.is_empty() {
            return Ok(self.root.clone());
        }
        if let Some((cached, fd)) = &self.cache
            && cached == rel
        {
            return Ok(fd.clone());
        }
        let fd = match openat2(self.root.as_fd(), OsStr::from_bytes(rel), in_root()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => self.make_dirs(rel, name)?,
            Err(e) => return Err(self.parent_error(rel, name, e)),
        };
        let fd = Rc::new(fd);
        self.cache = Some((rel.to_vec(), fd.clone()));
        Ok(fd)
    }

    fn parent_error(&self, parent: &[u8], name: &str, e: Errno) -> Error {
        match e {
            Errno::ELOOP | Errno::EXDEV => invalid(format!(
                "entry {name} lies below a symlink ({}); refusing to write through it",
                shown(parent)
            )),
            Errno::ENOTDIR => invalid(format!(
                "entry {name} lies below {}, which is not a directory",
                shown(parent)
            )),
            e => failed("open the directory of", name, e),
        }
    }

    fn make_dirs(&mut self, rel: &[u8], name: &str) -> Result<OwnedFd> {
        let mut fd =
            nix::unistd::dup(self.root.as_fd()).map_err(|e| failed("open", "the root", e))?;
        let mut end = 0;
        for component in rel.split(|b| *b == b'/') {
            end += component.len();
            let here = &rel[..end];
            end += 1;
            let c = OsStr::from_bytes(component);
            match mkdirat(&fd, c, Mode::from_bits_truncate(0o755)) {
                Ok(()) => self.space.need(&self.root, ENTRY_OVERHEAD, name)?,
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(failed("create the directory of", name, e)),
            }
            fd = match openat(&fd, c, OPEN_DIR, Mode::empty()) {
                Ok(fd) => fd,
                Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                    let is_link = fstatat(&fd, c, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| {
                        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
                    });
                    let e = if is_link { Errno::ELOOP } else { e };
                    return Err(self.parent_error(here, name, e));
                }
                Err(e) => return Err(failed("open the directory of", name, e)),
            };
        }
        Ok(fd)
    }

    /// The parent directory of `rel` and its last component.
    fn parent_of(&mut self, rel: &[u8], name: &str) -> Result<(Rc<OwnedFd>, CString)> {
        let (parent, last) = split(rel);
        Ok((self.dir_at(parent, name)?, c_name(last)))
    }

    /// Removes what an earlier entry put at `file`, so that this one replaces it.
    fn clear(&mut self, dir: BorrowedFd<'_>, file: &CString, name: &str) -> Result<()> {
        let st = match fstatat(dir, file.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(failed("replace", name, e)),
        };
        let flag = if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
            // The cached directory may be this one, or below it.
            self.cache = None;
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        match unlinkat(dir, file.as_c_str(), flag) {
            Ok(()) => Ok(()),
            Err(Errno::ENOTEMPTY | Errno::EEXIST) => Err(invalid(format!(
                "entry {name} would replace a directory that is not empty; refusing it"
            ))),
            Err(e) => Err(failed("replace", name, e)),
        }
    }

    /// Runs `make` (a create-exclusive call); if the name is taken, clears it and runs it
    /// again.
    fn create<T>(
        &mut self,
        dir: &OwnedFd,
        file: &CString,
        name: &str,
        mut make: impl FnMut() -> nix::Result<T>,
    ) -> Result<T> {
        match make() {
            Err(Errno::EEXIST) => {
                self.clear(dir.as_fd(), file, name)?;
                make().map_err(|e| failed("create", name, e))
            }
            other => other.map_err(|e| failed("create", name, e)),
        }
    }

    fn set_xattrs(&mut self, target: Target<'_>, meta: &Meta, name: &str) -> Result<()> {
        for (attr, value) in &meta.xattrs {
            match fsx::set(target, attr, value) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    tracing::warn!(
                        "{name}: extended attribute {attr:?} not supported here, skipped"
                    );
                    self.summary.skipped_xattrs += 1;
                }
                Err(e) => {
                    return Err(failed(
                        &format!("set the extended attribute {attr:?} of"),
                        name,
                        e,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Owner, then mode (chown clears setuid bits), then extended attributes (chown
    /// clears security.capability).
    fn apply(&mut self, fd: BorrowedFd<'_>, meta: &Meta, name: &str) -> Result<()> {
        fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| failed("set the owner of", name, e))?;
        fchmod(fd, Mode::from_bits_truncate(meta.mode))
            .map_err(|e| failed("set the mode of", name, e))?;
        self.set_xattrs(Target::Fd(fd), meta, name)
    }

    /// The same for what cannot be opened: symlinks (no mode), device nodes and FIFOs.
    fn apply_at(
        &mut self,
        dir: &OwnedFd,
        file: &CString,
        meta: &Meta,
        name: &str,
        mode: bool,
    ) -> Result<()> {
        let c = file.as_c_str();
        fchownat(
            dir,
            c,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| failed("set the owner of", name, e))?;
        if mode {
            // Not a symlink: this call made it, in a directory no one else writes to.
            fchmodat(
                dir,
                c,
                Mode::from_bits_truncate(meta.mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| failed("set the mode of", name, e))?;
        }
        self.set_xattrs(Target::At(dir.as_fd(), c), meta, name)?;
        utimensat(
            dir,
            c,
            &TimeSpec::UTIME_OMIT,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| failed("set the time of", name, e))
    }

    fn dir(&mut self, rel: &[u8], name: &str, meta: &Meta) -> Result<()> {
        self.space.need(&self.root, ENTRY_OVERHEAD, name)?;
        let fd = if rel.is_empty() {
            self.root.clone()
        } else {
            let (parent, file) = self.parent_of(rel, name)?;
            let mode = Mode::from_bits_truncate(0o700);
            match mkdirat(&*parent, file.as_c_str(), mode) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    let is_dir = fstatat(&*parent, file.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| {
                            SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
                        });
                    if !is_dir {
                        self.clear(parent.as_fd(), &file, name)?;
                        mkdirat(&*parent, file.as_c_str(), mode)
                            .map_err(|e| failed("create", name, e))?;
                    }
                }
                Err(e) => return Err(failed("create", name, e)),
            }
            let fd = openat(&*parent, file.as_c_str(), OPEN_DIR, Mode::empty())
                .map_err(|e| failed("open", name, e))?;
            Rc::new(fd)
        };
        self.apply(fd.as_fd(), meta, name)?;
        self.dir_times.push((rel.to_vec(), meta.mtime));
        if !rel.is_empty() {
            // Its entries come next in archives made from a tree.
            self.cache = Some((rel.to_vec(), fd));
        }
        self.summary.entries += 1;
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &[u8],
        name: &str,
        meta: &Meta,
        layout: Layout,
    ) -> Result<()> {
        if rel.is_empty() {
            return Err(invalid(format!(
                "entry {name} would replace the root directory with a file"
            )));
        }
        // A sparse entry's holes take no space; what it stores does.
        let stored = entry.header().entry_size().unwrap_or(entry.size());
        self.space
            .need(&self.root, stored.saturating_add(ENTRY_OVERHEAD), name)?;
        let (dir, file) = self.parent_of(rel, name)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = self.create(&dir, &file, name, || {
            openat(
                &*dir,
                file.as_c_str(),
                flags,
                Mode::from_bits_truncate(0o600),
            )
        })?;
        let out = File::from(fd);
        let (segments, size) = match layout {
            Layout::Dense => (vec![(0, entry.size())], entry.size()),
            Layout::Segments(segments, size) => (segments, size),
            Layout::MapInData(size) => (self.read_sparse_map(entry, name, size)?, size),
        };
        // Where the last byte written ends: the file is extended over what follows.
        let mut written_end = 0;
        for (start, len) in segments {
            if !self.copy_data(entry, &out, start, len, name)? && len > 0 {
                written_end = start + len;
            }
        }
        if written_end < size {
            out.set_len(size).map_err(|e| failed("write", name, e))?;
        }
        self.summary.bytes += size;
        self.apply(out.as_fd(), meta, name)?;
        futimens(&out, &TimeSpec::UTIME_OMIT, &meta.mtime)
            .map_err(|e| failed("set the time of", name, e))?;
        self.summary.entries += 1;
        Ok(())
    }

    /// Copies `len` bytes of the entry to `out` at `offset`, leaving runs of zeros as
    /// holes; whether it ended in one.
    fn copy_data<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        out: &File,
        mut offset: u64,
        len: u64,
        name: &str,
    ) -> Result<bool> {
        let mut left = len;
        let mut ends_in_hole = false;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match entry.read(&mut self.buf[..want]) {
                Ok(0) => return Err(self.truncated()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.stream_error(e)),
            };
            for chunk in self.buf[..n].chunks(HOLE_GRAIN) {
                ends_in_hole = chunk.iter().all(|b| *b == 0);
                if !ends_in_hole {
                    out.write_all_at(chunk, offset)
                        .map_err(|e| failed("write", name, e))?;
                }
                offset += chunk.len() as u64;
            }
            left -= n as u64;
            self.progress.check("unpacking the archive")?;
        }
        Ok(ends_in_hole)
    }

    /// PAX sparse 1.0's map: decimal numbers, one a line (the count, then offset and
    /// length pairs), padded to whole 512-byte blocks.
    fn read_sparse_map<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        size: u64,
    ) -> Result<Vec<(u64, u64)>> {
        let corrupt = || invalid(format!("entry {name} has a corrupt sparse map"));
        let mut text = Vec::new();
        let mut numbers: Vec<u64> = Vec::new();
        let mut wanted = None;
        while wanted.is_none_or(|w| numbers.len() < w) {
            if text.len() > SPARSE_MAP_MAX * 8 {
                return Err(corrupt());
            }
            let mut block = [0u8; 512];
            let mut got = 0;
            while got < block.len() {
                match entry.read(&mut block[got..]) {
                    Ok(0) => return Err(self.truncated()),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.stream_error(e)),
                }
            }
            text.extend_from_slice(&block);
            numbers.clear();
            let mut lines = text.split(|b| *b == b'\n');
            // The last piece is not yet a whole line.
            let whole = text.iter().filter(|b| **b == b'\n').count();
            for line in lines.by_ref().take(whole) {
                let n = std::str::from_utf8(line).ok().and_then(|l| l.parse().ok());
                numbers.push(n.ok_or_else(corrupt)?);
                if wanted.is_none() {
                    let count = usize::try_from(numbers[0]).map_err(|_| corrupt())?;
                    if count > SPARSE_MAP_MAX {
                        return Err(corrupt());
                    }
                    wanted = Some(1 + 2 * count);
                }
                if wanted.is_some_and(|w| numbers.len() == w) {
                    break;
                }
            }
        }
        let pairs = numbers[1..].chunks(2).map(|p| (p[0], p[1])).collect();
        check_segments(pairs, size).ok_or_else(corrupt)
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &[u8],
        name: &str,
        meta: &Meta,
    ) -> Result<()> {
        let target = match meta
            .link
            .clone()
            .or_else(|| entry.link_name_bytes().map(|t| t.into_owned()))
        {
            Some(t) if !t.is_empty() => t,
            _ => return Err(invalid(format!("symlink {name} has no target"))),
        };
        if rel.is_empty() {
            return Err(invalid(format!(
                "entry {name} would replace the root directory with a symlink"
            )));
        }
        self.space.need(&self.root, ENTRY_OVERHEAD, name)?;
        let (dir, file) = self.parent_of(rel, name)?;
        // Verbatim: an absolute target is normal in a root filesystem, and means the
        // machine's root once it runs; berth never follows it while unpacking.
        let target = OsStr::from_bytes(&target);
        self.create(&dir, &file, name, || {
            symlinkat(target, &*dir, file.as_c_str())
        })?;
        self.apply_at(&dir, &file, meta, name, false)?;
        self.summary.entries += 1;
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &[u8],
        name: &str,
        meta: &Meta,
    ) -> Result<()> {
        let raw = meta
            .link
            .clone()
            .or_else(|| entry.link_name_bytes().map(|t| t.into_owned()))
            .unwrap_or_default();
        let target_name = shown(&raw);
        let not_earlier = || {
            invalid(format!(
                "hard link {name} points to {target_name}, which is not an earlier entry of the archive"
            ))
        };
        if raw.is_empty() || raw.starts_with(b"/") || raw.contains(&0) {
            return Err(not_earlier());
        }
        let target = relative(&raw, &target_name).map_err(|_| not_earlier())?;
        if target.is_empty() || rel.is_empty() {
            return Err(invalid(format!(
                "hard link {name} to {target_name}: a directory cannot be linked"
            )));
        }
        if target == rel {
            return Ok(());
        }
        let (target_dir, target_file) = split(&target);
        let target_dir = if target_dir.is_empty() {
            self.root.clone()
        } else {
            match openat2(self.root.as_fd(), OsStr::from_bytes(target_dir), in_root()) {
                Ok(fd) => Rc::new(fd),
                Err(Errno::ELOOP | Errno::EXDEV) => {
                    return Err(invalid(format!(
                        "hard link {name} points to {target_name} through a symlink; refusing it"
                    )));
                }
                Err(Errno::ENOENT | Errno::ENOTDIR) => return Err(not_earlier()),
                Err(e) => return Err(failed("link", name, e)),
            }
        };
        let target_file = c_name(target_file);
        self.space.need(&self.root, ENTRY_OVERHEAD, name)?;
        let (dir, file) = self.parent_of(rel, name)?;
        let link = || {
            linkat(
                &*target_dir,
                target_file.as_c_str(),
                &*dir,
                file.as_c_str(),
                AtFlags::empty(),
            )
        };
        match link() {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Err(not_earlier()),
            Err(Errno::EPERM) => {
                return Err(invalid(format!(
                    "hard link {name} to {target_name}: a directory cannot be linked"
                )));
            }
            Err(Errno::EEXIST) => {
                let same = |d: &OwnedFd, f: &CString| {
                    fstatat(d, f.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .ok()
                        .map(|s| (s.st_dev, s.st_ino))
                };
                if same(&dir, &file).is_none()
                    || same(&dir, &file) != same(&target_dir, &target_file)
                {
                    self.clear(dir.as_fd(), &file, name)?;
                    link().map_err(|e| failed("link", name, e))?;
                }
            }
            Err(e) => return Err(failed("link", name, e)),
        }
        self.summary.entries += 1;
        Ok(())
    }

    fn node<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &[u8],
        name: &str,
        meta: &Meta,
    ) -> Result<()> {
        let header = entry.header();
        let (kind, what) = match header.entry_type() {
            EntryType::Char => (SFlag::S_IFCHR, "character device"),
            EntryType::Block => (SFlag::S_IFBLK, "block device"),
            _ => (SFlag::S_IFIFO, "FIFO"),
        };
        let device = kind != SFlag::S_IFIFO;
        match self.opts.specials {
            Specials::Refuse => {
                return Err(invalid(format!(
                    "entry {name} is a {what}; this archive may not hold device nodes or FIFOs"
                )));
            }
            Specials::SkipDevices if device => {
                self.summary.skipped_devices += 1;
                return Ok(());
            }
            _ => {}
        }
        if rel.is_empty() {
            return Err(invalid(format!(
                "entry {name} would replace the root directory with a {what}"
            )));
        }
        let dev = if device {
            let bad = |e: io::Error| invalid(format!("entry {name} has a corrupt header: {e}"));
            let major = header.device_major().map_err(bad)?.unwrap_or(0);
            let minor = header.device_minor().map_err(bad)?.unwrap_or(0);
            makedev(major.into(), minor.into())
        } else {
            0
        };
        self.space.need(&self.root, ENTRY_OVERHEAD, name)?;
        let (dir, file) = self.parent_of(rel, name)?;
        let perm = Mode::from_bits_truncate(0o600);
        self.create(&dir, &file, name, || {
            mknodat(&*dir, file.as_c_str(), kind, perm, dev)
        })?;
        self.apply_at(&dir, &file, meta, name, true)?;
        self.summary.entries += 1;
        Ok(())
    }

    /// Directories' mtimes, deepest first, now that nothing more is written in them.
    fn set_dir_times(&mut self) -> Result<()> {
        let mut times = std::mem::take(&mut self.dir_times);
        let depth = |rel: &[u8]| {
            if rel.is_empty() {
                0
            } else {
                1 + rel.iter().filter(|b| **b == b'/').count()
            }
        };
        // Stable: of two entries for one directory, the later one's time is set last.
        times.sort_by_key(|(rel, _)| std::cmp::Reverse(depth(rel)));
        for (rel, mtime) in times {
            let fd = if rel.is_empty() {
                self.root.clone()
            } else {
                match openat2(self.root.as_fd(), OsStr::from_bytes(&rel), in_root()) {
                    Ok(fd) => Rc::new(fd),
                    // A later entry replaced it.
                    Err(_) => continue,
                }
            };
            futimens(&*fd, &TimeSpec::UTIME_OMIT, &mtime)
                .map_err(|e| failed("set the time of", &shown(&rel), e))?;
        }
        Ok(())
    }
}

impl Space {
    /// Takes `bytes` of the target file system's space for entry `name`, or says why not.
    fn need(&mut self, root: &OwnedFd, bytes: u64, name: &str) -> Result<()> {
        if bytes <= self.budget {
            self.budget -= bytes;
            return Ok(());
        }
        let st = fstatvfs(root).map_err(|e| failed("check the free space for", name, e))?;
        let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
        let usable = free.saturating_sub(self.reserve);
        if bytes > usable {
            return Err(Error::Failed(format!(
                "not enough space for entry {name}: it needs {}, and {} is free of which {} must stay free",
                human(bytes),
                human(free),
                human(self.reserve)
            )));
        }
        self.budget = (usable - bytes).min(SPACE_RECHECK);
        Ok(())
    }
}
