//! The capability bounding set of a machine.
//!
//! The default follows systemd-nspawn's allow-list: what an init and its services need
//! inside their own namespaces (ownership and permission overrides, setuid/setgid, kill,
//! binding low ports, chroot, mknod — made useless by the scope's device policy —,
//! CAP_SYS_ADMIN for the mounts an init makes, CAP_SYS_BOOT so PID 1 can power its
//! namespace off) and nothing that reaches past them: no module loading (SYS_MODULE),
//! raw I/O (SYS_RAWIO), clock (SYS_TIME), kernel log (SYSLOG), MAC policy (MAC_ADMIN,
//! MAC_OVERRIDE), BPF or perf (BPF, PERFMON), swap or block device ioctls.
//! NET_ADMIN is kept as nspawn keeps it with a private network: every machine has its own
//! network namespace. AUDIT_CONTROL, which nspawn keeps, is left out: the audit subsystem
//! is not namespaced, so it would let a machine change the host's audit rules.

use crate::names::shown;
use caps::{CapSet, Capability};
use std::collections::BTreeSet;

pub const DEFAULT: &[Capability] = &[
    Capability::CAP_AUDIT_WRITE,
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_IPC_OWNER,
    Capability::CAP_KILL,
    Capability::CAP_LEASE,
    Capability::CAP_LINUX_IMMUTABLE,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_ADMIN,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_NET_BROADCAST,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETGID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETUID,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_SYS_BOOT,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_SYS_NICE,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_SYS_RESOURCE,
    Capability::CAP_SYS_TTY_CONFIG,
];

/// A capability by any of its spellings: CAP_SYS_TIME, cap_sys_time, SYS_TIME, sys_time.
pub fn parse(name: &str) -> Result<Capability, String> {
    let trimmed = name.trim();
    let canonical = caps::to_canonical(trimmed);
    let full = if canonical.starts_with("CAP_") {
        canonical
    } else {
        format!("CAP_{canonical}")
    };
    full.parse().map_err(|_| {
        format!(
            "{} is not a capability (write them as capabilities(7) does, e.g. CAP_SYS_TIME)",
            shown(trimmed)
        )
    })
}

/// The default set with `add` added and `drop` taken away (drop wins), as names.
pub fn bounding_set(add: &[String], drop: &[String]) -> Result<BTreeSet<String>, String> {
    let mut set: BTreeSet<String> = DEFAULT.iter().map(|c| c.to_string()).collect();
    for name in add {
        set.insert(parse(name)?.to_string());
    }
    for name in drop {
        set.remove(&parse(name)?.to_string());
    }
    Ok(set)
}

/// The bounding-set mask the kernel shows as CapBnd in /proc/PID/status.
pub fn mask(names: &BTreeSet<String>) -> u64 {
    names
        .iter()
        .filter_map(|n| parse(n).ok())
        .fold(0, |m, c| m | c.bitmask())
}

/// Drops every capability not in `keep` from the bounding, inheritable and ambient sets,
/// so nothing this process execs can gain it back; the effective set stays until exec.
pub fn restrict_to(keep: &BTreeSet<String>) -> Result<(), String> {
    let keep: caps::CapsHashSet = keep.iter().map(|n| parse(n)).collect::<Result<_, _>>()?;
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| format!("clearing ambient capabilities: {e}"))?;
    for cap in caps::runtime::thread_all_supported() {
        if keep.contains(&cap) {
            continue;
        }
        caps::drop(None, CapSet::Bounding, cap)
            .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        caps::drop(None, CapSet::Inheritable, cap)
            .map_err(|e| format!("dropping inheritable {cap}: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_any_spelling() {
        for n in [
            "CAP_SYS_TIME",
            "cap_sys_time",
            "SYS_TIME",
            "sys_time",
            " sys_time ",
        ] {
            assert_eq!(parse(n), Ok(Capability::CAP_SYS_TIME), "{n}");
        }
        assert!(parse("CAP_FLY").unwrap_err().contains("CAP_FLY"));
        assert!(parse("").is_err());
    }

    #[test]
    fn the_default_keeps_what_an_init_needs_and_nothing_host_wide() {
        let set = bounding_set(&[], &[]).unwrap();
        for kept in [
            "CAP_SYS_ADMIN",
            "CAP_SETUID",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_BOOT",
        ] {
            assert!(set.contains(kept), "{kept}");
        }
        for dropped in [
            "CAP_SYS_MODULE",
            "CAP_SYS_RAWIO",
            "CAP_SYS_TIME",
            "CAP_MAC_ADMIN",
            "CAP_MAC_OVERRIDE",
            "CAP_SYSLOG",
            "CAP_BPF",
            "CAP_PERFMON",
            "CAP_AUDIT_CONTROL",
            "CAP_WAKE_ALARM",
            "CAP_BLOCK_SUSPEND",
        ] {
            assert!(!set.contains(dropped), "{dropped}");
        }
    }

    #[test]
    fn add_and_drop_change_the_default() {
        let set = bounding_set(
            &["sys_time".into()],
            &["CAP_MKNOD".into(), "net_raw".into()],
        )
        .unwrap();
        assert!(set.contains("CAP_SYS_TIME"));
        assert!(!set.contains("CAP_MKNOD") && !set.contains("CAP_NET_RAW"));
        // Drop wins over add.
        let set = bounding_set(&["sys_time".into()], &["sys_time".into()]).unwrap();
        assert!(!set.contains("CAP_SYS_TIME"));
        assert!(bounding_set(&["nope".into()], &[]).is_err());
    }

    #[test]
    fn mask_is_the_kernels_bit_layout() {
        let set: BTreeSet<String> = ["CAP_CHOWN", "CAP_SYS_ADMIN"].map(String::from).into();
        assert_eq!(mask(&set), (1 << 0) | (1 << 21));
    }
}
