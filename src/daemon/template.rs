//! Templates as the daemon keeps them: the built ones on disk (template/), the ones
//! being built as Jobs, and BuildTemplate, RemoveTemplate and the lookup create uses.

use super::{Daemon, Event, now_usec};
use crate::error::{Error, Result};
use crate::jobs::{Job, Operation, Target};
use crate::template::{self, Method, TemplateConfig, build::BuildSpec};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{info, warn};

/// A template as clients see it.
#[derive(Clone, Debug)]
pub enum TemplateEntry {
    Building {
        method: Method,
        job: Arc<Job>,
    },
    Ready(TemplateConfig),
    /// On disk but its template.toml can't be read: shown, removable, not usable.
    Broken {
        problem: String,
    },
}

impl TemplateEntry {
    pub fn state(&self) -> &'static str {
        match self {
            TemplateEntry::Building { .. } => "building",
            TemplateEntry::Ready(_) => "ready",
            TemplateEntry::Broken { .. } => "broken",
        }
    }
}

impl Daemon {
    /// Reads the built templates (at start).
    pub(super) fn load_templates(&self) {
        let dir = self.paths.templates_dir();
        let names = match template::list(&dir) {
            Ok(n) => n,
            Err(e) => {
                warn!("cannot list templates: {e}");
                return;
            }
        };
        for name in names {
            let entry = match template::load(&dir, &name) {
                Ok(cfg) => TemplateEntry::Ready(cfg),
                Err(e) => {
                    warn!("template {name}: {e}");
                    TemplateEntry::Broken {
                        problem: e.to_string(),
                    }
                }
            };
            self.set_template(&name, Some(entry));
        }
    }

