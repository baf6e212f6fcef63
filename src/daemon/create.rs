//! CreateMachine: validate everything first, build the template if needed, then make the
//! machine's directory in a staging place and rename it into place, so a machine either
//! exists whole or not at all.

use super::machine::Machine;
use super::{Daemon, now_usec};
use crate::error::{Error, IoContext, Result};
use crate::limits::Limits;
use crate::security::{Confinement, Settings};
use crate::store::{self, MachineConfig};
use crate::{names, template};
use std::sync::Arc;
use tracing::info;

/// CreateMachine's options, already type-checked by the dbus layer.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    pub hostname: Option<String>,
    pub command: Vec<String>,
    pub environment: Vec<String>,
    pub autostart: bool,
    pub ephemeral: bool,
    pub limits: Limits,
    pub halt_signal: Option<i32>,
    pub stop_timeout_usec: Option<u64>,
    pub tmp_size: Option<u64>,
    pub security: Settings,
}

impl Daemon {
    pub async fn create(
        self: &Arc<Self>,
        name: &str,
        template_name: &str,
        opts: CreateOptions,
    ) -> Result<Arc<Machine>> {
        names::validate_machine_name(name).map_err(Error::InvalidName)?;
        let info = template::info(template_name)?;
        // Refuse limits this host can't apply now, not at the first start.
        crate::systemd::properties::limit_properties(&opts.limits, self.host.flavor)?;
        Confinement::new(&opts.security).map_err(Error::InvalidArgument)?;
        if let Some(h) = &opts.hostname {
            names::validate_machine_name(h)
                .map_err(|e| Error::InvalidArgument(format!("Hostname: {e}")))?;
        }
        let _reservation = self.reserve(name)?;
        let templates_dir = self.paths.templates_dir();
        let template_rootfs = {
            let _build = self.template_builds.lock().await;
            tokio::task::spawn_blocking(move || template::ensure(&templates_dir, info.name))
                .await
                .map_err(|e| Error::failed("template build crashed", e))??
        };

        let config = MachineConfig {
            name: name.to_string(),
            template: info.name.to_string(),
            hostname: opts.hostname.unwrap_or_else(|| name.to_string()),
            command: opts.command,
            environment: opts.environment,
            created_at: now_usec(),
            autostart: opts.autostart,
            ephemeral: opts.ephemeral,
            halt_signal: opts.halt_signal,
            stop_timeout_usec: opts.stop_timeout_usec,
            tmp_size: opts.tmp_size,
            security: opts.security,
            limits: opts.limits,
        };
        let final_dir = self.paths.machine_dir(name);
        let staging = self
            .paths
            .machines_dir()
            .join(format!(".{name}.create-{}", std::process::id()));
        let cfg = config.clone();
        let dest = final_dir.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let made = (|| {
                std::fs::create_dir(&staging).at("cannot create", &staging)?;
                let rootfs = staging.join(store::ROOTFS_DIR);
                crate::rootfs::copy_tree(&template_rootfs, &rootfs)?;
                let hostname = rootfs.join("etc/hostname");
                std::fs::write(&hostname, format!("{}\n", cfg.hostname))
                    .at("cannot write", &hostname)?;
                store::save_config(&staging, &cfg)?;
                std::fs::rename(&staging, &dest).at("cannot rename into place", &staging)
            })();
            if made.is_err() {
                let _ = crate::rootfs::remove_tree(&staging);
            }
            made
        })
        .await
        .map_err(|e| Error::failed("machine creation crashed", e))?
        .map_err(|e| e.context(format!("cannot create machine {name}")))?;

        let m = Arc::new(Machine::new(final_dir, config));
        self.insert(m.clone());
        info!("machine {name}: created from template {template_name}");
        Ok(m)
    }

    fn reserve(self: &Arc<Self>, name: &str) -> Result<Reservation> {
        let exists = self
            .machines
            .lock()
            .expect("machines lock")
            .contains_key(name)
            || self.paths.machine_dir(name).exists();
        let mut reserved = self.reserved.lock().expect("reserved lock");
        if exists || !reserved.insert(name.to_string()) {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        Ok(Reservation {
            daemon: self.clone(),
            name: name.to_string(),
        })
    }
}

/// Holds a name for a creation under way; released however the creation ends.
struct Reservation {
    daemon: Arc<Daemon>,
    name: String,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.daemon
            .reserved
            .lock()
            .expect("reserved lock")
            .remove(&self.name);
    }
}
