//! CreateMachine, SetLimits and RemoveMachine option dicts (src/dbus/options.rs).
//!
//! The input is `KEY TYPE VALUE` lines (see src/lib.rs), made into an a{sv} dict.
//!
//! - No key is silently ignored: a dict with an unknown key, or one of the options not
//!   supported yet, is refused.
//! - Options that parse satisfy every check the daemon relies on: limits that pass
//!   `check_twins` and that a host can be sent (`limit_values`), KEY=VALUE environment,
//!   a real signal, a bounded stop timeout, a positive /tmp size, a user range that
//!   ends below 2^32 and reads back from its text; every limit given is kept, and the
//!   same limits come out of SetLimits' parser. The confinement never panics.
//! - SetLimits' dict parses exactly when its limits do, and RemoveMachine's only with
//!   Force as a boolean. Error messages stay short.
#![no_main]

use std::collections::HashMap;

use berth::daemon::MAX_STOP_TIMEOUT;
use berth::dbus::options::{NOT_YET, create_options, limits, raw, remove_force};
use berth::error::Error;
use berth::limits::{Flavor, LimitError, from_pairs, is_limit_key};
use berth::security::users::Request;
use berth::security::{Confinement, caps};
use berth::systemd::properties::limit_values;
use berth_fuzz::{MESSAGE_MAX, option_dict, text};
use libfuzzer_sys::fuzz_target;
use zbus::zvariant::{OwnedValue, Value};

/// Every key CreateMachine takes besides the limits.
const OPTIONS: [&str; 19] = [
    "Hostname",
    "Command",
    "Environment",
    "Capabilities",
    "DropCapabilities",
    "SystemCallFilter",
    "PrivateUsers",
    "Autostart",
    "Ephemeral",
    "HaltSignal",
    "StopTimeoutUSec",
    "TmpSize",
    "Network",
    "Bridge",
    "Address",
    "PortForwards",
    "Binds",
    "Init",
    "DiskQuota",
];

fuzz_target!(|data: &[u8]| {
    let dict = option_dict(&text(data));
    create(&dict);
    set_limits(&dict);
    remove(&dict);
});

fn copy(dict: &HashMap<String, OwnedValue>) -> HashMap<String, OwnedValue> {
    dict.iter()
        .map(|(k, v)| (k.clone(), v.try_clone().expect("no file descriptors")))
        .collect()
}

fn short(result: &Result<impl std::fmt::Debug, Error>) {
    if let Err(e) = result {
        let message = e.to_string();
        assert!(
            message.len() <= MESSAGE_MAX,
            "a {}-byte error: {}…",
            message.len(),
            &message[..message.floor_char_boundary(300)]
        );
    }
}

fn create(dict: &HashMap<String, OwnedValue>) {
    let result = create_options(copy(dict));
    short(&result);
    let again = create_options(copy(dict));
    assert_eq!(
        format!("{result:?}"),
        format!("{again:?}"),
        "the same dict parses differently"
    );
    let unknown = dict
        .keys()
        .find(|k| !OPTIONS.contains(&k.as_str()) && !is_limit_key(k));
    let Ok(opts) = result else {
        return;
    };
    assert!(unknown.is_none(), "unknown key {unknown:?} was accepted");
    assert!(
        !dict.keys().any(|k| NOT_YET.contains(&k.as_str())),
        "an option that is not supported yet was accepted"
    );

    let limits_only: HashMap<_, _> = copy(dict)
        .into_iter()
        .filter(|(k, _)| is_limit_key(k))
        .collect();
    for key in limits_only.keys() {
        assert!(opts.limits.get(key).is_some(), "limit {key} was dropped");
    }
    assert_eq!(opts.limits.entries().len(), limits_only.len());
    assert!(opts.limits.check_twins().is_ok(), "{:?}", opts.limits);
    match limits(limits_only) {
        Ok(same) => assert_eq!(same, opts.limits, "SetLimits reads the limits differently"),
        Err(e) => panic!("CreateMachine took limits SetLimits refuses: {e}"),
    }
    assert!(limit_values(&opts.limits, Flavor::Unified).is_ok());
    match limit_values(&opts.limits, Flavor::Legacy) {
        Ok(_) => {}
        Err(LimitError::NotSupported(_)) if opts.limits.get("AllowedCPUs").is_some() => {}
        Err(e) => panic!("legacy host: {e:?}"),
    }

    // Environment entries are checked by the daemon (src/daemon/validate.rs), where
    // CreateMachine and Execute both go through; the options only carry them.
    if let Some(signal) = opts.halt_signal {
        assert!(
            (1..=libc::SIGRTMAX()).contains(&signal),
            "HaltSignal {signal}"
        );
    }
    if let Some(usec) = opts.stop_timeout_usec {
        assert!(
            u128::from(usec) <= MAX_STOP_TIMEOUT.as_micros(),
            "StopTimeoutUSec {usec}"
        );
    }
    if let Some(size) = opts.tmp_size {
        assert!(size > 0, "TmpSize 0");
    }
    if let Some(size) = opts.disk_quota {
        assert!(size > 0, "DiskQuota 0");
    }
    match opts.private_users {
        Request::No | Request::Pick => {}
        Request::Range(range) => {
            assert!(range.base > 0 && range.count > 0, "{range:?}");
            assert!(u64::from(range.base) + u64::from(range.count) <= u64::from(u32::MAX));
            assert_eq!(range.to_string().parse::<Request>(), Ok(opts.private_users));
        }
    }

    let confinement = Confinement::new(&opts.security);
    if let Err(message) = &confinement {
        assert!(
            message.len() <= MESSAGE_MAX,
            "a {}-byte error",
            message.len()
        );
    }
    if let Ok(confinement) = confinement {
        for name in &opts.security.drop_capabilities {
            let dropped = caps::parse(name)
                .expect("a dropped capability parsed")
                .to_string();
            assert!(
                !confinement.capabilities.contains(&dropped),
                "{dropped} was dropped but kept"
            );
        }
        for name in &confinement.capabilities {
            assert!(caps::parse(name).is_ok(), "the bounding set holds {name:?}");
        }
    }
}

fn set_limits(dict: &HashMap<String, OwnedValue>) {
    let result = limits(copy(dict));
    short(&result);
    let pairs: Result<Vec<_>, _> = dict
        .iter()
        .map(|(k, v)| raw(k, v).map(|r| (k.clone(), r)))
        .collect();
    let expected = pairs
        .ok()
        .and_then(|p| from_pairs(p).ok())
        .filter(|l| l.check_twins().is_ok());
    match (result, expected) {
        (Ok(got), Some(expected)) => assert_eq!(got, expected),
        (Err(_), None) => {}
        (got, expected) => panic!("SetLimits gave {got:?}, the limits parser {expected:?}"),
    }
}

fn remove(dict: &HashMap<String, OwnedValue>) {
    let result = remove_force(copy(dict));
    short(&result);
    let mut expected = Some(false);
    for (key, value) in dict {
        let mut value: &Value<'_> = value;
        while let Value::Value(inner) = value {
            value = inner;
        }
        expected = match (key.as_str(), value) {
            ("Force", Value::Bool(b)) => expected.map(|_| *b),
            _ => None,
        };
        if expected.is_none() {
            break;
        }
    }
    match (result, expected) {
        (Ok(got), Some(expected)) => assert_eq!(got, expected),
        (Err(_), None) => {}
        (got, expected) => panic!("RemoveMachine's options gave {got:?}, expected {expected:?}"),
    }
}
