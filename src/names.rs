//! Machine names and the identifiers systemd and D-Bus derive from them.
//!
//! The derived strings mirror systemd's helpers byte for byte, because they end up next
//! to ones systemd produced itself: `machinectl list`, `systemctl status
//! machine-NAME.scope` and D-Bus object paths have to agree with what berth computes.

use crate::api::{JOB_PATH_PREFIX, TEMPLATE_PATH_PREFIX};
use std::fmt::Write as _;

/// A name for a one-shot run's machine when its caller gives none: `run-` and six random
/// lowercase letters and digits (2 billion names, so a clash, which creation refuses
/// anyway, is a matter of a retry).
pub fn random_run_name() -> Result<String, String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 6];
    // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(format!(
            "cannot get random bytes for a machine name: {}",
            std::io::Error::last_os_error()
        ));
    }
    // 256 = 7 * 36 + 4: the slight bias toward the first letters costs nothing here.
    let suffix: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    Ok(format!("run-{suffix}"))
}

/// Linux's HOST_NAME_MAX, which machined applies to machine names.
const NAME_MAX: usize = 64;

const NAME_RULES: &str = "machine names are 1–64 characters of letters, digits, '-' and '.', \
     with no '.' or '-' at the start or end and no '..', '.-' or '-.'";

pub use crate::api::MACHINE_PATH_PREFIX;

/// Checks a machine name against the rules systemd-machined enforces.
///
/// Current machined (checked against systemd 252's `hostname_is_valid`) wants a valid
/// hostname: letters, digits and '-' in dot-separated labels, no label starting or ending
/// with '-'. Older machined also took '_' and hyphens anywhere. berth registers its
/// machines with machined, so it accepts only names every machined version takes;
/// otherwise a machine could be created and then fail to register.
pub fn validate_machine_name(name: &str) -> Result<(), String> {
    problem(name).map_or(Ok(()), |why| {
        Err(format!(
            "invalid machine name {}: {why} ({NAME_RULES})",
            shown(name)
        ))
    })
}

fn problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the name is empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        // Underscores are the one character people reasonably expect to work, and did
        // work with older machined, so point at the replacement.
        if c == '_' {
            return Some("'_' is not allowed, use '-' instead".into());
        }
        return Some(format!("{c:?} is not allowed"));
    }
    // Only ASCII is left, so the byte length is the character count.
    if name.len() > NAME_MAX {
        return Some(format!("it is {} characters long", name.len()));
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if first == b'.' || first == b'-' {
        return Some(format!("it starts with '{}'", first as char));
    }
    if last == b'.' || last == b'-' {
        return Some(format!("it ends with '{}'", last as char));
    }
    for pair in ["..", ".-", "-."] {
        if name.contains(pair) {
            return Some(format!("it contains '{pair}'"));
        }
    }
    // systemd refuses unit names over 255 bytes, and each '-' takes four ("\x2d").
    let unit = scope_unit_name(name).len();
    if unit > UNIT_NAME_MAX {
        return Some(format!(
            "its unit name would be {unit} bytes, over systemd's {UNIT_NAME_MAX} \
             (each '-' is written \\x2d there): use fewer dashes"
        ));
    }
    None
}

/// systemd's UNIT_NAME_MAX.
const UNIT_NAME_MAX: usize = 255;

/// Quotes a name (or any value a caller sent) for an error message, cut short: a hostile
/// caller can send megabytes, and the message goes to the journal and back over the bus.
pub fn shown(name: &str) -> String {
    let (inner, cut) = escaped_cut(name);
    format!("\"{inner}\"{}", if cut { "…" } else { "" })
}

/// Like [`shown`], without the quotes, where the value is a bare word in the message
/// ("CPU 8192 is out of range").
pub fn shown_bare(name: &str) -> String {
    let (inner, cut) = escaped_cut(name);
    format!("{inner}{}", if cut { "…" } else { "" })
}

/// The value escaped as Rust's Debug does, cut to 80 characters of that escaped form
/// (not of the input: an escaped control character takes 6), and whether it was cut.
fn escaped_cut(name: &str) -> (String, bool) {
    const SHOWN_MAX: usize = 80;
    let quoted = format!("{name:?}");
    let inner = &quoted[1..quoted.len() - 1];
    match inner.char_indices().nth(SHOWN_MAX) {
        Some((cut, _)) => (inner[..cut].to_string(), true),
        None => (inner.to_string(), false),
    }
}

