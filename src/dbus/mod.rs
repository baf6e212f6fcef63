//! The D-Bus face of berthd (`org.berth.Berth1`): an ObjectManager at the root, the
//! Manager object, and one object per machine, template and Job under way. Methods
//! translate arguments, check the caller (auth.rs), call the [`crate::daemon`] and turn
//! its [`Event`]s into objects, signals and PropertiesChanged.

pub mod auth;
pub mod detailed;
pub mod error;
pub mod job;
pub mod machine;
pub mod manager;
pub mod network;
pub mod options;
pub mod template;

use crate::daemon::{Daemon, Event};
use crate::error::{Error, Result};
use crate::spawn::CallerGone;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;
use zbus::Connection;
use zbus::message::Header;

pub use crate::api::{BUS_NAME, MANAGER_PATH, ROOT_PATH};

/// Starts the event pump, puts the root and Manager objects on the connection, waits
/// until the pump has made the objects of every machine berthd found, then takes the bus
/// name: a client that sees the name can rely on the objects being there.
pub async fn serve(
    conn: &Connection,
    daemon: Arc<Daemon>,
    events: UnboundedReceiver<Event>,
) -> Result<()> {
    let bus = |e: zbus::Error| Error::bus("cannot serve berth's objects", e);
    let server = conn.object_server();
    server
        .at(ROOT_PATH, zbus::fdo::ObjectManager)
        .await
        .map_err(bus)?;
    server
        .at(
            MANAGER_PATH,
            manager::ManagerIface {
                daemon: daemon.clone(),
            },
        )
        .await
        .map_err(bus)?;
    tokio::spawn(pump_events(conn.clone(), daemon.clone(), events));
    daemon.events_flushed().await;
    conn.request_name(BUS_NAME).await.map_err(|e| {
        Error::bus(
            format!(
                "cannot own {BUS_NAME} on the bus (is another berthd running, or the bus policy missing?)"
            ),
            e,
        )
    })?;
    Ok(())
}

/// The one place where machine objects come and go and signals leave: daemon events,
/// in the order the daemon made them, until the daemon goes away.
async fn pump_events(conn: Connection, daemon: Arc<Daemon>, mut events: UnboundedReceiver<Event>) {
    while let Some(event) = events.recv().await {
        let result = match &event {
            Event::Added(name) => machine::register(&conn, &daemon, name).await,
            Event::Removed(name) => machine::unregister(&conn, name).await,
            Event::StateChanged {
                name,
                state,
                leader,
            } => machine::emit_state(&conn, name, *state, *leader).await,
            Event::LimitsChanged(name) => machine::emit_limits(&conn, name).await,
            Event::AutostartChanged(name) => machine::emit_autostart(&conn, name).await,
            Event::NetworkAdded(name) => network::register(&conn, &daemon, name).await,
            Event::NetworkRemoved(name) => network::unregister(&conn, name).await,
            Event::NetworkChanged(name) => machine::emit_network(&conn, name).await,
            Event::TemplateAdded(name) => template::register(&conn, &daemon, name).await,
            Event::TemplateChanged(name) => template::emit_changed(&conn, name).await,
            Event::TemplateRemoved(name) => template::unregister(&conn, name).await,
            Event::JobAdded(job) => job::register(&conn, &daemon, job).await,
            Event::JobCompleted {
                job,
                success,
                message,
            } => job::complete(&conn, job, *success, message).await,
            Event::Flush(_) => Ok(()),
        };
        if let Event::Flush(done) = event {
            let _ = done.send(());
        } else if let Err(e) = result {
            // The object may be gone already (removed machine); nothing to tell then.
            tracing::debug!(?event, "not announced: {e}");
        }
    }
}

/// Resolves when the caller of a method leaves the bus (it exited or was killed), so
/// work done on its behalf, like an Execute()d command, can be ended.
///
/// The watch is set up by the future itself, while the work it guards starts, so its
/// two bus round trips are not on the reply's path: it subscribes, then checks the
/// caller is still there, so a caller that left at any point is seen.
pub fn caller_gone(conn: &Connection, hdr: &Header<'_>) -> Result<CallerGone> {
    use futures_util::StreamExt;
    let sender = hdr
        .sender()
        .ok_or_else(|| Error::AccessDenied("caller unknown".into()))?
        .to_owned();
    let conn = conn.clone();
    Ok(Box::pin(async move {
        let watch = async {
            let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
            let changes = dbus
                .receive_name_owner_changed_with_args(&[(0, sender.as_str())])
                .await?;
            let present = dbus.name_has_owner(sender.clone().into()).await?;
            Ok::<_, zbus::Error>((changes, present))
        };
        let mut changes = match watch.await {
            Ok((_, false)) => return,
            Ok((changes, true)) => changes,
            Err(e) => {
                // berthd's own bus connection is failing: the work runs to its end.
                tracing::warn!("cannot watch caller {sender} on the bus: {e}");
                return std::future::pending().await;
            }
        };
        while let Some(change) = changes.next().await {
            if let Ok(args) = change.args()
                && args.new_owner.is_none()
            {
                return;
            }
        }
        // The bus connection itself is gone: nobody is left to answer either.
    }))
}
