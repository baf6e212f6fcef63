//! A soak: many machines made, started, entered, stopped and removed by parallel clients on
//! one hybrid host, after which nothing of them may remain and berthd may not have grown.
//!
//! Each cycle is `berthctl create` → `start` → `exec -- true` (exit 0) → `exec -- hostname`
//! (its output) → `stop` → `remove`, with a name of its own; `BERTH_SOAK_CLIENTS` threads
//! (default 8) take cycles from one counter, each running berthctl in the host as a user
//! would. First `BERTH_SOAK_WARMUP` cycles (default 20) warm berthd up: its template
//! cache, its thread pools, the allocator's arenas. Then berthd's open descriptors and
//! VmRSS are taken, `BERTH_SOAK_CYCLES` more cycles run (default 200, what CI runs), and
//! afterwards the host must hold no machine unit, machined entry, cgroup, process, mount,
//! file or helper (`assert_no_leftovers`), berthd no child and no more descriptors, and
//! its VmRSS must have grown by less than 10 %. scripts/soak.sh runs the long soak.

mod common;

use common::{CgroupMode, TestHost, assert_no_leftovers, boot_with_berth};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Descriptors berthd may hold after the soak beyond what it held after the warm-up.
/// berthd keeps none per machine once the machine is gone; what may differ between two
/// quiet moments is a descriptor a library opens once, on first need, and then keeps (a
/// runtime's or the bus connection's internal one); a leak grows with the cycles and is
/// far past this after 200 of them.
const FD_SLACK: usize = 2;
/// Growth of berthd's resident memory over the measured cycles, in percent, that is taken
/// for a leak.
const RSS_DRIFT_PERCENT: u64 = 10;

fn env_count(var: &str, default: usize) -> usize {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a count")),
        Err(_) => default,
    }
}

/// berthd as the host sees it at a quiet moment.
struct Berthd {
    pid: String,
    /// `ls -l /proc/PID/fd`, for the message when the count grew.
    fds: Vec<String>,
    rss_kib: u64,
}

fn berthd(host: &TestHost) -> Berthd {
    let pid = host.okw("pidof berthd").trim().to_string();
    assert!(!pid.is_empty() && !pid.contains(' '), "one berthd: {pid:?}");
    let fds = host
        .ok(&["ls", "-l", &format!("/proc/{pid}/fd")])
        .lines()
        .filter(|l| l.starts_with('l'))
        .map(|l| l.split_whitespace().skip(8).collect::<Vec<_>>().join(" "))
        .collect();
    let status = host.ok(&["cat", &format!("/proc/{pid}/status")]);
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in berthd's status:\n{status}"));
    Berthd { pid, fds, rss_kib }
}

/// One machine's whole life, through berthctl inside the host.
fn cycle(host: &TestHost, name: &str) {
    host.ok(&["berthctl", "create", name, "--template", "busybox"]);
    host.ok(&["berthctl", "start", name]);
    let out = host.run(&["berthctl", "exec", name, "--", "true"]);
    assert!(out.status.success(), "exec {name} -- true: {out:?}");
    let hostname = host.ok(&["berthctl", "exec", name, "--", "hostname"]);
    assert_eq!(hostname.trim(), name, "exec {name} -- hostname");
    host.ok(&["berthctl", "stop", name]);
    host.ok(&["berthctl", "remove", name]);
}

/// Runs cycles `from..to` on `clients` threads; returns the longest cycle. A failing
/// client makes the others stop taking cycles, and its panic is the test's.
fn run_cycles(host: &TestHost, from: usize, to: usize, clients: usize) -> Duration {
    let next = AtomicUsize::new(from);
    let failed = AtomicBool::new(false);
    let longest = Mutex::new(Duration::ZERO);
    let done = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                // Set on the way out of a panicking client.
                struct Flag<'a>(&'a AtomicBool);
                impl Drop for Flag<'_> {
                    fn drop(&mut self) {
                        if thread::panicking() {
                            self.0.store(true, Ordering::Relaxed);
                        }
                    }
                }
                let _flag = Flag(&failed);
                while !failed.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= to {
                        break;
                    }
                    let started = Instant::now();
                    cycle(host, &format!("soak{n}"));
                    let took = started.elapsed();
                    let mut l = longest.lock().unwrap_or_else(PoisonError::into_inner);
                    *l = (*l).max(took);
                    let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                    if d.is_multiple_of(50) {
                        eprintln!("soak: {d}/{} cycles", to - from);
                    }
                }
            });
        }
    });
    longest.into_inner().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn parallel_lifecycles_leak_nothing() {
    let warmup = env_count("BERTH_SOAK_WARMUP", 20);
    let cycles = env_count("BERTH_SOAK_CYCLES", 200);
    let clients = env_count("BERTH_SOAK_CLIENTS", 8).max(1);
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "soak") else {
        return;
    };
    // Activates berthd (and builds the template) before anything is timed.
    host.okw("berthctl list");

    let started = Instant::now();
    let longest = run_cycles(&host, 0, warmup, clients);
    eprintln!(
        "soak: warm-up of {warmup} cycles on {clients} clients in {:.1?} (longest cycle {longest:.1?})",
        started.elapsed()
    );
    assert_no_leftovers(&host);
    let before = berthd(&host);

    let started = Instant::now();
    let longest = run_cycles(&host, warmup, warmup + cycles, clients);
    let took = started.elapsed();
    eprintln!(
        "soak: {cycles} cycles on {clients} clients in {took:.1?} ({:.2?} per cycle, longest {longest:.1?})",
        took / cycles.max(1) as u32
    );
    assert_eq!(host.okw("berthctl --json list").trim(), "[]");
    assert_no_leftovers(&host);

    let after = berthd(&host);
    eprintln!(
        "soak: berthd VmRSS {} KiB after warm-up, {} KiB after {cycles} cycles ({:+.1} %); \
         open fds {} -> {}",
        before.rss_kib,
        after.rss_kib,
        (after.rss_kib as f64 - before.rss_kib as f64) * 100.0 / before.rss_kib as f64,
        before.fds.len(),
        after.fds.len()
    );
    assert_eq!(
        after.pid,
        before.pid,
        "berthd restarted during the soak:\n{}",
        host.journal("berthd")
    );
    let children = host.run(&[
        "ps",
        "--ppid",
        &after.pid,
        "-o",
        "pid,stat,args",
        "--no-headers",
    ]);
    let children = String::from_utf8_lossy(&children.stdout);
    assert!(
        children.trim().is_empty(),
        "berthd still has children (helpers, zombies):\n{children}"
    );
    assert!(
        after.fds.len() <= before.fds.len() + FD_SLACK,
        "berthd's descriptors grew from {} to {}:\nafter warm-up: {:#?}\nnow: {:#?}",
        before.fds.len(),
        after.fds.len(),
        before.fds,
        after.fds
    );
    assert!(
        after.rss_kib * 100 < before.rss_kib * (100 + RSS_DRIFT_PERCENT),
        "berthd's VmRSS grew by {RSS_DRIFT_PERCENT} % or more over {cycles} cycles: \
         {} KiB -> {} KiB",
        before.rss_kib,
        after.rss_kib
    );
}
