//! A machine's transient scope `machine-NAME.scope`: what systemd is told at start,
//! live limit changes, stop and kill. Its figures are read from its cgroup files
//! (crate::cgroup::figures), not asked of systemd.

use super::Bus;
use super::properties::{SdValue, limit_properties, limit_values, unset_values};
use crate::error::{Error, Result};
use crate::limits::{Flavor, Limits};
use futures_util::StreamExt;
use std::time::Duration;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedValue, Value};

/// How long systemd may take to run a scope job before berth gives up on it.
pub(super) const JOB_TIMEOUT: Duration = Duration::from_secs(30);

pub struct ScopeSpec<'a> {
    pub unit: &'a str,
    pub description: String,
    pub pid: u32,
    pub limits: &'a Limits,
    pub flavor: Flavor,
    /// What systemd waits, on StopUnit, between SIGTERM and SIGKILL.
    pub stop_timeout_usec: u64,
    /// The host ID of an unprivileged machine's root, which gets the scope's cgroup
    /// delegated (crate::cgroup::delegate) so that a systemd inside can run its units.
    pub owner: Option<u32>,
}

pub(super) fn owned(v: Value<'_>) -> OwnedValue {
    OwnedValue::try_from(v).expect("values without file descriptors convert")
}

/// StartTransientUnit, then waits for the job: the scope exists, holds `pid` and has
/// its limits applied when this returns Ok.
pub(super) async fn start(sd: &Bus, spec: &ScopeSpec<'_>) -> Result<()> {
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
        // Only the nodes a machine has may be opened (or made with mknod and opened):
        // the host's disks and the like stay out of reach on both cgroup generations.
        ("DevicePolicy".to_string(), owned(Value::from("closed"))),
        (
            "DeviceAllow".to_string(),
            owned(Value::from(device_allow())),
        ),
    ];
    props.extend(limit_properties(spec.limits, spec.flavor)?);
    // Subscribe before the call: the job may finish before the reply arrives.
    let removed = sd
        .manager()
        .receive_job_removed()
        .await
        .map_err(|e| Error::bus("cannot watch systemd jobs", e))?;
    let job = sd
        .manager()
        .start_transient_unit(spec.unit.to_string(), "fail".into(), props, vec![])
        .await
        .map_err(|e| Error::bus(format!("systemd refused to create {}", spec.unit), e))?;
    job_done(removed, &job, spec.unit).await?;
    match spec.owner {
        Some(owner) => delegate(sd, spec.unit, spec.pid, owner).await,
        None => Ok(()),
    }
}

/// Waits for the JobRemoved of `job` on `removed` (subscribed before the call that made
/// the job, which may end before its reply) and says how it ended for `unit`.
pub(super) async fn job_done(
    mut removed: zbus_systemd::systemd1::JobRemovedStream,
    job: &zbus::zvariant::OwnedObjectPath,
    unit: &str,
) -> Result<()> {
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
        Ok(Some(result)) => Err(Error::Failed(format!(
            "systemd could not start {unit}: job result '{result}' (see journalctl -u {unit})"
        ))),
        Ok(None) => Err(Error::Failed(format!(
            "lost the connection to systemd while it started {unit}"
        ))),
        Err(_) => Err(Error::Failed(format!(
            "systemd did not start {unit} within {}s (see journalctl -u {unit})",
            JOB_TIMEOUT.as_secs()
        ))),
    }
}

/// Gives the scope's cgroup to the machine's root (Delegate=yes only lets systemd leave
/// it alone; a root in a user namespace also needs to own it).
async fn delegate(sd: &Bus, unit: &str, pid: u32, owner: u32) -> Result<()> {
    // Where the kernel says the scope's one process is, which is the scope (its PID 1
    // waits for Go): two bus round trips fewer on every start than asking systemd.
    let cgroup = match std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
        Ok(text) => match scope_cgroup(&text, unit) {
            Some(c) => c,
            None => control_group(sd, unit).await?,
        },
        Err(_) => control_group(sd, unit).await?,
    };
    let root = std::path::Path::new("/sys/fs/cgroup");
    let handed = crate::cgroup::CgroupMode::detect(root)
        .and_then(|mode| crate::cgroup::delegate(root, mode, &cgroup, owner));
    handed.map_err(|e| {
        Error::failed(
            format!("cannot hand the cgroup of {unit} to the machine's root"),
            e,
        )
    })
}

