//! The unit properties that carry a machine's limits to systemd, in the names the running
//! systemd honours, and the accounting that berth's figures are read from.
//!
//! Each limit says in [`crate::limits::TABLE`] what each flavour of systemd is sent for
//! it; this module carries that out and holds the conversions between legacy and unified
//! values.

use std::collections::HashSet;

use zbus::zvariant::{OwnedValue, Value};

use crate::error::Result;
use crate::limits::keys::{
    BLKIO_WEIGHT_MAX, BLKIO_WEIGHT_MIN, CPU_SHARES_MAX, CPU_SHARES_MIN, WEIGHT_MAX, WEIGHT_MIN,
};
use crate::limits::{
    Convert, Flavor, LimitError, Limits, Property, RawValue, TABLE, parse_cpu_list,
};

/// A unit property value for systemd (`t`, `ay` or `b`).
#[derive(Clone, Debug, PartialEq)]
pub enum SdValue {
    U64(u64),
    Bytes(Vec<u8>),
    Bool(bool),
}

/// The limit properties plus accounting, ready for StartTransientUnit or
/// SetUnitProperties. Also how the daemon asks whether this host can apply `limits` at
/// all, before it keeps them.
pub fn limit_properties(limits: &Limits, flavor: Flavor) -> Result<Vec<(String, OwnedValue)>> {
    let accounting = accounting(flavor).map(|name| (name, SdValue::Bool(true)));
    Ok(limit_values(limits, flavor)?
        .into_iter()
        .chain(accounting)
        .map(|(name, value)| (name.to_owned(), owned(value)))
        .collect())
}

/// What tells systemd a limit property is unset: u64::MAX for numbers ("infinity", or
/// systemd's "invalid" that means the default), an empty mask for AllowedCPUs. For the
/// properties of `flavor` that `limits` leaves unset, so that a live change makes
/// systemd's limits exactly the stored ones, also when one is taken back.
pub fn unset_values(limits: &Limits, flavor: Flavor) -> Result<Vec<(String, OwnedValue)>> {
    let set: HashSet<&str> = limit_values(limits, flavor)?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    Ok(TABLE
        .iter()
        .filter_map(|limit| match limit.property(flavor) {
            Property::Native(name, how) if !set.contains(name) => Some((*name, how)),
            _ => None,
        })
        .map(|(name, how)| {
            let value = match how {
                Convert::CpuMask => SdValue::Bytes(Vec::new()),
                _ => SdValue::U64(u64::MAX),
            };
            (name.to_owned(), owned(value))
        })
        .collect())
}

/// The properties for the limits alone, in table order (systemd does not care about the
/// order).
///
/// A limit given only under the other flavour's name is converted (systemd's formulas,
/// runc's for shares to weight), so a seed's `CPUShares=256` still means something on a
/// unified host. When both names are set, the native one wins.
pub fn limit_values(
    limits: &Limits,
    flavor: Flavor,
) -> std::result::Result<Vec<(&'static str, SdValue)>, LimitError> {
    let natives: HashSet<&str> = limits
        .iter()
        .filter_map(|(limit, _)| match limit.property(flavor) {
            Property::Native(name, _) => Some(*name),
            _ => None,
        })
        .collect();
    let mut converted = HashSet::new();
    let mut props = Vec::new();
    for (limit, value) in limits.iter() {
        let (name, how) = match limit.property(flavor) {
            Property::Native(name, how) => (*name, *how),
            // First come in table order, should two limits convert into one property.
            Property::Into(name, how) if !natives.contains(name) && converted.insert(*name) => {
                (*name, *how)
            }
            Property::Into(..) => continue,
            Property::Refused(why) => return Err(LimitError::NotSupported((*why).to_owned())),
        };
        props.push((name, convert(how, limit.key, value)?));
    }
    Ok(props)
}

/// The accounting switched on with the limits, so the scope's figures (CPUUsageNSec,
/// MemoryCurrent, TasksCurrent, IO bytes) are there to read.
fn accounting(flavor: Flavor) -> [&'static str; 4] {
    let io = match flavor {
        Flavor::Legacy => "BlockIOAccounting",
        Flavor::Unified => "IOAccounting",
    };
    ["CPUAccounting", "MemoryAccounting", "TasksAccounting", io]
}

