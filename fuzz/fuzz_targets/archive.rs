//! Untrusted archives (src/storage/archive `unpack`), as the tar template method and
//! ImportMachine read them from a caller.
//!
//! Whatever the bytes, unpacking never panics and never writes outside its root: next
//! to the root, inside a fixed scratch directory, nothing but the root ever appears, and
//! a sentinel file beside it is never changed. Errors are fine; so is a partial tree.
#![no_main]

use berth::jobs::Progress;
use berth::storage::archive::{UnpackOptions, unpack};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("berth-fuzz-archive-{}", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let base = scratch();
    let root = base.join("root");
    let sentinel = base.join("sentinel");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(&sentinel, b"untouched").unwrap();
    let _ = unpack(data, &root, &UnpackOptions::default(), &Progress::new());
    let mut beside: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    beside.sort();
    assert_eq!(beside, ["root", "sentinel"], "something was written beside the root");
    assert_eq!(std::fs::read(&sentinel).unwrap(), b"untouched");
    let _ = std::fs::remove_dir_all(&base);
});
