//! Links, addresses and routes over netlink (rtnetlink): berth's bridges, each machine's
//! veth pair and its eth0 inside the machine's network namespace.
//!
//! Every async call opens its own rtnetlink connection and drops it when done, so no
//! socket outlives a request and none is shared between namespaces by mistake: a netlink
//! socket acts on the network namespace it was created in, for its whole life.

use super::{BridgeSpec, IFNAME_MAX, LinkInfo, LinkStats, Proto, VethSpec};
use crate::error::{Error, Result};
use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader};
use rtnetlink::sys::{Socket, TokioSocket, protocols::NETLINK_ROUTE};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};
use rtnetlink::{RouteMessageBuilder, new_connection};
use std::fmt::Display;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{FromRawFd, IntoRawFd};

/// The name of a machine's side of its veth pair, inside its namespace.
const MACHINE_IFNAME: &str = "eth0";

/// The IPv4 destinations of the main table's routes, but the default route.
pub async fn routes() -> Result<Vec<Ipv4Net>> {
    let handle = connect()?;
    let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let mut dump = handle.route().get(query).execute();
    let mut nets = Vec::new();
    while let Some(route) = dump
        .try_next()
        .await
        .map_err(|e| nl_error("cannot list the IPv4 routes", e))?
    {
        // A dump without strict checking returns every table (local, broadcast routes
        // of each address...); only the main table says what subnets are taken.
        let table = route
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(route.header.table));
        let prefix = route.header.destination_prefix_length;
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) || prefix == 0 {
            continue;
        }
        let dest = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => Some(*d),
            _ => None,
        });
        if let Some(net) = dest.and_then(|d| Ipv4Net::new(d, prefix).ok()) {
            nets.push(net);
        }
    }
    nets.sort();
    nets.dedup();
    Ok(nets)
}

/// The link named `name` in the current network namespace, if there is one.
pub async fn find(name: &str) -> Result<Option<LinkInfo>> {
    let handle = connect()?;
    Ok(get_link(&handle, name).await?.map(|m| link_info(&m)))
}

/// Makes (or takes back) berth's bridge: its MAC, alias and address, up, and allowed to
/// route 127.0.0.1 so port forwards from the host's loopback reach machines.
pub async fn ensure_bridge(spec: &BridgeSpec) -> Result<()> {
    let name = &spec.name;
    let handle = connect()?;
    let (index, created) = match get_link(&handle, name).await? {
        Some(msg) => (check_bridge(name, &msg)?, false),
        None => {
            let msg = LinkBridge::new(name).address(spec.mac.to_vec()).build();
            let made = match handle.link().add(msg).execute().await {
                Ok(()) => true,
                // Made meanwhile by someone else: judged below like any existing link.
                Err(e) if errno(&e) == Some(libc::EEXIST) => false,
                Err(e) => return Err(nl_error(format!("cannot create bridge {name}"), e)),
            };
            match get_link(&handle, name).await? {
                Some(msg) if made => (msg.header.index, true),
                Some(msg) => (check_bridge(name, &msg)?, false),
                None => {
                    return Err(Error::Failed(format!(
                        "bridge {name} vanished right after it was created"
                    )));
                }
            }
        }
    };
    match configure_bridge(&handle, spec, index).await {
        // Left half made, without its alias, it would be refused as not berth's later.
        Err(e) if created => Err(rollback(e, delete_index(&handle, name, index).await)),
        done => done,
    }
}

/// A link of a bridge's name that berth may take: one it made, and a bridge.
fn check_bridge(name: &str, msg: &LinkMessage) -> Result<u32> {
    let info = link_info(msg);
    if !info.is_berths() {
        return Err(not_berths(name));
    }
    match info.kind.as_deref() {
        Some("bridge") | None => Ok(info.index),
        Some(kind) => Err(Error::InvalidArgument(format!(
            "interface {name} is a {kind}, not a bridge"
        ))),
    }
}

async fn configure_bridge(handle: &Handle, spec: &BridgeSpec, index: u32) -> Result<()> {
    let name = &spec.name;
    let msg = LinkUnspec::new_with_index(index)
        .address(spec.mac.to_vec())
        .alias(spec.alias.clone())
        .up()
        .build();
    handle.link().set(msg).execute().await.map_err(|e| {
        nl_error(
            format!("cannot set the MAC, alias and up state of bridge {name}"),
            e,
        )
    })?;
    add_address(handle, index, spec.address)
        .await
        .map_err(|e| nl_error(format!("cannot add {} to bridge {name}", spec.address), e))?;
    let path = format!("/proc/sys/net/ipv4/conf/{name}/route_localnet");
    std::fs::write(&path, "1").map_err(|e| Error::io("cannot write 1 to", path, e))
}