/// SetUnitProperties(runtime): the change applies now and lasts as long as the scope.
/// systemd answers yes even where the kernel then refuses the value (a memory limit
/// below what the machine uses is EBUSY on cgroup v1, only logged), so the cgroup files
/// are read back: a limit that did not take is an error, not a quiet success.
pub(super) async fn set_limits(
    sd: &Bus,
    unit: &str,
    limits: &Limits,
    flavor: Flavor,
) -> Result<()> {
    let mut props = limit_properties(limits, flavor)?;
    props.extend(unset_values(limits, flavor)?);
    sd.manager()
        .set_unit_properties(unit.to_string(), true, props)
        .await
        .map_err(|e| Error::bus(format!("systemd refused the limits for {unit}"), e))?;
    let cgroup = control_group(sd, unit).await?;
    for (property, value) in limit_values(limits, flavor)? {
        let SdValue::U64(wanted) = value else {
            continue;
        };
        let Some(file) = cgroup_file(&cgroup, property, flavor) else {
            continue;
        };
        // Hierarchies without the controller (a unified host here) have no such file.
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let applied = text.trim();
        if !same_limit(property, wanted, applied) {
            return Err(Error::Failed(format!(
                "{property}={wanted} did not take effect on {unit}: the kernel kept {applied} \
                 in {} (a memory limit below what the machine uses is refused)",
                file.display()
            )));
        }
    }
    Ok(())
}

/// The cgroup of `unit` in /proc/PID/cgroup's `text`: the tracking hierarchy's line
/// (v1's name=systemd, else cgroup2's), if it is that unit's.
fn scope_cgroup(text: &str, unit: &str) -> Option<String> {
    let path_of = |prefix: &str| {
        text.lines().find_map(|l| {
            l.split_once(':')
                .and_then(|(_, rest)| rest.strip_prefix(prefix))
        })
    };
    let path = path_of("name=systemd:").or_else(|| path_of(":"))?;
    path.ends_with(&format!("/{unit}"))
        .then(|| path.to_string())
}

async fn control_group(sd: &Bus, unit: &str) -> Result<String> {
    let read = async {
        let path = sd.manager().get_unit(unit.to_string()).await?;
        zbus_systemd::systemd1::ScopeProxy::builder(sd.connection())
            .path(path)?
            .cache_properties(CacheProperties::No)
            .build()
            .await?
            .control_group()
            .await
    };
    read.await
        .map_err(|e| Error::bus(format!("cannot read the cgroup of {unit}"), e))
}

/// Where the kernel keeps a limit systemd was sent, for the ones berth reads back.
fn cgroup_file(cgroup: &str, property: &str, flavor: Flavor) -> Option<std::path::PathBuf> {
    let rel = cgroup.trim_start_matches('/');
    let (controller, file) = match (flavor, property) {
        (Flavor::Legacy, "MemoryLimit") => ("memory", "memory.limit_in_bytes"),
        (Flavor::Legacy, "TasksMax") => ("pids", "pids.max"),
        (Flavor::Legacy, "CPUShares") => ("cpu", "cpu.shares"),
        (Flavor::Unified, "MemoryMax") => ("", "memory.max"),
        (Flavor::Unified, "TasksMax") => ("", "pids.max"),
        (Flavor::Unified, "CPUWeight") => ("", "cpu.weight"),
        _ => return None,
    };
    let root = std::path::Path::new("/sys/fs/cgroup").join(controller);
    Some(root.join(rel).join(file))
}

/// Whether the kernel's value is the one asked for; memory is kept in whole pages.
fn same_limit(property: &str, wanted: u64, applied: &str) -> bool {
    let Ok(applied) = applied.parse::<u64>() else {
        return false;
    };
    match property {
        "MemoryLimit" | "MemoryMax" => applied == wanted / 4096 * 4096,
        _ => applied == wanted,
    }
}

/// FreezeUnit/ThawUnit: systemd answers once the cgroup is (un)frozen. Only the
/// unified hierarchy can freeze; callers check the host first for a clear message.
pub(super) async fn freeze(sd: &Bus, unit: &str, freeze: bool) -> Result<()> {
    let result = if freeze {
        sd.manager().freeze_unit(unit.to_string()).await
    } else {
        sd.manager().thaw_unit(unit.to_string()).await
    };
    result.map_err(|e| {
        Error::bus(
            format!(
                "systemd could not {} {unit}",
                if freeze { "freeze" } else { "thaw" }
            ),
            e,
        )
    })
}

