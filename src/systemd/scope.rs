//! A machine's transient scope `machine-NAME.scope`: what systemd is told at start,
//! live limit changes, stop, kill and the accounting figures.

use super::Systemd;
use super::properties::limit_properties;
use crate::api::UNKNOWN_FIGURE;
use crate::error::{BerthError, Result};
use crate::limits::{Flavor, Limits};
use futures_util::StreamExt;
use std::time::Duration;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedValue, Value};

/// How long systemd may take to run a scope job before berth gives up on it.
const JOB_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ScopeSpec<'a> {
    pub unit: &'a str,
    pub description: String,
    pub pid: u32,
    pub limits: &'a Limits,
    pub flavor: Flavor,
    /// What systemd waits, on StopUnit, between SIGTERM and SIGKILL.
    pub stop_timeout_usec: u64,
}

/// The accounting figures of a scope that berth passes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    CpuUsageNSec,
    MemoryCurrent,
    TasksCurrent,
    IoReadBytes,
    IoWriteBytes,
}

fn owned(v: Value<'_>) -> OwnedValue {
    OwnedValue::try_from(v).expect("values without file descriptors convert")
}

impl Systemd {
    /// StartTransientUnit, then waits for the job: the scope exists, holds `pid` and has
    /// its limits applied when this returns Ok.
    pub async fn start_scope(&self, spec: &ScopeSpec<'_>) -> Result<()> {
        let mut props = vec![
            (
                "Description".to_string(),
                owned(Value::from(spec.description.as_str())),
            ),
            ("Slice".to_string(), owned(Value::from("machine.slice"))),
            ("PIDs".to_string(), owned(Value::from(vec![spec.pid]))),
            ("Delegate".to_string(), owned(Value::Bool(true))),
            (
                "CollectMode".to_string(),
                owned(Value::from("inactive-or-failed")),
            ),
            (
                "TimeoutStopUSec".to_string(),
                owned(Value::U64(spec.stop_timeout_usec)),
            ),
        ];
        props.extend(limit_properties(spec.limits, spec.flavor)?);
        // Subscribe before the call: the job may finish before the reply arrives.
        let mut removed = self
            .manager()
            .receive_job_removed()
            .await
            .map_err(|e| BerthError::failed("cannot watch systemd jobs", e))?;
        let job = self
            .manager()
            .start_transient_unit(spec.unit.to_string(), "fail".into(), props, vec![])
            .await
            .map_err(|e| {
                BerthError::Failed(format!(
                    "systemd refused to create {}: {}",
                    spec.unit,
                    dbus_message(&e)
                ))
            })?;
        let wait = async {
            while let Some(sig) = removed.next().await {
                let Ok(args) = sig.args() else { continue };
                if args.job.as_str() == job.as_str() {
                    return Some(args.result.clone());
                }
            }
            None
        };
        match tokio::time::timeout(JOB_TIMEOUT, wait).await {
            Ok(Some(result)) if result == "done" => Ok(()),
            Ok(Some(result)) => Err(BerthError::Failed(format!(
                "systemd could not start {}: job result '{result}' (see journalctl -u {})",
                spec.unit, spec.unit
            ))),
            Ok(None) => Err(BerthError::Failed(
                "lost the connection to systemd while it started the scope".into(),
            )),
            Err(_) => Err(BerthError::Failed(format!(
                "systemd did not start {} within {}s",
                spec.unit,
                JOB_TIMEOUT.as_secs()
            ))),
        }
    }

    /// SetUnitProperties(runtime): the change applies now and lasts as long as the scope.
    pub async fn set_limits(&self, unit: &str, limits: &Limits, flavor: Flavor) -> Result<()> {
        let props = limit_properties(limits, flavor)?;
        self.manager()
            .set_unit_properties(unit.to_string(), true, props)
            .await
            .map_err(|e| {
                BerthError::Failed(format!(
                    "systemd refused the limits for {unit}: {}",
                    dbus_message(&e)
                ))
            })
    }

    /// FreezeUnit/ThawUnit: systemd answers once the cgroup is (un)frozen. Only the
    /// unified hierarchy can freeze; callers check the host first for a clear message.
    pub async fn freeze(&self, unit: &str, freeze: bool) -> Result<()> {
        let result = if freeze {
            self.manager().freeze_unit(unit.to_string()).await
        } else {
            self.manager().thaw_unit(unit.to_string()).await
        };
        result.map_err(|e| {
            BerthError::Failed(format!(
                "systemd could not {} {unit}: {}",
                if freeze { "freeze" } else { "thaw" },
                dbus_message(&e)
            ))
        })
    }

    pub async fn kill(&self, unit: &str, whom: &str, signal: i32) -> Result<()> {
        self.manager()
            .kill_unit(unit.to_string(), whom.to_string(), signal)
            .await
            .map_err(|e| BerthError::Failed(format!("cannot signal {unit}: {}", dbus_message(&e))))
    }

    pub async fn stop(&self, unit: &str) -> Result<()> {
        match self
            .manager()
            .stop_unit(unit.to_string(), "replace".into())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_no_such_unit(&e) => Ok(()),
            Err(e) => Err(BerthError::Failed(format!(
                "cannot stop {unit}: {}",
                dbus_message(&e)
            ))),
        }
    }

    /// Whether systemd still has the unit loaded (scopes are collected once inactive).
    pub async fn unit_exists(&self, unit: &str) -> Result<bool> {
        match self.manager().get_unit(unit.to_string()).await {
            Ok(_) => Ok(true),
            Err(e) if is_no_such_unit(&e) => Ok(false),
            Err(e) => Err(BerthError::Failed(format!(
                "cannot look up {unit}: {}",
                dbus_message(&e)
            ))),
        }
    }

    /// Waits until systemd has dropped the unit; stops it if it lingers.
    pub async fn wait_gone(&self, unit: &str, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.unit_exists(unit).await? {
            if tokio::time::Instant::now() >= deadline {
                self.stop(unit).await?;
                let _ = self.manager().reset_failed_unit(unit.to_string()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                return if self.unit_exists(unit).await? {
                    Err(BerthError::Failed(format!(
                        "{unit} is still there after stopping it"
                    )))
                } else {
                    Ok(())
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// One live figure of the scope. Each Machine property read asks systemd for its own
    /// figure only, so a GetAll of the five figures reads five values, not twenty-five.
    pub async fn figure(&self, unit: &str, figure: Figure) -> u64 {
        let read = async {
            let path = self.manager().get_unit(unit.to_string()).await?;
            let scope = zbus_systemd::systemd1::ScopeProxy::builder(self.connection())
                .path(path)?
                .cache_properties(CacheProperties::No)
                .build()
                .await?;
            match figure {
                Figure::CpuUsageNSec => scope.cpu_usage_n_sec().await,
                Figure::MemoryCurrent => scope.memory_current().await,
                Figure::TasksCurrent => scope.tasks_current().await,
                Figure::IoReadBytes => scope.io_read_bytes().await,
                Figure::IoWriteBytes => scope.io_write_bytes().await,
            }
        };
        read.await.unwrap_or(UNKNOWN_FIGURE)
    }
}

fn is_no_such_unit(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _)
        if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit")
}

/// The human part of a D-Bus error, without the error name.
pub fn dbus_message(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(_, Some(msg), _) if !msg.is_empty() => msg.clone(),
        other => other.to_string(),
    }
}
