//! For the network tests: a thread of its own in a fresh, empty network namespace, so
//! that real netlink, nft and dnsmasq can be exercised without any chance of touching
//! this machine's own network (its default route was once lost to a careless test).

use std::path::Path;

pub fn netns_of(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
}

/// The network namespaces no test may touch: the test process's own (its main thread
/// never leaves it) and, where the sandbox lets us see it, init's.
pub fn host_netns() -> Vec<String> {
    ["/proc/self/ns/net", "/proc/1/ns/net"]
        .into_iter()
        .filter_map(netns_of)
        .collect()
}

/// Panics unless the calling thread is in a network namespace of its own.
pub fn assert_private_netns() {
    let mine = netns_of("/proc/thread-self/ns/net").expect("the thread's namespace");
    assert!(
        !host_netns().contains(&mine),
        "refusing to touch the host's network namespace {mine}"
    );
}

/// Runs `f` on a new thread in a new, empty network namespace (children it spawns start
/// there too); None, after saying so, when not root.
pub fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root for a network namespace of its own");
        return None;
    }
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        assert_private_netns();
        f()
    })
    .join()
    .map_err(std::panic::resume_unwind)
    .ok()
}
