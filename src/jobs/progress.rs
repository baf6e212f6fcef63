//! How far a long operation has come, and whether it should stop: shared between the
//! worker doing the work (on a blocking thread or in a child's output reader) and the Job
//! object that shows it. Workers count units (bytes, files or packages) with [`add`] and
//! call [`check`] between steps, so a Cancel takes effect within one step.
//!
//! [`add`]: Progress::add
//! [`check`]: Progress::check

use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Lines of a worker's output kept for the Job's Message signals until sent; older ones
/// are dropped rather than letting a chatty worker grow the daemon.
const MAX_LINES: usize = 256;

#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    cancelled: AtomicBool,
    lines: Mutex<VecDeque<String>>,
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how many units the whole operation is; 0 means not known (yet).
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    pub fn add(&self, units: u64) {
        self.done.fetch_add(units, Ordering::Relaxed);
    }

    pub fn set_done(&self, units: u64) {
        self.done.store(units, Ordering::Relaxed);
    }

    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// 0..=1; 0 while the total is not known.
    pub fn fraction(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            t => (self.done() as f64 / t as f64).clamp(0.0, 1.0),
        }
    }

    /// A line of the worker's output (debootstrap's), for clients following the Job.
    pub fn log(&self, line: String) {
        let mut lines = self.lines.lock().expect("progress lines lock");
        if lines.len() == MAX_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The lines logged since the last call.
    pub fn take_lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .expect("progress lines lock")
            .drain(..)
            .collect()
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled(what))` once cancelled: workers call it between steps and unwind.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled(what.to_string()))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_is_clamped_and_zero_without_total() {
        let p = Progress::new();
        p.add(5);
        assert_eq!(p.fraction(), 0.0);
        p.set_total(10);
        assert_eq!(p.fraction(), 0.5);
        p.add(20);
        assert_eq!(p.fraction(), 1.0);
    }

    #[test]
    fn lines_are_bounded_and_taken_once() {
        let p = Progress::new();
        for i in 0..(MAX_LINES + 10) {
            p.log(format!("line {i}"));
        }
        let lines = p.take_lines();
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(lines[0], "line 10");
        assert!(p.take_lines().is_empty());
    }

    #[test]
    fn check_fails_after_cancel() {
        let p = Progress::new();
        p.check("copy").unwrap();
        p.cancel();
        let e = p.check("copy").unwrap_err();
        assert_eq!(e.kind(), crate::error::Kind::Cancelled);
        assert_eq!(e.to_string(), "copy was cancelled");
    }
}
