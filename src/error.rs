//! The errors berthd answers with. Each variant is one `org.berth.Berth1.Error.*` name
//! from the API contract; the message always says what was wrong and what to do.

use crate::limits::LimitError;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.berth.Berth1.Error")]
pub enum BerthError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NoSuchMachine(String),
    NoSuchTemplate(String),
    AlreadyExists(String),
    InvalidName(String),
    InvalidArgument(String),
    InvalidState(String),
    NotSupported(String),
    AccessDenied(String),
    Failed(String),
}

pub type Result<T, E = BerthError> = std::result::Result<T, E>;

impl BerthError {
    pub fn failed(context: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        BerthError::Failed(format!("{context}: {err}"))
    }
}

impl From<LimitError> for BerthError {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::Invalid(m) => BerthError::InvalidArgument(m),
            LimitError::NotSupported(m) => BerthError::NotSupported(m),
        }
    }
}

impl From<std::io::Error> for BerthError {
    fn from(e: std::io::Error) -> Self {
        BerthError::Failed(e.to_string())
    }
}