/// Makes a machine's veth pair (see [`VethSpec`]); on any failure nothing is left.
pub async fn add_veth(spec: &VethSpec) -> Result<()> {
    let host = &spec.host_name;
    let handle = connect()?;
    if let Some(old) = get_link(&handle, host).await? {
        let info = link_info(&old);
        if !info.is_berths() {
            return Err(not_berths(host));
        }
        // A pair left by a machine that died without its cleanup.
        delete_index(&handle, host, info.index).await?;
    }
    let bridge = match get_link(&handle, &spec.bridge).await? {
        Some(msg) => msg.header.index,
        None => {
            return Err(Error::Failed(format!(
                "cannot add veth {host}: bridge {} does not exist",
                spec.bridge
            )));
        }
    };
    // The peer is born in the machine's namespace under its final name, as `ip link add
    // ... peer name eth0 netns PID` does: no temporary name to clash in the host's.
    let peer = LinkUnspec::new_with_name(MACHINE_IFNAME)
        .address(spec.machine_mac.to_vec())
        .setns_by_pid(spec.pid)
        .build();
    let pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host.clone())
        .address(spec.host_mac.to_vec())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    handle.link().add(pair).execute().await.map_err(|e| {
        nl_error(
            format!(
                "cannot create veth {host} with its peer {MACHINE_IFNAME} in the network namespace of process {}",
                spec.pid
            ),
            e,
        )
    })?;
    let Some(index) = get_link(&handle, host).await?.map(|m| m.header.index) else {
        return Err(Error::Failed(format!(
            "veth {host} vanished right after it was created"
        )));
    };
    match configure_veth(&handle, spec, index, bridge).await {
        Ok(()) => Ok(()),
        Err(e) => Err(rollback(e, delete_index(&handle, host, index).await)),
    }
}

async fn configure_veth(handle: &Handle, spec: &VethSpec, index: u32, bridge: u32) -> Result<()> {
    let host = &spec.host_name;
    let msg = LinkUnspec::new_with_index(index)
        .alias(spec.alias.clone())
        .controller(bridge)
        .up()
        .build();
    handle.link().set(msg).execute().await.map_err(|e| {
        nl_error(
            format!(
                "cannot put veth {host} on bridge {} with its alias, up",
                spec.bridge
            ),
            e,
        )
    })?;
    let pid = spec.pid;
    let inside = connect_in_netns(pid).await?;
    let what = |step: &str| {
        format!("cannot {step} in the network namespace of process {pid} (the peer of {host})")
    };
    let eth0 = get_link(&inside, MACHINE_IFNAME)
        .await?
        .ok_or_else(|| Error::Failed(what(&format!("find {MACHINE_IFNAME}"))))?
        .header
        .index;
    add_address(&inside, eth0, spec.address)
        .await
        .map_err(|e| {
            nl_error(
                what(&format!("add {} to {MACHINE_IFNAME}", spec.address)),
                e,
            )
        })?;
    set_up(&inside, eth0)
        .await
        .map_err(|e| nl_error(what(&format!("bring {MACHINE_IFNAME} up")), e))?;
    // After eth0 is up: the kernel refuses a gateway on a link that is down.
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(spec.gateway)
        .output_interface(eth0)
        .build();
    inside
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(|e| {
            nl_error(
                what(&format!(
                    "add a default route via {} on {MACHINE_IFNAME}",
                    spec.gateway
                )),
                e,
            )
        })?;
    let lo = get_link(&inside, "lo")
        .await?
        .ok_or_else(|| Error::Failed(what("find lo")))?
        .header
        .index;
    set_up(&inside, lo)
        .await
        .map_err(|e| nl_error(what("bring lo up"), e))
}

/// Deletes a link (a veth takes its peer along); one that is not there is fine.
pub async fn remove(name: &str) -> Result<()> {
    let handle = connect()?;
    match get_link(&handle, name).await? {
        Some(msg) => delete_index(&handle, name, msg.header.index).await,
        None => Ok(()),
    }
}

