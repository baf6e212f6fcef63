//! Transient services berth asks systemd to run for it (a bridge's dnsmasq): systemd
//! supervises them, restarts them on failure, logs them, and they outlive a berthd
//! restart.

use super::Bus;
use super::scope::{JOB_TIMEOUT, is_no_such_unit, owned};
use crate::error::{Error, Result};
use std::time::Duration;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedValue, Value};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `NAME.service`.
    pub unit: String,
    pub description: String,
    /// ExecStart's argv; argv[0] an absolute path.
    pub argv: Vec<String>,
}

/// How long systemd waits before it starts a failed service again.
const RESTART_USEC: u64 = 1_000_000;

/// The properties of StartTransientUnit for `spec`.
fn properties(spec: &ServiceSpec) -> Result<Vec<(String, OwnedValue)>> {
    let Some(program) = spec.argv.first() else {
        return Err(Error::InvalidArgument(format!(
            "{}: no command to run",
            spec.unit
        )));
    };
    // ExecStart is a(sasb): the binary, its whole argv (argv[0] included), and whether
    // a failing exit status is to be ignored.
    let exec: Vec<(String, Vec<String>, bool)> = vec![(program.clone(), spec.argv.clone(), false)];
    Ok(vec![
        (
            "Description".to_string(),
            owned(Value::from(spec.description.as_str())),
        ),
        ("ExecStart".to_string(), owned(Value::from(exec))),
        ("Restart".to_string(), owned(Value::from("on-failure"))),
        ("RestartUSec".to_string(), owned(Value::U64(RESTART_USEC))),
        // A service that failed for good is unloaded like one that stopped, so the next
        // start can create it anew; its log stays in the journal.
        (
            "CollectMode".to_string(),
            owned(Value::from("inactive-or-failed")),
        ),
    ])
}

/// Runs the service unless it already runs; returns once systemd has started it.
pub(super) async fn start(sd: &Bus, spec: &ServiceSpec) -> Result<()> {
    let unit = spec.unit.as_str();
    match active_state(sd, unit).await? {
        Some(state) if is_up(&state) => return Ok(()),
        // Stopping, or stopped and still loaded: StartTransientUnit needs the name free.
        Some(_) => {
            let _ = sd.manager().reset_failed_unit(unit.to_string()).await;
            wait_down(sd, unit, true).await?;
        }
        None => {}
    }
    let props = properties(spec)?;
    // Subscribe before the call: the job may finish before the reply arrives.
    let removed = sd
        .manager()
        .receive_job_removed()
        .await
        .map_err(|e| Error::bus("cannot watch systemd jobs", e))?;
    let job = match sd
        .manager()
        .start_transient_unit(unit.to_string(), "fail".into(), props, vec![])
        .await
    {
        Ok(job) => job,
        // Someone started it since it was looked at: it runs, which is what was asked.
        Err(e)
            if is_unit_exists(&e) && active_state(sd, unit).await?.is_some_and(|s| is_up(&s)) =>
        {
            return Ok(());
        }
        Err(e) => {
            return Err(Error::bus(
                format!("systemd refused to create {unit} (see journalctl -u {unit})"),
                e,
            ));
        }
    };
    super::scope::job_done(removed, &job, unit).await
}

/// Stops the service and waits until it is down; one systemd does not know is fine.
pub(super) async fn stop(sd: &Bus, unit: &str) -> Result<()> {
    match sd
        .manager()
        .stop_unit(unit.to_string(), "replace".into())
        .await
    {
        Ok(_) => {}
        Err(e) if is_no_such_unit(&e) => return Ok(()),
        Err(e) => {
            return Err(Error::bus(
                format!("cannot stop {unit} (see journalctl -u {unit})"),
                e,
            ));
        }
    }
    wait_down(sd, unit, false).await?;
    // A failed one stays loaded for `systemctl status` unless told; the name is freed
    // for the next start (and its log stays in the journal).
    let _ = sd.manager().reset_failed_unit(unit.to_string()).await;
    Ok(())
}

