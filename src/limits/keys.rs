//! The one list of limits berth knows. Everything else — validation, the Limits
//! property, config.toml, what systemd is sent, berthctl's flags and its status line —
//! walks [`TABLE`], so a new limit is one entry here.

use super::units::Kind;

// The ranges systemd itself enforces on these properties, so a bad value is refused with
// berth's message instead of a failing StartTransientUnit. The conversions between the
// legacy and unified weights clamp to the same ranges.
pub const CPU_SHARES_MIN: u64 = 2;
pub const CPU_SHARES_MAX: u64 = 262_144;
pub const WEIGHT_MIN: u64 = 1;
pub const WEIGHT_MAX: u64 = 10_000;
pub const BLKIO_WEIGHT_MIN: u64 = 10;
pub const BLKIO_WEIGHT_MAX: u64 = 1000;

/// One limit.
#[derive(Debug)]
pub struct Limit {
    /// The name on D-Bus, in config.toml and in `--limit KEY=VALUE`.
    pub key: &'static str,
    pub kind: Kind,
    /// Where the limit stands when people read limits (`berthctl status`, `--help`):
    /// lowest first. The table's own order is the one messages and config.toml use, and
    /// it cannot change without changing them.
    pub rank: u16,
    /// berthctl's own flag for the limit; every limit also goes through `--limit`.
    pub flag: Option<Flag>,
    /// What systemd is sent on v1 and hybrid hosts.
    pub legacy: Property,
    /// What systemd is sent on unified hosts and from systemd 258 on.
    pub unified: Property,
}

/// A berthctl flag, `--LONG VALUE_NAME`, whose help reads "HELP [KEY], e.g. EXAMPLE".
#[derive(Debug)]
pub struct Flag {
    pub long: &'static str,
    pub value_name: &'static str,
    pub help: &'static str,
    pub example: Option<&'static str>,
}

/// How one flavour of systemd receives a limit.
#[derive(Debug)]
pub enum Property {
    /// This property is the limit's own: sent whenever the limit is set.
    Native(&'static str, Convert),
    /// This systemd lacks the limit but has a like one, another limit's native property,
    /// which it is converted into; sent only when no limit native to that property is
    /// set, so a seed's `CPUShares=256` still means something on a unified host while
    /// an explicit CPUWeight wins.
    Into(&'static str, Convert),
    /// This systemd cannot apply the limit at all: NotSupported with this message.
    Refused(&'static str),
}

/// How a kept value becomes a property value (src/systemd/properties.rs carries them out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Convert {
    /// The number as kept.
    Same,
    /// Percent of one CPU to CPU time per second in µs.
    PercentToUSec,
    /// A CPU list to systemd's bitmask bytes.
    CpuMask,
    SharesToWeight,
    WeightToShares,
    IoToBlkio,
    BlkioToIo,
}

/// In the order of messages ("known: ...") and config.toml: add new limits at the end.
pub static TABLE: &[Limit] = &[
    Limit {
        key: "CPUShares",
        kind: Kind::Between(CPU_SHARES_MIN, CPU_SHARES_MAX),
        rank: 30,
        flag: Some(Flag {
            long: "cpu-shares",
            value_name: "N",
            help: "CPU shares, relative to other machines",
            example: Some("256"),
        }),
        legacy: Property::Native("CPUShares", Convert::Same),
        unified: Property::Into("CPUWeight", Convert::SharesToWeight),
    },
    Limit {
        key: "CPUWeight",
        kind: Kind::Between(WEIGHT_MIN, WEIGHT_MAX),
        rank: 40,
        flag: Some(Flag {
            long: "cpu-weight",
            value_name: "N",
            help: "CPU weight, relative to other machines",
            example: Some("100"),
        }),
        legacy: Property::Into("CPUShares", Convert::WeightToShares),
        unified: Property::Native("CPUWeight", Convert::Same),
    },
    Limit {
        key: "MemoryLimit",
        kind: Kind::Size,
        rank: 20,
        flag: None,
        legacy: Property::Native("MemoryLimit", Convert::Same),
        unified: Property::Into("MemoryMax", Convert::Same),
    },
    Limit {
        key: "MemoryMax",
        kind: Kind::Size,
        rank: 10,
        flag: Some(Flag {
            long: "memory",
            value_name: "SIZE",
            help: "Memory ceiling",
            example: Some("512M, 2G"),
        }),
        legacy: Property::Into("MemoryLimit", Convert::Same),
        unified: Property::Native("MemoryMax", Convert::Same),
    },
    Limit {
        key: "TasksMax",
        kind: Kind::Count("tasks"),
        rank: 70,
        flag: Some(Flag {
            long: "tasks-max",
            value_name: "N",
            help: "Maximum number of processes and threads",
            example: None,
        }),
        legacy: Property::Native("TasksMax", Convert::Same),
        unified: Property::Native("TasksMax", Convert::Same),
    },
    Limit {
        key: "CPUQuota",
        kind: Kind::CpuPercent,
        rank: 50,
        flag: Some(Flag {
            long: "cpu-quota",
            value_name: "PCT",
            help: "CPU time as a percentage of one CPU",
            example: Some("25%"),
        }),
        legacy: Property::Native("CPUQuotaPerSecUSec", Convert::PercentToUSec),
        unified: Property::Native("CPUQuotaPerSecUSec", Convert::PercentToUSec),
    },
    Limit {
        key: "AllowedCPUs",
        kind: Kind::CpuList,
        rank: 60,
        flag: Some(Flag {
            long: "cpus",
            value_name: "LIST",
            help: "CPUs the machine may run on",
            example: Some("0-1,3"),
        }),
        legacy: Property::Refused(
            "AllowedCPUs needs the unified cgroup hierarchy: systemd does not manage the v1 \
             cpuset controller; remove AllowedCPUs from this machine's limits, or boot the \
             host with the unified hierarchy (systemd.unified_cgroup_hierarchy=1)",
        ),
        unified: Property::Native("AllowedCPUs", Convert::CpuMask),
    },
    Limit {
        key: "BlockIOWeight",
        kind: Kind::Between(BLKIO_WEIGHT_MIN, BLKIO_WEIGHT_MAX),
        rank: 90,
        flag: Some(Flag {
            long: "blkio-weight",
            value_name: "N",
            help: "Block IO weight, cgroup v1",
            example: None,
        }),
        legacy: Property::Native("BlockIOWeight", Convert::Same),
        unified: Property::Into("IOWeight", Convert::BlkioToIo),
    },
    Limit {
        key: "IOWeight",
        kind: Kind::Between(WEIGHT_MIN, WEIGHT_MAX),
        rank: 80,
        flag: Some(Flag {
            long: "io-weight",
            value_name: "N",
            help: "IO weight",
            example: None,
        }),
        legacy: Property::Into("BlockIOWeight", Convert::IoToBlkio),
        unified: Property::Native("IOWeight", Convert::Same),
    },
];

impl Limit {
    /// What a host of this flavour is sent for the limit.
    pub fn property(&self, flavor: super::Flavor) -> &Property {
        match flavor {
            super::Flavor::Legacy => &self.legacy,
            super::Flavor::Unified => &self.unified,
        }
    }
}

/// The table entry of a D-Bus name; names match exactly.
pub fn find(key: &str) -> Option<&'static Limit> {
    TABLE.iter().find(|limit| limit.key == key)
}

/// Every limit in the order people read them (see [`Limit::rank`]).
pub fn by_rank() -> Vec<&'static Limit> {
    let mut limits: Vec<_> = TABLE.iter().collect();
    limits.sort_by_key(|limit| limit.rank);
    limits
}

