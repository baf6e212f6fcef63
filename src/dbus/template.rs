//! org.berth.Berth1.Template, one object per template at /org/berth/Berth1/template/NAME,
//! from the moment its build starts.

use super::auth::{Action, authorize};
use super::error::Result;
use crate::daemon::{Daemon, TemplateEntry};
use crate::names;
use std::collections::HashMap;
use std::sync::Arc;
use zbus::message::Header;
use zbus::zvariant::OwnedObjectPath;
use zbus::{Connection, interface};

pub struct TemplateIface {
    daemon: Arc<Daemon>,
    name: String,
}

pub fn template_path(name: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(names::template_object_path(name)).expect("escaped paths are valid")
}

pub async fn register(conn: &Connection, daemon: &Arc<Daemon>, name: &str) -> zbus::Result<()> {
    conn.object_server()
        .at(
            &template_path(name),
            TemplateIface {
                daemon: daemon.clone(),
                name: name.to_string(),
            },
        )
        .await
        .map(|_| ())
}

pub async fn unregister(conn: &Connection, name: &str) -> zbus::Result<()> {
    conn.object_server()
        .remove::<TemplateIface, _>(&template_path(name))
        .await
        .map(|_| ())
}

/// A build completed (or a template changed): every property may differ.
pub async fn emit_changed(conn: &Connection, name: &str) -> zbus::Result<()> {
    let r = conn
        .object_server()
        .interface::<_, TemplateIface>(template_path(name))
        .await?;
    let iface = r.get().await;
    let e = r.signal_emitter();
    iface.state_changed(e).await?;
    iface.method_changed(e).await?;
    iface.size_bytes_changed(e).await?;
    iface.created_at_changed(e).await?;
    iface.options_changed(e).await?;
    iface.problem_changed(e).await
}

impl TemplateIface {
    fn entry(&self) -> Option<TemplateEntry> {
        self.daemon.template(&self.name).ok()
    }
}

#[interface(name = "org.berth.Berth1.Template")]
impl TemplateIface {
    /// Removes the template; machines made from it keep their own copies.
    async fn remove(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<()> {
        authorize(conn, &hdr, Action::ManageTemplates, &self.name).await?;
        self.daemon.remove_template(&self.name).await?;
        self.daemon.events_flushed().await;
        Ok(())
    }

    #[zbus(property)]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// `building`, `ready` or `broken`.
    #[zbus(property)]
    fn state(&self) -> String {
        self.entry()
            .map(|e| e.state())
            .unwrap_or("removed")
            .to_string()
    }

    #[zbus(property)]
    fn method(&self) -> String {
        match self.entry() {
            Some(TemplateEntry::Building { method, .. }) => method.as_str().to_string(),
            Some(TemplateEntry::Ready(cfg)) => cfg.method.as_str().to_string(),
            _ => String::new(),
        }
    }

    /// Bytes on disk; 0 until built.
    #[zbus(property)]
    fn size_bytes(&self) -> u64 {
        match self.entry() {
            Some(TemplateEntry::Ready(cfg)) => cfg.size_bytes,
            _ => 0,
        }
    }

    /// usec since the epoch when the build completed; 0 until then.
    #[zbus(property)]
    fn created_at(&self) -> u64 {
        match self.entry() {
            Some(TemplateEntry::Ready(cfg)) => cfg.created_at,
            _ => 0,
        }
    }

    /// The build's options as given (suite, mirror, variant, include, source).
    #[zbus(property)]
    fn options(&self) -> HashMap<String, String> {
        match self.entry() {
            Some(TemplateEntry::Ready(cfg)) => cfg.options.into_iter().collect(),
            _ => HashMap::new(),
        }
    }

    /// Why a broken template can't be used; empty otherwise.
    #[zbus(property)]
    fn problem(&self) -> String {
        match self.entry() {
            Some(TemplateEntry::Broken { problem }) => problem,
            _ => String::new(),
        }
    }
}
