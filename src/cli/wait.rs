//! `berthctl wait NAME STATE`, as lxc-wait: driven by berthd's signals, never by polling.
//! It subscribes first and reads the current value second, so a change between the two
//! is never missed.

use std::cell::RefCell;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::fdo::PropertiesProxy;
use zbus::proxy::CacheProperties;

use super::args::WaitArgs;
use super::commands::Session;
use super::error::{CliError, error_name};
use crate::client::{MACHINE_INTERFACE, SERVICE};
use crate::daemon::machine::MachineState;

/// Not a state of a machine: that it no longer exists (removed, or an ephemeral one
/// that stopped).
const GONE: &str = "gone";

/// What `wait` waits for, checked before berthd is asked.
pub struct Target {
    state: String,
    timeout: Option<(Duration, String)>,
}

impl Target {
    pub fn parse(args: &WaitArgs) -> Result<Target, CliError> {
        let known: Vec<&str> = MachineState::ALL
            .iter()
            .map(|s| s.as_str())
            .chain([GONE])
            .collect();
        if !known.contains(&args.state.as_str()) {
            return Err(CliError::Usage(format!(
                "unknown state {:?}; wait for one of {}",
                args.state,
                known.join(", ")
            )));
        }
        let timeout = match &args.timeout {
            None => None,
            Some(text) => Some((
                parse_duration(text).map_err(|e| CliError::Usage(format!("--timeout: {e}")))?,
                text.clone(),
            )),
        };
        Ok(Target {
            state: args.state.clone(),
            timeout,
        })
    }
}

/// A duration as 10s, 500ms, 2m, 1h or 1.5s; a bare number is seconds, as timeout(1)
/// takes it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration; give a number with ms, s, m or h, e.g. 10s");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(n * scale).map_err(|_| bad())
}

impl Session {
    pub async fn wait(&self, name: &str, target: &Target) -> Result<i32, CliError> {
        // The last state seen, for the message on a timeout.
        let seen = RefCell::new(None);
        let watch = self.watch(name, &target.state, &seen);
        let Some((limit, text)) = &target.timeout else {
            return watch.await;
        };
        match tokio::time::timeout(*limit, watch).await {
            Ok(done) => done,
            Err(_) => Err(CliError::Timeout(match seen.take() {
                Some(state) if target.state != GONE => format!(
                    "timed out after {text}: machine {name} is {state}, not {}",
                    target.state
                ),
                _ => format!("timed out after {text}: machine {name} still exists"),
            })),
        }
    }

    async fn watch(
        &self,
        name: &str,
        want: &str,
        seen: &RefCell<Option<String>>,
    ) -> Result<i32, CliError> {
        let closed = || CliError::DBus(format!("the bus closed while waiting for machine {name}"));
        let manager = self.manager().await?;
        let mut removed = manager
            .receive_machine_removed_with_args(&[(0, name)])
            .await?;
        let path = match manager.get_machine(name).await {
            Err(e) if want == GONE && is_no_such_machine(&e) => return Ok(0),
            found => found?,
        };
        if want == GONE {
            return removed.next().await.map(|_| 0).ok_or_else(closed);
        }
        let props = PropertiesProxy::builder(&self.conn)
            .destination(SERVICE)?
            .path(path.clone())?
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let mut changes = props.receive_properties_changed().await?;
        let state = self.machine_at(path).await?.state().await?;
        if state == want {
            return Ok(0);
        }
        *seen.borrow_mut() = Some(state);
        loop {
            tokio::select! {
                change = changes.next() => {
                    let change = change.ok_or_else(closed)?;
                    let Ok(args) = change.args() else { continue };
                    if args.interface_name().as_str() != MACHINE_INTERFACE {
                        continue;
                    }
                    let Some(Ok(state)) = args
                        .changed_properties()
                        .get("State")
                        .map(|v| String::try_from(v.clone()))
                    else {
                        continue;
                    };
                    if state == want {
                        return Ok(0);
                    }
                    *seen.borrow_mut() = Some(state);
                }
                gone = removed.next() => {
                    gone.ok_or_else(closed)?;
                    return Err(CliError::DBus(format!(
                        "machine {name} was removed (or renamed) while waiting for it to be {want}"
                    )));
                }
            }
        }
    }
}

fn is_no_such_machine(e: &zbus::Error) -> bool {
    error_name(e).as_deref() == Some("org.berth.Berth1.Error.NoSuchMachine")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn durations() {
        let ok = |t: &str| parse_duration(t).unwrap();
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("3"), Duration::from_secs(3));
        for bad in ["", "s", "10x", "-1s", "1.2.3s", "10 s", "ms"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("e.g. 10s") && !e.contains('\n'), "{bad}: {e}");
        }
    }

    fn target(argv: &[&str]) -> Result<Target, CliError> {
        let cli = crate::cli::Cli::try_parse_from(argv).unwrap();
        let crate::cli::Command::Wait(args) = cli.command else {
            panic!("not wait")
        };
        Target::parse(&args)
    }

    #[test]
    fn states_are_checked_before_the_bus() {
        for state in ["stopped", "running", "frozen", "failed", "gone"] {
            assert!(
                target(&["berthctl", "wait", "web", state]).is_ok(),
                "{state}"
            );
        }
        let t = target(&["berthctl", "wait", "web", "running", "--timeout", "500ms"]).unwrap();
        assert_eq!(t.timeout.unwrap().0, Duration::from_millis(500));
        let Err(CliError::Usage(e)) = target(&["berthctl", "wait", "web", "up"]) else {
            panic!("a bad state is a usage error")
        };
        assert!(
            e.contains("\"up\"") && e.contains("stopped, starting, running"),
            "{e}"
        );
        let Err(CliError::Usage(e)) =
            target(&["berthctl", "wait", "web", "running", "--timeout", "soon"])
        else {
            panic!("a bad timeout is a usage error")
        };
        assert!(e.starts_with("--timeout: \"soon\""), "{e}");
    }
}
