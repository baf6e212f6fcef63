//! Resource limits of a machine.
//!
//! Users give limits under the legacy (cgroup v1) names the product's seeds use as well as
//! the unified (cgroup v2) names. Both are kept as given, so `berthctl status` shows what
//! the user asked for; [`Limits::systemd_properties`] translates at the last moment into
//! the set the host's systemd honours, because systemd 258 and any unified host ignore the
//! legacy properties and a v1 host ignores the unified ones.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

/// The D-Bus/TOML keys in a fixed order.
pub const KEYS: [&str; 9] = [
    "CPUShares",
    "CPUWeight",
    "MemoryLimit",
    "MemoryMax",
    "TasksMax",
    "CPUQuota",
    "AllowedCPUs",
    "BlockIOWeight",
    "IOWeight",
];

// The ranges systemd itself enforces on these properties, so a bad value is refused with
// berth's message instead of a failing StartTransientUnit.
const CPU_SHARES_MIN: u64 = 2;
const CPU_SHARES_MAX: u64 = 262_144;
const WEIGHT_MIN: u64 = 1;
const WEIGHT_MAX: u64 = 10_000;
const BLKIO_WEIGHT_MIN: u64 = 10;
const BLKIO_WEIGHT_MAX: u64 = 1000;

/// One page: the kernel rounds memory limits to pages, and less than a page cannot hold
/// a process, so smaller values are always mistakes (often a missing unit).
const MEMORY_MIN: u64 = 4096;

/// The ceiling of the open-ended limits. systemd reads u64::MAX as "infinity", and the
/// machine's state file is TOML, whose integers are signed 64-bit: anything larger could
/// not be persisted.
const FINITE_MAX: u64 = i64::MAX as u64;

/// CPUQuota travels as `u` on berth's D-Bus API.
const CPU_QUOTA_MAX: u64 = u32::MAX as u64;

/// systemd's cap on CPU numbers (cpu-set-util.c): CONFIG_NR_CPUS goes up to 8192.
const CPUS_MAX: u32 = 8192;

/// Resource limits of a machine, keyed in TOML exactly as on D-Bus.
///
/// Deserializing validates every value as [`Limits::set`] does (and also accepts the text
/// forms, e.g. `MemoryMax = "512M"`, for hand-edited files); unknown keys are ignored so the
/// struct can be flattened into a larger table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredLimits")]
pub struct Limits {
    #[serde(rename = "CPUShares", skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    #[serde(rename = "CPUWeight", skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    /// Bytes.
    #[serde(rename = "MemoryLimit", skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    /// Bytes.
    #[serde(rename = "MemoryMax", skip_serializing_if = "Option::is_none")]
    pub memory_max: Option<u64>,
    #[serde(rename = "TasksMax", skip_serializing_if = "Option::is_none")]
    pub tasks_max: Option<u64>,
    /// Percent of one CPU: 25 is a quarter, 200 is two CPUs.
    #[serde(rename = "CPUQuota", skip_serializing_if = "Option::is_none")]
    pub cpu_quota: Option<u64>,
    /// Normalized CPU list, e.g. "0-1,3".
    #[serde(rename = "AllowedCPUs", skip_serializing_if = "Option::is_none")]
    pub allowed_cpus: Option<String>,
    #[serde(rename = "BlockIOWeight", skip_serializing_if = "Option::is_none")]
    pub block_io_weight: Option<u64>,
    #[serde(rename = "IOWeight", skip_serializing_if = "Option::is_none")]
    pub io_weight: Option<u64>,
}

/// A value as it arrives in an a{sv} options dict (the D-Bus layer converts variants to this).
#[derive(Clone, Debug, PartialEq)]
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

/// A unit property value for systemd (`t`, `ay` or `b`).
#[derive(Clone, Debug, PartialEq)]
pub enum SdValue {
    U64(u64),
    Bytes(Vec<u8>),
    Bool(bool),
}

