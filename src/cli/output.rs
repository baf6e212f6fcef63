//! Rendering of what berthd reports: tables, sizes, durations, times and JSON.

use std::collections::HashMap;

use comfy_table::{Table, presets::NOTHING};
use serde_json::{Map, Value as Json, json};
use zbus::zvariant::{OwnedValue, Value};

use crate::client::UNKNOWN_FIGURE;
use crate::limits::{self, Show};

/// A header row and data rows in columns separated by two spaces, with no borders, so the
/// output reads like `machinectl list` and stays easy to cut up with awk.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut table = Table::new();
    table.load_style(NOTHING).force_no_tty();
    table.set_header(header.to_vec());
    for row in rows {
        table.add_row(row.clone());
    }
    let last = header.len().saturating_sub(1);
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 2 }));
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `Key: value` lines with the values lined up in one column.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        out.push_str(format!("{label:<width$} {value}").trim_end());
        out.push('\n');
    }
    out
}

const UNITS: [&str; 7] = ["B", "K", "M", "G", "T", "P", "E"];

/// A byte count in the largest binary unit that divides it exactly ("64M", "1536K"), so the
/// text can be given back to `--memory` and mean the same number.
pub fn size_exact(bytes: u64) -> String {
    if bytes == u64::MAX {
        return "infinity".into();
    }
    limits::format_size(bytes)
}