    pub fn templates(&self) -> Vec<(String, TemplateEntry)> {
        self.templates
            .lock()
            .expect("templates lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn template(&self, name: &str) -> Result<TemplateEntry> {
        self.templates
            .lock()
            .expect("templates lock")
            .get(name)
            .cloned()
            .ok_or_else(|| template::no_such(name))
    }

    /// Adds, changes or (None) drops a template, announcing it under the lock so the pump
    /// sees one name's changes in order.
    fn set_template(&self, name: &str, entry: Option<TemplateEntry>) {
        let mut templates = self.templates.lock().expect("templates lock");
        let existed = templates.contains_key(name);
        match entry {
            Some(e) => {
                templates.insert(name.to_string(), e);
                self.emit(if existed {
                    Event::TemplateChanged(name.to_string())
                } else {
                    Event::TemplateAdded(name.to_string())
                });
            }
            None => {
                if templates.remove(name).is_some() {
                    self.emit(Event::TemplateRemoved(name.to_string()));
                }
            }
        }
    }

    /// The rootfs a new machine is copied from. busybox is built on first use.
    pub(super) async fn template_rootfs(&self, name: &str) -> Result<PathBuf> {
        let dir = self.paths.templates_dir();
        match self.template(name) {
            Ok(TemplateEntry::Ready(_)) => Ok(template::rootfs_of(&dir, name)),
            Ok(TemplateEntry::Building { job, .. }) => Err(Error::InvalidState(format!(
                "template {} is still being built (job {}); wait for it to complete",
                crate::names::shown(name),
                job.id
            ))),
            Ok(TemplateEntry::Broken { problem }) => Err(Error::InvalidState(format!(
                "template {} is broken ({problem}); remove it and build it again",
                crate::names::shown(name)
            ))),
            Err(_) if name == template::busybox::NAME => {
                let _build = self.template_builds.lock().await;
                if let Ok(TemplateEntry::Ready(_)) = self.template(name) {
                    return Ok(template::rootfs_of(&dir, name));
                }
                let d = dir.clone();
                let rootfs = tokio::task::spawn_blocking(move || template::ensure_busybox(&d))
                    .await
                    .map_err(|e| Error::failed("template build crashed", e))??;
                let cfg = template::load(&dir, name)?;
                self.set_template(name, Some(TemplateEntry::Ready(cfg)));
                Ok(rootfs)
            }
            Err(e) => Err(e),
        }
    }

    /// Starts building a template as a Job and returns it at once; the template is shown
    /// as `building` until the Job completes, then `ready`, or gone if it failed.
    pub async fn build_template(self: &Arc<Self>, name: &str, spec: BuildSpec) -> Result<Arc<Job>> {
        template::validate_name(name)?;
        let dir = self.paths.templates_dir();
        let method = spec.method();
        let job = {
            let mut templates = self.templates.lock().expect("templates lock");
            if templates.contains_key(name) || template::template_dir(&dir, name).exists() {
                return Err(Error::AlreadyExists(format!(
                    "template {}",
                    crate::names::shown(name)
                )));
            }
            let job = self.jobs.start(
                Operation::BuildTemplate,
                Target::Template(name.to_string()),
                now_usec(),
                spec.unit(),
            );
            templates.insert(
                name.to_string(),
                TemplateEntry::Building {
                    method,
                    job: job.clone(),
                },
            );
            // Under the lock, so the pump makes the template's object before the Job's.
            self.emit(Event::TemplateAdded(name.to_string()));
            self.emit(Event::JobAdded(job.clone()));
            job
        };
        info!(
            "template {name}: building by {} (job {})",
            method.as_str(),
            job.id
        );
        let daemon = self.clone();
        let name = name.to_string();
        let worker_job = job.clone();
        self.run_job(job.clone(), async move {
            match daemon.run_build(&name, spec, &worker_job).await {
                Ok(cfg) => {
                    daemon.set_template(&name, Some(TemplateEntry::Ready(cfg.clone())));
                    Ok(format!("template {name} built ({} bytes)", cfg.size_bytes))
                }
                Err(e) => {
                    daemon.set_template(&name, None);
                    Err(e)
                }
            }
        });
        Ok(job)
    }

    async fn run_build(
        &self,
        name: &str,
        spec: BuildSpec,
        job: &Arc<Job>,
    ) -> Result<TemplateConfig> {
        let dir = self.paths.templates_dir();
        let staging = dir.join(format!(".{name}.build-{}-{}", std::process::id(), job.id));
        let progress = job.progress.clone();
        let name = name.to_string();
        // A crash of the worker leaves `staging`, which the next start of berthd removes.
        tokio::task::spawn_blocking(move || {
            template::build::build_into(&dir, &staging, &name, spec, &progress)
        })
        .await
        .map_err(|e| Error::failed("template build crashed", e))?
    }

    /// Removes a built template. Machines made from it are copies and stay.
    pub async fn remove_template(&self, name: &str) -> Result<()> {
        let _exclusive = self.templates_in_use.write().await;
        match self.template(name)? {
            TemplateEntry::Building { job, .. } => {
                return Err(Error::InvalidState(format!(
                    "template {} is being built; cancel its job {} instead",
                    crate::names::shown(name),
                    job.id
                )));
            }
            TemplateEntry::Ready(_) | TemplateEntry::Broken { .. } => {}
        }
        let dir = template::template_dir(&self.paths.templates_dir(), name);
        self.check_no_overlay_on(&dir, &format!("remove template {name}"))?;
        // Renamed first, so a crash half way leaves a dot-directory, never half a template.
        let doomed = self
            .paths
            .templates_dir()
            .join(format!(".{name}.remove-{}", std::process::id()));
        std::fs::rename(&dir, &doomed).map_err(|e| Error::io("cannot remove", &dir, e))?;
        self.set_template(name, None);
        let d = doomed.clone();
        tokio::task::spawn_blocking(move || crate::storage::copy::remove_tree(&d))
            .await
            .map_err(|e| Error::failed("template removal crashed", e))?
            .map_err(|e| Error::io("cannot remove", &doomed, e))?;
        info!("template {name}: removed");
        Ok(())
    }

    /// Cancels a running Job; its worker undoes what it made and completes it.
    pub fn cancel_job(&self, id: u64) -> Result<()> {
        let job = self
            .jobs
            .get(id)
            .ok_or_else(|| Error::InvalidState(format!("job {id} has already completed")))?;
        job.progress.cancel();
        info!("job {id}: cancel requested");
        Ok(())
    }
}