pub fn is_limit_key(key: &str) -> bool {
    KEYS.contains(&key)
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
        let invalid = |why: String| LimitError::Invalid(format!("{key} {}: {why}", Shown(&value)));
        match key {
            "CPUShares" => {
                self.cpu_shares =
                    Some(between(&value, CPU_SHARES_MIN, CPU_SHARES_MAX).map_err(invalid)?);
            }
            "CPUWeight" => {
                self.cpu_weight = Some(between(&value, WEIGHT_MIN, WEIGHT_MAX).map_err(invalid)?);
            }
            "MemoryLimit" => self.memory_limit = Some(memory(&value).map_err(invalid)?),
            "MemoryMax" => self.memory_max = Some(memory(&value).map_err(invalid)?),
            "TasksMax" => self.tasks_max = Some(tasks(&value).map_err(invalid)?),
            "CPUQuota" => self.cpu_quota = Some(cpu_quota(&value).map_err(invalid)?),
            "AllowedCPUs" => self.allowed_cpus = Some(allowed_cpus(&value).map_err(invalid)?),
            "BlockIOWeight" => {
                self.block_io_weight =
                    Some(between(&value, BLKIO_WEIGHT_MIN, BLKIO_WEIGHT_MAX).map_err(invalid)?);
            }
            "IOWeight" => {
                self.io_weight = Some(between(&value, WEIGHT_MIN, WEIGHT_MAX).map_err(invalid)?);
            }
            _ => {
                return Err(LimitError::Invalid(format!(
                    "unknown limit {} (known: {})",
                    Shown(&RawValue::Text(key.to_owned())),
                    KEYS.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Keys that are set, with their values, in [`KEYS`] order (AllowedCPUs as Text,
    /// others Unsigned). Used for the Limits a{sv} property and `berthctl status`.
    pub fn entries(&self) -> Vec<(&'static str, RawValue)> {
        let number = |v: Option<u64>| v.map(RawValue::Unsigned);
        [
            ("CPUShares", number(self.cpu_shares)),
            ("CPUWeight", number(self.cpu_weight)),
            ("MemoryLimit", number(self.memory_limit)),
            ("MemoryMax", number(self.memory_max)),
            ("TasksMax", number(self.tasks_max)),
            ("CPUQuota", number(self.cpu_quota)),
            ("AllowedCPUs", self.allowed_cpus.clone().map(RawValue::Text)),
            ("BlockIOWeight", number(self.block_io_weight)),
            ("IOWeight", number(self.io_weight)),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?)))
        .collect()
    }

    /// Every key set in `other` overrides self (for live SetLimits).
    pub fn merge(&mut self, other: &Limits) {
        fn take<T: Clone>(mine: &mut Option<T>, theirs: &Option<T>) {
            if theirs.is_some() {
                mine.clone_from(theirs);
            }
        }
        take(&mut self.cpu_shares, &other.cpu_shares);
        take(&mut self.cpu_weight, &other.cpu_weight);
        take(&mut self.memory_limit, &other.memory_limit);
        take(&mut self.memory_max, &other.memory_max);
        take(&mut self.tasks_max, &other.tasks_max);
        take(&mut self.cpu_quota, &other.cpu_quota);
        take(&mut self.allowed_cpus, &other.allowed_cpus);
        take(&mut self.block_io_weight, &other.block_io_weight);
        take(&mut self.io_weight, &other.io_weight);
    }

    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// The properties to send to systemd for a scope (StartTransientUnit or
    /// SetUnitProperties), without accounting properties.
    ///
    /// A limit given only under the other flavor's name is mapped with systemd's (or, for
    /// shares to weight, runc's) conversion, so a seed's `CPUShares=256` still means
    /// something on a unified host. When both names are set, the native one wins.
    pub fn systemd_properties(
        &self,
        flavor: Flavor,
    ) -> Result<Vec<(&'static str, SdValue)>, LimitError> {
        // The fields are public, so this value may not have been through set(); systemd
        // must never see something set() would have refused.
        let checked = from_pairs(self.entries().into_iter().map(|(k, v)| (k.to_owned(), v)))?;
        let quota = checked
            .cpu_quota
            .map(|percent| SdValue::U64(percent * 10_000));
        let mut props = Vec::new();
        let mut push = |name: &'static str, value: Option<SdValue>| {
            if let Some(value) = value {
                props.push((name, value));
            }
        };
        match flavor {
            Flavor::Legacy => {
                if checked.allowed_cpus.is_some() {
                    return Err(LimitError::NotSupported(
                        "AllowedCPUs needs the unified cgroup hierarchy: systemd does not \
                         manage the v1 cpuset controller; remove AllowedCPUs from this \
                         machine's limits, or boot the host with the unified hierarchy \
                         (systemd.unified_cgroup_hierarchy=1)"
                            .into(),
                    ));
                }
                let shares = checked
                    .cpu_shares
                    .or_else(|| checked.cpu_weight.map(weight_to_shares));
                let memory = checked.memory_limit.or(checked.memory_max);
                let blkio = checked
                    .block_io_weight
                    .or_else(|| checked.io_weight.map(io_to_blkio));
                push("CPUShares", shares.map(SdValue::U64));
                push("MemoryLimit", memory.map(SdValue::U64));
                push("TasksMax", checked.tasks_max.map(SdValue::U64));
                push("CPUQuotaPerSecUSec", quota);
                push("BlockIOWeight", blkio.map(SdValue::U64));
            }
            Flavor::Unified => {
                let weight = checked
                    .cpu_weight
                    .or_else(|| checked.cpu_shares.map(shares_to_weight));
                let memory = checked.memory_max.or(checked.memory_limit);
                let cpus = match &checked.allowed_cpus {
                    Some(list) => Some(SdValue::Bytes(cpu_mask(
                        &parse_cpu_list(list).map_err(LimitError::Invalid)?,
                    ))),
                    None => None,
                };
                let io = checked
                    .io_weight
                    .or_else(|| checked.block_io_weight.map(blkio_to_io));
                push("CPUWeight", weight.map(SdValue::U64));
                push("MemoryMax", memory.map(SdValue::U64));
                push("TasksMax", checked.tasks_max.map(SdValue::U64));
                push("CPUQuotaPerSecUSec", quota);
                push("AllowedCPUs", cpus);
                push("IOWeight", io.map(SdValue::U64));
            }
        }
        Ok(props)
    }
}

/// How a value appears in an error: numbers bare, text quoted and cut short, because
/// the text may be whatever a D-Bus caller chose to send.
struct Shown<'a>(&'a RawValue);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN_MAX: usize = 80;
        match self.0 {
            RawValue::Unsigned(n) => write!(f, "{n}"),
            RawValue::Signed(n) => write!(f, "{n}"),
            RawValue::Text(s) => match s.char_indices().nth(SHOWN_MAX) {
                Some((cut, _)) => write!(f, "{:?}…", &s[..cut]),
                None => write!(f, "{s:?}"),
            },
        }
    }
}

