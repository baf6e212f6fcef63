//! Everything berth asks of systemd, over its D-Bus API: the machine's transient scope
//! under machine.slice, its limits and accounting, stop and kill, live figures.

pub mod machined;
pub mod properties;
pub mod scope;

use crate::error::{BerthError, Result};
use zbus::Connection;
use zbus_systemd::systemd1::ManagerProxy;

pub use crate::api::UNKNOWN_FIGURE;
pub use scope::{Figure, ScopeSpec};

/// A handle on PID 1's manager object.
#[derive(Clone)]
pub struct Systemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
}

impl Systemd {
    /// Connects and subscribes, so systemd sends the JobRemoved signals that scope
    /// starts wait for.
    pub async fn new(conn: &Connection) -> Result<Systemd> {
        let manager = ManagerProxy::new(conn)
            .await
            .map_err(|e| BerthError::failed("cannot reach systemd", e))?;
        manager
            .subscribe()
            .await
            .map_err(|e| BerthError::failed("cannot subscribe to systemd's signals", e))?;
        Ok(Systemd {
            conn: conn.clone(),
            manager,
        })
    }

    pub fn manager(&self) -> &ManagerProxy<'static> {
        &self.manager
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The major version of the running systemd ("252.38-1~deb12u1" gives 252).
    pub async fn version(&self) -> Result<u32> {
        let v = self
            .manager
            .version()
            .await
            .map_err(|e| BerthError::failed("cannot read systemd's version", e))?;
        parse_version(&v).ok_or_else(|| {
            BerthError::Failed(format!("systemd reports a version berth can't read: {v:?}"))
        })
    }
}

pub fn parse_version(v: &str) -> Option<u32> {
    let digits: String = v
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("252.38-1~deb12u1"), Some(252));
        assert_eq!(parse_version("258"), Some(258));
        assert_eq!(parse_version("systemd 257 (257.9-1)"), Some(257));
        assert_eq!(parse_version("unknown"), None);
    }
}
