//! Machine names and what berth derives from them (src/names.rs).
//!
//! For any string: the object path label is a valid D-Bus path element that decodes back
//! to the string (no two names share an object path), and the scope unit name decodes
//! back to it as systemd's unit_name_unescape would. For a name that validates: it obeys
//! the documented rules, its object path is a valid ObjectPath, and its scope unit is a
//! name systemd accepts. Errors stay short however long the name.
#![no_main]

use berth::names::{
    escape_path_label, machine_object_path, scope_unit_name, validate_machine_name,
};
use berth_fuzz::{MESSAGE_MAX, text, unescape_path_label, unescape_scope_unit, unit_name_is_valid};
use libfuzzer_sys::fuzz_target;
use zbus::zvariant::ObjectPath;

fuzz_target!(|data: &[u8]| {
    let name = text(data);
    let name: &str = &name;

    let label = escape_path_label(name);
    assert!(
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "{name:?}: label {label:?} is not a D-Bus path element"
    );
    assert_eq!(
        unescape_path_label(&label).as_deref(),
        Some(name.as_bytes()),
        "{name:?}: label {label:?} does not decode back"
    );
    let path = machine_object_path(name);
    assert!(
        ObjectPath::try_from(path.as_str()).is_ok(),
        "{name:?}: {path:?} is not an object path"
    );

    let unit = scope_unit_name(name);
    // '/' is written as '-' (as unit_name_path_escape does), which stays unambiguous
    // because '-' itself is always escaped.
    assert_eq!(
        unescape_scope_unit(&unit).as_deref(),
        Some(name.as_bytes()),
        "{name:?}: unit {unit:?} does not decode back"
    );

    match validate_machine_name(name) {
        Ok(()) => {
            let bytes = name.as_bytes();
            assert!((1..=64).contains(&bytes.len()), "{name:?}");
            assert!(
                bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.'),
                "{name:?}"
            );
            for edge in [bytes[0], bytes[bytes.len() - 1]] {
                assert!(edge.is_ascii_alphanumeric(), "{name:?}");
            }
            for pair in ["..", ".-", "-."] {
                assert!(!name.contains(pair), "{name:?}");
            }
            assert!(
                unit_name_is_valid(&unit),
                "valid machine name {name:?} ({} bytes) gives scope unit {unit:?} ({} bytes), \
                 which systemd refuses (unit names are at most 255 bytes)",
                name.len(),
                unit.len()
            );
        }
        Err(message) => {
            assert!(
                message.len() <= MESSAGE_MAX,
                "a {}-byte name gives a {}-byte error",
                name.len(),
                message.len()
            );
        }
    }
});
