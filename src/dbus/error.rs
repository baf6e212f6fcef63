//! The errors berthd answers with: one `org.berth.Berth1.Error.*` name per [`Kind`] of
//! internal error, with its Display text as the message. The only place where internal
//! errors become D-Bus replies.

use crate::error::{Error, Kind};

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.berth.Berth1.Error")]
pub enum BerthError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NoSuchMachine(String),
    NoSuchTemplate(String),
    NoSuchNetwork(String),
    AlreadyExists(String),
    InvalidName(String),
    InvalidArgument(String),
    InvalidState(String),
    NotSupported(String),
    AccessDenied(String),
    Cancelled(String),
    Failed(String),
}

/// What a D-Bus method returns. Named `Result` because zbus's interface macro recognizes
/// fallible methods by that name.
pub type Result<T> = std::result::Result<T, BerthError>;

impl From<Error> for BerthError {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e.kind() {
            Kind::NoSuchMachine => BerthError::NoSuchMachine(message),
            Kind::NoSuchTemplate => BerthError::NoSuchTemplate(message),
            Kind::NoSuchNetwork => BerthError::NoSuchNetwork(message),
            Kind::AlreadyExists => BerthError::AlreadyExists(message),
            Kind::InvalidName => BerthError::InvalidName(message),
            Kind::InvalidArgument => BerthError::InvalidArgument(message),
            Kind::InvalidState => BerthError::InvalidState(message),
            Kind::NotSupported => BerthError::NotSupported(message),
            Kind::AccessDenied => BerthError::AccessDenied(message),
            Kind::Cancelled => BerthError::Cancelled(message),
            Kind::Failed => BerthError::Failed(message),
        }
    }
}

impl From<crate::limits::LimitError> for BerthError {
    fn from(e: crate::limits::LimitError) -> Self {
        Error::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_keep_their_names_through_context() {
        let e: BerthError = Error::NoSuchMachine("web".into())
            .context("cannot start web")
            .into();
        match e {
            BerthError::NoSuchMachine(m) => assert!(m.starts_with("cannot start web: "), "{m}"),
            other => panic!("{other:?}"),
        }
        let e: BerthError = Error::io(
            "cannot copy",
            "/x",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        )
        .into();
        assert!(matches!(e, BerthError::Failed(m) if m.starts_with("cannot copy /x: ")));
    }
}
