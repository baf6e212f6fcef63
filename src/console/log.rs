//! A machine's console log: a file in /run appended with everything the console says,
//! kept bounded by rewriting it to its last [`CAP`] bytes whenever it grows past twice
//! that. A file rather than a buffer in memory: it survives a crash of berthd, and a
//! thousand idle machines cost no memory.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What is kept of a console's output after a rewrite: enough for a boot's worth of
/// messages and a screenful of scrollback (`logs -n`), small enough that /run holds a
/// thousand machines' logs (at most 2 × CAP each) without noticing.
pub const CAP: u64 = 128 * 1024;

/// How much of the log a console client sees first: the last screen or two.
pub const REPLAY: u64 = 8 * 1024;

/// How berthd's own lines in a log begin, so they stand out from the machine's output.
pub const NOTE_PREFIX: &str = "-- berthd: ";

pub struct LogFile {
    path: PathBuf,
    file: File,
    len: u64,
    cap: u64,
}

impl LogFile {
    /// Opens (or creates, 0600: a console may show secrets) the log at `path` for
    /// appending.
    pub fn open(path: &Path) -> io::Result<LogFile> {
        LogFile::with_cap(path, CAP)
    }

    fn with_cap(path: &Path, cap: u64) -> io::Result<LogFile> {
        let file = append(path)?;
        let len = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            len,
            cap,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.len += data.len() as u64;
        if self.len > 2 * self.cap {
            self.shrink()?;
        }
        Ok(())
    }

    /// Appends one of berthd's lines about the machine. `\r\n`: the console is a
    /// terminal and a client reads it raw.
    pub fn note(&mut self, text: &str) -> io::Result<()> {
        self.append(format!("{NOTE_PREFIX}{text}\r\n").as_bytes())
    }

    /// Rewrites the file to its last `cap` bytes (from the first line that starts there
    /// when one does), beside it and renamed over it, so a crash leaves one or the other.
    fn shrink(&mut self) -> io::Result<()> {
        let keep = tail_of(&self.file, self.len, self.cap)?;
        let staging = self.path.with_extension("log.new");
        {
            let mut f = File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&staging)?;
            f.write_all(&keep)?;
        }
        std::fs::rename(&staging, &self.path)?;
        self.file = append(&self.path)?;
        self.len = keep.len() as u64;
        Ok(())
    }

    /// Moves the log to `to` (the machine was renamed).
    pub fn rename(&mut self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.path = to.to_path_buf();
        Ok(())
    }

    /// The last `max` bytes, from a line's start when there is one.
    pub fn tail(&self, max: u64) -> io::Result<Vec<u8>> {
        tail_of(&self.file, self.len, max)
    }

    /// The last `n` lines (all if there are fewer); 0 gives nothing.
    pub fn last_lines(&self, n: u64) -> io::Result<Vec<u8>> {
        let mut all = Vec::with_capacity(self.len as usize);
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(0))?;
        f.read_to_end(&mut all)?;
        Ok(last_lines(&all, n).to_vec())
    }
}

/// Open for appending, and for reading the tail back (replay, rewrite).
fn append(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
}

fn tail_of(file: &File, len: u64, max: u64) -> io::Result<Vec<u8>> {
    let start = len.saturating_sub(max);
    let mut buf = vec![0u8; (len - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    if start > 0
        && let Some(nl) = buf.iter().position(|&b| b == b'\n')
        && nl + 1 < buf.len()
    {
        buf.drain(..=nl);
    }
    Ok(buf)
}

/// The last `n` lines of `text`; a last line without its newline counts as one.
pub fn last_lines(text: &[u8], n: u64) -> &[u8] {
    if n == 0 {
        return &text[text.len()..];
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, &b) in body.iter().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("berth-log-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
        assert_eq!(last_lines(b"", 3), b"");
        assert_eq!(last_lines(b"\n\n", 1), b"\n");
    }

    #[test]
    fn the_file_stays_bounded_and_keeps_the_newest_lines() {
        let d = dir("bounded");
        let path = d.join("m.log");
        let mut log = LogFile::with_cap(&path, 100).unwrap();
        for i in 0..1000 {
            log.append(format!("line {i:04}\n").as_bytes()).unwrap();
            let size = std::fs::metadata(&path).unwrap().len();
            assert!(size <= 200, "{size} bytes after line {i}");
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("line 0999\n"), "{text}");
        // Rewritten from a line's start: no torn first line.
        assert!(text.starts_with("line "), "{text}");
        assert!(!d.join("m.log.new").exists());
        assert_eq!(log.last_lines(2).unwrap(), b"line 0998\nline 0999\n");
        assert_eq!(log.tail(20).unwrap(), b"line 0999\n");
        // Reopened (berthd restarted): it goes on from the size on disk.
        let len = std::fs::metadata(&path).unwrap().len();
        let mut again = LogFile::with_cap(&path, 100).unwrap();
        assert_eq!(again.len, len);
        again.note("stopped").unwrap();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .ends_with("-- berthd: stopped\r\n")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_chunk_larger_than_the_cap_keeps_its_end() {
        let d = dir("chunk");
        let path = d.join("m.log");
        let mut log = LogFile::with_cap(&path, 10).unwrap();
        log.append(&[b'x'; 50]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), [b'x'; 10]);
        let to = d.join("n.log");
        log.rename(&to).unwrap();
        log.append(b"y").unwrap();
        assert!(!path.exists());
        assert_eq!(std::fs::read(&to).unwrap().last(), Some(&b'y'));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
