//! Turning a{sv} option dicts into typed daemon options. Every key is checked: an
//! unknown key or a wrong type is an error that names it, never silently ignored.

use crate::daemon::CreateOptions;
use crate::error::{Error, Result};
use crate::limits::{self, Limits, RawValue};
use crate::names::shown;
use crate::net::{NetRequest, NetworkOptions, PortForward};
use crate::template::build::BuildSpec;
use crate::template::{Method, debootstrap};
use std::collections::HashMap;
use zbus::zvariant::{OwnedValue, Value};

/// Options in the API that later features implement; refused clearly until then.
pub const NOT_YET: [&str; 1] = ["BlockIOReadBandwidth"];

/// The network keys, shared by CreateMachine and SetNetwork.
const NETWORK_KEYS: [&str; 4] = ["Network", "Bridge", "Address", "PortForwards"];

pub fn create_options(options: HashMap<String, OwnedValue>) -> Result<CreateOptions> {
    let mut out = CreateOptions::default();
    let mut keys: Vec<_> = options.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, value) in keys {
        let v: &Value<'_> = &value;
        match key.as_str() {
            "Hostname" => out.hostname = Some(string(&key, v)?),
            "Command" => out.command = strings(&key, v)?,
            // The daemon checks Command and Environment (daemon/validate.rs), as for Execute.
            "Environment" => out.environment = strings(&key, v)?,
            "Capabilities" => out.security.capabilities = strings(&key, v)?,
            "DropCapabilities" => out.security.drop_capabilities = strings(&key, v)?,
            "SystemCallFilter" => out.security.system_call_filter = strings(&key, v)?,
            "PrivateUsers" => {
                out.private_users = string(&key, v)?.parse().map_err(Error::InvalidArgument)?
            }
            "Autostart" => out.autostart = boolean(&key, v)?,
            "Ephemeral" => out.ephemeral = boolean(&key, v)?,
            "Init" => out.init = Some(boolean(&key, v)?),
            "HaltSignal" => {
                let s = unsigned(&key, v)?;
                if s == 0 || s > libc::SIGRTMAX() as u64 {
                    return Err(Error::InvalidArgument(format!(
                        "HaltSignal {s} is not a valid signal number"
                    )));
                }
                out.halt_signal = Some(s as i32);
            }
            "StopTimeoutUSec" => {
                let usec = unsigned(&key, v)?;
                let max = crate::daemon::MAX_STOP_TIMEOUT.as_micros() as u64;
                if usec > max {
                    return Err(Error::InvalidArgument(format!(
                        "StopTimeoutUSec {usec}: at most {max} (one hour), so a stop always ends"
                    )));
                }
                out.stop_timeout_usec = Some(usec);
            }
            "Binds" => out.binds = binds(&key, v)?,
            "TmpSize" => out.tmp_size = Some(positive_size(&key, v)?),
            "DiskQuota" => out.disk_quota = Some(positive_size(&key, v)?),
            k if NETWORK_KEYS.contains(&k) => network_key(&mut out.network, k, v)?,
            k if limits::is_limit_key(k) => out.limits.set(k, raw(k, v)?)?,
            k if NOT_YET.contains(&k) => {
                return Err(Error::NotSupported(format!(
                    "option {k} is not supported yet"
                )));
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown option {}; see the CreateMachine options in the API documentation",
                    shown(other)
                )));
            }
        }
    }
    out.limits.check_twins()?;
    Ok(out)
}

/// One of the network keys into `req`.
fn network_key(req: &mut NetRequest, key: &str, v: &Value<'_>) -> Result<()> {
    match key {
        "Network" => req.mode = Some(string(key, v)?.parse().map_err(Error::InvalidArgument)?),
        "Bridge" => req.bridge = Some(string(key, v)?),
        "Address" => req.address = Some(string(key, v)?),
        "PortForwards" => {
            let list: Vec<(String, u16, u16)> = v.try_clone().ok().and_then(|v| v.try_into().ok())
                .ok_or_else(|| {
                    Error::InvalidArgument(
                        "PortForwards must be an array of (protocol, host port, machine port), D-Bus type a(sqq)".into(),
                    )
                })?;
            req.ports = Some(
                list.into_iter()
                    .map(|(proto, host, machine)| {
                        PortForward::new(&proto, host as u32, machine as u32)
                    })
                    .collect::<Result<_>>()?,
            );
        }
        _ => unreachable!("only network keys come here"),
    }
    Ok(())
}

