//! The system call filter of a machine: a deny-list of calls no container needs and that
//! reach past its namespaces — loading kernel modules, kexec, swap, open_by_handle_at
//! (which walks the host's file systems by handle), setting the clock, raw I/O ports, the
//! kernel keyring (not namespaced), bpf and perf_event_open, process accounting and the
//! kernel log — answered with EPERM. Everything else is allowed, as for LXC's default
//! policy; the capabilities dropped from the bounding set guard most of these too, the
//! filter holds even where a machine is given one of them back.
//!
//! A machine's `SystemCallFilter` entries change the default in systemd's spelling:
//! `bpf` allows a denied call, `~ptrace` denies one more, `@clock` names a group.
//! The filter is for the host's native architecture: a program of another ABI (32-bit
//! x86 on x86_64) is killed rather than let past it.

use crate::names::shown;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use std::collections::{BTreeMap, BTreeSet};

/// Groups, in systemd's names where systemd has one.
const GROUPS: &[(&str, &[&str])] = &[
    (
        "@clock",
        &["adjtimex", "clock_adjtime", "clock_settime", "settimeofday"],
    ),
    ("@module", &["delete_module", "finit_module", "init_module"]),
    ("@raw-io", &["ioperm", "iopl"]),
    ("@swap", &["swapoff", "swapon"]),
    ("@keyring", &["add_key", "keyctl", "request_key"]),
    (
        "@obsolete",
        &["_sysctl", "lookup_dcookie", "nfsservctl", "uselib"],
    ),
];

/// Denied unless a machine's filter allows them.
const DEFAULT_DENY: &[&str] = &[
    "@clock",
    "@module",
    "@raw-io",
    "@swap",
    "@keyring",
    "@obsolete",
    "acct",
    "bpf",
    "kexec_file_load",
    "kexec_load",
    "open_by_handle_at",
    "perf_event_open",
    "syslog",
];

/// Calls a machine may deny on top of the default (`~name`).
const OPTIONAL: &[&str] = &[
    "chroot",
    "mount",
    "personality",
    "pivot_root",
    "ptrace",
    "setns",
    "umount2",
    "unshare",
    "userfaultfd",
];

/// The calls `word` names: a group or one known call.
fn names(word: &str) -> Result<Vec<&'static str>, String> {
    if let Some((_, calls)) = GROUPS.iter().find(|(g, _)| *g == word) {
        return Ok(calls.to_vec());
    }
    let known = GROUPS
        .iter()
        .flat_map(|(_, c)| c.iter())
        .chain(DEFAULT_DENY.iter().filter(|n| !n.starts_with('@')))
        .chain(OPTIONAL.iter())
        .find(|n| **n == word);
    known.map(|n| vec![*n]).ok_or_else(|| {
        let groups: Vec<_> = GROUPS.iter().map(|(g, _)| *g).collect();
        format!(
            "SystemCallFilter: {} is not a system call or group berth filters \
             (groups: {}; calls: those groups' members and {}, {})",
            shown(word),
            groups.join(", "),
            DEFAULT_DENY
                .iter()
                .filter(|n| !n.starts_with('@'))
                .copied()
                .collect::<Vec<_>>()
                .join(", "),
            OPTIONAL.join(", ")
        )
    })
}

/// The denied calls for a machine's filter entries, applied in order on the default.
pub fn denied(entries: &[String]) -> Result<BTreeSet<String>, String> {
    let mut deny = BTreeSet::new();
    for word in DEFAULT_DENY {
        deny.extend(names(word)?.into_iter().map(String::from));
    }
    for entry in entries {
        let entry = entry.trim();
        match entry.strip_prefix('~') {
            Some(word) => deny.extend(names(word)?.into_iter().map(String::from)),
            None => {
                for n in names(entry)? {
                    deny.remove(n);
                }
            }
        }
    }
    Ok(deny)
}

