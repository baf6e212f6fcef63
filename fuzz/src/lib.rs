//! What the fuzz targets share: the small text formats their inputs are written in (so
//! the seed corpus in fuzz/corpus can be read and written by hand), and the inverse
//! functions the properties are checked with.
//!
//! Inputs are text, one entry a line:
//!
//! - limits: `KEY=VALUE`, where VALUE is `u:N` (an unsigned number, D-Bus `t`), `i:N`
//!   (a signed one, `x`) or else text (`s`): `MemoryMax=512M`, `TasksMax=u:32`.
//! - options: `KEY TYPE VALUE` as busctl writes a{sv} entries: TYPE is one of `s`, `b`,
//!   `y`, `n`, `q`, `i`, `u`, `x`, `t`, `d`, `as` (VALUE is the elements separated by
//!   single spaces, none for an empty array) or `au`; a leading `v` wraps the value in
//!   one more variant (`vs`, `vas`). `MemoryMax s 64M`, `Command as /bin/sh -c true`.
//!
//! Lines that do not fit the format are skipped, so every input means something.

use std::collections::HashMap;

use berth::limits::RawValue;
use zbus::zvariant::{OwnedValue, Value};

/// The longest error message a parser may return, whatever it was given. The parsers cut
/// what they quote of the input (`Shown`, `names::shown`), because a D-Bus caller can
/// send megabytes and the message goes to the journal and back over the bus.
pub const MESSAGE_MAX: usize = 1024;

/// The input as text: invalid UTF-8 is replaced, as a str is all the parsers take.
pub fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `KEY=VALUE` lines (see the module documentation).
pub fn limit_pairs(text: &str) -> Vec<(String, RawValue)> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            let value = if let Some(n) = value.strip_prefix("u:") {
                RawValue::Unsigned(n.parse().ok()?)
            } else if let Some(n) = value.strip_prefix("i:") {
                RawValue::Signed(n.parse().ok()?)
            } else {
                RawValue::Text(value.to_owned())
            };
            Some((key.to_owned(), value))
        })
        .collect()
}

/// `KEY TYPE VALUE` lines as an a{sv} dict; a later line for a key replaces an earlier
/// one, as in a D-Bus dict read into a HashMap.
pub fn option_dict(text: &str) -> HashMap<String, OwnedValue> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ' ');
            let (key, kind) = (parts.next()?, parts.next()?);
            let value = parts.next().unwrap_or("");
            let value = variant(kind, value)?;
            Some((key.to_owned(), OwnedValue::try_from(value).ok()?))
        })
        .collect()
}

fn variant(kind: &str, value: &str) -> Option<Value<'static>> {
    if let Some(inner) = kind.strip_prefix('v') {
        return Some(Value::Value(Box::new(variant(inner, value)?)));
    }
    let elements = || value.split(' ').filter(|e| !e.is_empty());
    Some(match kind {
        "s" => Value::from(value.to_owned()),
        "b" => Value::Bool(value.parse().ok()?),
        "y" => Value::U8(value.parse().ok()?),
        "n" => Value::I16(value.parse().ok()?),
        "q" => Value::U16(value.parse().ok()?),
        "i" => Value::I32(value.parse().ok()?),
        "u" => Value::U32(value.parse().ok()?),
        "x" => Value::I64(value.parse().ok()?),
        "t" => Value::U64(value.parse().ok()?),
        "d" => Value::F64(value.parse().ok()?),
        "as" => Value::from(elements().map(str::to_owned).collect::<Vec<_>>()),
        "au" => Value::from(
            elements()
                .map(|e| e.parse::<u32>().ok())
                .collect::<Option<Vec<_>>>()?,
        ),
        _ => return None,
    })
}

/// The bytes a label made by `names::escape_path_label` stands for, or None if it is not
/// one that function can produce: `_xx` (lowercase hex) for an escaped byte, letters as
/// they are, digits as they are but not in first place, and `_` alone for "".
pub fn unescape_path_label(label: &str) -> Option<Vec<u8>> {
    if label == "_" {
        return Some(Vec::new());
    }
    let bytes = label.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'_' {
            let hex = label.get(i + 1..i + 3)?;
            if hex.bytes().any(|h| h.is_ascii_uppercase()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    Some(out)
}

/// systemd's unit_name_unescape followed by unit_name_path_unescape's '-' to '/': the
/// name a `machine-NAME.scope` stands for, or None if the unit is not of that form.
pub fn unescape_scope_unit(unit: &str) -> Option<Vec<u8>> {
    let middle = unit.strip_prefix("machine-")?.strip_suffix(".scope")?;
    let bytes = middle.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                if bytes.get(i + 1) != Some(&b'x') {
                    return None;
                }
                out.push(u8::from_str_radix(middle.get(i + 2..i + 4)?, 16).ok()?);
                i += 4;
            }
            b'-' => {
                out.push(b'/');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// systemd's unit_name_is_valid for a plain unit name: shorter than UNIT_NAME_MAX (256),
/// only [A-Za-z0-9:_.\\-], a prefix before the suffix, and a known suffix.
pub fn unit_name_is_valid(unit: &str) -> bool {
    const UNIT_NAME_MAX: usize = 256;
    let Some((prefix, _)) = unit.rsplit_once('.') else {
        return false;
    };
    unit.len() < UNIT_NAME_MAX
        && !prefix.is_empty()
        && unit.ends_with(".scope")
        && unit
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.\\".contains(&b))
}
