//! Limit values as people write them: sizes, percents, CPU lists and whole numbers, and
//! the checks each kind of value gets before berth keeps it.

use crate::names::{shown, shown_bare};
use std::fmt::Write as _;

use super::RawValue;

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

/// What a limit's value is; decides how it is parsed, checked, kept and shown.
///
/// Numbers are kept as [`RawValue::Unsigned`], CPU lists as normalized
/// [`RawValue::Text`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A whole number from the first bound to the second, both included.
    Between(u64, u64),
    /// Bytes, from one page up to the largest finite limit; text like "512M".
    Size,
    /// At least one, finite; the word says what is counted ("tasks").
    Count(&'static str),
    /// Percent of one CPU: 25 is a quarter, 200 is two CPUs; text like "25%".
    CpuPercent,
    /// CPU numbers and ranges, kept as text like "0-1,3".
    CpuList,
}

/// How `berthctl status` writes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Show {
    /// Exact binary units, "64M", so the text can be given back to `--memory`.
    Size,
    /// "25%".
    Percent,
    /// The number as it is.
    Plain,
    /// The text as it is.
    Text,
}

impl Kind {
    /// Checks a value and returns it in the form berth keeps. Errors say what is wrong
    /// or expected, without the key and value: the caller puts those in front.
    pub fn parse(self, value: &RawValue) -> Result<RawValue, String> {
        match self {
            Kind::Between(min, max) => between(value, min, max).map(RawValue::Unsigned),
            Kind::Size => size(value).map(RawValue::Unsigned),
            Kind::Count(what) => count(value, what).map(RawValue::Unsigned),
            Kind::CpuPercent => cpu_percent(value).map(RawValue::Unsigned),
            Kind::CpuList => cpu_list(value).map(RawValue::Text),
        }
    }

    /// A valid value of the kind, in the text form a user would type, for tests that
    /// walk the table.
    #[cfg(test)]
    pub(crate) fn sample(self) -> RawValue {
        RawValue::Text(match self {
            Kind::Between(min, _) => min.to_string(),
            Kind::Size => "64M".into(),
            Kind::Count(_) => "32".into(),
            Kind::CpuPercent => "25%".into(),
            Kind::CpuList => "3,0-1".into(),
        })
    }

    pub fn show(self) -> Show {
        match self {
            Kind::Size => Show::Size,
            Kind::CpuPercent => Show::Percent,
            Kind::CpuList => Show::Text,
            Kind::Between(..) | Kind::Count(_) => Show::Plain,
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

fn size(value: &RawValue) -> Result<u64, String> {
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

fn count(value: &RawValue, what: &str) -> Result<u64, String> {
    let n = unsigned(value, |s| {
        whole_number(s, &format!("expected a whole number of {what}"))
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

fn cpu_percent(value: &RawValue) -> Result<u64, String> {
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

fn cpu_list(value: &RawValue) -> Result<String, String> {
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
        _ => return Err(format!("unknown unit {} (use K, M, G or T)", shown(unit))),
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
            if bytes.is_multiple_of(1 << shift) {
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
                    format!("{} is not a CPU number or range ({HINT})", shown(item))
                });
            }
            match s.parse::<u32>() {
                Ok(n) if n < CPUS_MAX => Ok(n),
                _ => Err(format!(
                    "CPU {} is out of range (CPU numbers go up to {})",
                    shown_bare(s),
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
                "the range {} runs backwards (write \"{last}-{first}\")",
                shown(item)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn kinds_keep_numbers_as_unsigned_and_lists_as_text() {
        let signed = RawValue::Signed(300);
        assert_eq!(
            Kind::Between(10, 1000).parse(&signed),
            Ok(RawValue::Unsigned(300))
        );
        assert_eq!(
            Kind::Count("tasks").parse(&signed),
            Ok(RawValue::Unsigned(300))
        );
        assert_eq!(Kind::CpuPercent.parse(&signed), Ok(RawValue::Unsigned(300)));
        assert_eq!(
            Kind::Size.parse(&RawValue::Text("64M".into())),
            Ok(RawValue::Unsigned(64 << 20))
        );
        assert_eq!(
            Kind::CpuList.parse(&RawValue::Text("1,0".into())),
            Ok(RawValue::Text("0-1".into()))
        );
        assert_eq!(
            Kind::Count("cats").parse(&RawValue::Text("x".into())),
            Err("expected a whole number of cats".into())
        );
    }
}
