//! A machine's 128-bit ID: made once when the machine is created, written to its
//! /etc/machine-id, and handed to its init as `container_uuid` (and /run/host/container-uuid)
//! and to systemd-machined, so the machine, its journal and `machinectl` all know it by
//! the same ID (systemd's container interface asks for that). Each machine gets its own,
//! even when copied from a template that has one baked in.

/// A new random ID as /etc/machine-id spells it: 32 lowercase hex digits, with the bits
/// of a version 4 UUID set as systemd sets them (sd_id128_randomize).
pub fn new() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `len` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(format!(
            "cannot get random bytes for a machine ID: {}",
            std::io::Error::last_os_error()
        ));
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The 16 bytes of an ID in the /etc/machine-id spelling; None if it is not one.
pub fn bytes(id: &str) -> Option<[u8; 16]> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&id[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The ID as a UUID (8-4-4-4-12), how nspawn passes `container_uuid`.
pub fn as_uuid(id: &str) -> Option<String> {
    bytes(id)?;
    let id = id.to_ascii_lowercase();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &id[..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_random_v4_and_well_spelled() {
        let a = new().unwrap();
        let b = new().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_eq!(&a[12..13], "4");
        assert!(["8", "9", "a", "b"].contains(&&a[16..17]), "{a}");
    }

    #[test]
    fn spellings() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(as_uuid(id).unwrap(), "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(bytes(id).unwrap()[..3], [0x01, 0x23, 0x45]);
        for bad in [
            "",
            "0123",
            &format!("{id}0"),
            "0123456789abcdef0123456789abcdeg",
        ] {
            assert!(bytes(bad).is_none() && as_uuid(bad).is_none(), "{bad}");
        }
    }
}