/// A non-negative number from any representation; `text` parses the text form.
fn unsigned(value: &RawValue, text: impl Fn(&str) -> Result<u64, String>) -> Result<u64, String> {
    match value {
        RawValue::Unsigned(n) => Ok(*n),
        RawValue::Signed(n) => u64::try_from(*n).map_err(|_| "must not be negative".to_owned()),
        RawValue::Text(s) => text(s.trim()),
    }
}

/// Parses decimal digits. An overflowing number comes back as u64::MAX rather than an
/// error so the caller's range check words the message ("must be between ...").
fn whole_number(s: &str, expected: &str) -> Result<u64, String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if s.strip_prefix('-').is_some_and(digits) {
        return Err("must not be negative".into());
    }
    if !digits(s) {
        return Err(expected.into());
    }
    Ok(s.parse().unwrap_or(u64::MAX))
}

fn between(value: &RawValue, min: u64, max: u64) -> Result<u64, String> {
    let expected = format!("expected a whole number between {min} and {max}");
    let n = unsigned(value, |s| whole_number(s, &expected))?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be between {min} and {max}"))
    }
}

fn memory(value: &RawValue) -> Result<u64, String> {
    let bytes = unsigned(value, parse_size)?;
    if bytes < MEMORY_MIN {
        Err(format!("must be at least {MEMORY_MIN} bytes (one page)"))
    } else if bytes > FINITE_MAX {
        Err(format!(
            "too large (at most {FINITE_MAX} bytes; limits must be finite)"
        ))
    } else {
        Ok(bytes)
    }
}