/// Byte and packet counters of a link, the 64-bit ones `ip -s link` shows, from
/// /sys/class/net/NAME/statistics; None when there is no such link. Files of sysfs rather
/// than a netlink request: a few reads of kernel memory, cheap enough for a property
/// getter on berthd's async threads (a blocking netlink socket there was not).
pub fn stats(name: &str) -> Option<LinkStats> {
    // A name with a slash (or . and ..) would name another sysfs file.
    if name.is_empty() || name.len() > IFNAME_MAX || name.contains('/') || name.starts_with('.') {
        return None;
    }
    let dir = std::path::Path::new("/sys/class/net")
        .join(name)
        .join("statistics");
    let counter = |file: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(LinkStats {
        rx_bytes: counter("rx_bytes")?,
        tx_bytes: counter("tx_bytes")?,
        rx_packets: counter("rx_packets")?,
        tx_packets: counter("tx_packets")?,
    })
}

/// Whether a host process holds the port: binding it on the wildcard addresses fails
/// with EADDRINUSE. IPv6 counts too, as a dual-stack listener on [::] takes the IPv4
/// port and a forward on it would shadow that listener.
pub fn port_in_use(proto: Proto, port: u16) -> bool {
    let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    [v4, v6].into_iter().any(|addr| {
        // The socket is dropped at once, so the port is free again when this returns.
        let bound = match proto {
            Proto::Tcp => TcpListener::bind(addr).map(drop),
            Proto::Udp => UdpSocket::bind(addr).map(drop),
        };
        matches!(bound, Err(e) if e.kind() == io::ErrorKind::AddrInUse)
    })
}

/// Turns IPv4 forwarding on, writing only when it is off.
pub fn enable_forwarding() -> Result<()> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    let now = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
    if now.trim() == "1" {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(|e| Error::io("cannot write 1 to", path, e))
}