fn convert(how: Convert, key: &str, value: &RawValue) -> std::result::Result<SdValue, LimitError> {
    Ok(match (how, value) {
        (Convert::Same, RawValue::Unsigned(n)) => SdValue::U64(*n),
        // CPUQuotaPerSecUSec: one CPU for a whole second is 1_000_000 µs, i.e. 100%.
        (Convert::PercentToUSec, RawValue::Unsigned(percent)) => {
            SdValue::U64(percent.saturating_mul(10_000))
        }
        (Convert::SharesToWeight, RawValue::Unsigned(n)) => SdValue::U64(shares_to_weight(*n)),
        (Convert::WeightToShares, RawValue::Unsigned(n)) => SdValue::U64(weight_to_shares(*n)),
        (Convert::IoToBlkio, RawValue::Unsigned(n)) => SdValue::U64(io_to_blkio(*n)),
        (Convert::BlkioToIo, RawValue::Unsigned(n)) => SdValue::U64(blkio_to_io(*n)),
        (Convert::CpuMask, RawValue::Text(list)) => SdValue::Bytes(cpu_mask(
            &parse_cpu_list(list).map_err(LimitError::Invalid)?,
        )),
        // Only a table entry whose conversion does not fit its kind gets here; the
        // table's tests send every limit to both flavours.
        _ => {
            return Err(LimitError::Invalid(format!(
                "{key}: berth cannot convert {value:?} with {how:?}"
            )));
        }
    })
}

fn owned(value: SdValue) -> OwnedValue {
    let value = match value {
        SdValue::U64(n) => Value::U64(n),
        SdValue::Bool(b) => Value::Bool(b),
        SdValue::Bytes(b) => Value::from(b),
    };
    OwnedValue::try_from(value).expect("values without file descriptors convert")
}

/// The `ay` form of AllowedCPUs, as systemd's cpu_set_to_dbus writes it: bit n of byte
/// n/8 is set for CPU n.
fn cpu_mask(cpus: &[u32]) -> Vec<u8> {
    let Some(&highest) = cpus.iter().max() else {
        return Vec::new();
    };
    let mut mask = vec![0u8; highest as usize / 8 + 1];
    for &cpu in cpus {
        mask[cpu as usize / 8] |= 1 << (cpu % 8);
    }
    mask
}

/// runc's mapping from cgroup v1 shares to v2 weight: 1 + ((shares - 2) * 9999) / 262142,
/// shares clamped to 2..=262144 (256 -> 10, 1024 -> 39). runc's rather than systemd's
/// shares * 100 / 1024 because it maps the whole v1 range onto the whole v2 range and is
/// what runc, crun and the tools on top of them apply to the same numbers.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(CPU_SHARES_MIN, CPU_SHARES_MAX);
    1 + ((shares - 2) * 9999) / 262_142
}

/// systemd's cgroup_cpu_weight_to_shares: weight * 1024 / 100, clamped to 2..=262144.
pub fn weight_to_shares(weight: u64) -> u64 {
    (weight.saturating_mul(1024) / 100).clamp(CPU_SHARES_MIN, CPU_SHARES_MAX)
}

/// systemd's cgroup_weight_io_to_blkio: io * 500 / 100, clamped to 10..=1000.
pub fn io_to_blkio(io: u64) -> u64 {
    (io.saturating_mul(500) / 100).clamp(BLKIO_WEIGHT_MIN, BLKIO_WEIGHT_MAX)
}