/// SetNetwork's options: the network keys of CreateMachine.
pub fn net_request(dict: HashMap<String, OwnedValue>) -> Result<NetRequest> {
    let mut req = NetRequest::default();
    for (key, value) in dict {
        if !NETWORK_KEYS.contains(&key.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "unknown option {} (known: {})",
                shown(&key),
                NETWORK_KEYS.join(", ")
            )));
        }
        network_key(&mut req, &key, &value)?;
    }
    Ok(req)
}

/// CreateNetwork's options: Subnet s, Nat b, Dhcp b.
pub fn network_options(dict: HashMap<String, OwnedValue>) -> Result<NetworkOptions> {
    let mut out = NetworkOptions::default();
    for (key, value) in dict {
        let v: &Value<'_> = &value;
        match key.as_str() {
            "Subnet" => out.subnet = Some(string(&key, v)?),
            "Nat" => out.nat = Some(boolean(&key, v)?),
            "Dhcp" => out.dhcp = Some(boolean(&key, v)?),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown option {} (known: Subnet, Nat, Dhcp)",
                    shown(other)
                )));
            }
        }
    }
    Ok(out)
}

pub fn limits(dict: HashMap<String, OwnedValue>) -> Result<Limits> {
    let mut out = Limits::default();
    for (key, value) in dict {
        out.set(&key, raw(&key, &value)?)?;
    }
    out.check_twins()?;
    Ok(out)
}

pub fn remove_force(dict: HashMap<String, OwnedValue>) -> Result<bool> {
    only_flag(dict, "Force")
}

/// An options dict whose one known key is the boolean `known` (RemoveWithOptions'
/// Force, ExportWithOptions' RootfsOnly, CloneMachine's Ephemeral): its value, false
/// when absent; any other key is an error naming it.
fn only_flag(dict: HashMap<String, OwnedValue>, known: &str) -> Result<bool> {
    let mut flag = false;
    for (key, value) in dict {
        if key != known {
            return Err(Error::InvalidArgument(format!(
                "unknown option {} (known: {known})",
                shown(&key)
            )));
        }
        flag = boolean(&key, &value)?;
    }
    Ok(flag)
}

/// Any integer or string variant; the limits parser decides what it means.
pub fn raw(key: &str, v: &Value<'_>) -> Result<RawValue> {
    Ok(match v {
        Value::U8(n) => RawValue::Unsigned(*n as u64),
        Value::U16(n) => RawValue::Unsigned(*n as u64),
        Value::U32(n) => RawValue::Unsigned(*n as u64),
        Value::U64(n) => RawValue::Unsigned(*n),
        Value::I16(n) => RawValue::Signed(*n as i64),
        Value::I32(n) => RawValue::Signed(*n as i64),
        Value::I64(n) => RawValue::Signed(*n),
        Value::Str(s) => RawValue::Text(s.to_string()),
        Value::Value(inner) => return raw(key, inner),
        other => return Err(wrong_type(key, "a number or a string", other)),
    })
}

fn unsigned(key: &str, v: &Value<'_>) -> Result<u64> {
    match raw(key, v)? {
        RawValue::Unsigned(n) => Ok(n),
        RawValue::Signed(n) if n >= 0 => Ok(n as u64),
        RawValue::Signed(n) => Err(Error::InvalidArgument(format!(
            "{key} {n}: must not be negative"
        ))),
        RawValue::Text(t) => t.parse().map_err(|_| {
            Error::InvalidArgument(format!("{key} {}: expected a whole number", shown(&t)))
        }),
    }
}

