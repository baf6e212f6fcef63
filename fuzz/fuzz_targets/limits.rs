//! Limits (src/limits) and what systemd is sent for them (src/systemd/properties.rs).
//!
//! The input is read two ways: as `KEY=VALUE` lines (see src/lib.rs) fed to
//! `Limits::set` one by one, and as a config.toml `[limits]` table.
//!
//! - A value `set` accepts is kept in a form its kind accepts again unchanged; a value it
//!   refuses leaves the limits as they were, with a short message.
//! - What `set` built comes back the same from its `entries()` (`from_pairs`) and from its
//!   TOML, and writing that TOML again gives the same text.
//! - `limit_values` never panics for either flavour; on a unified host it always
//!   succeeds, on a legacy one only AllowedCPUs is refused; no property is sent twice.
//! - Sizes and CPU lists: `parse_size` and `parse_cpu_list` agree with their formatters.
#![no_main]

use std::collections::HashSet;

use berth::limits::{
    Flavor, LimitError, Limits, RawValue, find, format_cpu_list, format_size, from_pairs,
    parse_cpu_list, parse_size,
};
use berth::systemd::properties::{limit_properties, limit_values, unset_values};
use berth_fuzz::{MESSAGE_MAX, limit_pairs, text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = text(data);

    let mut limits = Limits::default();
    for (key, value) in limit_pairs(&input) {
        let before = limits.clone();
        match limits.set(&key, value.clone()) {
            Ok(()) => {
                let limit = find(&key).expect("set accepted an unknown key");
                let kept = limits.get(&key).expect("set kept nothing").clone();
                assert!(!matches!(kept, RawValue::Signed(_)), "{key}: kept {kept:?}");
                assert_eq!(
                    limit.kind.parse(&kept),
                    Ok(kept.clone()),
                    "{key} {value:?}: the kept value is not accepted again unchanged"
                );
            }
            Err(LimitError::Invalid(message)) => {
                assert_eq!(
                    limits, before,
                    "{key} {value:?}: a refused value changed the limits"
                );
                assert!(
                    message.len() <= MESSAGE_MAX,
                    "{key}: a {}-byte value gives a {}-byte error: {}…",
                    match &value {
                        RawValue::Text(t) => t.len(),
                        _ => 0,
                    },
                    message.len(),
                    &message[..message.floor_char_boundary(200)]
                );
            }
            Err(other) => panic!("{key} {value:?}: set returned {other:?}"),
        }
        check_size_and_cpus(&value);
    }
    round_trips(&limits);

    if let Ok(parsed) = toml::from_str::<Limits>(&input) {
        round_trips(&parsed);
    }
});

fn round_trips(limits: &Limits) {
    let entries = limits.entries();
    let again = from_pairs(entries.iter().map(|(k, v)| (k.to_string(), v.clone())));
    assert_eq!(
        again.as_ref(),
        Ok(limits),
        "entries do not give the limits back"
    );

    let written = toml::to_string(limits).expect("limits always serialize");
    let read = toml::from_str::<Limits>(&written);
    assert_eq!(
        read.as_ref(),
        Ok(limits),
        "TOML does not give the limits back:\n{written}"
    );
    assert_eq!(
        toml::to_string(read.as_ref().unwrap()).unwrap(),
        written,
        "writing the TOML again changes it"
    );

    for flavor in [Flavor::Legacy, Flavor::Unified] {
        let values = limit_values(limits, flavor);
        match (&values, flavor) {
            (Ok(props), _) => {
                let names: HashSet<_> = props.iter().map(|(name, _)| name).collect();
                assert_eq!(
                    names.len(),
                    props.len(),
                    "{flavor:?}: a property twice: {props:?}"
                );
                assert!(limit_properties(limits, flavor).is_ok(), "{flavor:?}");
                assert!(unset_values(limits, flavor).is_ok(), "{flavor:?}");
            }
            (Err(LimitError::NotSupported(_)), Flavor::Legacy)
                if limits.get("AllowedCPUs").is_some() => {}
            (Err(e), _) => panic!("{flavor:?}: {e:?} for {limits:?}"),
        }
    }
}

fn check_size_and_cpus(value: &RawValue) {
    let RawValue::Text(text) = value else {
        return;
    };
    if let Ok(bytes) = parse_size(text) {
        assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{text:?}");
    }
    if let Ok(cpus) = parse_cpu_list(text) {
        assert!(
            !cpus.is_empty() && cpus.windows(2).all(|w| w[0] < w[1]),
            "{text:?}: {cpus:?}"
        );
        let list = format_cpu_list(&cpus);
        assert_eq!(
            parse_cpu_list(&list).as_ref(),
            Ok(&cpus),
            "{text:?} -> {list:?}"
        );
    }
}
