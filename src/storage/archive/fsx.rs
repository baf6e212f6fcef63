//! Extended attributes, by descriptor where there is one, else by name inside an opened
//! directory: symlinks, device nodes and FIFOs cannot be opened for `f*xattr`, so they
//! are reached as `/proc/self/fd/DIR/NAME` with the `l*xattr` calls. The directory is one
//! berth opened itself and NAME a single component, so the only link followed is the
//! directory descriptor's own.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

#[derive(Clone, Copy)]
pub(super) enum Target<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a CStr),
}

impl Target<'_> {
    fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> CString {
        let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        path.extend_from_slice(name.to_bytes());
        CString::new(path).expect("a C string's bytes hold no NUL")
    }
}

fn check(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

pub(super) fn set(target: Target<'_>, name: &CStr, value: &[u8]) -> io::Result<()> {
    let (ptr, len) = (value.as_ptr().cast(), value.len());
    // SAFETY: the pointers are valid C strings and a buffer of `len` bytes.
    let ret = unsafe {
        match target {
            Target::Fd(fd) => libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), ptr, len, 0),
            Target::At(dir, file) => {
                let path = Target::proc_path(dir, file);
                libc::lsetxattr(path.as_ptr(), name.as_ptr(), ptr, len, 0)
            }
        }
    };
    check(ret as libc::ssize_t).map(drop)
}

/// Calls `call` with a buffer grown until the value fits (it may grow between the size
/// query and the read).
fn sized(mut call: impl FnMut(&mut [u8]) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    loop {
        let size = check(call(&mut []))?;
        let mut buf = vec![0; size];
        match check(call(&mut buf)) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Every extended attribute as (name, value); none where the file system has none.
pub(super) fn list(target: Target<'_>) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let path = match target {
        Target::At(dir, file) => Some(Target::proc_path(dir, file)),
        Target::Fd(_) => None,
    };
    // SAFETY (both closures): valid C strings, and buffers of the length passed.
    let names = sized(|buf| unsafe {
        let (ptr, len) = (buf.as_mut_ptr().cast(), buf.len());
        match (&target, &path) {
            (Target::Fd(fd), _) => libc::flistxattr(fd.as_raw_fd(), ptr, len),
            (_, Some(path)) => libc::llistxattr(path.as_ptr(), ptr, len),
            (Target::At(..), None) => unreachable!(),
        }
    });
    let names = match names {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = CString::new(name).expect("split at NUL");
        let value = sized(|buf| unsafe {
            let (ptr, len) = (buf.as_mut_ptr().cast(), buf.len());
            match (&target, &path) {
                (Target::Fd(fd), _) => libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), ptr, len),
                (_, Some(path)) => libc::lgetxattr(path.as_ptr(), name.as_ptr(), ptr, len),
                (Target::At(..), None) => unreachable!(),
            }
        });
        match value {
            Ok(value) => out.push((name, value)),
            // Removed since it was listed.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}