/// "CPUShares, CPUWeight, ...": the names, for messages that list what is accepted.
pub fn key_list() -> String {
    TABLE
        .iter()
        .map(|limit| limit.key)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_ranks_and_flags_are_unique() {
        let distinct = |items: Vec<String>| {
            let count = items.len();
            assert_eq!(items.into_iter().collect::<HashSet<_>>().len(), count);
        };
        distinct(TABLE.iter().map(|l| l.key.to_owned()).collect());
        distinct(TABLE.iter().map(|l| l.rank.to_string()).collect());
        distinct(
            TABLE
                .iter()
                .filter_map(|l| l.flag.as_ref())
                .map(|f| f.long.to_owned())
                .chain(["limit".to_owned()])
                .collect(),
        );
    }

    #[test]
    fn each_property_has_one_owner() {
        // Two limits native to one property would both be sent; an Into that names no
        // native property would send a property no limit owns, and nothing would ever
        // take precedence over it.
        for flavor in [super::super::Flavor::Legacy, super::super::Flavor::Unified] {
            let owned: Vec<&str> = TABLE
                .iter()
                .filter_map(|l| match l.property(flavor) {
                    Property::Native(property, _) => Some(*property),
                    _ => None,
                })
                .collect();
            let natives: HashSet<&str> = owned.iter().copied().collect();
            assert_eq!(natives.len(), owned.len(), "{flavor:?}");
            for limit in TABLE {
                if let Property::Into(property, _) = limit.property(flavor) {
                    assert!(natives.contains(property), "{} {flavor:?}", limit.key);
                }
            }
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(find("MemoryMax").map(|l| l.kind), Some(Kind::Size));
        assert!(find("memorymax").is_none());
        assert!(find("CPUQuotaPerSecUSec").is_none());
        assert_eq!(by_rank().len(), TABLE.len());
        assert_eq!(by_rank()[0].key, "MemoryMax");
        assert!(key_list().starts_with("CPUShares, CPUWeight, "));
    }
}
