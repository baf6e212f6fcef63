//! Test hosts: a real systemd booted as PID 1 of fresh namespaces on this machine, on a
//! throwaway overlay of its root (tests/host/boot.sh says how and why each step is
//! needed). Integration tests drive berth inside such a host only as users do:
//! over the host's system bus (`TestHost::bus_address`) and with commands run inside
//! (`TestHost::run`).
//!
//! One file per concern: host.rs boots, drives and tears down a `TestHost`; cgroups.rs
//! names the hosts' cgroups and removes them, and what crashed runs left
//! (`cleanup_leftovers`, which every boot calls first); introspect.rs compares D-Bus
//! interfaces; leftovers.rs says what "nothing of any machine left" means in a host
//! (`assert_no_leftovers`); poll.rs has `wait_until`, the one way anything here waits;
//! debian.rs makes a Debian template available in a host (`debian_template`); users.rs
//! checks an unprivileged machine's files are shifted into its own range; pty.rs runs a
//! command in a host on a terminal of its own (`TestHost::pty`).
//! This file says whether a test can boot hosts at all and boots one with this build's
//! berth.
//!
//! A test process that dies takes its hosts with it (PR_SET_PDEATHSIG). What a host sees
//! is this machine's / as it was at boot (an overlay): berth is copied in at boot from
//! `bin_dir`, so rebuild before booting. Directories that must stay live are bound in with
//! `BERTH_HOST_BINDS=/dir1:/dir2` in the test's environment. The host has its own, empty
//! network namespace (only lo) and a fresh /tmp and /run. `BERTH_TEST_KEEP_STATE=1` keeps
//! each host's state directory (boot.log, console).
// Each test binary uses only part of the harness and of these re-exports.
#![allow(dead_code, unused_imports)]

mod cgroups;
pub mod debian;
mod host;
mod introspect;
mod leftovers;
mod poll;
mod pty;
pub mod uplink;
mod users;

/// The mode a host boots in: Hybrid or Unified (see `TestHost::boot`).
pub use berth::cgroup::CgroupMode;
pub use cgroups::cgroup_mounts;
pub use debian::debian_template;
pub use host::TestHost;
pub use introspect::interface_members;
pub use leftovers::assert_no_leftovers;
pub use poll::wait_until;
pub use pty::Pty;
pub use users::{assert_in_own_range, user_range};

use std::path::Path;

/// True (after saying why) when the caller is not root and a host-booting test should
/// return early. Root with a broken setup must fail instead, so nothing else is checked.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: booting a test host needs root (cgroups, mounts, namespaces)");
    true
}

/// Boots a host of `mode` with this build's berth installed, or None (after saying why)
/// when not root.
pub fn boot_with_berth(mode: CgroupMode, test: &str) -> Option<TestHost> {
    if skip_unless_root(test) {
        return None;
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_berthd"))
        .parent()
        .expect("binaries live in a directory");
    Some(TestHost::boot(mode, bin_dir).unwrap_or_else(|e| panic!("test host boots: {e}")))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