pub(super) async fn kill_all(sd: &Bus, unit: &str, signal: i32) -> Result<()> {
    sd.manager()
        .kill_unit(unit.to_string(), "all".to_string(), signal)
        .await
        .map_err(|e| Error::bus(format!("cannot signal {unit}"), e))
}

async fn stop(sd: &Bus, unit: &str) -> Result<()> {
    match sd
        .manager()
        .stop_unit(unit.to_string(), "replace".into())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_no_such_unit(&e) => Ok(()),
        Err(e) => Err(Error::bus(format!("cannot stop {unit}"), e)),
    }
}

/// Whether systemd still has the unit loaded (scopes are collected once inactive).
async fn unit_exists(sd: &Bus, unit: &str) -> Result<bool> {
    match sd.manager().get_unit(unit.to_string()).await {
        Ok(_) => Ok(true),
        Err(e) if is_no_such_unit(&e) => Ok(false),
        Err(e) => Err(Error::bus(format!("cannot look up {unit}"), e)),
    }
}

/// Waits until systemd has dropped the unit; stops it if it lingers.
///
/// Woken by systemd's UnitRemoved (berthd is subscribed), so a one-shot run's reply and
/// a stop come as soon as the scope is gone rather than at the next poll; the unit is
/// still looked up now and then, in case the signal was missed.
pub(super) async fn wait_gone(sd: &Bus, unit: &str, timeout: Duration) -> Result<()> {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + timeout;
    // Subscribed before the first look: the unit may go in between.
    let mut removed = sd
        .manager()
        .receive_unit_removed_with_args(&[(0, unit)])
        .await
        .map_err(|e| Error::bus(format!("cannot watch {unit}"), e))?;
    while unit_exists(sd, unit).await? {
        let now = tokio::time::Instant::now();
        if now < deadline {
            let next_look = (now + Duration::from_millis(500)).min(deadline);
            tokio::select! {
                signal = removed.next() => {
                    if signal.is_none() {
                        // No more signals (the connection is going): looks only.
                        tokio::time::sleep_until(next_look).await;
                    }
                }
                () = tokio::time::sleep_until(next_look) => {}
            }
            continue;
        }
        stop(sd, unit).await?;
        let _ = sd.manager().reset_failed_unit(unit.to_string()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        return if unit_exists(sd, unit).await? {
            Err(Error::Failed(format!(
                "{unit} is still there after stopping it"
            )))
        } else {
            Ok(())
        };
    }
    Ok(())
}

/// DeviceAllow for a machine: its /dev nodes (spawn/mount.rs), the pty multiplexer and
/// every pty of its devpts instance.
fn device_allow() -> Vec<(String, String)> {
    crate::spawn::mount::DEVICES
        .iter()
        .map(|name| (format!("/dev/{name}"), "rwm".to_string()))
        .chain([
            ("/dev/ptmx".to_string(), "rwm".to_string()),
            ("char-pts".to_string(), "rw".to_string()),
        ])
        .collect()
}

pub(super) fn is_no_such_unit(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _)
        if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_is_read_from_the_tracking_hierarchy() {
        let unit = "machine-box.scope";
        let hybrid = "12:pids:/machine.slice/machine-box.scope\n\
                      1:name=systemd:/machine.slice/machine-box.scope\n\
                      0::/machine.slice/machine-box.scope\n";
        assert_eq!(
            scope_cgroup(hybrid, unit).as_deref(),
            Some("/machine.slice/machine-box.scope")
        );
        let unified = "0::/machine.slice/machine-box.scope\n";
        assert_eq!(
            scope_cgroup(unified, unit).as_deref(),
            Some("/machine.slice/machine-box.scope")
        );
        // Not (or no longer) in that unit: systemd is asked instead.
        assert_eq!(
            scope_cgroup("0::/system.slice/berthd.service\n", unit),
            None
        );
        assert_eq!(
            scope_cgroup("0::/machine.slice/machine-boxx.scope\n", unit),
            None
        );
        assert_eq!(scope_cgroup("", unit), None);
    }
}
