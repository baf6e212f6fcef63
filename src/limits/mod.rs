//! Resource limits of a machine.
//!
//! Users give limits under the legacy (cgroup v1) names the product's seeds use as well as
//! the unified (cgroup v2) names. Both are kept as given, so `berthctl status` shows what
//! the user asked for; src/systemd/properties.rs translates at the last moment into the
//! set the host's systemd honours, because systemd 258 and any unified host ignore the
//! legacy properties and a v1 host ignores the unified ones.
//!
//! Which limits exist, and all that differs between them, is [`keys::TABLE`].

pub mod keys;
pub mod units;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use keys::{Convert, Flag, Limit, Property, TABLE, by_rank, find, key_list};
pub use units::{Kind, Show, format_cpu_list, format_size, parse_cpu_list, parse_size};

/// Resource limits of a machine, keyed in TOML exactly as on D-Bus.
///
/// Every value has been through [`Limits::set`]. Deserializing validates every value as
/// `set` does (and also accepts the text forms, e.g. `MemoryMax = "512M"`, for
/// hand-edited files); unknown keys are ignored so the table can be flattened into a
/// larger one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Keyed by [`Limit::key`] of a table entry; values as its kind's parser left them.
    values: BTreeMap<&'static str, RawValue>,
}

/// A value as it arrives in an a{sv} options dict (the D-Bus layer converts variants to this).
///
/// Serialized as the bare number or string, which is how config.toml keeps limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RawValue {
    Unsigned(u64),
    Signed(i64),
    Text(String),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LimitError {
    /// Maps to org.berth.Berth1.Error.InvalidArgument.
    #[error("{0}")]
    Invalid(String),
    /// Maps to org.berth.Berth1.Error.NotSupported.
    #[error("{0}")]
    NotSupported(String),
}

/// Which property names the host's systemd honours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// cgroup v1 or hybrid host with systemd < 258: CPUShares, MemoryLimit, BlockIOWeight.
    Legacy,
    /// cgroup v2, or systemd >= 258 (which dropped v1 and ignores the legacy names).
    Unified,
}

impl Flavor {
    pub fn for_host(unified_hierarchy: bool, systemd_version: u32) -> Flavor {
        if unified_hierarchy || systemd_version >= 258 {
            Flavor::Unified
        } else {
            Flavor::Legacy
        }
    }
}

/// Limits that are one quantity under two names: on some systemd one is sent as the
/// other's property unchanged (MemoryLimit and MemoryMax).
fn twins(key: &str) -> impl Iterator<Item = &'static str> + '_ {
    let same_as = |limit: &Limit, other: &Limit| {
        [Flavor::Legacy, Flavor::Unified].iter().any(|&f| {
            matches!(
                (limit.property(f), other.property(f)),
                (Property::Into(p, Convert::Same), Property::Native(q, _))
                    | (Property::Native(q, _), Property::Into(p, Convert::Same)) if p == q
            )
        })
    };
    let me = find(key);
    TABLE
        .iter()
        .filter(move |other| me.is_some_and(|me| me.key != other.key && same_as(me, other)))
        .map(|other| other.key)
}

pub fn is_limit_key(key: &str) -> bool {
    find(key).is_some()
}

/// Sets each pair in turn; the first bad one is the error.
pub fn from_pairs(
    pairs: impl IntoIterator<Item = (String, RawValue)>,
) -> Result<Limits, LimitError> {
    let mut limits = Limits::default();
    for (key, value) in pairs {
        limits.set(&key, value)?;
    }
    Ok(limits)
}

impl Limits {
    /// Validates and sets one key.
    ///
    /// Text is parsed: sizes for the memory keys ("512M", "1G", "64MiB", plain bytes),
    /// "25%" or "25" for CPUQuota, a CPU list for AllowedCPUs, whole numbers otherwise.
    /// Errors name the key and the value and say what is expected.
    pub fn set(&mut self, key: &str, value: RawValue) -> Result<(), LimitError> {
        let Some(limit) = find(key) else {
            return Err(LimitError::Invalid(format!(
                "unknown limit {} (known: {})",
                Shown(&RawValue::Text(key.to_owned())),
                key_list()
            )));
        };
        let kept = limit
            .kind
            .parse(&value)
            .map_err(|why| LimitError::Invalid(format!("{key} {}: {why}", Shown(&value))))?;
        self.values.insert(limit.key, kept);
        Ok(())
    }