/// The number of a call on this architecture, or None where it does not exist.
fn number(name: &str) -> Option<i64> {
    use libc::*;
    let nr = match name {
        "acct" => SYS_acct,
        "add_key" => SYS_add_key,
        "adjtimex" => SYS_adjtimex,
        "bpf" => SYS_bpf,
        "chroot" => SYS_chroot,
        "clock_adjtime" => SYS_clock_adjtime,
        "clock_settime" => SYS_clock_settime,
        "delete_module" => SYS_delete_module,
        "finit_module" => SYS_finit_module,
        "init_module" => SYS_init_module,
        "kexec_file_load" => SYS_kexec_file_load,
        "kexec_load" => SYS_kexec_load,
        "keyctl" => SYS_keyctl,
        "mount" => SYS_mount,
        "nfsservctl" => SYS_nfsservctl,
        "open_by_handle_at" => SYS_open_by_handle_at,
        "perf_event_open" => SYS_perf_event_open,
        "personality" => SYS_personality,
        "pivot_root" => SYS_pivot_root,
        "ptrace" => SYS_ptrace,
        "request_key" => SYS_request_key,
        "setns" => SYS_setns,
        "settimeofday" => SYS_settimeofday,
        "swapoff" => SYS_swapoff,
        "swapon" => SYS_swapon,
        "syslog" => SYS_syslog,
        "umount2" => SYS_umount2,
        "unshare" => SYS_unshare,
        "userfaultfd" => SYS_userfaultfd,
        "lookup_dcookie" => SYS_lookup_dcookie,
        #[cfg(target_arch = "x86_64")]
        "_sysctl" => SYS__sysctl,
        #[cfg(target_arch = "x86_64")]
        "uselib" => SYS_uselib,
        #[cfg(target_arch = "x86_64")]
        "ioperm" => SYS_ioperm,
        #[cfg(target_arch = "x86_64")]
        "iopl" => SYS_iopl,
        _ => return None,
    };
    Some(nr)
}

/// The BPF program denying `calls` with EPERM on this architecture.
pub fn program(calls: &BTreeSet<String>) -> Result<BpfProgram, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no system call filter for this architecture: {e}"))?;
    let rules: BTreeMap<i64, Vec<_>> = calls
        .iter()
        .filter_map(|name| number(name))
        .map(|nr| (nr, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("building the system call filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e| format!("compiling the system call filter: {e}"))
}

/// Installs the filter on this thread; it is inherited by every child and survives exec.
/// Needs CAP_SYS_ADMIN (berth's helpers have it), so setuid programs inside keep working
/// without no_new_privs.
pub fn install(calls: &BTreeSet<String>) -> Result<(), String> {
    let program = program(calls)?;
    seccompiler::apply_filter(&program)
        .map_err(|e| format!("installing the system call filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_denies_what_reaches_past_a_machine() {
        let deny = denied(&[]).unwrap();
        for call in [
            "init_module",
            "finit_module",
            "kexec_load",
            "swapon",
            "open_by_handle_at",
            "clock_settime",
            "settimeofday",
            "keyctl",
            "bpf",
            "perf_event_open",
        ] {
            assert!(deny.contains(call), "{call}");
        }
        assert!(!deny.contains("ptrace") && !deny.contains("mount"));
    }

    #[test]
    fn entries_allow_and_deny_in_order() {
        let deny = denied(&["bpf".into(), "~ptrace".into(), "@clock".into()]).unwrap();
        assert!(!deny.contains("bpf") && !deny.contains("clock_settime"));
        assert!(deny.contains("ptrace") && deny.contains("kexec_load"));
        let deny = denied(&["@clock".into(), "~settimeofday".into()]).unwrap();
        assert!(deny.contains("settimeofday") && !deny.contains("adjtimex"));
        let e = denied(&["~fork".into()]).unwrap_err();
        assert!(e.contains("\"fork\"") && e.contains("@clock"), "{e}");
    }

    #[test]
    fn every_name_berth_knows_has_a_number_here_or_is_foreign() {
        for word in DEFAULT_DENY.iter().chain(OPTIONAL) {
            for n in names(word).unwrap() {
                let x86_only = ["_sysctl", "uselib", "ioperm", "iopl"];
                assert!(number(n).is_some() || x86_only.contains(&n), "{n}");
            }
        }
    }

    #[test]
    fn the_program_compiles() {
        let program = program(&denied(&[]).unwrap()).unwrap();
        assert!(!program.is_empty());
        assert!(!super::program(&BTreeSet::new()).unwrap().is_empty());
    }
}