fn tasks(value: &RawValue) -> Result<u64, String> {
    let n = unsigned(value, |s| {
        whole_number(s, "expected a whole number of tasks")
    })?;
    if n < 1 {
        Err("must be at least 1".into())
    } else if n > FINITE_MAX {
        Err(format!(
            "too large (at most {FINITE_MAX}; limits must be finite)"
        ))
    } else {
        Ok(n)
    }
}

fn cpu_quota(value: &RawValue) -> Result<u64, String> {
    let percent = unsigned(value, |s| {
        let number = s.strip_suffix('%').unwrap_or(s).trim_end();
        whole_number(
            number,
            "expected a whole number of percent of one CPU, like \"25%\" or \"200%\"",
        )
    })?;
    if percent < 1 {
        Err("must be at least 1 (percent of one CPU: 25 is a quarter, 200 is two CPUs)".into())
    } else if percent > CPU_QUOTA_MAX {
        Err(format!("too large (at most {CPU_QUOTA_MAX} percent)"))
    } else {
        Ok(percent)
    }
}

fn allowed_cpus(value: &RawValue) -> Result<String, String> {
    match value {
        RawValue::Text(list) => parse_cpu_list(list).map(|cpus| format_cpu_list(&cpus)),
        RawValue::Unsigned(_) | RawValue::Signed(_) => {
            Err("expected a string with a CPU list like \"0-1,3\"".into())
        }
    }
}

/// Parses a size in bytes: "1048576", "512K", "64M", "1G", "2T", binary units,
/// case-insensitive, optionally followed by "B" or "iB" ("64MiB"). Errors do not repeat
/// the input; callers put it in front.
pub fn parse_size(s: &str) -> Result<u64, String> {
    const EXPECTED: &str = "expected a size like \"512M\" (bytes, or K, M, G or T)";
    let s = s.trim();
    if s.eq_ignore_ascii_case("infinity") {
        return Err(
            "limits must be finite: give a size like \"512M\", or leave the limit unset".into(),
        );
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    if number.is_empty() {
        if s.strip_prefix('-')
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        {
            return Err("must not be negative".into());
        }
        return Err(EXPECTED.into());
    }
    if unit.starts_with('.') {
        return Err(
            "fractions are not supported: use a smaller unit (\"1536M\", not \"1.5G\")".into(),
        );
    }
    let unit = unit.trim_start();
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("unknown unit {unit:?} (use K, M, G or T)")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| "too large".to_owned())
}

/// 67108864 -> "64M": the largest binary unit that divides exactly, else plain bytes.
pub fn format_size(bytes: u64) -> String {
    if bytes != 0 {
        for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if bytes % (1 << shift) == 0 {
                return format!("{}{unit}", bytes >> shift);
            }
        }
    }
    bytes.to_string()
}

/// Parses a CPU list like "0-1,3" into sorted, distinct CPU numbers.
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>, String> {
    const HINT: &str = "give CPU numbers and ranges like \"0-1,3\"";
    let list = s.trim();
    if list.is_empty() {
        return Err(format!("the CPU list is empty ({HINT})"));
    }
    // A bitmap rather than a Vec of every CPU named: the same "0-8191" can be repeated
    // thousands of times in one string from the bus.
    let mut chosen = vec![false; CPUS_MAX as usize];
    for item in list.split(',') {
        let item = item.trim();
        let cpu = |s: &str| -> Result<u32, String> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(if item.is_empty() {
                    format!("the CPU list has an empty entry ({HINT})")
                } else {
                    format!("{item:?} is not a CPU number or range ({HINT})")
                });
            }
            match s.parse::<u32>() {
                Ok(n) if n < CPUS_MAX => Ok(n),
                _ => Err(format!(
                    "CPU {s} is out of range (CPU numbers go up to {})",
                    CPUS_MAX - 1
                )),
            }
        };
        let (first, last) = match item.split_once('-') {
            Some((first, last)) => (cpu(first)?, cpu(last)?),
            None => {
                let only = cpu(item)?;
                (only, only)
            }
        };
        if first > last {
            return Err(format!(
                "the range \"{item}\" runs backwards (write \"{last}-{first}\")"
            ));
        }
        chosen[first as usize..=last as usize].fill(true);
    }
    Ok((0..CPUS_MAX).filter(|&cpu| chosen[cpu as usize]).collect())
}