/// `Binds a(ssb)`: (source, target, read-only); the paths are checked by the daemon.
fn binds(key: &str, v: &Value<'_>) -> Result<Vec<crate::spawn::binds::Bind>> {
    let list: Vec<(String, String, bool)> = v
        .try_clone()
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{key} must be an array of (source, target, read-only), D-Bus type a(ssb)"
            ))
        })?;
    Ok(list
        .into_iter()
        .map(|(source, target, read_only)| crate::spawn::binds::Bind {
            source: source.into(),
            target: target.into(),
            read_only,
        })
        .collect())
}

fn string(key: &str, v: &Value<'_>) -> Result<String> {
    match v {
        Value::Str(s) => Ok(s.to_string()),
        Value::Value(inner) => string(key, inner),
        other => Err(wrong_type(key, "a string", other)),
    }
}

fn boolean(key: &str, v: &Value<'_>) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Value(inner) => boolean(key, inner),
        other => Err(wrong_type(key, "a boolean", other)),
    }
}

fn strings(key: &str, v: &Value<'_>) -> Result<Vec<String>> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|item| match item {
                Value::Str(s) => Ok(s.to_string()),
                other => Err(wrong_type(key, "an array of strings", other)),
            })
            .collect(),
        Value::Value(inner) => strings(key, inner),
        other => Err(wrong_type(key, "an array of strings", other)),
    }
}

/// ExportWithOptions's options: only `RootfsOnly b`.
pub fn export_rootfs_only(dict: HashMap<String, OwnedValue>) -> Result<bool> {
    only_flag(dict, "RootfsOnly")
}

/// An options dict for a method that has none yet (CopyTo, CopyFrom): empty.
pub fn no_options(dict: HashMap<String, OwnedValue>) -> Result<()> {
    match dict.keys().next() {
        None => Ok(()),
        Some(key) => Err(Error::InvalidArgument(format!(
            "unknown option {}; this method takes none yet",
            shown(key)
        ))),
    }
}

/// CloneMachine's options: only `Ephemeral b`.
pub fn clone_ephemeral(dict: HashMap<String, OwnedValue>) -> Result<bool> {
    only_flag(dict, "Ephemeral")
}

/// BuildTemplate's method and options as a [`BuildSpec`]. Each method takes its own keys;
/// a key of another method is an error naming it.
pub fn build_spec(method: &str, options: HashMap<String, OwnedValue>) -> Result<BuildSpec> {
    let method = Method::parse(method)?;
    let allowed: &[&str] = match method {
        Method::Busybox => &[],
        Method::Debootstrap => &["Suite", "Mirror", "Variant", "Include", "Architecture"],
        Method::Tar => &["Archive"],
        Method::Directory => &["Source"],
    };
    let mut keys: Vec<_> = options.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let mut text = HashMap::new();
    let mut include = Vec::new();
    let mut archive = None;
    for (key, value) in keys {
        let v: &Value<'_> = &value;
        if !allowed.contains(&key.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "option {} is not one of the {} method's ({})",
                shown(&key),
                method.as_str(),
                if allowed.is_empty() {
                    "it takes none".to_string()
                } else {
                    allowed.join(", ")
                }
            )));
        }
        match key.as_str() {
            "Include" => include = strings(&key, v)?,
            "Archive" => archive = Some(fd(&key, v)?),
            _ => {
                text.insert(key.clone(), string(&key, v)?);
            }
        }
    }
    let mut take = |k: &str| text.remove(k);
    Ok(match method {
        Method::Busybox => BuildSpec::Busybox,
        Method::Debootstrap => BuildSpec::Debootstrap(debootstrap::Options::new(
            take("Suite"),
            take("Mirror"),
            take("Variant"),
            include,
            take("Architecture"),
        )?),
        Method::Tar => BuildSpec::Tar(archive.ok_or_else(|| {
            Error::InvalidArgument(
                "the tar method needs option Archive: an open file descriptor of the archive"
                    .into(),
            )
        })?),
        Method::Directory => {
            let source = take("Source").ok_or_else(|| {
                Error::InvalidArgument(
                    "the directory method needs option Source: the tree to copy".into(),
                )
            })?;
            let path = std::path::PathBuf::from(&source);
            if !path.is_absolute() {
                return Err(Error::InvalidArgument(format!(
                    "Source {}: give an absolute path",
                    shown(&source)
                )));
            }
            BuildSpec::Directory(path)
        }
    })
}