fn is_up(state: &str) -> bool {
    matches!(state, "active" | "activating" | "reloading")
}

/// Waits until the unit is inactive or failed, or, with `unloaded`, until systemd has
/// dropped it.
async fn wait_down(sd: &Bus, unit: &str, unloaded: bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + JOB_TIMEOUT;
    loop {
        let state = active_state(sd, unit).await?;
        let down = match state.as_deref() {
            None => true,
            Some("inactive" | "failed") => !unloaded,
            Some(_) => false,
        };
        if down {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Failed(format!(
                "{unit} is still {} after {}s (see journalctl -u {unit})",
                state.as_deref().unwrap_or("there"),
                JOB_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The unit's ActiveState, or None when systemd has no such unit loaded.
async fn active_state(sd: &Bus, unit: &str) -> Result<Option<String>> {
    let path = match sd.manager().get_unit(unit.to_string()).await {
        Ok(path) => path,
        Err(e) if is_no_such_unit(&e) => return Ok(None),
        Err(e) => return Err(Error::bus(format!("cannot look up {unit}"), e)),
    };
    let read = async {
        zbus_systemd::systemd1::UnitProxy::builder(sd.connection())
            .path(path)?
            .cache_properties(CacheProperties::No)
            .build()
            .await?
            .active_state()
            .await
    };
    match read.await {
        Ok(state) => Ok(Some(state)),
        // Unloaded between the two calls.
        Err(e) if is_unknown_object(&e) => Ok(None),
        Err(e) => Err(Error::bus(format!("cannot read the state of {unit}"), e)),
    }
}

fn is_unit_exists(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _)
        if name.as_str() == "org.freedesktop.systemd1.UnitExists")
}

fn is_unknown_object(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _)
        if name.as_str() == "org.freedesktop.DBus.Error.UnknownObject")
        || is_no_such_unit(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::Type;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            unit: "berth-dnsmasq-lab.service".into(),
            description: "berth network lab: DHCP and DNS".into(),
            argv: vec!["/usr/sbin/dnsmasq".into(), "--keep-in-foreground".into()],
        }
    }

    fn prop<'a>(props: &'a [(String, OwnedValue)], name: &str) -> &'a OwnedValue {
        &props.iter().find(|(n, _)| n == name).expect(name).1
    }

    #[test]
    fn exec_start_is_a_sasb() {
        let props = properties(&spec()).unwrap();
        let exec = prop(&props, "ExecStart");
        assert_eq!(exec.value_signature().to_string(), "a(sasb)");
        let decoded: Vec<(String, Vec<String>, bool)> =
            exec.try_clone().unwrap().try_into().unwrap();
        assert_eq!(
            decoded,
            [(
                "/usr/sbin/dnsmasq".to_string(),
                vec![
                    "/usr/sbin/dnsmasq".to_string(),
                    "--keep-in-foreground".to_string()
                ],
                false
            )]
        );
        // The whole property list as it goes over the bus.
        assert_eq!(<Vec<(String, OwnedValue)>>::SIGNATURE.to_string(), "a(sv)");
    }

    #[test]
    fn the_other_properties_have_systemds_types() {
        let props = properties(&spec()).unwrap();
        let sig = |name: &str| prop(&props, name).value_signature().to_string();
        assert_eq!(sig("Description"), "s");
        assert_eq!(sig("Restart"), "s");
        assert_eq!(sig("RestartUSec"), "t");
        assert_eq!(sig("CollectMode"), "s");
        let restart: String = prop(&props, "Restart")
            .try_clone()
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(restart, "on-failure");
    }

    #[test]
    fn no_argv_is_refused() {
        let mut s = spec();
        s.argv.clear();
        let e = properties(&s).unwrap_err().to_string();
        assert!(e.contains("berth-dnsmasq-lab.service"), "{e}");
    }
}