/// A byte count rounded for reading ("12.3M", "512B").
pub fn size_human(bytes: u64) -> String {
    let mut unit = 0;
    let mut scaled = bytes as f64;
    while scaled >= 1024.0 && unit < UNITS.len() - 1 {
        scaled /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else if scaled < 10.0 {
        // One decimal only where it carries information, as `systemctl status` does.
        format!("{scaled:.1}{}", UNITS[unit])
    } else {
        format!("{scaled:.0}{}", UNITS[unit])
    }
}

/// CPU time in the style of `systemctl status` ("2.345s", "3min 4.567s", "1h 2min 3s").
pub fn duration_ns(ns: u64) -> String {
    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;
    const MIN: u64 = 60 * S;
    const H: u64 = 60 * MIN;
    const D: u64 = 24 * H;
    match ns {
        0 => "0".into(),
        n if n < US => format!("{n}ns"),
        n if n < MS => format!("{}us", n / US),
        n if n < S => format!("{}ms", n / MS),
        n if n < MIN => format!("{}.{:03}s", n / S, n % S / MS),
        n if n < H => format!("{}min {}.{:03}s", n / MIN, n % MIN / S, n % S / MS),
        n if n < D => format!("{}h {}min {}s", n / H, n % H / MIN, n % MIN / S),
        n => format!("{}d {}h {}min", n / D, n % D / H, n % H / MIN),
    }
}

/// Microseconds since the epoch as "YYYY-MM-DD HH:MM:SS UTC".
pub fn timestamp_usec(usec: u64) -> String {
    let secs = usec / 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`),
/// which spares a date-time dependency for one line of output.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// "MemoryMax=64M CPUShares=256 TasksMax=32", or "-" when nothing is limited.
pub fn limits_line(mut entries: Vec<(&str, &Value<'_>)>) -> String {
    // Known limits in the table's reading order (memory first), then keys this berthctl
    // does not know, alphabetically.
    entries.sort_by_key(|(key, _)| (limits::find(key).map_or(u16::MAX, |l| l.rank), *key));
    let parts: Vec<String> = entries
        .into_iter()
        .map(|(key, value)| format!("{key}={}", limit_value(key, value)))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// The entries of an `a{sv}` whose keys are strings.
pub fn dict_entries<'a, 'v>(value: &'a Value<'v>) -> Vec<(&'a str, &'a Value<'v>)> {
    match unwrap_variant(value) {
        Value::Dict(dict) => dict
            .iter()
            .filter_map(|(k, v)| match unwrap_variant(k) {
                Value::Str(k) => Some((k.as_str(), v)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn limit_value(key: &str, value: &Value<'_>) -> String {
    let show = limits::find(key).map_or(Show::Plain, |limit| limit.kind.show());
    match (show, as_u64(value)) {
        (_, Some(u64::MAX)) => "infinity".into(),
        (Show::Size, Some(n)) => size_exact(n),
        (Show::Percent, Some(n)) => format!("{n}%"),
        (Show::Plain | Show::Text, Some(n)) => n.to_string(),
        (_, None) => match unwrap_variant(value) {
            Value::Str(s) => s.as_str().to_owned(),
            other => other.to_string(),
        },
    }
}

fn unwrap_variant<'a, 'v>(value: &'a Value<'v>) -> &'a Value<'v> {
    match value {
        Value::Value(inner) => unwrap_variant(inner),
        other => other,
    }
}

/// Any unsigned integer, or a non-negative signed one; the daemon may pick `u` or `t`.
pub fn as_u64(value: &Value<'_>) -> Option<u64> {
    match unwrap_variant(value) {
        Value::U8(n) => Some(u64::from(*n)),
        Value::U16(n) => Some(u64::from(*n)),
        Value::U32(n) => Some(u64::from(*n)),
        Value::U64(n) => Some(*n),
        Value::I16(n) => u64::try_from(*n).ok(),
        Value::I32(n) => u64::try_from(*n).ok(),
        Value::I64(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// A D-Bus value as JSON: dictionaries become objects, structs and arrays become arrays.
pub fn to_json(value: &Value<'_>) -> Json {
    #[allow(unreachable_patterns)] // Maybe exists only when another crate enables gvariant.
    match value {
        Value::U8(n) => json!(n),
        Value::Bool(b) => json!(b),
        Value::I16(n) => json!(n),
        Value::U16(n) => json!(n),
        Value::I32(n) => json!(n),
        Value::U32(n) => json!(n),
        Value::I64(n) => json!(n),
        Value::U64(n) => json!(n),
        Value::F64(n) => json!(n),
        Value::Str(s) => json!(s.as_str()),
        Value::Signature(s) => json!(s.to_string()),
        Value::ObjectPath(p) => json!(p.as_str()),
        Value::Value(inner) => to_json(inner),
        Value::Array(array) => Json::Array(array.iter().map(to_json).collect()),
        Value::Dict(dict) => Json::Object(
            dict.iter()
                .map(|(k, v)| {
                    let key = match unwrap_variant(k) {
                        Value::Str(s) => s.as_str().to_owned(),
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Value::Structure(s) => Json::Array(s.fields().iter().map(to_json).collect()),
        Value::Fd(fd) => json!(fd.to_string()),
        other => json!(other.to_string()),
    }
}

/// `CPUUsageNSec` → `cpu_usage_nsec`; other names split before each capitalised word
/// (`IOReadBytes` → `io_read_bytes`).
pub fn json_key(property: &str) -> String {
    if let Some(known) = KNOWN_KEYS.iter().find(|(p, _)| *p == property) {
        return known.1.to_owned();
    }
    let chars: Vec<char> = property.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

const KNOWN_KEYS: [(&str, &str); 2] = [
    ("CPUUsageNSec", "cpu_usage_nsec"),
    ("RootDirectory", "root_directory"),
];

/// A machine's `PortForwards` (`a(sqq)`) as (protocol, host port, machine port).
pub fn port_forwards(value: &Value<'_>) -> Vec<(String, u64, u64)> {
    let Value::Array(array) = unwrap_variant(value) else {
        return Vec::new();
    };
    array
        .iter()
        .filter_map(|item| match unwrap_variant(item) {
            Value::Structure(s) => match s.fields() {
                [proto, host, machine] => match unwrap_variant(proto) {
                    Value::Str(p) => Some((p.as_str().to_owned(), as_u64(host)?, as_u64(machine)?)),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The Binds property's (source, target, read-only) triples.
pub fn binds(value: &Value<'_>) -> Vec<(String, String, bool)> {
    let Value::Array(array) = unwrap_variant(value) else {
        return Vec::new();
    };
    let text = |v: &Value<'_>| match unwrap_variant(v) {
        Value::Str(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    array
        .iter()
        .filter_map(|item| match unwrap_variant(item) {
            Value::Structure(s) => match s.fields() {
                [source, target, Value::Bool(ro)] => Some((text(source)?, text(target)?, *ro)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// "/srv/db:/var/lib/db /etc/ssl:/etc/ssl (ro)", or "-".
fn binds_line(value: &Value<'_>) -> String {
    let words: Vec<String> = binds(value)
        .iter()
        .map(|(source, target, ro)| format!("{source}:{target}{}", if *ro { " (ro)" } else { "" }))
        .collect();
    if words.is_empty() {
        "-".into()
    } else {
        words.join(" ")
    }
}

/// "tcp:8080:80 udp:5353:53", as `--port` takes them, or "-".
pub fn port_forwards_line(value: Option<&Value<'_>>) -> String {
    let forwards = value.map(port_forwards).unwrap_or_default();
    if forwards.is_empty() {
        return "-".into();
    }
    let words: Vec<String> = forwards
        .iter()
        .map(|(proto, host, machine)| format!("{proto}:{host}:{machine}"))
        .collect();
    words.join(" ")
}

/// The address of a CIDR ("10.0.3.17/24" → "10.0.3.17"), or "-" for none.
pub fn ipv4(cidr: &str) -> String {
    match cidr.split('/').next() {
        Some(address) if !address.is_empty() => address.to_owned(),
        _ => "-".into(),
    }
}

/// A byte counter read both ways, "1.2M (1234567 bytes)", since a rounded figure is
/// what one reads and the exact one what one compares; just the bytes below 1K.
pub fn bytes_counted(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{} ({bytes} bytes)", size_human(bytes))
    }
}

/// One row of `network list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkRow {
    pub name: String,
    pub subnet: String,
    pub gateway: String,
    pub bridge: String,
    pub nat: bool,
    pub dhcp: bool,
    /// Sorted.
    pub machines: Vec<String>,
    pub path: String,
}

/// Up to this many machines are named in `network list`; more are counted, so one busy
/// network does not widen the whole table.
const MACHINES_NAMED: usize = 3;

impl NetworkRow {
    fn cells(&self) -> Vec<String> {
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_owned();
        let or_dash = |s: &str| if s.is_empty() { "-" } else { s }.to_owned();
        let machines = match self.machines.len() {
            0 => "-".to_owned(),
            n if n <= MACHINES_NAMED => self.machines.join(","),
            n => format!("{n} machines"),
        };
        vec![
            self.name.clone(),
            or_dash(&self.subnet),
            or_dash(&self.gateway),
            or_dash(&self.bridge),
            yes_no(self.nat),
            yes_no(self.dhcp),
            machines,
        ]
    }

    pub fn to_json(&self) -> Json {
        json!({
            "name": self.name,
            "subnet": self.subnet,
            "gateway": self.gateway,
            "bridge": self.bridge,
            "nat": self.nat,
            "dhcp": self.dhcp,
            "machines": self.machines,
            "path": self.path,
        })
    }
}

pub fn network_table(rows: &[NetworkRow]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(NetworkRow::cells).collect();
    table(
        &[
            "NAME", "SUBNET", "GATEWAY", "BRIDGE", "NAT", "DHCP", "MACHINES",
        ],
        &cells,
    )
}

/// Every property of a machine as one JSON object with snake_case keys. Unknown live
/// figures and a stopped machine's leader become null, and `Limits` keeps its D-Bus key
/// names, since those are what `--limit KEY=VALUE` takes.
pub fn status_json(props: &HashMap<String, OwnedValue>) -> Json {
    let mut names: Vec<&String> = props.keys().collect();
    names.sort();
    let mut object = Map::new();
    for name in names {
        let value: &Value<'_> = &props[name];
        let json = match (name.as_str(), as_u64(value)) {
            ("Leader", Some(0)) => Json::Null,
            (n, Some(UNKNOWN_FIGURE)) if crate::api::LIVE_FIGURES.contains(&n) => Json::Null,
            // Named fields rather than the bare [proto, host, machine] of a struct.
            ("PortForwards", _) => Json::Array(
                port_forwards(value)
                    .into_iter()
                    .map(|(protocol, host_port, machine_port)| {
                        json!({
                            "protocol": protocol,
                            "host_port": host_port,
                            "machine_port": machine_port,
                        })
                    })
                    .collect(),
            ),
            ("Binds", _) => Json::Array(
                binds(value)
                    .into_iter()
                    .map(|(source, target, read_only)| {
                        json!({"source": source, "target": target, "read_only": read_only})
                    })
                    .collect(),
            ),
            _ => to_json(value),
        };
        object.insert(json_key(name), json);
    }
    Json::Object(object)
}

/// The human `status` view: identity first, then limits and live figures ("-" if unknown).
pub fn status_text(props: &HashMap<String, OwnedValue>) -> String {
    let text = |key: &str| match props.get(key).map(|v| unwrap_variant(v)) {
        Some(Value::Str(s)) if !s.is_empty() => s.as_str().to_owned(),
        Some(Value::Str(_)) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    };
    let number = |key: &str| props.get(key).and_then(|v| as_u64(v));
    let flag = |key: &str| match props.get(key).map(|v| unwrap_variant(v)) {
        Some(Value::Bool(true)) => Some(true),
        Some(Value::Bool(false)) => Some(false),
        _ => None,
    };
    let live = |key: &str| number(key).filter(|n| *n != UNKNOWN_FIGURE);

    let mut state = text("State");
    for (key, word) in [("Autostart", "autostart"), ("Ephemeral", "ephemeral")] {
        if flag(key) == Some(true) {
            state.push_str(&format!(", {word}"));
        }
    }
    let mut lines: Vec<(&str, String)> = vec![
        ("Name", text("Name")),
        ("State", state),
        (
            "Leader",
            match number("Leader") {
                Some(0) | None => "-".into(),
                Some(pid) => pid.to_string(),
            },
        ),
        ("Unit", text("Unit")),
        ("Template", text("Template")),
        ("Hostname", text("Hostname")),
        ("Root", text("RootDirectory")),
        (
            "Created",
            match number("CreatedAt") {
                Some(0) | None => "-".into(),
                Some(usec) => timestamp_usec(usec),
            },
        ),
    ];
    if let Some(Value::Str(problem)) = props.get("Problem").map(|v| unwrap_variant(v))
        && !problem.is_empty()
    {
        lines.insert(2, ("Problem", problem.as_str().to_owned()));
    }
    if let Some(Value::Str(users)) = props.get("PrivateUsers").map(|v| unwrap_variant(v))
        && users.as_str() != "no"
    {
        lines.push((
            "Users",
            format!("unprivileged, host IDs {}", users.as_str()),
        ));
    }
    let mut network = text("Network");
    let bridge = text("Bridge");
    if network == "bridge" && bridge != "-" {
        network.push_str(&format!(" ({bridge})"));
    }
    lines.push(("Network", network));
    lines.push(("Address", text("Address")));
    lines.push((
        "Port forwards",
        port_forwards_line(props.get("PortForwards").map(|v| &**v)),
    ));
    // Only a running bridged machine has a veth, and so a link and its counters.
    let link = text("HostInterface");
    if link != "-" {
        lines.push(("Link", link));
        let counted = |key: &str| live(key).map_or("-".into(), bytes_counted);
        lines.push(("RX", counted("RxBytes")));
        lines.push(("TX", counted("TxBytes")));
    }
    if let Some(value) = props.get("Binds") {
        lines.push(("Binds", binds_line(value)));
    }
    if let Some(size) = number("TmpSize") {
        let shown = match size {
            0 => "half of RAM".into(),
            n => size_exact(n),
        };
        lines.push(("Tmp size", shown));
    }
    if let Some(quota) = number("DiskQuota").filter(|&q| q > 0) {
        let used = live("DiskUsage").map_or("-".into(), size_human);
        lines.push(("Disk", format!("{used} used of {}", size_exact(quota))));
    }
    if let Some(Value::I32(signal)) = props.get("HaltSignal").map(|v| unwrap_variant(v)) {
        lines.push(("Halt signal", super::parse::signal_name(*signal)));
    }
    if let Some(usec) = number("StopTimeoutUSec") {
        lines.push(("Stop timeout", duration_ns(usec.saturating_mul(1000))));
    }
    let limits = props
        .get("Limits")
        .map_or_else(|| "-".to_owned(), |v| limits_line(dict_entries(v)));
    lines.push(("Limits", limits));
    // A figure berthd does not know (UNKNOWN_FIGURE: machine not running, accounting
    // off) reads "-", never as a number.
    let shown = |figure: Option<u64>, show: fn(u64) -> String| figure.map_or("-".into(), show);
    lines.push(("CPU usage", shown(live("CPUUsageNSec"), duration_ns)));
    lines.push(("Memory current", shown(live("MemoryCurrent"), size_human)));
    lines.push((
        "Tasks current",
        shown(live("TasksCurrent"), |n| n.to_string()),
    ));
    let io = match (live("IOReadBytes"), live("IOWriteBytes")) {
        (Some(read), Some(written)) => {
            format!("{} read, {} written", size_human(read), size_human(written))
        }
        _ => "-".into(),
    };
    lines.push(("IO", io));
    key_values(&lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::Dict;

    #[test]
    fn table_columns_line_up_without_borders() {
        let out = table(
            &["NAME", "STATE", "LEADER"],
            &[
                vec!["web".into(), "running".into(), "4242".into()],
                vec!["database".into(), "stopped".into(), "-".into()],
            ],
        );
        assert_eq!(
            out,
            "NAME      STATE    LEADER\n\
             web       running  4242\n\
             database  stopped  -\n"
        );
    }

    #[test]
    fn table_with_no_rows_is_just_the_header() {
        assert_eq!(table(&["A", "B"], &[]), "A  B\n");
    }

    #[test]
    fn key_value_alignment() {
        let out = key_values(&[("Name", "web".into()), ("Memory current", "1.0M".into())]);
        assert_eq!(out, "Name:           web\nMemory current: 1.0M\n");
    }

    #[test]
    fn exact_sizes() {
        assert_eq!(size_exact(0), "0");
        assert_eq!(size_exact(1000), "1000");
        assert_eq!(size_exact(1024), "1K");
        assert_eq!(size_exact(64 << 20), "64M");
        assert_eq!(size_exact(1536 << 10), "1536K");
        assert_eq!(size_exact(3 << 30), "3G");
        assert_eq!(size_exact(1 << 40), "1T");
        assert_eq!(size_exact(u64::MAX), "infinity");
        // Never a unit berthd's parser lacks: P and E would not go back into --memory.
        assert_eq!(size_exact(1 << 50), "1024T");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(size_human(0), "0B");
        assert_eq!(size_human(512), "512B");
        assert_eq!(size_human(1024), "1.0K");
        assert_eq!(size_human(1536), "1.5K");
        assert_eq!(size_human(12_900_000), "12M");
        assert_eq!(size_human(5 << 30), "5.0G");
        assert_eq!(size_human(700 << 20), "700M");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ns(0), "0");
        assert_eq!(duration_ns(999), "999ns");
        assert_eq!(duration_ns(45_000), "45us");
        assert_eq!(duration_ns(12_345_678), "12ms");
        assert_eq!(duration_ns(2_345_000_000), "2.345s");
        assert_eq!(duration_ns(184_567_000_000), "3min 4.567s");
        assert_eq!(duration_ns(3_723_000_000_000), "1h 2min 3s");
        assert_eq!(duration_ns(90_061_000_000_000), "1d 1h 1min");
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp_usec(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            timestamp_usec(951_782_400_000_000),
            "2000-02-29 00:00:00 UTC"
        );
        assert_eq!(
            timestamp_usec(1_700_000_000_123_456),
            "2023-11-14 22:13:20 UTC"
        );
        assert_eq!(
            timestamp_usec(4_102_444_799_000_000),
            "2099-12-31 23:59:59 UTC"
        );
    }

    fn owned(v: Value<'static>) -> OwnedValue {
        OwnedValue::try_from(v).unwrap()
    }

    /// Each limit of the table is shown as its kind says, in the table's reading order.
    #[test]
    fn every_table_limit_is_shown_by_its_kind() {
        let (n, list) = (Value::U64(1 << 20), Value::from("0-1"));
        for limit in crate::limits::TABLE {
            let (value, want) = match limit.kind.show() {
                Show::Size => (&n, "1M".to_owned()),
                Show::Percent => (&n, format!("{}%", 1 << 20)),
                Show::Plain => (&n, (1 << 20).to_string()),
                Show::Text => (&list, "0-1".to_owned()),
            };
            assert_eq!(
                limits_line(vec![(limit.key, value)]),
                format!("{}={want}", limit.key)
            );
        }
        let ranked: Vec<_> = crate::limits::by_rank().iter().map(|l| l.key).collect();
        let mut given: Vec<_> = crate::limits::TABLE.iter().map(|l| (l.key, &n)).collect();
        given.reverse();
        let line = limits_line(given);
        let shown: Vec<_> = line
            .split(' ')
            .map(|kv| kv.split('=').next().unwrap())
            .collect();
        assert_eq!(shown, ranked);
    }

    #[test]
    fn limits_in_fixed_order_with_compact_sizes() {
        let (tasks, shares, memory) = (Value::U64(32), Value::U64(256), Value::U64(64 << 20));
        assert_eq!(
            limits_line(vec![
                ("TasksMax", &tasks),
                ("CPUShares", &shares),
                ("MemoryMax", &memory)
            ]),
            "MemoryMax=64M CPUShares=256 TasksMax=32"
        );
        let (one, cpus, quota, inf) = (
            Value::U64(1),
            Value::from("0-1"),
            Value::U32(25),
            Value::U64(u64::MAX),
        );
        assert_eq!(
            limits_line(vec![
                ("Zeta", &one),
                ("AllowedCPUs", &cpus),
                ("CPUQuota", &quota),
                ("MemoryLimit", &inf)
            ]),
            "MemoryLimit=infinity CPUQuota=25% AllowedCPUs=0-1 Zeta=1"
        );
        assert_eq!(limits_line(Vec::new()), "-");
    }

    #[test]
    fn json_keys() {
        assert_eq!(json_key("Name"), "name");
        assert_eq!(json_key("CPUUsageNSec"), "cpu_usage_nsec");
        assert_eq!(json_key("RootDirectory"), "root_directory");
        assert_eq!(json_key("IOReadBytes"), "io_read_bytes");
        assert_eq!(json_key("CreatedAt"), "created_at");
        assert_eq!(json_key("HostInterface"), "host_interface");
    }

    fn machine_props() -> HashMap<String, OwnedValue> {
        let mut dict = Dict::new(
            &zbus::zvariant::Signature::Str,
            &zbus::zvariant::Signature::Variant,
        );
        for (k, v) in [("MemoryMax", 64u64 << 20), ("TasksMax", 32)] {
            dict.append(Value::from(k), Value::Value(Box::new(Value::U64(v))))
                .unwrap();
        }
        dict.append(
            Value::from("AllowedCPUs"),
            Value::Value(Box::new(Value::from("0-1"))),
        )
        .unwrap();
        HashMap::from([
            ("Name".to_owned(), owned(Value::from("web"))),
            ("State".to_owned(), owned(Value::from("running"))),
            ("Leader".to_owned(), owned(Value::U32(4242))),
            ("Unit".to_owned(), owned(Value::from("machine-web.scope"))),
            ("Template".to_owned(), owned(Value::from("debian"))),
            ("Hostname".to_owned(), owned(Value::from("web"))),
            (
                "RootDirectory".to_owned(),
                owned(Value::from("/var/lib/berth/machines/web")),
            ),
            ("Limits".to_owned(), owned(Value::Dict(dict))),
            (
                "CreatedAt".to_owned(),
                owned(Value::U64(1_700_000_000_000_000)),
            ),
            ("Autostart".to_owned(), owned(Value::Bool(true))),
            ("Ephemeral".to_owned(), owned(Value::Bool(false))),
            ("CPUUsageNSec".to_owned(), owned(Value::U64(2_345_000_000))),
            ("MemoryCurrent".to_owned(), owned(Value::U64(u64::MAX))),
            ("TasksCurrent".to_owned(), owned(Value::U64(3))),
            ("Network".to_owned(), owned(Value::from("bridge"))),
            ("Bridge".to_owned(), owned(Value::from("lab"))),
            ("Address".to_owned(), owned(Value::from("10.77.0.50/24"))),
            (
                "PortForwards".to_owned(),
                owned(Value::from(vec![
                    ("tcp".to_owned(), 8080u16, 80u16),
                    ("udp".to_owned(), 5353, 53),
                ])),
            ),
            (
                "Addresses".to_owned(),
                owned(Value::from(vec!["10.77.0.50/24"])),
            ),
            ("HostInterface".to_owned(), owned(Value::from("vb-web"))),
            ("RxBytes".to_owned(), owned(Value::U64(1_234_567))),
            ("TxBytes".to_owned(), owned(Value::U64(UNKNOWN_FIGURE))),
        ])
    }

    /// The same machine stopped, on no network: no link, no counters.
    fn stopped_props() -> HashMap<String, OwnedValue> {
        let mut props = machine_props();
        for (key, value) in [
            ("State", Value::from("stopped")),
            ("Leader", Value::U32(0)),
            ("Network", Value::from("none")),
            ("Bridge", Value::from("")),
            ("Address", Value::from("")),
            (
                "PortForwards",
                Value::from(Vec::<(String, u16, u16)>::new()),
            ),
            ("Addresses", Value::from(Vec::<String>::new())),
            ("HostInterface", Value::from("")),
            ("RxBytes", Value::U64(UNKNOWN_FIGURE)),
        ] {
            props.insert(key.to_owned(), owned(value));
        }
        props
    }

    #[test]
    fn status_text_lines() {
        assert_eq!(
            status_text(&machine_props()),
            "Name:           web\n\
             State:          running, autostart\n\
             Leader:         4242\n\
             Unit:           machine-web.scope\n\
             Template:       debian\n\
             Hostname:       web\n\
             Root:           /var/lib/berth/machines/web\n\
             Created:        2023-11-14 22:13:20 UTC\n\
             Network:        bridge (lab)\n\
             Address:        10.77.0.50/24\n\
             Port forwards:  tcp:8080:80 udp:5353:53\n\
             Link:           vb-web\n\
             RX:             1.2M (1234567 bytes)\n\
             TX:             -\n\
             Limits:         MemoryMax=64M AllowedCPUs=0-1 TasksMax=32\n\
             CPU usage:      2.345s\n\
             Memory current: -\n\
             Tasks current:  3\n\
             IO:             -\n"
        );
        let stopped = status_text(&stopped_props());
        assert!(
            stopped.contains(
                "\nNetwork:        none\n\
                 Address:        -\n\
                 Port forwards:  -\n\
                 Limits:"
            ),
            "{stopped}"
        );
        assert!(
            !stopped.contains("Link") && !stopped.contains("RX"),
            "{stopped}"
        );
    }

    #[test]
    fn network_table_lines_up() {
        let row = |name: &str, subnet: &str, nat, dhcp, machines: &[&str]| NetworkRow {
            name: name.into(),
            subnet: subnet.into(),
            gateway: subnet.replace(".0/24", ".1"),
            bridge: name.into(),
            nat,
            dhcp,
            machines: machines.iter().map(|m| m.to_string()).collect(),
            path: format!("/org/berth/Berth1/network/{name}"),
        };
        let rows = [
            row("berth0", "10.0.3.0/24", true, true, &["db", "web"]),
            row("lab", "10.77.0.0/24", false, false, &[]),
            row("busy", "10.0.4.0/24", true, true, &["a", "b", "c", "d"]),
        ];
        assert_eq!(
            network_table(&rows),
            "NAME    SUBNET        GATEWAY    BRIDGE  NAT  DHCP  MACHINES\n\
             berth0  10.0.3.0/24   10.0.3.1   berth0  yes  yes   db,web\n\
             lab     10.77.0.0/24  10.77.0.1  lab     no   no    -\n\
             busy    10.0.4.0/24   10.0.4.1   busy    yes  yes   4 machines\n"
        );
        let json = rows[0].to_json();
        assert_eq!(json["machines"], json!(["db", "web"]));
        assert_eq!(json["gateway"], "10.0.3.1");
        assert_eq!(json["nat"], true);
        assert_eq!(json["path"], "/org/berth/Berth1/network/berth0");
    }

    #[test]
    fn addresses_and_counters() {
        assert_eq!(ipv4("10.0.3.17/24"), "10.0.3.17");
        assert_eq!(ipv4("10.0.3.17"), "10.0.3.17");
        assert_eq!(ipv4(""), "-");
        assert_eq!(bytes_counted(0), "0 bytes");
        assert_eq!(bytes_counted(1023), "1023 bytes");
        assert_eq!(bytes_counted(1536), "1.5K (1536 bytes)");
        assert_eq!(port_forwards_line(None), "-");
    }

    #[test]
    fn status_json_object() {
        let json = status_json(&machine_props());
        assert_eq!(json["name"], "web");
        assert_eq!(json["leader"], 4242);
        assert_eq!(json["root_directory"], "/var/lib/berth/machines/web");
        assert_eq!(json["limits"]["MemoryMax"], 64u64 << 20);
        assert_eq!(json["limits"]["AllowedCPUs"], "0-1");
        assert_eq!(json["cpu_usage_nsec"], 2_345_000_000u64);
        assert_eq!(json["memory_current"], Json::Null);
        assert_eq!(json["autostart"], true);
        assert_eq!(json["network"], "bridge");
        assert_eq!(json["bridge"], "lab");
        assert_eq!(json["address"], "10.77.0.50/24");
        assert_eq!(json["addresses"], json!(["10.77.0.50/24"]));
        assert_eq!(json["host_interface"], "vb-web");
        assert_eq!(
            json["port_forwards"],
            json!([
                {"protocol": "tcp", "host_port": 8080, "machine_port": 80},
                {"protocol": "udp", "host_port": 5353, "machine_port": 53},
            ])
        );
        assert_eq!(json["rx_bytes"], 1_234_567);
        assert_eq!(json["tx_bytes"], Json::Null);
        assert_eq!(json.as_object().unwrap().len(), 22);
        assert_eq!(status_json(&stopped_props())["port_forwards"], json!([]));

        let mut stopped = machine_props();
        stopped.insert("Leader".into(), owned(Value::U32(0)));
        assert_eq!(status_json(&stopped)["leader"], Json::Null);
        assert!(status_text(&stopped).contains("\nLeader:         -\n"));
    }
}
