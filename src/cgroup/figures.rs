//! A scope's accounting figures read straight from its cgroup files: the numbers systemd
//! reports as CPUUsageNSec, MemoryCurrent, TasksCurrent, IOReadBytes and IOWriteBytes, read
//! where systemd reads them (src/core/cgroup.c), without a D-Bus round trip to PID 1 per
//! figure. A few small kernfs reads per machine: cheap enough for every machine of a
//! GetManagedObjects, and no call of berth's waits on systemd to answer it.

use super::CgroupMode;
use crate::api::UNKNOWN_FIGURE;
use std::io::Read;
use std::path::Path;

/// Where systemd puts every machine's scope (berth sets Slice= to it).
const SLICE: &str = "machine.slice";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScopeFigures {
    pub cpu_usage_nsec: u64,
    pub memory_current: u64,
    pub tasks_current: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
}

impl ScopeFigures {
    pub const UNKNOWN: ScopeFigures = ScopeFigures {
        cpu_usage_nsec: UNKNOWN_FIGURE,
        memory_current: UNKNOWN_FIGURE,
        tasks_current: UNKNOWN_FIGURE,
        io_read_bytes: UNKNOWN_FIGURE,
        io_write_bytes: UNKNOWN_FIGURE,
    };
}

/// The figures of scope `unit` under the hierarchies mounted at `root` (/sys/fs/cgroup).
/// A file that is missing (the scope is gone, its controller is not enabled) or unreadable
/// leaves its figure unknown, as systemd reports it then.
pub fn read(root: &Path, mode: CgroupMode, unit: &str) -> ScopeFigures {
    let path =
        |controller: &str, name: &str| root.join(controller).join(SLICE).join(unit).join(name);
    let file = |controller: &str, name: &str| read_text(&path(controller, name));
    let number = |controller: &str, name: &str| {
        read_text_line(&path(controller, name))
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(UNKNOWN_FIGURE)
    };
    match mode {
        CgroupMode::Unified => {
            let (io_read_bytes, io_write_bytes) =
                file("", "io.stat").map_or((UNKNOWN_FIGURE, UNKNOWN_FIGURE), |t| io_stat(&t));
            ScopeFigures {
                // cgroup2 keeps CPU time in cpu.stat even without the cpu controller.
                cpu_usage_nsec: file("", "cpu.stat")
                    .and_then(|t| keyed(&t, "usage_usec"))
                    .map_or(UNKNOWN_FIGURE, |us| us.saturating_mul(1000)),
                memory_current: number("", "memory.current"),
                tasks_current: number("", "pids.current"),
                io_read_bytes,
                io_write_bytes,
            }
        }
        // systemd counts I/O only from cgroup2's io.stat: on v1 hosts it reports none.
        CgroupMode::Hybrid | CgroupMode::Legacy => ScopeFigures {
            cpu_usage_nsec: number("cpuacct", "cpuacct.usage"),
            memory_current: number("memory", "memory.usage_in_bytes"),
            tasks_current: number("pids", "pids.current"),
            ..ScopeFigures::UNKNOWN
        },
    }
}

/// The text of a small kernfs file, without the stat for a size hint that
/// `fs::read_to_string` makes: GetManagedObjects reads a few of these per running
/// machine.
fn read_text(path: &Path) -> Option<String> {
    read_until(path, |_| false)
}

/// The text of a one-line file (a single value): a read that ends with the newline has
/// it all, so open, read, close.
fn read_text_line(path: &Path) -> Option<String> {
    read_until(path, |text| text.ends_with(b"\n"))
}

/// Reads `path` until its end or until `done` says the text so far is all of it.
fn read_until(path: &Path, done: impl Fn(&[u8]) -> bool) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut buf = [0u8; 512];
    let mut text = Vec::new();
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                text.extend_from_slice(&buf[..n]);
                if done(&text) {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    String::from_utf8(text).ok()
}

/// The value of `key` in a flat keyed file ("usage_usec 1234" lines).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// Bytes read and written, summed over the devices of io.stat
/// ("8:0 rbytes=1 wbytes=2 rios=3 ..." lines), as systemd sums them.
fn io_stat(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for field in text.split_whitespace() {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let Ok(n) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "rbytes" => read = read.saturating_add(n),
            "wbytes" => written = written.saturating_add(n),
            _ => {}
        }
    }
    (read, written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn scope(root: &Path, controller: &str, files: &[(&str, &str)]) {
        let dir = root.join(controller).join(SLICE).join("machine-box.scope");
        fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            fs::write(dir.join(name), text).unwrap();
        }
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("berth-figures-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        root
    }

    #[test]
    fn unified_figures_come_from_cgroup2_files() {
        let root = tmp("unified");
        scope(
            &root,
            "",
            &[
                (
                    "cpu.stat",
                    "usage_usec 2345\nuser_usec 2000\nsystem_usec 345\n",
                ),
                ("memory.current", "1048576\n"),
                ("pids.current", "3\n"),
                (
                    "io.stat",
                    "8:0 rbytes=100 wbytes=20 rios=1 wios=1\n253:1 rbytes=5 wbytes=1 rios=1\n",
                ),
            ],
        );
        assert_eq!(
            read(&root, CgroupMode::Unified, "machine-box.scope"),
            ScopeFigures {
                cpu_usage_nsec: 2_345_000,
                memory_current: 1 << 20,
                tasks_current: 3,
                io_read_bytes: 105,
                io_write_bytes: 21,
            }
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn v1_figures_come_from_controller_hierarchies() {
        let root = tmp("hybrid");
        scope(&root, "cpuacct", &[("cpuacct.usage", "987654321\n")]);
        scope(&root, "memory", &[("memory.usage_in_bytes", "4096\n")]);
        let figures = read(&root, CgroupMode::Hybrid, "machine-box.scope");
        assert_eq!(figures.cpu_usage_nsec, 987_654_321);
        assert_eq!(figures.memory_current, 4096);
        // No pids hierarchy here: unknown, not zero. I/O is never counted on v1.
        assert_eq!(figures.tasks_current, UNKNOWN_FIGURE);
        assert_eq!(figures.io_read_bytes, UNKNOWN_FIGURE);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_scope_knows_nothing() {
        let root = tmp("missing");
        for mode in [CgroupMode::Unified, CgroupMode::Hybrid] {
            assert_eq!(read(&root, mode, "machine-x.scope"), ScopeFigures::UNKNOWN);
        }
    }

    #[test]
    fn an_empty_io_stat_is_zero() {
        assert_eq!(io_stat(""), (0, 0));
        assert_eq!(keyed("usage_usec 7\n", "usage_usec"), Some(7));
        assert_eq!(keyed("user_usec 7\n", "usage_usec"), None);
    }
}
