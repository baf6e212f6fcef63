//! Who may change what: root always; anyone else only when polkit says so, for one of the
//! actions of dbus/org.berth.Berth1.policy. Reading needs no check at all.
//!
//! The bus policy lets every user send the mutating methods, so this is the only gate a
//! non-root caller meets. Whatever goes wrong on the way to an answer (caller unknown,
//! polkit absent or failing) refuses the call: nothing is allowed by accident.

use crate::error::{Error, Result};
use std::collections::HashMap;
use tracing::{info, warn};
use zbus::Connection;
use zbus::message::{Flags, Header};
use zbus::zvariant::Value;

/// The polkit actions berthd checks, as declared in dbus/org.berth.Berth1.policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start, stop, signal, freeze, change and remove existing machines.
    ManageMachines,
    CreateMachine,
    /// Run commands inside a machine (Execute, OpenShell; consoles later), which is
    /// running them as root of that machine.
    Shell,
    /// Build and remove templates, and cancel their builds.
    ManageTemplates,
    /// Create and remove networks: bridges, NAT and DHCP on the host.
    ManageNetworks,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::ManageMachines,
        Action::CreateMachine,
        Action::Shell,
        Action::ManageTemplates,
        Action::ManageNetworks,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Action::ManageMachines => "org.berth.Berth1.manage-machines",
            Action::CreateMachine => "org.berth.Berth1.create-machine",
            Action::Shell => "org.berth.Berth1.shell",
            Action::ManageTemplates => "org.berth.Berth1.manage-templates",
            Action::ManageNetworks => "org.berth.Berth1.manage-networks",
        }
    }
}

/// polkit detail naming the machine a call is about, for rules (`action.lookup(...)`).
pub const DETAIL_MACHINE: &str = "org.berth.Berth1.machine";
/// polkit detail naming the method called ("Start", "SetLimits", ...), for rules that
/// allow some changes and not others.
pub const DETAIL_METHOD: &str = "org.berth.Berth1.method";

/// CheckAuthorization's flag asking polkit to authenticate the user if it must.
const ALLOW_USER_INTERACTION: u32 = 1;