/// A file descriptor passed in a variant, duplicated so it outlives the message.
fn fd(key: &str, v: &Value<'_>) -> Result<std::os::fd::OwnedFd> {
    match v {
        Value::Fd(fd) => {
            use std::os::fd::AsFd;
            fd.as_fd().try_clone_to_owned()
        }
        .map_err(|e| Error::failed(format!("option {key}: cannot take the descriptor"), e)),
        Value::Value(inner) => self::fd(key, inner),
        other => Err(wrong_type(key, "a file descriptor", other)),
    }
}

fn wrong_type(key: &str, expected: &str, got: &Value<'_>) -> Error {
    Error::InvalidArgument(format!(
        "option {} must be {expected}, not a value of type '{}'",
        crate::names::shown_bare(key),
        got.value_signature()
    ))
}

/// A size in bytes, as a number or with a unit ("32M"); 0 is refused.
fn positive_size(key: &str, v: &Value<'_>) -> Result<u64> {
    let size = match raw(key, v)? {
        RawValue::Text(t) => {
            limits::parse_size(&t).map_err(|e| Error::InvalidArgument(format!("{key}: {e}")))?
        }
        RawValue::Unsigned(n) => n,
        RawValue::Signed(n) if n > 0 => n as u64,
        RawValue::Signed(n) => {
            return Err(Error::InvalidArgument(format!(
                "{key} {n}: must be positive"
            )));
        }
    };
    if size == 0 {
        return Err(Error::InvalidArgument(format!("{key} 0: must be positive")));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(entries: Vec<(&str, Value<'static>)>) -> HashMap<String, OwnedValue> {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), OwnedValue::try_from(v).unwrap()))
            .collect()
    }

    #[test]
    fn typed_options_are_read() {
        let o = create_options(dict(vec![
            ("Hostname", Value::from("web")),
            ("Command", Value::from(vec!["/bin/sh", "-c", "sleep 1"])),
            ("MemoryMax", Value::from("64M")),
            ("CPUShares", Value::U64(256)),
            ("TasksMax", Value::from("32")),
            ("StopTimeoutUSec", Value::U64(5_000_000)),
            ("Network", Value::from("none")),
            ("Capabilities", Value::from(vec!["CAP_SYS_TIME"])),
            ("SystemCallFilter", Value::from(vec!["~ptrace"])),
        ]))
        .unwrap();
        assert_eq!(o.security.capabilities, ["CAP_SYS_TIME"]);
        assert_eq!(o.security.system_call_filter, ["~ptrace"]);
        assert_eq!(o.hostname.as_deref(), Some("web"));
        assert_eq!(o.command, ["/bin/sh", "-c", "sleep 1"]);
        assert_eq!(
            o.limits.entries(),
            [
                ("CPUShares", RawValue::Unsigned(256)),
                ("MemoryMax", RawValue::Unsigned(64 << 20)),
                ("TasksMax", RawValue::Unsigned(32)),
            ]
        );
        assert_eq!(o.stop_timeout_usec, Some(5_000_000));
        assert_eq!(o.init, None);
        let o = create_options(dict(vec![("Init", Value::Bool(false))])).unwrap();
        assert_eq!(o.init, Some(false));
    }

    #[test]
    fn binds_are_read_as_triples() {
        let list = Value::from(vec![
            ("/srv/db".to_string(), "/var/lib/db".to_string(), false),
            ("/etc/ssl".to_string(), "/etc/ssl".to_string(), true),
        ]);
        let o = create_options(dict(vec![("Binds", list)])).unwrap();
        assert_eq!(o.binds.len(), 2);
        assert_eq!(o.binds[0].source, std::path::Path::new("/srv/db"));
        assert_eq!(o.binds[0].target, std::path::Path::new("/var/lib/db"));
        assert!(!o.binds[0].read_only && o.binds[1].read_only);
        match create_options(dict(vec![("Binds", Value::from("/srv:/srv"))])) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("a(ssb)"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_options_name_the_key() {
        let err = |entries| match create_options(dict(entries)) {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(vec![("Frobnicate", Value::Bool(true))]).contains("Frobnicate"));
        assert!(err(vec![("Hostname", Value::U32(3))]).contains("Hostname"));
        assert!(err(vec![("MemoryMax", Value::from("64Q"))]).contains("64Q"));
        assert!(err(vec![("TasksMax", Value::U64(0))]).contains("TasksMax"));
        assert!(err(vec![("HaltSignal", Value::U32(0))]).contains("HaltSignal"));
        assert!(err(vec![("Init", Value::from("yes"))]).contains("Init"));
        assert!(err(vec![("StopTimeoutUSec", Value::U64(u64::MAX))]).contains("one hour"));
        assert!(err(vec![("PrivateUsers", Value::from("maybe"))]).contains("maybe"));
        assert!(
            err(vec![
                ("MemoryMax", Value::from("1G")),
                ("MemoryLimit", Value::from("2G"))
            ])
            .contains("one limit under two names")
        );
        assert!(err(vec![("Network", Value::from("wifi"))]).contains("wifi"));
        assert!(err(vec![("PortForwards", Value::from("tcp:80:80"))]).contains("a(sqq)"));
        let ports = Value::from(vec![("tcp".to_string(), 8080u16, 80u16)]);
        assert!(
            err(vec![(
                "PortForwards",
                Value::from(vec![("tcp".to_string(), 0u16, 80u16)])
            )])
            .contains("port 0")
        );
        let opts = create_options(dict(vec![
            ("Network", Value::from("bridge")),
            ("Bridge", Value::from("lab")),
            ("Address", Value::from("10.77.0.50/24")),
            ("PortForwards", ports),
        ]))
        .unwrap();
        assert_eq!(opts.network.mode, Some(crate::net::NetMode::Bridge));
        assert_eq!(opts.network.bridge.as_deref(), Some("lab"));
        assert_eq!(opts.network.address.as_deref(), Some("10.77.0.50/24"));
        assert_eq!(opts.network.ports.unwrap()[0].to_string(), "tcp:8080:80");
    }

    #[test]
    fn network_options_are_checked() {
        let o = network_options(dict(vec![
            ("Subnet", Value::from("10.77.0.0/24")),
            ("Nat", Value::Bool(false)),
        ]))
        .unwrap();
        assert_eq!(o.subnet.as_deref(), Some("10.77.0.0/24"));
        assert_eq!(o.nat, Some(false));
        assert!(network_options(dict(vec![("Gateway", Value::from("x"))])).is_err());
        assert!(net_request(dict(vec![("Memory", Value::from("x"))])).is_err());
        assert_eq!(
            net_request(dict(vec![("Network", Value::from("host"))]))
                .unwrap()
                .mode,
            Some(crate::net::NetMode::Host)
        );
    }

    #[test]
    fn build_options_belong_to_their_method() {
        let err = |m: &str, entries| build_spec(m, dict(entries)).unwrap_err().to_string();
        assert!(err("rsync", vec![]).contains("rsync"));
        assert!(err("busybox", vec![("Suite", Value::from("x"))]).contains("takes none"));
        assert!(err("directory", vec![("Suite", Value::from("x"))]).contains("Source"));
        assert!(err("directory", vec![]).contains("needs option Source"));
        assert!(err("directory", vec![("Source", Value::from("srv"))]).contains("absolute"));
        assert!(err("tar", vec![]).contains("Archive"));
        assert!(err("tar", vec![("Archive", Value::from("/x.tar"))]).contains("file descriptor"));
        assert!(matches!(
            build_spec("directory", dict(vec![("Source", Value::from("/srv/golden"))])),
            Ok(BuildSpec::Directory(p)) if p == std::path::Path::new("/srv/golden")
        ));
    }

    #[test]
    fn remove_options() {
        assert!(remove_force(dict(vec![("Force", Value::Bool(true))])).unwrap());
        assert!(!remove_force(HashMap::new()).unwrap());
        assert!(remove_force(dict(vec![("Forse", Value::Bool(true))])).is_err());
    }
}
