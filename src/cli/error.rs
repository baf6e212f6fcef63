use std::io;

use zbus::DBusError;

/// Everything `run` can fail with; `main` prints it as one `berthctl: ...` line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot connect to the system bus: {0}; is dbus running?")]
    SystemBus(String),
    #[error("cannot connect to the bus at {address}: {message}")]
    Bus { address: String, message: String },
    #[error("berthd is not running and could not be started: {0}")]
    NotRunning(String),
    /// An error reply from berthd (or the bus), reduced to its message.
    #[error("{0}")]
    DBus(String),
    /// Arguments clap accepted but that still make no sense together.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(#[from] io::Error),
    /// `wait` ran out of time.
    #[error("{0}")]
    Timeout(String),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            // Same as clap's own usage errors, so scripts see one code for "you typed it wrong".
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// The D-Bus error name of an error reply, however zbus wrapped it.
pub(crate) fn error_name(err: &zbus::Error) -> Option<String> {
    match err {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str().to_owned()),
        zbus::Error::FDO(fdo) => Some(fdo.name().as_str().to_owned()),
        _ => None,
    }
}

impl From<zbus::Error> for CliError {
    fn from(err: zbus::Error) -> Self {
        let (name, text, from_bus) = match &err {
            zbus::Error::MethodError(name, text, reply) => {
                let from_bus = reply
                    .header()
                    .sender()
                    .is_some_and(|s| s.as_str() == BUS_DRIVER);
                (
                    Some(name.as_str().to_owned()),
                    text.clone().unwrap_or_default(),
                    from_bus,
                )
            }
            zbus::Error::FDO(fdo) => (
                Some(fdo.name().as_str().to_owned()),
                fdo.description().unwrap_or_default().to_owned(),
                false,
            ),
            _ => (None, String::new(), false),
        };
        let Some(name) = name else {
            return CliError::DBus(err.to_string());
        };
        let message = if text.is_empty() { name.clone() } else { text };
        // A machine removed between finding it and calling it: its object is gone, and
        // the bus says so by path; say it by name, as NoSuchMachine does.
        if name == "org.freedesktop.DBus.Error.UnknownObject"
            && let Some(machine) = vanished_machine(&message)
        {
            return CliError::DBus(format!("no machine named {machine} (it was just removed)"));
        }
        if is_activation_failure(&name, &message, from_bus) {
            CliError::NotRunning(message)
        } else {
            CliError::DBus(message)
        }
    }
}

const BUS_DRIVER: &str = "org.freedesktop.DBus";

/// The machine whose object path an UnknownObject message names ("Unknown object
/// '/org/berth/Berth1/machine/web'"), shown as names are.
fn vanished_machine(message: &str) -> Option<String> {
    let prefix = format!("{}/", crate::names::MACHINE_PATH_PREFIX);
    let start = message.find(&prefix)? + prefix.len();
    let label: String = message[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    crate::names::unescape_path_label(&label).map(|n| crate::names::shown(&n))
}

/// Whether an error reply means the bus could not hand our call to berthd at all.
///
/// dbus-daemon and dbus-broker word this differently: a missing service file gives
/// ServiceUnknown, a failed spawn Spawn.*, dbus-broker reports a failed unit as
/// NameHasNoOwner, and systemd-driven activation relays systemd's own error names.
/// Those last ones, and time-outs, only count when the bus itself sent them, since
/// berthd might pass a systemd error through for an unrelated reason.
pub(crate) fn is_activation_failure(name: &str, message: &str, from_bus: bool) -> bool {
    const DBUS: &str = "org.freedesktop.DBus.Error.";
    match name.strip_prefix(DBUS) {
        Some("ServiceUnknown" | "NameHasNoOwner") => true,
        Some(rest) if rest.starts_with("Spawn.") => true,
        Some("TimedOut" | "NoReply") => {
            from_bus && message.to_ascii_lowercase().contains("activat")
        }
        Some(_) => false,
        None => from_bus && name.starts_with("org.freedesktop.systemd1."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_failures() {
        assert!(is_activation_failure(
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "The name org.berth.Berth1 was not provided by any .service files",
            true
        ));
        assert!(is_activation_failure(
            "org.freedesktop.DBus.Error.NameHasNoOwner",
            "Could not activate remote peer.",
            true
        ));
        assert!(is_activation_failure(
            "org.freedesktop.DBus.Error.Spawn.ChildExited",
            "Process org.berth.Berth1 exited with status 1",
            true
        ));
        assert!(is_activation_failure(
            "org.freedesktop.DBus.Error.TimedOut",
            "Activation of org.berth.Berth1 timed out",
            true
        ));
        assert!(is_activation_failure(
            "org.freedesktop.systemd1.UnitMasked",
            "Unit berthd.service is masked.",
            true
        ));
    }

    #[test]
    fn ordinary_errors_are_not_activation_failures() {
        assert!(!is_activation_failure(
            "org.berth.Berth1.Error.NoSuchMachine",
            "No machine called 'web'",
            false
        ));
        assert!(!is_activation_failure(
            "org.freedesktop.DBus.Error.NoReply",
            "Message recipient disconnected from message bus without replying",
            true
        ));
        assert!(!is_activation_failure(
            "org.freedesktop.systemd1.NoSuchUnit",
            "Unit machine-web.scope not loaded.",
            false
        ));
        assert!(!is_activation_failure(
            "org.freedesktop.DBus.Error.AccessDenied",
            "Rejected send message",
            true
        ));
    }

    #[test]
    fn messages_without_error_names() {
        let err = CliError::from(zbus::Error::Failure("boom".into()));
        assert_eq!(err.to_string(), "boom");
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn a_vanished_machine_is_named() {
        let err = CliError::from(zbus::Error::from(zbus::fdo::Error::UnknownObject(
            "Unknown object '/org/berth/Berth1/machine/my_2dbox'".into(),
        )));
        assert_eq!(
            err.to_string(),
            "no machine named \"my-box\" (it was just removed)"
        );
    }

    #[test]
    fn fdo_errors_use_their_description() {
        let err = CliError::from(zbus::Error::from(zbus::fdo::Error::UnknownObject(
            "Unknown object '/x'".into(),
        )));
        assert_eq!(err.to_string(), "Unknown object '/x'");
        let err = CliError::from(zbus::Error::from(zbus::fdo::Error::ServiceUnknown(
            String::new(),
        )));
        assert!(matches!(err, CliError::NotRunning(_)));
        assert_eq!(
            err.to_string(),
            "berthd is not running and could not be started: org.freedesktop.DBus.Error.ServiceUnknown"
        );
    }
}