/// systemd's cgroup_weight_blkio_to_io: blkio * 100 / 500, clamped to 1..=10000.
pub fn blkio_to_io(blkio: u64) -> u64 {
    (blkio.saturating_mul(100) / 500).clamp(WEIGHT_MIN, WEIGHT_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{TABLE, from_pairs};
    use std::collections::BTreeMap;

    fn text(s: &str) -> RawValue {
        RawValue::Text(s.to_owned())
    }

    /// What is sent, by name: systemd takes the properties in any order.
    fn sent(
        limits: &Limits,
        flavor: Flavor,
    ) -> std::result::Result<BTreeMap<&'static str, SdValue>, LimitError> {
        let values = limit_values(limits, flavor)?;
        let count = values.len();
        let by_name: BTreeMap<_, _> = values.into_iter().collect();
        assert_eq!(by_name.len(), count, "a property is sent twice");
        Ok(by_name)
    }

    fn expect<const N: usize>(
        props: [(&'static str, SdValue); N],
    ) -> std::result::Result<BTreeMap<&'static str, SdValue>, LimitError> {
        Ok(BTreeMap::from(props))
    }

    #[test]
    fn cpu_masks() {
        assert_eq!(cpu_mask(&[0, 1]), vec![0b11]);
        assert_eq!(cpu_mask(&[9]), vec![0, 0b10]);
        assert_eq!(cpu_mask(&[0, 7, 8]), vec![0b1000_0001, 0b1]);
        assert_eq!(cpu_mask(&[]), Vec::<u8>::new());
        assert_eq!(cpu_mask(&[8191]).len(), 1024);
    }

    // --- mappings ---

    #[test]
    fn shares_to_weight_follows_runc() {
        assert_eq!(shares_to_weight(256), 10);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        // Clamped first, so out-of-range input cannot underflow or overflow.
        assert_eq!(shares_to_weight(0), 1);
        assert_eq!(shares_to_weight(u64::MAX), 10_000);
    }

    #[test]
    fn weight_to_shares_follows_systemd() {
        assert_eq!(weight_to_shares(100), 1024);
        assert_eq!(weight_to_shares(10), 102);
        assert_eq!(weight_to_shares(1), 10);
        assert_eq!(weight_to_shares(10_000), 102_400);
        assert_eq!(weight_to_shares(0), 2);
        assert_eq!(weight_to_shares(u64::MAX), 262_144);
    }

    #[test]
    fn io_weight_mappings_follow_systemd() {
        assert_eq!(io_to_blkio(100), 500);
        assert_eq!(io_to_blkio(1), 10);
        assert_eq!(io_to_blkio(50), 250);
        assert_eq!(io_to_blkio(10_000), 1000);
        assert_eq!(io_to_blkio(u64::MAX), 1000);
        assert_eq!(blkio_to_io(500), 100);
        assert_eq!(blkio_to_io(10), 2);
        assert_eq!(blkio_to_io(1000), 200);
        assert_eq!(blkio_to_io(0), 1);
        assert_eq!(blkio_to_io(u64::MAX), 10_000);
    }

    // --- systemd properties ---

    fn all_legacy() -> Limits {
        from_pairs([
            ("CPUShares".to_owned(), RawValue::Unsigned(256)),
            ("MemoryLimit".to_owned(), text("512M")),
            ("TasksMax".to_owned(), RawValue::Unsigned(100)),
            ("CPUQuota".to_owned(), text("25%")),
            ("BlockIOWeight".to_owned(), RawValue::Unsigned(300)),
        ])
        .unwrap()
    }

    fn all_unified() -> Limits {
        from_pairs([
            ("CPUWeight".to_owned(), RawValue::Unsigned(50)),
            ("MemoryMax".to_owned(), text("1G")),
            ("TasksMax".to_owned(), RawValue::Unsigned(100)),
            ("CPUQuota".to_owned(), RawValue::Unsigned(200)),
            ("AllowedCPUs".to_owned(), text("0-1")),
            ("IOWeight".to_owned(), RawValue::Unsigned(200)),
        ])
        .unwrap()
    }

    #[test]
    fn legacy_properties_from_legacy_names() {
        assert_eq!(
            sent(&all_legacy(), Flavor::Legacy),
            expect([
                ("CPUShares", SdValue::U64(256)),
                ("MemoryLimit", SdValue::U64(512 << 20)),
                ("TasksMax", SdValue::U64(100)),
                ("CPUQuotaPerSecUSec", SdValue::U64(250_000)),
                ("BlockIOWeight", SdValue::U64(300)),
            ])
        );
    }

    #[test]
    fn unified_properties_from_legacy_names() {
        assert_eq!(
            sent(&all_legacy(), Flavor::Unified),
            expect([
                ("CPUWeight", SdValue::U64(10)),
                ("MemoryMax", SdValue::U64(512 << 20)),
                ("TasksMax", SdValue::U64(100)),
                ("CPUQuotaPerSecUSec", SdValue::U64(250_000)),
                ("IOWeight", SdValue::U64(60)),
            ])
        );
    }

    #[test]
    fn unified_properties_from_unified_names() {
        assert_eq!(
            sent(&all_unified(), Flavor::Unified),
            expect([
                ("CPUWeight", SdValue::U64(50)),
                ("MemoryMax", SdValue::U64(1 << 30)),
                ("TasksMax", SdValue::U64(100)),
                ("CPUQuotaPerSecUSec", SdValue::U64(2_000_000)),
                ("AllowedCPUs", SdValue::Bytes(vec![0b11])),
                ("IOWeight", SdValue::U64(200)),
            ])
        );
    }

    #[test]
    fn legacy_properties_from_unified_names() {
        let mut limits = all_unified();
        limits.remove("AllowedCPUs");
        assert_eq!(
            sent(&limits, Flavor::Legacy),
            expect([
                ("CPUShares", SdValue::U64(512)),
                ("MemoryLimit", SdValue::U64(1 << 30)),
                ("TasksMax", SdValue::U64(100)),
                ("CPUQuotaPerSecUSec", SdValue::U64(2_000_000)),
                ("BlockIOWeight", SdValue::U64(1000)),
            ])
        );
    }

    #[test]
    fn native_name_wins_when_both_are_set() {
        // Both names of each limit, as a hand-edited config may have them (a merge would
        // let the newer name replace the older).
        let mut limits = all_legacy();
        for (key, value) in all_unified().entries() {
            limits.set(key, value).unwrap();
        }
        let unified = sent(&limits, Flavor::Unified).unwrap();
        assert_eq!(unified["CPUWeight"], SdValue::U64(50));
        assert_eq!(unified["MemoryMax"], SdValue::U64(1 << 30));
        assert_eq!(unified["IOWeight"], SdValue::U64(200));
        limits.remove("AllowedCPUs");
        let legacy = sent(&limits, Flavor::Legacy).unwrap();
        assert_eq!(legacy["CPUShares"], SdValue::U64(256));
        assert_eq!(legacy["MemoryLimit"], SdValue::U64(512 << 20));
        assert_eq!(legacy["BlockIOWeight"], SdValue::U64(300));
    }

    #[test]
    fn allowed_cpus_need_unified() {
        let limits = from_pairs([("AllowedCPUs".to_owned(), text("9"))]).unwrap();
        match sent(&limits, Flavor::Legacy) {
            Err(LimitError::NotSupported(message)) => {
                assert!(
                    message.starts_with(
                        "AllowedCPUs needs the unified cgroup hierarchy: systemd does not \
                         manage the v1 cpuset controller; "
                    ),
                    "{message}"
                );
            }
            other => panic!("expected NotSupported, got {other:?}"),
        }
        assert_eq!(
            sent(&limits, Flavor::Unified),
            expect([("AllowedCPUs", SdValue::Bytes(vec![0, 0b10]))])
        );
    }

    #[test]
    fn no_limits_no_properties() {
        for flavor in [Flavor::Legacy, Flavor::Unified] {
            assert_eq!(sent(&Limits::default(), flavor), expect([]));
        }
    }

    #[test]
    fn accounting_comes_with_the_limits() {
        let names = |flavor| -> Vec<String> {
            limit_properties(&Limits::default(), flavor)
                .unwrap()
                .into_iter()
                .map(|(name, value)| {
                    assert_eq!(value, owned(SdValue::Bool(true)), "{name}");
                    name
                })
                .collect()
        };
        assert_eq!(
            names(Flavor::Legacy),
            [
                "CPUAccounting",
                "MemoryAccounting",
                "TasksAccounting",
                "BlockIOAccounting"
            ]
        );
        assert_eq!(
            names(Flavor::Unified),
            [
                "CPUAccounting",
                "MemoryAccounting",
                "TasksAccounting",
                "IOAccounting"
            ]
        );
        let limits = from_pairs([("TasksMax".to_owned(), RawValue::Unsigned(5))]).unwrap();
        let props = limit_properties(&limits, Flavor::Unified).unwrap();
        assert_eq!(props[0], ("TasksMax".to_owned(), owned(SdValue::U64(5))));
        assert_eq!(props.len(), 5);
    }

    #[test]
    fn refusal_is_not_supported() {
        let limits = from_pairs([("AllowedCPUs".to_owned(), text("0"))]).unwrap();
        assert!(matches!(
            limit_properties(&limits, Flavor::Legacy),
            Err(crate::error::Error::NotSupported(_))
        ));
    }

    /// Every limit of the table reaches each flavour as its entry says, alone and next to
    /// the limit that owns the same property.
    #[test]
    fn every_limit_is_sent_as_the_table_says() {
        for limit in TABLE {
            let alone = from_pairs([(limit.key.to_owned(), limit.kind.sample())]).unwrap();
            let value = alone.get(limit.key).unwrap().clone();
            for flavor in [Flavor::Legacy, Flavor::Unified] {
                let context = format!("{} {flavor:?}", limit.key);
                match limit.property(flavor) {
                    Property::Native(name, how) => {
                        let want = convert(*how, limit.key, &value).expect(&context);
                        assert_eq!(sent(&alone, flavor), expect([(*name, want)]), "{context}");
                    }
                    Property::Into(name, how) => {
                        let want = convert(*how, limit.key, &value).expect(&context);
                        assert_eq!(sent(&alone, flavor), expect([(*name, want)]), "{context}");
                        let owner = TABLE
                            .iter()
                            .find(|other| {
                                matches!(other.property(flavor), Property::Native(n, _) if n == name)
                            })
                            .expect(&context);
                        let mut both = alone.clone();
                        both.set(owner.key, owner.kind.sample()).unwrap();
                        let only_owner =
                            from_pairs([(owner.key.to_owned(), owner.kind.sample())]).unwrap();
                        assert_eq!(sent(&both, flavor), sent(&only_owner, flavor), "{context}");
                    }
                    Property::Refused(why) => {
                        assert_eq!(
                            sent(&alone, flavor),
                            Err(LimitError::NotSupported((*why).to_owned())),
                            "{context}"
                        );
                    }
                }
            }
        }
    }
}