    /// The value of a key, in its kept form (see [`Kind`]).
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.values.get(key)
    }

    /// Unsets a key; returns its value if it was set.
    pub fn remove(&mut self, key: &str) -> Option<RawValue> {
        self.values.remove(key)
    }

    /// The limits that are set, in [`TABLE`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Limit, &RawValue)> {
        TABLE
            .iter()
            .filter_map(|limit| Some((limit, self.values.get(limit.key)?)))
    }

    /// Keys that are set, with their values, in [`TABLE`] order (AllowedCPUs as Text,
    /// others Unsigned). Used for the Limits a{sv} property and `berthctl status`.
    pub fn entries(&self) -> Vec<(&'static str, RawValue)> {
        self.iter()
            .map(|(limit, value)| (limit.key, value.clone()))
            .collect()
    }

    /// Every key set in `other` overrides self (for live SetLimits), and so do its
    /// twins: `set --memory 1G` on a machine made with MemoryLimit=2G means 1G from now
    /// on, not a machine with two memory limits.
    pub fn merge(&mut self, other: &Limits) {
        for key in other.values.keys() {
            for twin in twins(key) {
                if !other.values.contains_key(twin) {
                    self.values.remove(twin);
                }
            }
        }
        self.values.extend(
            other
                .values
                .iter()
                .map(|(key, value)| (*key, value.clone())),
        );
    }

    /// Refuses twins given together with different values (MemoryMax=1G with
    /// MemoryLimit=2G): only one of them could apply, and which is a guess.
    pub fn check_twins(&self) -> Result<(), LimitError> {
        for (limit, value) in self.iter() {
            for twin in twins(limit.key) {
                match self.values.get(twin) {
                    Some(other) if other != value && limit.key < twin => {
                        return Err(LimitError::Invalid(format!(
                            "{} {} and {twin} {} are one limit under two names: give one of them",
                            limit.key,
                            Shown(value),
                            Shown(other)
                        )));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// How a value appears in an error: numbers bare, text quoted and cut short, because
/// the text may be whatever a D-Bus caller chose to send.
struct Shown<'a>(&'a RawValue);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            RawValue::Unsigned(n) => write!(f, "{n}"),
            RawValue::Signed(n) => write!(f, "{n}"),
            RawValue::Text(s) => f.write_str(&crate::names::shown(s)),
        }
    }
}

impl Serialize for Limits {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter().map(|(limit, value)| (limit.key, value)))
    }
}

/// Leniently read, then put through [`Limits::set`], so a state file edited by hand gets
/// the same checks and messages as a D-Bus call.
impl<'de> Deserialize<'de> for Limits {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Limits;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of limits")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Limits, A::Error> {
                let mut limits = Limits::default();
                while let Some(key) = map.next_key::<String>()? {
                    if is_limit_key(&key) {
                        let value: RawValue = map.next_value()?;
                        limits.set(&key, value).map_err(serde::de::Error::custom)?;
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(limits)
            }
        }

