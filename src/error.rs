//! berth's internal error: what went wrong, with the path or the call that failed and its
//! source. The daemon, spawn, store and templates return it; only the dbus layer turns
//! it into an `org.berth.Berth1.Error.*` reply (src/dbus/error.rs), by its [`Kind`].
//! Messages are for people: they are logged and sent with Display, and say what was wrong
//! and, where there is one, what to do.

use crate::limits::LimitError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no machine named {0:?} (berthctl list shows the machines)")]
    NoSuchMachine(String),
    #[error("{0}")]
    NoSuchTemplate(String),
    #[error("no network named {0:?} (berthctl network list shows the networks)")]
    NoSuchNetwork(String),
    #[error("a network named {0:?} already exists; pick another name or remove it first")]
    NetworkExists(String),
    #[error("a machine named {0:?} already exists; pick another name or remove it first")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    NotSupported(String),
    #[error("{0}")]
    AccessDenied(String),
    /// A file system operation on `path` failed; `what` says which ("cannot copy").
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A call to another service on the bus failed.
    #[error("{what}: {}", bus_message(source))]
    Bus {
        what: String,
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("{0}")]
    Failed(String),
    /// The caller (or a Job's Cancel) asked to stop; what was half made is gone.
    #[error("{0} was cancelled")]
    Cancelled(String),
    /// `source` happened while doing `what`; the kind stays the source's.
    #[error("{what}: {source}")]
    Context {
        what: String,
        #[source]
        source: Box<Error>,
    },
    /// An operation failed with `cause`, and undoing its first steps failed too.
    #[error("{cause} (and cleaning up failed: {})", cleanup.join("; "))]
    Rollback {
        #[source]
        cause: Box<Error>,
        cleanup: Vec<String>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kinds of error a client can tell apart: one per D-Bus error name of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    NoSuchMachine,
    NoSuchTemplate,
    NoSuchNetwork,
    AlreadyExists,
    InvalidName,
    InvalidArgument,
    InvalidState,
    NotSupported,
    AccessDenied,
    Cancelled,
    Failed,
}

impl Error {
    pub fn io(what: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            path: path.into(),
            source,
        }
    }

    pub fn bus(what: impl Into<String>, source: zbus::Error) -> Self {
        Error::Bus {
            what: what.into(),
            source: Box::new(source),
        }
    }

    pub fn failed(what: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        Error::Failed(format!("{what}: {err}"))
    }

    /// Says what was being done when this happened, keeping the kind.
    pub fn context(self, what: impl Into<String>) -> Self {
        Error::Context {
            what: what.into(),
            source: Box::new(self),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Error::NoSuchMachine(_) => Kind::NoSuchMachine,
            Error::NoSuchTemplate(_) => Kind::NoSuchTemplate,
            Error::NoSuchNetwork(_) => Kind::NoSuchNetwork,
            Error::AlreadyExists(_) | Error::NetworkExists(_) => Kind::AlreadyExists,
            Error::InvalidName(_) => Kind::InvalidName,
            Error::InvalidArgument(_) => Kind::InvalidArgument,
            Error::InvalidState(_) => Kind::InvalidState,
            Error::NotSupported(_) => Kind::NotSupported,
            Error::AccessDenied(_) => Kind::AccessDenied,
            Error::Cancelled(_) => Kind::Cancelled,
            Error::Io { .. } | Error::Bus { .. } | Error::Failed(_) => Kind::Failed,
            Error::Context { source, .. } => source.kind(),
            Error::Rollback { cause, .. } => cause.kind(),
        }
    }
}

/// The human part of a D-Bus error, without the error name.
pub fn bus_message(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(_, Some(msg), _) if !msg.is_empty() => msg.clone(),
        other => other.to_string(),
    }
}

impl From<LimitError> for Error {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Invalid(m) => Error::InvalidArgument(m),
            LimitError::NotSupported(m) => Error::NotSupported(m),
        }
    }
}

/// Extension for `Result`s of file operations: name the path that failed.
pub trait IoContext<T> {
    fn at(self, what: &str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, what: &str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(what, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_kind_and_tells_the_chain() {
        let e = Error::InvalidState("machine m is running".into()).context("cannot remove m");
        assert_eq!(e.kind(), Kind::InvalidState);
        assert_eq!(e.to_string(), "cannot remove m: machine m is running");
    }

    #[test]
    fn io_errors_name_their_path() {
        let e = std::fs::read("/nonexistent/berth")
            .at("cannot read", "/nonexistent/berth")
            .unwrap_err();
        assert_eq!(e.kind(), Kind::Failed);
        let shown = e.to_string();
        assert!(
            shown.starts_with("cannot read /nonexistent/berth: "),
            "{shown}"
        );
    }

    #[test]
    fn rollback_reports_both_cause_and_cleanup() {
        let e = Error::Rollback {
            cause: Box::new(Error::NotSupported("no".into())),
            cleanup: vec!["stop the scope: timed out".into()],
        };
        assert_eq!(e.kind(), Kind::NotSupported);
        assert_eq!(
            e.to_string(),
            "no (and cleaning up failed: stop the scope: timed out)"
        );
    }
}
