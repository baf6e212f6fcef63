//! Transient services berth asks systemd to run for it (a bridge's dnsmasq): systemd
//! supervises them, restarts them on failure, logs them, and they outlive a berthd
//! restart.

use super::Bus;
use crate::error::Result;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `NAME.service`.
    pub unit: String,
    pub description: String,
    /// ExecStart's argv; argv[0] an absolute path.
    pub argv: Vec<String>,
}

pub(super) async fn start(sd: &Bus, spec: &ServiceSpec) -> Result<()> {
    let _ = (sd, spec);
    todo!("helper: service")
}

pub(super) async fn stop(sd: &Bus, unit: &str) -> Result<()> {
    let _ = (sd, unit);
    todo!("helper: service")
}