/// [0, 1, 3] -> "0-1,3". Accepts unsorted input with duplicates.
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut cpus = cpus.to_vec();
    cpus.sort_unstable();
    cpus.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let first = cpus[i];
        // Distinct and sorted, so the next element is larger and the subtraction is safe.
        while i + 1 < cpus.len() && cpus[i + 1] - cpus[i] == 1 {
            i += 1;
        }
        let last = cpus[i];
        if !out.is_empty() {
            out.push(',');
        }
        let _ = if first == last {
            write!(out, "{first}")
        } else {
            write!(out, "{first}-{last}")
        };
        i += 1;
    }
    out
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

/// The on-disk shape, deserialized leniently and then put through [`Limits::set`] so a
/// state file edited by hand gets the same checks and messages as a D-Bus call.
#[derive(Deserialize)]
struct StoredLimits {
    #[serde(rename = "CPUShares")]
    cpu_shares: Option<StoredValue>,
    #[serde(rename = "CPUWeight")]
    cpu_weight: Option<StoredValue>,
    #[serde(rename = "MemoryLimit")]
    memory_limit: Option<StoredValue>,
    #[serde(rename = "MemoryMax")]
    memory_max: Option<StoredValue>,
    #[serde(rename = "TasksMax")]
    tasks_max: Option<StoredValue>,
    #[serde(rename = "CPUQuota")]
    cpu_quota: Option<StoredValue>,
    #[serde(rename = "AllowedCPUs")]
    allowed_cpus: Option<StoredValue>,
    #[serde(rename = "BlockIOWeight")]
    block_io_weight: Option<StoredValue>,
    #[serde(rename = "IOWeight")]
    io_weight: Option<StoredValue>,
}

impl TryFrom<StoredLimits> for Limits {
    type Error = LimitError;

    fn try_from(stored: StoredLimits) -> Result<Self, Self::Error> {
        let values = [
            stored.cpu_shares,
            stored.cpu_weight,
            stored.memory_limit,
            stored.memory_max,
            stored.tasks_max,
            stored.cpu_quota,
            stored.allowed_cpus,
            stored.block_io_weight,
            stored.io_weight,
        ];
        let mut limits = Limits::default();
        for (key, value) in KEYS.into_iter().zip(values) {
            if let Some(StoredValue(value)) = value {
                limits.set(key, value)?;
            }
        }
        Ok(limits)
    }
}

struct StoredValue(RawValue);