        deserializer.deserialize_map(Visitor)
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number or a string like \"512M\"")
            }

            fn visit_u64<E>(self, n: u64) -> Result<RawValue, E> {
                Ok(RawValue::Unsigned(n))
            }

            fn visit_i64<E>(self, n: i64) -> Result<RawValue, E> {
                Ok(RawValue::Signed(n))
            }

            fn visit_str<E>(self, s: &str) -> Result<RawValue, E> {
                Ok(RawValue::Text(s.to_owned()))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> RawValue {
        RawValue::Text(s.to_owned())
    }

    fn set_one(key: &str, value: RawValue) -> Result<Limits, LimitError> {
        let mut limits = Limits::default();
        limits.set(key, value).map(|()| limits)
    }

    fn invalid(key: &str, value: RawValue) -> String {
        match set_one(key, value.clone()) {
            Err(LimitError::Invalid(message)) => message,
            other => panic!("{key} {value:?}: expected Invalid, got {other:?}"),
        }
    }

    // --- errors named in the design, word for word ---

    #[test]
    fn unknown_unit() {
        assert_eq!(
            invalid("MemoryMax", text("64Q")),
            "MemoryMax \"64Q\": unknown unit \"Q\" (use K, M, G or T)"
        );
        assert_eq!(
            invalid("MemoryLimit", text("1P")),
            "MemoryLimit \"1P\": unknown unit \"P\" (use K, M, G or T)"
        );
    }

    #[test]
    fn zero() {
        assert_eq!(
            invalid("TasksMax", RawValue::Unsigned(0)),
            "TasksMax 0: must be at least 1"
        );
        assert_eq!(
            invalid("MemoryMax", RawValue::Unsigned(0)),
            "MemoryMax 0: must be at least 4096 bytes (one page)"
        );
        assert_eq!(
            invalid("CPUShares", RawValue::Unsigned(0)),
            "CPUShares 0: must be between 2 and 262144"
        );
        assert_eq!(
            invalid("CPUWeight", RawValue::Unsigned(0)),
            "CPUWeight 0: must be between 1 and 10000"
        );
        assert_eq!(
            invalid("IOWeight", RawValue::Unsigned(0)),
            "IOWeight 0: must be between 1 and 10000"
        );
        assert_eq!(
            invalid("BlockIOWeight", RawValue::Unsigned(0)),
            "BlockIOWeight 0: must be between 10 and 1000"
        );
        assert_eq!(
            invalid("CPUQuota", RawValue::Unsigned(0)),
            "CPUQuota 0: must be at least 1 (percent of one CPU: 25 is a quarter, 200 is two CPUs)"
        );
        assert_eq!(
            invalid("CPUQuota", text("0%")),
            "CPUQuota \"0%\": must be at least 1 (percent of one CPU: 25 is a quarter, 200 is two CPUs)"
        );
        assert_eq!(
            invalid("MemoryMax", text("0")),
            "MemoryMax \"0\": must be at least 4096 bytes (one page)"
        );
    }

    #[test]
    fn negative() {
        assert_eq!(
            invalid("CPUShares", RawValue::Signed(-5)),
            "CPUShares -5: must not be negative"
        );
        for key in TABLE
            .iter()
            .filter(|l| l.kind != Kind::CpuList)
            .map(|l| l.key)
        {
            assert_eq!(
                invalid(key, RawValue::Signed(-1)),
                format!("{key} -1: must not be negative")
            );
            assert_eq!(
                invalid(key, text("-1")),
                format!("{key} \"-1\": must not be negative")
            );
        }
        assert_eq!(
            invalid("MemoryMax", text("-64M")),
            "MemoryMax \"-64M\": must not be negative"
        );
        assert_eq!(
            invalid("CPUQuota", text("-25%")),
            "CPUQuota \"-25%\": must not be negative"
        );
    }

    #[test]
    fn positive_signed_values_are_fine() {
        assert_eq!(
            set_one("CPUShares", RawValue::Signed(256))
                .unwrap()
                .entries(),
            [("CPUShares", RawValue::Unsigned(256))]
        );
        assert_eq!(
            set_one("MemoryMax", RawValue::Signed(1 << 20))
                .unwrap()
                .entries(),
            [("MemoryMax", RawValue::Unsigned(1 << 20))]
        );
    }

    #[test]
    fn overflow() {
        assert_eq!(
            invalid("MemoryMax", text("99999999999T")),
            "MemoryMax \"99999999999T\": too large"
        );
        assert_eq!(
            invalid("MemoryMax", text("99999999999999999999999")),
            "MemoryMax \"99999999999999999999999\": too large"
        );
        // The largest u64 is systemd's "infinity".
        assert_eq!(
            invalid("MemoryMax", RawValue::Unsigned(u64::MAX)),
            format!(
                "MemoryMax {}: too large (at most 9223372036854775807 bytes; limits must be finite)",
                u64::MAX
            )
        );
        assert_eq!(
            invalid("TasksMax", RawValue::Unsigned(u64::MAX)),
            format!(
                "TasksMax {}: too large (at most 9223372036854775807; limits must be finite)",
                u64::MAX
            )
        );
        assert_eq!(
            invalid("TasksMax", text("99999999999999999999999")),
            "TasksMax \"99999999999999999999999\": too large (at most 9223372036854775807; limits must be finite)"
        );
        assert_eq!(
            invalid("CPUShares", text("99999999999999999999999")),
            "CPUShares \"99999999999999999999999\": must be between 2 and 262144"
        );
        assert_eq!(
            invalid("CPUQuota", RawValue::Unsigned(u64::MAX)),
            format!(
                "CPUQuota {}: too large (at most 4294967295 percent)",
                u64::MAX
            )
        );
        // Just past what TOML can hold.
        assert!(set_one("MemoryMax", RawValue::Unsigned(1 << 63)).is_err());
        assert!(set_one("MemoryMax", RawValue::Unsigned(i64::MAX as u64)).is_ok());
    }

    #[test]
    fn out_of_range() {
        assert_eq!(
            invalid("CPUWeight", RawValue::Unsigned(20000)),
            "CPUWeight 20000: must be between 1 and 10000"
        );
        assert_eq!(
            invalid("CPUShares", RawValue::Unsigned(1)),
            "CPUShares 1: must be between 2 and 262144"
        );
        assert_eq!(
            invalid("CPUShares", RawValue::Unsigned(262_145)),
            "CPUShares 262145: must be between 2 and 262144"
        );
        assert_eq!(
            invalid("BlockIOWeight", RawValue::Unsigned(9)),
            "BlockIOWeight 9: must be between 10 and 1000"
        );
        assert_eq!(
            invalid("BlockIOWeight", RawValue::Unsigned(1001)),
            "BlockIOWeight 1001: must be between 10 and 1000"
        );
        assert_eq!(
            invalid("IOWeight", text("10001")),
            "IOWeight \"10001\": must be between 1 and 10000"
        );
        assert_eq!(
            invalid("MemoryLimit", RawValue::Unsigned(4095)),
            "MemoryLimit 4095: must be at least 4096 bytes (one page)"
        );
        assert_eq!(
            invalid("MemoryMax", text("4095B")),
            "MemoryMax \"4095B\": must be at least 4096 bytes (one page)"
        );
    }

    #[test]
    fn range_edges_are_accepted() {
        for (key, low, high) in [
            ("CPUShares", 2, 262_144),
            ("CPUWeight", 1, 10_000),
            ("BlockIOWeight", 10, 1000),
            ("IOWeight", 1, 10_000),
            ("TasksMax", 1, i64::MAX as u64),
            ("MemoryMax", 4096, i64::MAX as u64),
            ("MemoryLimit", 4096, i64::MAX as u64),
            ("CPUQuota", 1, u32::MAX as u64),
        ] {
            for n in [low, high] {
                let limits = set_one(key, RawValue::Unsigned(n)).unwrap();
                assert_eq!(limits.entries(), vec![(key, RawValue::Unsigned(n))]);
            }
        }
    }

    #[test]
    fn unknown_key() {
        // New limits join the end of the list.
        let message = invalid("Foo", RawValue::Unsigned(1));
        assert!(
            message.starts_with(
                "unknown limit \"Foo\" (known: CPUShares, CPUWeight, MemoryLimit, MemoryMax, \
                 TasksMax, CPUQuota, AllowedCPUs, BlockIOWeight, IOWeight"
            ),
            "{message}"
        );
        assert_eq!(
            message,
            format!("unknown limit \"Foo\" (known: {})", key_list())
        );
        // Keys are D-Bus names and match exactly.
        assert!(invalid("cpushares", RawValue::Unsigned(256)).starts_with("unknown limit"));
        assert!(invalid("CPUQuotaPerSecUSec", RawValue::Unsigned(1)).starts_with("unknown limit"));
    }

    #[test]
    fn wrong_type() {
        assert_eq!(
            invalid("AllowedCPUs", RawValue::Unsigned(3)),
            "AllowedCPUs 3: expected a string with a CPU list like \"0-1,3\""
        );
        assert_eq!(
            invalid("AllowedCPUs", RawValue::Signed(3)),
            "AllowedCPUs 3: expected a string with a CPU list like \"0-1,3\""
        );
        assert_eq!(
            invalid("CPUShares", text("lots")),
            "CPUShares \"lots\": expected a whole number between 2 and 262144"
        );
        assert_eq!(
            invalid("TasksMax", text("1.5")),
            "TasksMax \"1.5\": expected a whole number of tasks"
        );
        assert_eq!(
            invalid("TasksMax", text("+5")),
            "TasksMax \"+5\": expected a whole number of tasks"
        );
        assert_eq!(
            invalid("CPUQuota", text("12.5%")),
            "CPUQuota \"12.5%\": expected a whole number of percent of one CPU, like \"25%\" or \"200%\""
        );
        assert_eq!(
            invalid("MemoryMax", text("lots")),
            "MemoryMax \"lots\": expected a size like \"512M\" (bytes, or K, M, G or T)"
        );
        assert_eq!(
            invalid("MemoryMax", text("")),
            "MemoryMax \"\": expected a size like \"512M\" (bytes, or K, M, G or T)"
        );
        assert_eq!(
            invalid("MemoryMax", text("1.5G")),
            "MemoryMax \"1.5G\": fractions are not supported: use a smaller unit (\"1536M\", not \"1.5G\")"
        );
    }

    #[test]
    fn infinity_is_refused() {
        for s in ["infinity", "Infinity", " INFINITY "] {
            assert_eq!(
                invalid("MemoryMax", text(s)),
                format!(
                    "MemoryMax {s:?}: limits must be finite: give a size like \"512M\", or leave the limit unset"
                )
            );
        }
        assert!(
            invalid("TasksMax", text("infinity")).starts_with("TasksMax \"infinity\": expected")
        );
    }

    #[test]
    fn long_text_is_cut_in_messages() {
        let message = invalid("MemoryMax", text(&"9".repeat(10_000)));
        assert!(message.len() < 200, "{message}");
        assert!(message.starts_with("MemoryMax \"999"), "{message}");
        assert!(message.ends_with("…: too large"), "{message}");
    }

    // --- accepted forms ---

    #[test]
    fn memory_text_forms() {
        for (given, bytes) in [
            ("64M", 64 << 20),
            ("512K", 512 << 10),
            ("1G", 1 << 30),
            ("2T", 2 << 40),
            ("1048576", 1 << 20),
            ("64m", 64 << 20),
            ("64MiB", 64 << 20),
            ("64mib", 64 << 20),
            ("64MB", 64 << 20),
            ("1gb", 1 << 30),
            ("8192B", 8192),
            (" 64 M ", 64 << 20),
        ] {
            assert_eq!(parse_size(given), Ok(bytes), "{given:?}");
            let limits = set_one("MemoryMax", text(given)).unwrap();
            assert_eq!(
                limits.get("MemoryMax"),
                Some(&RawValue::Unsigned(bytes)),
                "{given:?}"
            );
        }
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn cpu_quota_forms() {
        for (given, percent) in [
            (text("25%"), 25),
            (text("25"), 25),
            (text(" 200 % "), 200),
            (RawValue::Unsigned(25), 25),
            (RawValue::Signed(150), 150),
        ] {
            let limits = set_one("CPUQuota", given.clone()).unwrap();
            assert_eq!(
                limits.get("CPUQuota"),
                Some(&RawValue::Unsigned(percent)),
                "{given:?}"
            );
        }
    }

    #[test]
    fn integer_text_forms() {
        let limits = from_pairs([
            ("CPUShares".to_owned(), text("256")),
            ("TasksMax".to_owned(), text(" 64 ")),
        ])
        .unwrap();
        assert_eq!(limits.get("CPUShares"), Some(&RawValue::Unsigned(256)));
        assert_eq!(limits.get("TasksMax"), Some(&RawValue::Unsigned(64)));
    }

    #[test]
    fn allowed_cpus_are_normalized() {
        let limits = set_one("AllowedCPUs", text(" 3, 1,0-1 ,2")).unwrap();
        assert_eq!(limits.get("AllowedCPUs"), Some(&text("0-3")));
        assert_eq!(
            invalid("AllowedCPUs", text("3-1")),
            "AllowedCPUs \"3-1\": the range \"3-1\" runs backwards (write \"1-3\")"
        );
    }

    #[test]
    fn flavor_for_host() {
        assert_eq!(Flavor::for_host(false, 252), Flavor::Legacy);
        assert_eq!(Flavor::for_host(false, 257), Flavor::Legacy);
        assert_eq!(Flavor::for_host(false, 258), Flavor::Unified);
        assert_eq!(Flavor::for_host(true, 252), Flavor::Unified);
        assert_eq!(Flavor::for_host(true, 259), Flavor::Unified);
    }

    // --- the struct ---

    #[test]
    fn keys() {
        for limit in TABLE {
            assert!(is_limit_key(limit.key), "{}", limit.key);
        }
        assert!(!is_limit_key("Hostname"));
        assert!(!is_limit_key("cpushares"));
        assert!(!is_limit_key(""));
    }

    fn every_key() -> Limits {
        from_pairs([
            ("IOWeight".to_owned(), RawValue::Unsigned(100)),
            ("BlockIOWeight".to_owned(), RawValue::Unsigned(500)),
            ("AllowedCPUs".to_owned(), text("3,0-1")),
            ("CPUQuota".to_owned(), text("25%")),
            ("TasksMax".to_owned(), RawValue::Unsigned(64)),
            ("MemoryMax".to_owned(), text("1G")),
            ("MemoryLimit".to_owned(), text("512M")),
            ("CPUWeight".to_owned(), RawValue::Unsigned(100)),
            ("CPUShares".to_owned(), RawValue::Unsigned(1024)),
        ])
        .unwrap()
    }

    #[test]
    fn entries_in_key_order() {
        let entries = every_key().entries();
        assert_eq!(
            entries,
            vec![
                ("CPUShares", RawValue::Unsigned(1024)),
                ("CPUWeight", RawValue::Unsigned(100)),
                ("MemoryLimit", RawValue::Unsigned(512 << 20)),
                ("MemoryMax", RawValue::Unsigned(1 << 30)),
                ("TasksMax", RawValue::Unsigned(64)),
                ("CPUQuota", RawValue::Unsigned(25)),
                ("AllowedCPUs", text("0-1,3")),
                ("BlockIOWeight", RawValue::Unsigned(500)),
                ("IOWeight", RawValue::Unsigned(100)),
            ]
        );
        assert_eq!(Limits::default().entries(), vec![]);
    }

    #[test]
    fn entries_feed_back_into_from_pairs() {
        let limits = every_key();
        let again = from_pairs(limits.entries().into_iter().map(|(k, v)| (k.to_owned(), v)));
        assert_eq!(again, Ok(limits));
    }

    #[test]
    fn from_pairs_stops_at_the_first_bad_pair() {
        assert_eq!(
            from_pairs([
                ("CPUShares".to_owned(), RawValue::Unsigned(256)),
                ("TasksMax".to_owned(), RawValue::Unsigned(0)),
            ]),
            Err(LimitError::Invalid("TasksMax 0: must be at least 1".into()))
        );
        assert_eq!(from_pairs([]), Ok(Limits::default()));
    }

    #[test]
    fn failed_set_leaves_the_value_alone() {
        let mut limits = set_one("TasksMax", RawValue::Unsigned(10)).unwrap();
        assert!(limits.set("TasksMax", RawValue::Unsigned(0)).is_err());
        assert_eq!(limits.get("TasksMax"), Some(&RawValue::Unsigned(10)));
    }

    #[test]
    fn merge_overrides_only_what_is_set() {
        let mut limits = from_pairs([
            ("CPUShares".to_owned(), RawValue::Unsigned(256)),
            ("MemoryMax".to_owned(), text("1G")),
        ])
        .unwrap();
        let update = from_pairs([
            ("MemoryMax".to_owned(), text("2G")),
            ("AllowedCPUs".to_owned(), text("1")),
        ])
        .unwrap();
        limits.merge(&update);
        assert_eq!(
            limits.entries(),
            [
                ("CPUShares", RawValue::Unsigned(256)),
                ("MemoryMax", RawValue::Unsigned(2 << 30)),
                ("AllowedCPUs", text("1")),
            ]
        );
        let before = limits.clone();
        limits.merge(&Limits::default());
        assert_eq!(limits, before);
        let mut empty = Limits::default();
        empty.merge(&every_key());
        assert_eq!(empty, every_key());
    }

    #[test]
    fn emptiness() {
        assert!(Limits::default().is_empty());
        assert!(
            !set_one("TasksMax", RawValue::Unsigned(1))
                .unwrap()
                .is_empty()
        );
        assert!(!set_one("AllowedCPUs", text("0")).unwrap().is_empty());
    }

    // --- the table drives everything ---

    /// Each limit of the table, set from text as a user types it, comes back the same
    /// through entries, from_pairs, merge and config.toml, and TOML keeps numbers as
    /// numbers and lists as strings. A new table entry is covered without a new test.
    #[test]
    fn every_table_limit_round_trips() {
        let mut all = Limits::default();
        for limit in TABLE {
            let context = limit.key;
            assert!(is_limit_key(limit.key), "{context}");
            let one = set_one(limit.key, limit.kind.sample()).expect(context);
            let entries = one.entries();
            let [(key, kept)] = entries.as_slice() else {
                panic!("{context}: {entries:?}");
            };
            assert_eq!(*key, limit.key);
            assert_eq!(one.get(limit.key), Some(kept), "{context}");
            assert_eq!(
                limit.kind.parse(kept).as_ref(),
                Ok(kept),
                "{context}: what berth keeps must be accepted again unchanged"
            );
            let again = from_pairs(entries.iter().map(|(k, v)| (k.to_string(), v.clone())));
            assert_eq!(again.as_ref(), Ok(&one), "{context}");

            let written = toml::to_string(&one).unwrap();
            let literal = match kept {
                RawValue::Unsigned(n) => n.to_string(),
                RawValue::Text(t) => format!("{t:?}"),
                RawValue::Signed(_) => panic!("{context}: kept a signed number"),
            };
            assert_eq!(written, format!("{} = {literal}\n", limit.key));
            assert_eq!(
                toml::from_str::<Limits>(&written).as_ref(),
                Ok(&one),
                "{context}"
            );

            // Gathered key by key: a merge would let MemoryMax replace its twin.
            for (key, value) in one.entries() {
                all.set(key, value).unwrap();
            }
        }
        assert_eq!(all.entries().len(), TABLE.len());
        let keys: Vec<_> = all.entries().into_iter().map(|(k, _)| k).collect();
        let table: Vec<_> = TABLE.iter().map(|l| l.key).collect();
        assert_eq!(keys, table, "entries follow the table");
        let written = toml::to_string(&all).unwrap();
        assert_eq!(toml::from_str::<Limits>(&written), Ok(all.clone()));
        for limit in TABLE {
            let mut less = all.clone();
            assert!(less.remove(limit.key).is_some());
            assert!(less.get(limit.key).is_none());
            assert_eq!(less.entries().len(), TABLE.len() - 1);
        }
    }

    #[test]
    fn unknown_keys_in_toml_are_ignored_whatever_their_type() {
        let parsed: Limits =
            toml::from_str("TasksMax = 3\nNoSuchLimit = [1, 2]\n[Other]\nx = 1\n").unwrap();
        assert_eq!(parsed.entries(), [("TasksMax", RawValue::Unsigned(3))]);
    }

    // --- TOML ---

    #[test]
    fn toml_uses_dbus_keys_and_round_trips() {
        let limits = every_key();
        let written = toml::to_string(&limits).unwrap();
        assert_eq!(
            written,
            "CPUShares = 1024\n\
             CPUWeight = 100\n\
             MemoryLimit = 536870912\n\
             MemoryMax = 1073741824\n\
             TasksMax = 64\n\
             CPUQuota = 25\n\
             AllowedCPUs = \"0-1,3\"\n\
             BlockIOWeight = 500\n\
             IOWeight = 100\n"
        );
        assert_eq!(toml::from_str::<Limits>(&written), Ok(limits));
    }

    #[test]
    fn toml_leaves_out_unset_keys() {
        let limits = set_one("TasksMax", RawValue::Unsigned(5)).unwrap();
        let written = toml::to_string(&limits).unwrap();
        assert_eq!(written, "TasksMax = 5\n");
        assert_eq!(toml::from_str::<Limits>(&written), Ok(limits));
        assert_eq!(toml::to_string(&Limits::default()).unwrap(), "");
        assert_eq!(toml::from_str::<Limits>(""), Ok(Limits::default()));
    }

    #[test]
    fn toml_round_trips_the_largest_values() {
        let limits = from_pairs([
            ("MemoryMax".to_owned(), RawValue::Unsigned(i64::MAX as u64)),
            ("TasksMax".to_owned(), RawValue::Unsigned(i64::MAX as u64)),
            ("CPUQuota".to_owned(), RawValue::Unsigned(u32::MAX as u64)),
        ])
        .unwrap();
        let written = toml::to_string(&limits).unwrap();
        assert_eq!(toml::from_str::<Limits>(&written), Ok(limits));
    }

    #[test]
    fn toml_nested_and_flattened() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Nested {
            #[serde(rename = "Hostname")]
            hostname: String,
            #[serde(rename = "Limits", default)]
            limits: Limits,
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Flat {
            #[serde(rename = "Hostname")]
            hostname: String,
            #[serde(flatten)]
            limits: Limits,
        }

        let nested = Nested {
            hostname: "web".into(),
            limits: every_key(),
        };
        let written = toml::to_string(&nested).unwrap();
        assert!(
            written.contains("[Limits]\nCPUShares = 1024\n"),
            "{written}"
        );
        assert_eq!(toml::from_str::<Nested>(&written), Ok(nested));
        assert_eq!(
            toml::from_str::<Nested>("Hostname = \"web\"\n"),
            Ok(Nested {
                hostname: "web".into(),
                limits: Limits::default(),
            })
        );

        let flat = Flat {
            hostname: "web".into(),
            limits: every_key(),
        };
        let written = toml::to_string(&flat).unwrap();
        assert!(written.contains("Hostname = \"web\"\n"), "{written}");
        assert!(written.contains("AllowedCPUs = \"0-1,3\"\n"), "{written}");
        assert_eq!(toml::from_str::<Flat>(&written), Ok(flat));
    }

    #[test]
    fn toml_by_hand_is_validated() {
        let parsed: Limits =
            toml::from_str("MemoryMax = \"512M\"\nCPUQuota = \"25%\"\nAllowedCPUs = \"1,0\"\n")
                .unwrap();
        assert_eq!(
            parsed.entries(),
            [
                ("MemoryMax", RawValue::Unsigned(512 << 20)),
                ("CPUQuota", RawValue::Unsigned(25)),
                ("AllowedCPUs", text("0-1")),
            ]
        );
        for (file, expected) in [
            (
                "MemoryMax = 100",
                "MemoryMax 100: must be at least 4096 bytes (one page)",
            ),
            ("TasksMax = -1", "TasksMax -1: must not be negative"),
            (
                "CPUWeight = 20000",
                "CPUWeight 20000: must be between 1 and 10000",
            ),
            (
                "AllowedCPUs = 3",
                "AllowedCPUs 3: expected a string with a CPU list like \"0-1,3\"",
            ),
            (
                "MemoryMax = 1.5",
                "a whole number or a string like \"512M\"",
            ),
            (
                "TasksMax = true",
                "a whole number or a string like \"512M\"",
            ),
        ] {
            let err = toml::from_str::<Limits>(file).unwrap_err().to_string();
            assert!(err.contains(expected), "{file:?}: {err}");
        }
    }
}

#[cfg(test)]
mod twin_tests {
    use super::*;

    fn limits(pairs: &[(&str, u64)]) -> Limits {
        from_pairs(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), RawValue::Unsigned(*v))),
        )
        .unwrap()
    }

    #[test]
    fn memory_under_two_names_is_one_limit() {
        assert_eq!(twins("MemoryMax").collect::<Vec<_>>(), ["MemoryLimit"]);
        assert_eq!(twins("MemoryLimit").collect::<Vec<_>>(), ["MemoryMax"]);
        // Weights under two names are two scales, not twins.
        assert_eq!(twins("CPUShares").count(), 0);
        let e = limits(&[("MemoryMax", 1 << 30), ("MemoryLimit", 2 << 30)])
            .check_twins()
            .unwrap_err();
        assert!(
            matches!(&e, LimitError::Invalid(m) if m.contains("MemoryLimit") && m.contains("MemoryMax")),
            "{e:?}"
        );
        assert!(
            limits(&[("MemoryMax", 1 << 30), ("MemoryLimit", 1 << 30)])
                .check_twins()
                .is_ok()
        );
    }

    #[test]
    fn setting_one_twin_replaces_the_other() {
        let mut stored = limits(&[("MemoryLimit", 2 << 30), ("TasksMax", 10)]);
        stored.merge(&limits(&[("MemoryMax", 1 << 30)]));
        assert_eq!(stored.get("MemoryLimit"), None);
        assert_eq!(stored.get("MemoryMax"), Some(&RawValue::Unsigned(1 << 30)));
        assert_eq!(stored.get("TasksMax"), Some(&RawValue::Unsigned(10)));
    }
}
