//! Long operations (template builds, imports, exports) as Jobs: the daemon starts the
//! work on its own task and answers the caller at once with the Job; the worker reports
//! into the Job's [`Progress`]; Cancel sets the Progress's flag, which the worker checks
//! between steps and answers by undoing what it made. The dbus layer shows each Job as
//! an `org.berth.Berth1.Job` object from [`Event::JobAdded`] until its Completed signal.
//!
//! [`Event::JobAdded`]: crate::daemon::Event::JobAdded

pub mod progress;

pub use progress::Progress;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What a Job does, as its Operation property says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    BuildTemplate,
    ImportMachine,
    ExportMachine,
    CopyTo,
    CopyFrom,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::BuildTemplate => "build-template",
            Operation::ImportMachine => "import-machine",
            Operation::ExportMachine => "export-machine",
            Operation::CopyTo => "copy-to",
            Operation::CopyFrom => "copy-from",
        }
    }
}

/// The thing a Job works on, for its Object property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Template(String),
    Machine(String),
}

#[derive(Debug)]
pub struct Job {
    pub id: u64,
    pub operation: Operation,
    pub target: Target,
    pub progress: Arc<Progress>,
    /// What Progress counts: "bytes" or "steps".
    pub unit: &'static str,
    /// usec since the epoch.
    pub started_at: u64,
    started: Instant,
}

impl Job {
    /// Units per second since the start: bytes for copies and archives, packages for
    /// debootstrap. 0 until something was done.
    pub fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs <= 0.0 {
            0.0
        } else {
            self.progress.done() as f64 / secs
        }
    }
}

/// The Jobs under way.
#[derive(Debug, Default)]
pub struct Jobs {
    next: AtomicU64,
    running: Mutex<BTreeMap<u64, Arc<Job>>>,
}

impl Jobs {
    pub fn start(
        &self,
        operation: Operation,
        target: Target,
        started_at: u64,
        unit: &'static str,
    ) -> Arc<Job> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Job {
            id,
            operation,
            target,
            progress: Arc::new(Progress::new()),
            unit,
            started_at,
            started: Instant::now(),
        });
        self.running
            .lock()
            .expect("jobs lock")
            .insert(id, job.clone());
        job
    }

    pub fn get(&self, id: u64) -> Option<Arc<Job>> {
        self.running.lock().expect("jobs lock").get(&id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Job>> {
        self.running
            .lock()
            .expect("jobs lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn finish(&self, id: u64) {
        self.running.lock().expect("jobs lock").remove(&id);
    }

    /// Cancels every Job (berthd is stopping): each worker unwinds and cleans up.
    pub fn cancel_all(&self) {
        for job in self.all() {
            job.progress.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_finished_jobs_leave() {
        let jobs = Jobs::default();
        let a = jobs.start(
            Operation::BuildTemplate,
            Target::Template("a".into()),
            1,
            "steps",
        );
        let b = jobs.start(
            Operation::ExportMachine,
            Target::Machine("m".into()),
            2,
            "bytes",
        );
        assert_ne!(a.id, b.id);
        assert_eq!(jobs.all().len(), 2);
        jobs.cancel_all();
        assert!(a.progress.is_cancelled() && b.progress.is_cancelled());
        jobs.finish(a.id);
        assert!(jobs.get(a.id).is_none());
        assert_eq!(jobs.get(b.id).unwrap().operation.as_str(), "export-machine");
    }
}