/// An rtnetlink connection in the caller's network namespace, run on the runtime until
/// its handle is dropped.
fn connect() -> Result<Handle> {
    let (conn, handle, _) =
        new_connection().map_err(|e| Error::failed("cannot open a netlink socket", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// An rtnetlink connection acting in the network namespace of process `pid`.
///
/// Only the socket's creation needs to happen there, so a short-lived thread of its own
/// enters the namespace, makes the socket and ends: no runtime worker ever changes
/// namespace, and the connection then runs on the runtime like any other.
async fn connect_in_netns(pid: u32) -> Result<Handle> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("netns-{pid}"))
        .spawn(move || {
            let made = (|| {
                let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                let socket = Socket::new(NETLINK_ROUTE)?;
                socket.set_non_blocking(true)?;
                io::Result::Ok(socket)
            })();
            let _ = tx.send(made);
        })
        .map_err(|e| Error::failed("cannot start a thread to enter a network namespace", e))?;
    let socket = rx
        .await
        .map_err(|_| {
            Error::Failed(format!(
                "the thread entering the network namespace of process {pid} died"
            ))
        })?
        .map_err(|e| {
            Error::failed(
                format!("cannot open a netlink socket in the network namespace of process {pid}"),
                e,
            )
        })?;
    // SAFETY: the descriptor was just taken out of its only owner, `socket`.
    let socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
    let (conn, handle, _) = rtnetlink::from_socket(socket);
    tokio::spawn(conn);
    Ok(handle)
}

/// The link named `name`, or None when there is none (ENODEV, or a name no link can
/// have).
async fn get_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Ok(None);
    }
    let mut answer = handle.link().get().match_name(name).execute();
    match answer.try_next().await {
        Ok(msg) => Ok(msg),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(nl_error(format!("cannot look up interface {name}"), e)),
    }
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        alias: None,
        kind: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfAlias(a) if !a.is_empty() => info.alias = Some(a.clone()),
            LinkAttribute::LinkInfo(infos) => {
                info.kind = infos.iter().find_map(|i| match i {
                    NlLinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    info
}

/// Adds an IPv4 address; the same address already there is fine.
async fn add_address(
    handle: &Handle,
    index: u32,
    addr: Ipv4Net,
) -> std::result::Result<(), rtnetlink::Error> {
    let added = handle
        .address()
        .add(index, addr.addr().into(), addr.prefix_len())
        .execute()
        .await;
    match added {
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

async fn set_up(handle: &Handle, index: u32) -> std::result::Result<(), rtnetlink::Error> {
    let msg = LinkUnspec::new_with_index(index).up().build();
    handle.link().set(msg).execute().await
}

async fn delete_index(handle: &Handle, name: &str, index: u32) -> Result<()> {
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(nl_error(format!("cannot delete interface {name}"), e)),
    }
}

/// `cause`, and what undoing its first steps failed with when it did.
fn rollback(cause: Error, undone: Result<()>) -> Error {
    match undone {
        Ok(()) => cause,
        Err(e) => Error::Rollback {
            cause: Box::new(cause),
            cleanup: vec![e.to_string()],
        },
    }
}

fn not_berths(name: &str) -> Error {
    Error::InvalidArgument(format!("an interface {name} exists and is not berth's"))
}

/// The errno of a netlink error answer.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(-m.raw_code()),
        _ => None,
    }
}

fn nl_error(what: impl Display, e: rtnetlink::Error) -> Error {
    match e {
        // Its own Display wraps the errno in "Received a netlink error message".
        rtnetlink::Error::NetlinkError(m) => Error::failed(what, m.to_io()),
        other => Error::failed(what, other),
    }
}

#[cfg(test)]
mod tests {
    //! Real netlink, but only ever inside network namespaces made for the test: each
    //! test runs on a thread of its own that unshares its network namespace first, so
    //! nothing here can reach the links, routes or sysctls of the machine running it.

    use super::*;
    use crate::error::Kind;
    use crate::net::{ALIAS_PREFIX, mac_string};
    use serde_json::Value;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use crate::net::testns::{assert_private_netns, host_netns, netns_of};

    /// sysfs lists the links of the network namespace it was mounted in, not the
    /// reader's: the calling thread gets a mount namespace of its own (private, so
    /// nothing reaches the host's) with a sysfs of its own network namespace on /sys.
    fn private_sysfs() {
        use nix::mount::{MsFlags, mount};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
        let none = None::<&str>;
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
            .expect("mounts made private");
        mount(Some("sysfs"), "/sys", Some("sysfs"), MsFlags::empty(), none).expect("sysfs");
    }

    /// Runs `body` on a new thread in a new, empty network namespace, with a runtime of
    /// its own; the namespace goes away with the thread. Skips when not root.
    fn in_private_netns<F, Fut>(test: &str, body: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let ran = crate::net::testns::in_fresh_netns(move || {
            // Several workers, as in berthd; they are spawned from this thread and so
            // start in its namespace.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(body());
        });
        if ran.is_none() {
            eprintln!("skipped {test}");
        }
    }

    /// `cmd` run in this thread's (private) network namespace, its output as JSON.
    fn ip_json(args: &[&str]) -> Value {
        assert_private_netns();
        let out = Command::new("ip").arg("-j").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn ip(args: &[&str]) {
        assert_private_netns();
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }

    fn exists(name: &str) -> bool {
        assert_private_netns();
        Command::new("ip")
            .args(["link", "show", "dev", name])
            .stderr(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// A stand-in for a machine: a process in a network namespace of its own, killed
    /// when dropped.
    struct Machine(Child);

    impl Machine {
        fn start() -> Machine {
            Machine::start_with(&["--net"])
        }

        /// One whose network namespace belongs to a user namespace of its own, as an
        /// unprivileged machine's does.
        fn start_unprivileged() -> Machine {
            Machine::start_with(&["--user", "--map-root-user", "--net"])
        }

        fn start_with(unshare: &[&str]) -> Machine {
            assert_private_netns();
            let child = Command::new("unshare")
                .args(unshare)
                .args(["sleep", "60"])
                .spawn()
                .expect("start unshare ... sleep 60");
            let m = Machine(child);
            // It starts in our namespace; wait until unshare has left it.
            let ours = netns_of("/proc/thread-self/ns/net").expect("our namespace");
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::read_link(format!("/proc/{}/ns/net", m.pid()))
                .map(|p| p.to_string_lossy() == ours)
                .unwrap_or(true)
            {
                assert!(Instant::now() < deadline, "unshare never got its netns");
                std::thread::sleep(Duration::from_millis(10));
            }
            let theirs = netns_of(format!("/proc/{}/ns/net", m.pid())).expect("its namespace");
            assert!(!host_netns().contains(&theirs), "{theirs}");
            m
        }

        fn pid(&self) -> u32 {
            self.0.id()
        }

        fn ip_json(&self, args: &[&str]) -> Value {
            let pid = self.pid().to_string();
            let out = Command::new("nsenter")
                .args(["-t", &pid, "-n", "ip", "-j"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "nsenter ip {args:?}: {out:?}");
            serde_json::from_slice(&out.stdout).unwrap()
        }
    }

    impl Drop for Machine {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn bridge(name: &str, net: &str) -> BridgeSpec {
        BridgeSpec {
            name: name.into(),
            mac: crate::net::bridge_mac(name),
            address: net.parse().unwrap(),
            alias: format!("{ALIAS_PREFIX}network {name}"),
        }
    }

    fn veth(machine: &str, bridge: &str, pid: u32, addr: &str, gw: &str) -> VethSpec {
        VethSpec {
            host_name: crate::net::host_veth_name(machine),
            host_mac: crate::net::host_mac(machine),
            alias: format!("{ALIAS_PREFIX}machine {machine}"),
            bridge: bridge.into(),
            pid,
            machine_mac: crate::net::machine_mac(machine),
            address: addr.parse().unwrap(),
            gateway: gw.parse().unwrap(),
        }
    }

    fn flags(link: &Value) -> Vec<String> {
        link["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect()
    }

    /// The IPv4 addresses of `name` in `addrs` (an `ip -j addr` dump) as "A/P".
    fn v4_addrs(addrs: &Value, name: &str) -> Vec<String> {
        let link = addrs
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["ifname"] == name)
            .unwrap_or_else(|| panic!("no {name} in {addrs}"));
        link["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["family"] == "inet")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
            .collect()
    }

    #[test]
    fn bridges_are_made_once_and_foreign_links_refused() {
        in_private_netns(
            "bridges_are_made_once_and_foreign_links_refused",
            || async {
                assert_eq!(find("br-t").await.unwrap(), None);
                assert_eq!(find("").await.unwrap(), None);
                assert_eq!(find("much-too-long-for-a-link").await.unwrap(), None);

                let spec = bridge("br-t", "10.99.0.1/24");
                ensure_bridge(&spec).await.unwrap();
                ensure_bridge(&spec).await.unwrap();

                let info = find("br-t").await.unwrap().expect("the bridge");
                assert!(info.index > 0);
                assert_eq!(info.alias.as_deref(), Some("berth network br-t"));
                assert_eq!(info.kind.as_deref(), Some("bridge"));
                assert!(info.is_berths());

                let link = &ip_json(&["link", "show", "dev", "br-t"])[0];
                assert_eq!(link["address"], mac_string(&spec.mac));
                assert!(flags(link).contains(&"UP".to_string()), "{link}");
                let addrs = ip_json(&["addr", "show", "dev", "br-t"]);
                assert_eq!(v4_addrs(&addrs, "br-t"), ["10.99.0.1/24"]);
                let localnet = "/proc/sys/net/ipv4/conf/br-t/route_localnet";
                assert_eq!(std::fs::read_to_string(localnet).unwrap().trim(), "1");

                // An address berth did not ask for stays; berth's is still there once.
                ip(&["addr", "add", "192.168.77.1/24", "dev", "br-t"]);
                ensure_bridge(&spec).await.unwrap();
                let addrs = ip_json(&["addr", "show", "dev", "br-t"]);
                assert_eq!(
                    v4_addrs(&addrs, "br-t"),
                    ["10.99.0.1/24", "192.168.77.1/24"]
                );

                // A bridge someone else made under the name berth wants.
                ip(&["link", "add", "fb-t", "type", "bridge"]);
                let e = ensure_bridge(&bridge("fb-t", "10.98.0.1/24"))
                    .await
                    .unwrap_err();
                assert_eq!(e.kind(), Kind::InvalidArgument);
                assert_eq!(e.to_string(), "an interface fb-t exists and is not berth's");
                let foreign = find("fb-t").await.unwrap().unwrap();
                assert_eq!(
                    (foreign.alias, foreign.kind.as_deref()),
                    (None, Some("bridge"))
                );
                assert_eq!(
                    v4_addrs(&ip_json(&["addr", "show", "dev", "fb-t"]), "fb-t"),
                    Vec::<String>::new()
                );

                // berth's alias on something that is not a bridge is refused too.
                ip(&[
                    "link", "add", "vx-t", "type", "veth", "peer", "name", "vx-tp",
                ]);
                ip(&["link", "set", "vx-t", "alias", "berth network vx-t"]);
                let e = ensure_bridge(&bridge("vx-t", "10.98.0.1/24"))
                    .await
                    .unwrap_err();
                assert_eq!(e.to_string(), "interface vx-t is a veth, not a bridge");

                remove("vx-t").await.unwrap();
                assert!(!exists("vx-t") && !exists("vx-tp"));
                remove("vx-t").await.unwrap();
            },
        );
    }

    #[test]
    fn routes_list_the_main_table_but_the_default_route() {
        in_private_netns(
            "routes_list_the_main_table_but_the_default_route",
            || async {
                assert_eq!(routes().await.unwrap(), Vec::<Ipv4Net>::new());
                ensure_bridge(&bridge("br-r", "10.97.3.1/24"))
                    .await
                    .unwrap();
                ip(&["route", "add", "default", "dev", "br-r"]);
                ip(&["route", "add", "172.30.0.0/16", "via", "10.97.3.9"]);
                ip(&["link", "set", "lo", "up"]);
                let nets = routes().await.unwrap();
                let want: Vec<Ipv4Net> = vec![
                    "10.97.3.0/24".parse().unwrap(),
                    "172.30.0.0/16".parse().unwrap(),
                ];
                // The local table's routes (127.0.0.0/8, 10.97.3.1/32...) are not the main's.
                assert_eq!(nets, want);
            },
        );
    }

    #[test]
    fn a_machine_gets_its_veth_pair_and_loses_it() {
        in_private_netns("a_machine_gets_its_veth_pair_and_loses_it", || async {
            ensure_bridge(&bridge("br-v", "10.96.0.1/24"))
                .await
                .unwrap();
            let machine = Machine::start();
            let spec = veth("web", "br-v", machine.pid(), "10.96.0.2/24", "10.96.0.1");
            add_veth(&spec).await.unwrap();

            let inside = machine.ip_json(&["addr"]);
            assert_eq!(v4_addrs(&inside, "eth0"), ["10.96.0.2/24"]);
            let eth0 = inside
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["ifname"] == "eth0")
                .unwrap();
            assert_eq!(eth0["address"], mac_string(&spec.machine_mac));
            assert!(flags(eth0).contains(&"UP".to_string()), "{eth0}");
            let lo = inside
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["ifname"] == "lo")
                .unwrap();
            assert!(flags(lo).contains(&"UP".to_string()), "{lo}");
            let routes = machine.ip_json(&["route"]);
            assert!(
                routes
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["dst"] == "default"
                        && r["gateway"] == "10.96.0.1"
                        && r["dev"] == "eth0"),
                "{routes}"
            );

            let host = &ip_json(&["link", "show", "dev", "vb-web"])[0];
            assert_eq!(host["master"], "br-v");
            assert_eq!(host["ifalias"], "berth machine web");
            assert_eq!(host["address"], mac_string(&spec.host_mac));
            assert!(flags(host).contains(&"UP".to_string()), "{host}");
            let info = find("vb-web").await.unwrap().unwrap();
            assert_eq!(info.kind.as_deref(), Some("veth"));
            assert!(info.is_berths());

            // Traffic towards the machine (an ARP request, at least) crosses vb-web.
            private_sysfs();
            assert_eq!(stats("no-such-link"), None);
            let sender = UdpSocket::bind("10.96.0.1:0").unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                sender.send_to(b"berth", "10.96.0.2:9").unwrap();
                let s = stats("vb-web").expect("stats of vb-web");
                if s.tx_packets > 0 && s.tx_bytes > 0 && s.rx_packets > 0 {
                    break;
                }
                assert!(Instant::now() < deadline, "no traffic on vb-web: {s:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }

            // Again, as after a machine's unclean stop: the old pair is replaced.
            add_veth(&spec).await.unwrap();
            assert_eq!(
                v4_addrs(&machine.ip_json(&["addr"]), "eth0"),
                ["10.96.0.2/24"]
            );

            remove("vb-web").await.unwrap();
            assert!(!exists("vb-web"));
            let left = machine.ip_json(&["link"]);
            assert!(
                left.as_array()
                    .unwrap()
                    .iter()
                    .all(|l| l["ifname"] != "eth0"),
                "{left}"
            );
            remove("vb-web").await.unwrap();
        });
    }

    #[test]
    fn a_failed_veth_leaves_nothing_behind() {
        in_private_netns("a_failed_veth_leaves_nothing_behind", || async {
            ensure_bridge(&bridge("br-f", "10.95.0.1/24"))
                .await
                .unwrap();
            let machine = Machine::start();

            // A gateway outside the machine's subnet: the last steps fail.
            let spec = veth("db", "br-f", machine.pid(), "10.95.0.2/24", "10.1.1.1");
            let e = add_veth(&spec).await.unwrap_err().to_string();
            assert!(e.contains("default route via 10.1.1.1"), "{e}");
            assert!(e.contains(&machine.pid().to_string()), "{e}");
            assert!(!exists("vb-db"));
            let left = machine.ip_json(&["link"]);
            assert!(
                left.as_array()
                    .unwrap()
                    .iter()
                    .all(|l| l["ifname"] != "eth0"),
                "{left}"
            );

            let spec = veth(
                "db",
                "no-bridge",
                machine.pid(),
                "10.95.0.2/24",
                "10.95.0.1",
            );
            let e = add_veth(&spec).await.unwrap_err().to_string();
            assert!(e.contains("bridge no-bridge does not exist"), "{e}");
            assert!(!exists("vb-db"));

            ip(&[
                "link", "add", "vb-db", "type", "veth", "peer", "name", "vb-db-p",
            ]);
            let spec = veth("db", "br-f", machine.pid(), "10.95.0.2/24", "10.95.0.1");
            let e = add_veth(&spec).await.unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidArgument);
            assert_eq!(
                e.to_string(),
                "an interface vb-db exists and is not berth's"
            );
            assert!(exists("vb-db") && exists("vb-db-p"));
        });
    }

    /// Whether the port is soon free: another test's fork may hold a copy of a closed
    /// socket's descriptor until its exec.
    fn freed(proto: Proto, port: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while port_in_use(proto, port) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    #[test]
    fn ports_held_on_either_wildcard_are_in_use() {
        in_private_netns("ports_held_on_either_wildcard_are_in_use", || async {
            let tcp = TcpListener::bind("0.0.0.0:0").unwrap();
            let port = tcp.local_addr().unwrap().port();
            assert!(port_in_use(Proto::Tcp, port));
            drop(tcp);
            assert!(freed(Proto::Tcp, port));
            // Checking released the port: a listener can take it right away.
            TcpListener::bind(("0.0.0.0", port)).unwrap();

            let v6 = TcpListener::bind("[::]:0").unwrap();
            assert!(port_in_use(Proto::Tcp, v6.local_addr().unwrap().port()));

            let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
            let port = udp.local_addr().unwrap().port();
            assert!(port_in_use(Proto::Udp, port));
            drop(udp);
            assert!(freed(Proto::Udp, port));
        });
    }

    #[test]
    fn forwarding_is_turned_on() {
        in_private_netns("forwarding_is_turned_on", || async {
            let path = "/proc/sys/net/ipv4/ip_forward";
            std::fs::write(path, "0").unwrap();
            enable_forwarding().unwrap();
            assert_eq!(std::fs::read_to_string(path).unwrap().trim(), "1");
            enable_forwarding().unwrap();
            assert_eq!(std::fs::read_to_string(path).unwrap().trim(), "1");
        });
    }

    #[test]
    fn an_unprivileged_machine_gets_its_eth0() {
        in_private_netns("an_unprivileged_machine_gets_its_eth0", || async {
            ensure_bridge(&bridge("br-u", "10.94.0.1/24"))
                .await
                .unwrap();
            let machine = Machine::start_unprivileged();
            let spec = veth("app", "br-u", machine.pid(), "10.94.0.7/24", "10.94.0.1");
            add_veth(&spec).await.unwrap();
            assert_eq!(
                v4_addrs(&machine.ip_json(&["addr"]), "eth0"),
                ["10.94.0.7/24"]
            );
            let routes = machine.ip_json(&["route"]);
            assert!(
                routes
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["dst"] == "default"),
                "{routes}"
            );
            remove(&spec.host_name).await.unwrap();
            assert!(!exists(&spec.host_name));
        });
    }
}