/// systemd's `bus_label_escape`, which `sd_bus_path_encode` uses: every byte outside
/// [A-Za-z0-9] becomes `_xx` (lowercase hex), and so does a digit in first place, so
/// "9lives" is `_39lives`. The empty string becomes `_`, as an object path element cannot
/// be empty. Matching it exactly lets C clients find a machine with `sd_bus_path_encode`.
pub fn escape_path_label(s: &str) -> String {
    if s.is_empty() {
        return "_".into();
    }
    let mut out = String::with_capacity(s.len());
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if kept_in_label(b, i) {
            out.push(b as char);
        } else {
            let _ = write!(out, "_{b:02x}");
        }
    }
    out
}

/// The inverse of [`escape_path_label`]; None for what it never makes.
pub fn unescape_path_label(label: &str) -> Option<String> {
    if label == "_" {
        return Some(String::new());
    }
    let bytes = label.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn kept_in_label(b: u8, position: usize) -> bool {
    b.is_ascii_alphabetic() || (position > 0 && b.is_ascii_digit())
}

/// The D-Bus object path of a template.
pub fn template_object_path(name: &str) -> String {
    format!("{TEMPLATE_PATH_PREFIX}/{}", escape_path_label(name))
}

/// The D-Bus object path of a network.
pub fn network_object_path(name: &str) -> String {
    format!(
        "{}/{}",
        crate::api::NETWORK_PATH_PREFIX,
        escape_path_label(name)
    )
}

/// The D-Bus object path of a Job.
pub fn job_object_path(id: u64) -> String {
    format!("{JOB_PATH_PREFIX}/{id}")
}

/// The D-Bus object path of a machine.
pub fn machine_object_path(name: &str) -> String {
    format!("{MACHINE_PATH_PREFIX}/{}", escape_path_label(name))
}

/// The scope unit machined would create for `name`: `"machine-" + unit_name_escape(name) +
/// ".scope"`, so `systemctl status` and `machinectl` show the same unit berth manages.
///
/// `unit_name_escape` keeps [A-Za-z0-9:_.], turns '/' into '-' and every other byte
/// (including '-' itself, which is why "my-box" becomes `machine-my\x2dbox.scope`) into
/// `\xNN`. A leading '.' is escaped too, so the result never looks like a hidden file.
pub fn scope_unit_name(name: &str) -> String {
    let mut out = String::with_capacity("machine-.scope".len() + name.len() * 4);
    out.push_str("machine-");
    for (i, &b) in name.as_bytes().iter().enumerate() {
        match b {
            b'.' if i == 0 => out.push_str("\\x2e"),
            b'/' => out.push('-'),
            b if b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.') => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push_str(".scope");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_are_valid_and_differ() {
        let a = random_run_name().unwrap();
        let b = random_run_name().unwrap();
        assert!(a.starts_with("run-") && a.len() == 10, "{a}");
        assert_eq!(validate_machine_name(&a), Ok(()));
        assert_ne!(a, b);
    }

    fn assert_valid(name: &str) {
        assert_eq!(
            validate_machine_name(name),
            Ok(()),
            "{name:?} should be valid"
        );
    }

    fn assert_invalid(name: &str, why: &str) {
        let err = validate_machine_name(name).expect_err(name);
        assert!(
            err.starts_with(&format!("invalid machine name {name:?}: {why} (")),
            "{name:?}: unexpected message {err:?}"
        );
        assert!(
            err.contains(NAME_RULES),
            "{err:?} should say what is allowed"
        );
    }

    #[test]
    fn path_labels_unescape_to_the_name() {
        for name in ["web", "9lives", "my-box", "a.b_c", "", "\u{e9}t\u{e9}"] {
            assert_eq!(
                unescape_path_label(&escape_path_label(name)).as_deref(),
                Some(name)
            );
        }
        assert_eq!(unescape_path_label("_4"), None);
        assert_eq!(unescape_path_label("_zz"), None);
    }

    #[test]
    fn valid_names() {
        for name in [
            "a",
            "web",
            "Web01",
            "123",
            "a.b",
            "a-b",
            "a--b",
            "my-box",
            "db.prod.example",
        ] {
            assert_valid(name);
        }
    }

    #[test]
    fn length_limit_is_64() {
        assert_valid(&"a".repeat(64));
        assert_invalid(&"a".repeat(65), "it is 65 characters long");
    }

    #[test]
    fn empty_name() {
        assert_invalid("", "the name is empty");
    }

    #[test]
    fn dots() {
        assert_invalid(".a", "it starts with '.'");
        assert_invalid(".host", "it starts with '.'");
        assert_invalid("a.", "it ends with '.'");
        assert_invalid("a..b", "it contains '..'");
        assert_invalid(".", "it starts with '.'");
    }

    #[test]
    fn hyphens_only_inside_labels() {
        assert_invalid("-a", "it starts with '-'");
        assert_invalid("a-", "it ends with '-'");
        assert_invalid("a.-b", "it contains '.-'");
        assert_invalid("a-.b", "it contains '-.'");
    }

    #[test]
    fn underscore_points_at_hyphen() {
        assert_invalid("under_score", "'_' is not allowed, use '-' instead");
    }

    #[test]
    fn other_characters() {
        assert_invalid("a/b", "'/' is not allowed");
        assert_invalid("a b", "' ' is not allowed");
        assert_invalid("a\nb", "'\\n' is not allowed");
        assert_invalid("a\0b", "'\\0' is not allowed");
        assert_invalid("café", "'é' is not allowed");
        assert_invalid("контейнер", "'к' is not allowed");
        // Unicode is refused before length is measured, so 64 multibyte characters are
        // reported for the character, not as too long.
        assert_invalid(&"é".repeat(64), "'é' is not allowed");
    }

    #[test]
    fn huge_names_are_shortened_in_messages() {
        let name = "x/".repeat(10_000);
        let err = validate_machine_name(&name).unwrap_err();
        assert!(err.len() < 400, "{} bytes", err.len());
        assert!(err.starts_with("invalid machine name \"x/x/"), "{err}");
        assert!(err.contains("…"), "{err}");
    }

    #[test]
    fn path_label_escaping() {
        assert_eq!(escape_path_label("my-box"), "my_2dbox");
        assert_eq!(escape_path_label("a.b"), "a_2eb");
        assert_eq!(escape_path_label("under_score"), "under_5fscore");
        assert_eq!(escape_path_label("Web01"), "Web01");
        assert_eq!(escape_path_label(""), "_");
        assert_eq!(escape_path_label("é"), "_c3_a9");
        assert_eq!(escape_path_label("/ "), "_2f_20");
        assert_eq!(escape_path_label("9lives"), "_39lives");
        assert_eq!(escape_path_label("123"), "_3123");
        assert_eq!(escape_path_label("a9"), "a9");
    }

    #[test]
    fn names_whose_unit_systemd_would_refuse_are_refused() {
        // 62 characters, but 60 dashes become 240 bytes of \x2d in the unit name.
        let dashed = format!("a{}a", "-".repeat(60));
        let e = validate_machine_name(&dashed).unwrap_err();
        assert!(e.contains("unit name") && e.contains("255"), "{e}");
        assert!(validate_machine_name(&format!("a{}a", "-".repeat(20))).is_ok());
    }

    #[test]
    fn shown_values_stay_short_whatever_they_hold() {
        for evil in ["x".repeat(5000), "\u{17}".repeat(5000), "é".repeat(5000)] {
            let s = shown(&evil);
            assert!(s.chars().count() <= 84 && s.ends_with('…'), "{s}");
        }
        assert_eq!(shown("web"), "\"web\"");
        assert_eq!(shown_bare("8192"), "8192");
        assert!(shown_bare(&"9".repeat(500)).ends_with("9…"));
    }

    #[test]
    fn path_labels_never_collide() {
        // Each machine has exactly one object path, and no name can alias another's.
        let names = [
            "",
            "a",
            "my-box",
            "a.b",
            "under_score",
            "_",
            "__",
            "_2d",
            "é",
            "a\0b",
            "x/y z",
            "9a",
            "_39a",
            "my_2dbox",
        ];
        let labels: std::collections::HashSet<_> =
            names.iter().map(|n| escape_path_label(n)).collect();
        assert_eq!(labels.len(), names.len());
    }

    #[test]
    fn object_paths() {
        assert_eq!(
            machine_object_path("my-box"),
            "/org/berth/Berth1/machine/my_2dbox"
        );
        assert_eq!(machine_object_path("web"), "/org/berth/Berth1/machine/web");
        assert_eq!(
            machine_object_path("9lives"),
            "/org/berth/Berth1/machine/_39lives"
        );
        assert_eq!(
            machine_object_path("a.b"),
            "/org/berth/Berth1/machine/a_2eb"
        );
    }

    #[test]
    fn scope_units() {
        assert_eq!(scope_unit_name("my-box"), "machine-my\\x2dbox.scope");
        assert_eq!(scope_unit_name("a.b"), "machine-a.b.scope");
        assert_eq!(scope_unit_name("under_score"), "machine-under_score.scope");
        assert_eq!(scope_unit_name("web"), "machine-web.scope");
        assert_eq!(scope_unit_name("a:b"), "machine-a:b.scope");
    }

    #[test]
    fn scope_units_escape_like_unit_name_escape() {
        assert_eq!(scope_unit_name(".a"), "machine-\\x2ea.scope");
        assert_eq!(scope_unit_name("a/b"), "machine-a-b.scope");
        assert_eq!(scope_unit_name("a\\b"), "machine-a\\x5cb.scope");
        assert_eq!(scope_unit_name("a b"), "machine-a\\x20b.scope");
        assert_eq!(scope_unit_name("é"), "machine-\\xc3\\xa9.scope");
    }
}