#[zbus::proxy(
    interface = "org.freedesktop.PolicyKit1.Authority",
    default_service = "org.freedesktop.PolicyKit1",
    default_path = "/org/freedesktop/PolicyKit1/Authority",
    gen_blocking = false
)]
trait Authority {
    /// Returns (is_authorized, is_challenge, details).
    fn check_authorization(
        &self,
        subject: &(&str, HashMap<&str, Value<'_>>),
        action_id: &str,
        details: HashMap<&str, &str>,
        flags: u32,
        cancellation_id: &str,
    ) -> zbus::Result<(bool, bool, HashMap<String, String>)>;
}

/// Lets the call in `hdr`, about `machine`, go ahead if its caller is root or polkit
/// grants it `action`; otherwise an AccessDenied that says who was refused and why.
pub async fn authorize(
    conn: &Connection,
    hdr: &Header<'_>,
    action: Action,
    machine: &str,
) -> Result<()> {
    let Some(sender) = hdr.sender() else {
        return Err(Error::AccessDenied("caller unknown".into()));
    };
    let method = hdr.member().map(|m| m.as_str()).unwrap_or("?");
    // CreateMachine asks before the name is checked: quote it cut short.
    let what = format!("call {method} on machine {}", crate::names::shown(machine));
    let dbus = zbus::fdo::DBusProxy::new(conn)
        .await
        .map_err(|e| Error::bus("cannot ask the bus who called", e))?;
    let uid = dbus
        .get_connection_unix_user(sender.clone().into())
        .await
        .map_err(|e| Error::AccessDenied(format!("cannot identify the caller: {e}")))?;
    // Root is never asked about: berth must work where polkit is not installed.
    if uid == 0 {
        return Ok(());
    }

    // Only a client that said it can wait (berthctl on a terminal) may be kept waiting
    // for a password; any other gets polkit's answer at once.
    let interactive = hdr.primary().flags().contains(Flags::AllowInteractiveAuth);
    let subject = (
        "system-bus-name",
        HashMap::from([("name", Value::from(sender.as_str()))]),
    );
    let details = HashMap::from([(DETAIL_MACHINE, machine), (DETAIL_METHOD, method)]);
    let flags = if interactive {
        ALLOW_USER_INTERACTION
    } else {
        0
    };
    let answer = async {
        // One call per proxy: caching polkit's properties would only cost a GetAll.
        AuthorityProxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?
            .check_authorization(&subject, action.id(), details, flags, "")
            .await
    }
    .await;

    let refusal = match answer {
        Ok((true, _, _)) => {
            info!(uid, action = action.id(), method, machine, "polkit allowed");
            return Ok(());
        }
        // polkit answers with a challenge when the caller would have to authenticate but
        // nobody could be asked: no agent runs for its session, or it did not allow it.
        Ok((false, true, _)) if interactive => format!(
            "uid {uid} may not {what} without authenticating for polkit action {}, and no \
             polkit agent of its session could ask; run it with sudo",
            action.id()
        ),
        Ok((false, true, _)) => format!(
            "uid {uid} may not {what} without authenticating for polkit action {}, which \
             the call did not allow (berthctl does on a terminal); run it with sudo",
            action.id()
        ),
        Ok((false, false, details)) if details.contains_key("polkit.dismissed") => format!(
            "uid {uid} may not {what}: authentication for polkit action {} was dismissed",
            action.id()
        ),
        Ok((false, false, _)) => format!(
            "uid {uid} may not {what}: polkit does not grant it action {}; run it with sudo \
             or ask an administrator for a polkit rule",
            action.id()
        ),
        Err(e) if polkit_absent(&e) => format!(
            "polkit is not running, so only root may {what} (uid {uid} called); run it with \
             sudo"
        ),
        Err(e) => format!(
            "cannot ask polkit whether uid {uid} may {what} (action {}): {}; run it with sudo",
            action.id(),
            crate::error::bus_message(&e)
        ),
    };
    warn!(
        uid,
        action = action.id(),
        method,
        machine,
        "refused: {refusal}"
    );
    Err(Error::AccessDenied(refusal))
}

/// Whether a failed call means nobody serves polkit's name: not installed (no activation
/// file), or its unit could not be started (masked, failed, missing), which systemd-driven
/// activation reports with systemd's own error names.
fn polkit_absent(e: &zbus::Error) -> bool {
    use zbus::DBusError;
    let name = match e {
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        zbus::Error::FDO(fdo) => fdo.name().to_string(),
        _ => return false,
    };
    match name.strip_prefix("org.freedesktop.DBus.Error.") {
        Some(rest) => {
            matches!(rest, "ServiceUnknown" | "NameHasNoOwner") || rest.starts_with("Spawn.")
        }
        None => name.starts_with("org.freedesktop.systemd1."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids berthd asks about must be the ones `make install` declares to polkit, or
    /// polkit refuses every non-root caller, whatever its rules say.
    #[test]
    fn every_action_is_declared_in_the_policy_file() {
        let policy = include_str!("../../dbus/org.berth.Berth1.policy");
        let declared: Vec<&str> = policy
            .split("<action id=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();
        let ids: Vec<&str> = Action::ALL.iter().map(|a| a.id()).collect();
        assert_eq!(declared, ids);
    }

    #[test]
    fn absent_polkit_is_told_from_other_failures() {
        let fdo = |e| zbus::Error::from(e);
        assert!(polkit_absent(&fdo(zbus::fdo::Error::ServiceUnknown(
            String::new()
        ))));
        assert!(polkit_absent(&fdo(zbus::fdo::Error::NameHasNoOwner(
            String::new()
        ))));
        assert!(polkit_absent(&fdo(zbus::fdo::Error::SpawnChildExited(
            String::new()
        ))));
        assert!(!polkit_absent(&fdo(zbus::fdo::Error::NoReply(
            String::new()
        ))));
        assert!(!polkit_absent(&fdo(zbus::fdo::Error::AccessDenied(
            String::new()
        ))));
    }
}
