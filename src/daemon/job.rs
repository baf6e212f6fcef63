//! Running long work as a Job: the worker on a task of its own, the Job completed with
//! the worker's result (its message, or the error's) once the worker has cleaned up.

use super::{Daemon, Event, now_usec};
use crate::error::Result;
use crate::jobs::{Job, Operation, Target};
use std::future::Future;
use std::sync::Arc;
use tracing::{info, warn};

impl Daemon {
    /// Registers a Job and announces it (the pump makes its object).
    pub(super) fn new_job(&self, op: Operation, target: Target, unit: &'static str) -> Arc<Job> {
        let job = self.jobs.start(op, target, now_usec(), unit);
        self.emit(Event::JobAdded(job.clone()));
        job
    }

    /// Runs `work` for `job`; its Ok is the Completed message.
    pub(super) fn run_job<F>(self: &Arc<Self>, job: Arc<Job>, work: F)
    where
        F: Future<Output = Result<String>> + Send + 'static,
    {
        let daemon = self.clone();
        tokio::spawn(async move {
            let (success, message) = match work.await {
                Ok(m) => {
                    info!("job {}: {m}", job.id);
                    (true, m)
                }
                Err(e) => {
                    warn!("job {} ({}): {e}", job.id, job.operation.as_str());
                    (false, e.to_string())
                }
            };
            daemon.jobs.finish(job.id);
            daemon.emit(Event::JobCompleted {
                job,
                success,
                message,
            });
        });
    }
}