impl<'de> Deserialize<'de> for StoredValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = StoredValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number or a string like \"512M\"")
            }

            fn visit_u64<E>(self, n: u64) -> Result<StoredValue, E> {
                Ok(StoredValue(RawValue::Unsigned(n)))
            }

            fn visit_i64<E>(self, n: i64) -> Result<StoredValue, E> {
                Ok(StoredValue(RawValue::Signed(n)))
            }

            fn visit_str<E>(self, s: &str) -> Result<StoredValue, E> {
                Ok(StoredValue(RawValue::Text(s.to_owned())))
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
        for key in KEYS.iter().filter(|&&k| k != "AllowedCPUs") {
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
                .cpu_shares,
            Some(256)
        );
        assert_eq!(
            set_one("MemoryMax", RawValue::Signed(1 << 20))
                .unwrap()
                .memory_max,
            Some(1 << 20)
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
        assert_eq!(
            invalid("Foo", RawValue::Unsigned(1)),
            "unknown limit \"Foo\" (known: CPUShares, CPUWeight, MemoryLimit, MemoryMax, \
             TasksMax, CPUQuota, AllowedCPUs, BlockIOWeight, IOWeight)"
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
            assert_eq!(limits.memory_max, Some(bytes), "{given:?}");
        }
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn parse_size_errors() {
        assert_eq!(
            parse_size("64Q"),
            Err("unknown unit \"Q\" (use K, M, G or T)".into())
        );
        assert_eq!(
            parse_size("64KQ"),
            Err("unknown unit \"KQ\" (use K, M, G or T)".into())
        );
        assert_eq!(
            parse_size("64iB"),
            Err("unknown unit \"iB\" (use K, M, G or T)".into())
        );
        assert_eq!(
            parse_size("M"),
            Err("expected a size like \"512M\" (bytes, or K, M, G or T)".into())
        );
        assert_eq!(parse_size("-1"), Err("must not be negative".into()));
        assert_eq!(parse_size("16777216T"), Err("too large".into()));
        assert_eq!(parse_size("16777215T"), Ok(16_777_215 << 40));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_size("18446744073709551616"), Err("too large".into()));
    }

    #[test]
    fn format_size_uses_exact_units() {
        assert_eq!(format_size(67_108_864), "64M");
        assert_eq!(format_size(1024), "1K");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(3 << 30), "3G");
        assert_eq!(format_size(5 << 40), "5T");
        assert_eq!(format_size(1 << 50), "1024T");
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(4097), "4097");
        for bytes in [0, 1, 4096, 1536, 64 << 20, (1 << 30) + 1, 1 << 50, u64::MAX] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes));
        }
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
            assert_eq!(limits.cpu_quota, Some(percent), "{given:?}");
        }
    }

    #[test]
    fn integer_text_forms() {
        let limits = from_pairs([
            ("CPUShares".to_owned(), text("256")),
            ("TasksMax".to_owned(), text(" 64 ")),
        ])
        .unwrap();
        assert_eq!(limits.cpu_shares, Some(256));
        assert_eq!(limits.tasks_max, Some(64));
    }

    #[test]
    fn allowed_cpus_are_normalized() {
        let limits = set_one("AllowedCPUs", text(" 3, 1,0-1 ,2")).unwrap();
        assert_eq!(limits.allowed_cpus.as_deref(), Some("0-3"));
        assert_eq!(
            invalid("AllowedCPUs", text("3-1")),
            "AllowedCPUs \"3-1\": the range \"3-1\" runs backwards (write \"1-3\")"
        );
    }

    // --- CPU lists ---

    #[test]
    fn cpu_list_parsing() {
        assert_eq!(parse_cpu_list("0-1,3"), Ok(vec![0, 1, 3]));
        assert_eq!(parse_cpu_list("3,0-1"), Ok(vec![0, 1, 3]));
        assert_eq!(parse_cpu_list("1,1,0-2"), Ok(vec![0, 1, 2]));
        assert_eq!(parse_cpu_list("5"), Ok(vec![5]));
        assert_eq!(parse_cpu_list("2-2"), Ok(vec![2]));
        assert_eq!(parse_cpu_list(" 0 - 1 , 3 "), Ok(vec![0, 1, 3]));
        assert_eq!(parse_cpu_list("8191"), Ok(vec![8191]));
        assert_eq!(parse_cpu_list("0-8191").map(|c| c.len()), Ok(8192));
    }

    #[test]
    fn cpu_list_errors() {
        let hint = "(give CPU numbers and ranges like \"0-1,3\")";
        assert_eq!(
            parse_cpu_list(""),
            Err(format!("the CPU list is empty {hint}"))
        );
        assert_eq!(
            parse_cpu_list("  "),
            Err(format!("the CPU list is empty {hint}"))
        );
        assert_eq!(
            parse_cpu_list("a"),
            Err(format!("\"a\" is not a CPU number or range {hint}"))
        );
        assert_eq!(
            parse_cpu_list("0,,1"),
            Err(format!("the CPU list has an empty entry {hint}"))
        );
        assert_eq!(
            parse_cpu_list("0-"),
            Err(format!("\"0-\" is not a CPU number or range {hint}"))
        );
        assert_eq!(
            parse_cpu_list("-1"),
            Err(format!("\"-1\" is not a CPU number or range {hint}"))
        );
        assert_eq!(
            parse_cpu_list("0-1-2"),
            Err(format!("\"0-1-2\" is not a CPU number or range {hint}"))
        );
        assert_eq!(
            parse_cpu_list("3-1"),
            Err("the range \"3-1\" runs backwards (write \"1-3\")".into())
        );
        assert_eq!(
            parse_cpu_list("8192"),
            Err("CPU 8192 is out of range (CPU numbers go up to 8191)".into())
        );
        assert_eq!(
            parse_cpu_list("0-99999999999"),
            Err("CPU 99999999999 is out of range (CPU numbers go up to 8191)".into())
        );
    }

    #[test]
    fn repeated_huge_ranges_stay_cheap() {
        let list = vec!["0-8191"; 20_000].join(",");
        assert_eq!(parse_cpu_list(&list).map(|c| c.len()), Ok(8192));
    }

    #[test]
    fn cpu_list_formatting() {
        assert_eq!(format_cpu_list(&[0, 1, 3]), "0-1,3");
        assert_eq!(format_cpu_list(&[3, 1, 0, 1]), "0-1,3");
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(format_cpu_list(&[7]), "7");
        assert_eq!(format_cpu_list(&[0, 2, 4]), "0,2,4");
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8, 9, 10, 12]), "0-3,8-10,12");
        assert_eq!(
            format_cpu_list(&[u32::MAX - 1, u32::MAX]),
            "4294967294-4294967295"
        );
    }

    #[test]
    fn cpu_list_round_trip() {
        for list in [
            "0",
            "0-1,3",
            "0-3,8-10,12",
            "1,3,5,7",
            "0-8191",
            "8190-8191",
        ] {
            let cpus = parse_cpu_list(list).unwrap();
            assert_eq!(format_cpu_list(&cpus), list);
            assert_eq!(parse_cpu_list(&format_cpu_list(&cpus)), Ok(cpus));
        }
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
            all_legacy().systemd_properties(Flavor::Legacy),
            Ok(vec![
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
            all_legacy().systemd_properties(Flavor::Unified),
            Ok(vec![
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
            all_unified().systemd_properties(Flavor::Unified),
            Ok(vec![
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
        limits.allowed_cpus = None;
        assert_eq!(
            limits.systemd_properties(Flavor::Legacy),
            Ok(vec![
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
        let mut limits = all_legacy();
        limits.merge(&all_unified());
        let unified = limits.systemd_properties(Flavor::Unified).unwrap();
        assert!(unified.contains(&("CPUWeight", SdValue::U64(50))));
        assert!(unified.contains(&("MemoryMax", SdValue::U64(1 << 30))));
        assert!(unified.contains(&("IOWeight", SdValue::U64(200))));
        limits.allowed_cpus = None;
        let legacy = limits.systemd_properties(Flavor::Legacy).unwrap();
        assert!(legacy.contains(&("CPUShares", SdValue::U64(256))));
        assert!(legacy.contains(&("MemoryLimit", SdValue::U64(512 << 20))));
        assert!(legacy.contains(&("BlockIOWeight", SdValue::U64(300))));
    }

    #[test]
    fn allowed_cpus_need_unified() {
        let limits = set_one("AllowedCPUs", text("9")).unwrap();
        match limits.systemd_properties(Flavor::Legacy) {
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
            limits.systemd_properties(Flavor::Unified),
            Ok(vec![("AllowedCPUs", SdValue::Bytes(vec![0, 0b10]))])
        );
    }

    #[test]
    fn no_limits_no_properties() {
        for flavor in [Flavor::Legacy, Flavor::Unified] {
            assert_eq!(Limits::default().systemd_properties(flavor), Ok(vec![]));
        }
    }

    #[test]
    fn hand_built_values_are_checked_before_systemd_sees_them() {
        let limits = Limits {
            memory_max: Some(1),
            ..Limits::default()
        };
        assert_eq!(
            limits.systemd_properties(Flavor::Unified),
            Err(LimitError::Invalid(
                "MemoryMax 1: must be at least 4096 bytes (one page)".into()
            ))
        );
        let limits = Limits {
            allowed_cpus: Some("x".into()),
            ..Limits::default()
        };
        assert!(matches!(
            limits.systemd_properties(Flavor::Unified),
            Err(LimitError::Invalid(_))
        ));
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
        for key in KEYS {
            assert!(is_limit_key(key), "{key}");
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
        let keys: Vec<_> = entries.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, KEYS);
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
        assert_eq!(limits.tasks_max, Some(10));
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
            limits,
            Limits {
                cpu_shares: Some(256),
                memory_max: Some(2 << 30),
                allowed_cpus: Some("1".into()),
                ..Limits::default()
            }
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
            parsed,
            Limits {
                memory_max: Some(512 << 20),
                cpu_quota: Some(25),
                allowed_cpus: Some("0-1".into()),
                ..Limits::default()
            }
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
