//! org.berth.Berth1.Job, one object per long operation at /org/berth/Berth1/job/ID, from
//! its start until it completes. Progress and Rate are sent as PropertiesChanged a few
//! times a second while they move, so a frontend needs no polling; Completed is sent
//! from the Job's own path right before the object goes.

use super::auth::{Action, authorize};
use super::error::Result;
use super::template;
use crate::daemon::Daemon;
use crate::jobs::{Job, Operation, Target};
use crate::names;
use std::sync::Arc;
use std::time::Duration;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedObjectPath;
use zbus::{Connection, interface};

/// How often a moving Job tells its Progress.
const TICK: Duration = Duration::from_millis(250);

pub struct JobIface {
    daemon: Arc<Daemon>,
    job: Arc<Job>,
}

pub fn job_path(id: u64) -> OwnedObjectPath {
    OwnedObjectPath::try_from(names::job_object_path(id)).expect("job paths are valid")
}

pub async fn register(conn: &Connection, daemon: &Arc<Daemon>, job: &Arc<Job>) -> zbus::Result<()> {
    conn.object_server()
        .at(
            &job_path(job.id),
            JobIface {
                daemon: daemon.clone(),
                job: job.clone(),
            },
        )
        .await?;
    tokio::spawn(tick(conn.clone(), job.clone()));
    Ok(())
}

/// Sends Progress and Rate while they change, until the Job's object is gone.
async fn tick(conn: Connection, job: Arc<Job>) {
    let mut last = (-1.0f64, -1.0f64);
    loop {
        tokio::time::sleep(TICK).await;
        let Ok(r) = conn
            .object_server()
            .interface::<_, JobIface>(job_path(job.id))
            .await
        else {
            return;
        };
        for line in job.progress.take_lines() {
            let _ = JobIface::message(r.signal_emitter(), &line).await;
        }
        let now = (job.progress.fraction(), job.rate());
        if now != last {
            let iface = r.get().await;
            let _ = iface.progress_changed(r.signal_emitter()).await;
            let _ = iface.rate_changed(r.signal_emitter()).await;
            last = now;
        }
    }
}

/// Says Completed and removes the Job's object.
pub async fn complete(
    conn: &Connection,
    job: &Arc<Job>,
    success: bool,
    message: &str,
) -> zbus::Result<()> {
    let path = job_path(job.id);
    let emitter = SignalEmitter::new(conn, path.clone())?;
    for line in job.progress.take_lines() {
        JobIface::message(&emitter, &line).await?;
    }
    JobIface::completed(&emitter, success, message).await?;
    conn.object_server()
        .remove::<JobIface, _>(&path)
        .await
        .map(|_| ())
}

fn action_of(op: Operation) -> Action {
    match op {
        Operation::BuildTemplate => Action::ManageTemplates,
        Operation::ImportMachine => Action::CreateMachine,
        Operation::ExportMachine => Action::ManageMachines,
        Operation::CopyTo | Operation::CopyFrom => Action::Shell,
    }
}

fn target_name(target: &Target) -> &str {
    match target {
        Target::Template(n) | Target::Machine(n) => n,
    }
}

#[interface(name = "org.berth.Berth1.Job")]
impl JobIface {
    /// Asks the work to stop; it undoes what it made and the Job completes unsuccessfully.
    async fn cancel(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<()> {
        let action = action_of(self.job.operation);
        authorize(conn, &hdr, action, target_name(&self.job.target)).await?;
        Ok(self.daemon.cancel_job(self.job.id)?)
    }

    /// `build-template`, `import-machine` or `export-machine`.
    #[zbus(property)]
    fn operation(&self) -> String {
        self.job.operation.as_str().to_string()
    }

    /// The template or machine the Job works on.
    #[zbus(property)]
    fn object(&self) -> OwnedObjectPath {
        match &self.job.target {
            Target::Template(n) => template::template_path(n),
            Target::Machine(n) => super::manager::machine_path(n),
        }
    }

    /// 0..1; 0 while the amount of work is not known yet.
    #[zbus(property)]
    fn progress(&self) -> f64 {
        self.job.progress.fraction()
    }

    /// Units of work per second since the start (see Unit).
    #[zbus(property)]
    fn rate(&self) -> f64 {
        self.job.rate()
    }

    /// What Rate counts: `bytes` or `steps`.
    #[zbus(property)]
    fn unit(&self) -> String {
        self.job.unit.to_string()
    }

    #[zbus(property)]
    fn cancelable(&self) -> bool {
        true
    }

    /// usec since the epoch.
    #[zbus(property)]
    fn started_at(&self) -> u64 {
        self.job.started_at
    }

    /// A line of the work's own output (debootstrap's), as it comes.
    #[zbus(signal)]
    pub async fn message(emitter: &SignalEmitter<'_>, line: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn completed(
        emitter: &SignalEmitter<'_>,
        success: bool,
        message: &str,
    ) -> zbus::Result<()>;
}
