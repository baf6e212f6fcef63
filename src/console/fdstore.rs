//! systemd's file descriptor store (FileDescriptorStoreMax= in berthd.service): berthd
//! hands systemd a copy of each console's descriptors, and systemd gives them back at
//! berthd's next start (LISTEN_FDS, named in LISTEN_FDNAMES), across `systemctl restart`
//! and the automatic restart after a crash alike, as long as the unit does not stop for
//! good. Without NOTIFY_SOCKET (tests, a berthd run by hand) there is no store and every
//! call here does nothing.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

/// The descriptors systemd passed at start, by name, until the daemon claims them.
static RECEIVED: Mutex<Option<HashMap<String, Vec<OwnedFd>>>> = Mutex::new(None);

const NAME_PREFIX: &str = "console-";
const PEER_PREFIX: &str = "consolepeer-";

/// The store's name of machine `name`'s console master. Machine names are letters,
/// digits, '-' and '.', all allowed in FDNAME=, so nothing needs escaping.
pub fn master_name(machine: &str) -> String {
    format!("{NAME_PREFIX}{machine}")
}

/// The store's name of the slave berthd keeps open beside the master (see
/// daemon/console.rs for why).
pub fn peer_name(machine: &str) -> String {
    format!("{PEER_PREFIX}{machine}")
}

/// Takes the descriptors systemd passed (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES),
/// close-on-exec from here on, and removes those variables, so no helper sees them.
///
/// # Safety
/// Changes the environment: call it before any thread exists.
pub unsafe fn receive() {
    let mut map: HashMap<String, Vec<OwnedFd>> = HashMap::new();
    match sd_notify::listen_fds_with_names() {
        Ok(fds) => {
            for (raw, name) in fds {
                // SAFETY: systemd passed this descriptor to us and nothing else owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                map.entry(name).or_default().push(fd);
            }
        }
        Err(e) => eprintln!("berthd: ignoring the descriptors systemd passed: {e}"),
    }
    // SAFETY: the caller guarantees no other thread runs.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    *RECEIVED.lock().expect("fdstore lock") = Some(map);
}

/// The descriptors stored under `name` last time, taken (each is returned once).
pub fn take(name: &str) -> Vec<OwnedFd> {
    RECEIVED
        .lock()
        .expect("fdstore lock")
        .as_mut()
        .and_then(|m| m.remove(name))
        .unwrap_or_default()
}

/// The names of passed descriptors nobody took; the descriptors are closed.
pub fn drain_unclaimed() -> Vec<String> {
    RECEIVED
        .lock()
        .expect("fdstore lock")
        .as_mut()
        .map(|m| m.drain().map(|(name, _)| name).collect())
        .unwrap_or_default()
}

/// Whether a name is one of ours (a console's), so only those are removed at start.
pub fn is_console_name(name: &str) -> bool {
    name.starts_with(NAME_PREFIX) || name.starts_with(PEER_PREFIX)
}

/// Stores `fds` under `name`.
pub fn store(name: &str, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    notify(&format!("FDSTORE=1\nFDNAME={name}\n"), fds)
}

/// Drops every descriptor stored under `name`.
pub fn remove(name: &str) -> io::Result<()> {
    notify(&format!("FDSTOREREMOVE=1\nFDNAME={name}\n"), &[])
}

fn notify(message: &str, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    use nix::sys::socket::{
        AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr, sendmsg, socket,
    };
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(abstract_name) => UnixAddr::new_abstract(abstract_name)?,
        None => UnixAddr::new(bytes)?,
    };
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let raws: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = if raws.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raws)]
    };
    sendmsg(
        sock.as_raw_fd(),
        &[io::IoSlice::new(message.as_bytes())],
        &cmsgs,
        MsgFlags::empty(),
        Some(&addr),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tell_masters_from_peers() {
        assert_eq!(master_name("web.1"), "console-web.1");
        assert_eq!(peer_name("web.1"), "consolepeer-web.1");
        // A machine named peer-x does not collide with x's peer.
        assert_ne!(master_name("peer-x"), peer_name("x"));
        assert!(is_console_name(&peer_name("x")));
        assert!(!is_console_name("varlink"));
    }
}
