//! berth's IPAM: which addresses a network hands out. A machine's lease is its config's
//! address; this module only does the arithmetic and the checks, the daemon passes in
//! the addresses already taken.

use crate::error::{Error, Result};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// The smallest subnet berth accepts: a /30 leaves a gateway and one machine.
pub const MAX_PREFIX: u8 = 30;
/// The largest: a /8 is more than any bridge needs and would swallow whole ranges.
pub const MIN_PREFIX: u8 = 8;

/// The gateway of a subnet: its first host address.
pub fn gateway(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// Parses a network's subnet: `A.B.C.D/N` with the host bits zero and N from 8 to 30.
pub fn parse_subnet(text: &str) -> Result<Ipv4Net> {
    let net: Ipv4Net = text.parse().map_err(|_| {
        Error::InvalidArgument(format!(
            "subnet {}: expected an IPv4 network such as 10.77.0.0/24",
            crate::names::shown(text)
        ))
    })?;
    if net.prefix_len() < MIN_PREFIX || net.prefix_len() > MAX_PREFIX {
        return Err(Error::InvalidArgument(format!(
            "subnet {net}: the prefix must be from /{MIN_PREFIX} to /{MAX_PREFIX}"
        )));
    }
    if net.network() != net.addr() {
        return Err(Error::InvalidArgument(format!(
            "subnet {net}: host bits are set; did you mean {}?",
            net.trunc()
        )));
    }
    let a = net.network();
    if a.is_loopback()
        || a.is_multicast()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
    {
        return Err(Error::InvalidArgument(format!(
            "subnet {net}: not a range for a bridge (loopback, link-local, multicast or reserved)"
        )));
    }
    Ok(net)
}

/// Refuses a subnet that overlaps a route of the host or another berth network.
pub fn check_overlaps(
    subnet: &Ipv4Net,
    routes: &[Ipv4Net],
    networks: &[(String, Ipv4Net)],
) -> Result<()> {
    if let Some((name, other)) = networks.iter().find(|(_, n)| overlap(subnet, n)) {
        return Err(Error::InvalidArgument(format!(
            "subnet {subnet} overlaps {other} of berth network {name}"
        )));
    }
    if let Some(route) = routes
        .iter()
        .find(|r| r.prefix_len() > 0 && overlap(subnet, r))
    {
        return Err(Error::InvalidArgument(format!(
            "subnet {subnet} overlaps the host's route to {route}; pick another with --subnet"
        )));
    }
    Ok(())
}

pub fn overlap(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Checks an address a user asked for: inside the subnet, not its network, gateway or
/// broadcast address, not taken. Returns it with the subnet's prefix.
pub fn check_static(subnet: &Ipv4Net, text: &str, taken: &[(String, Ipv4Addr)]) -> Result<Ipv4Net> {
    let addr: Ipv4Addr = if text.contains('/') {
        let net: Ipv4Net = text.parse().map_err(|_| bad_address(text))?;
        if net.prefix_len() != subnet.prefix_len() {
            return Err(Error::InvalidArgument(format!(
                "address {text}: the network {subnet} has prefix /{}",
                subnet.prefix_len()
            )));
        }
        net.addr()
    } else {
        text.parse().map_err(|_| bad_address(text))?
    };
    if !subnet.contains(&addr) {
        return Err(Error::InvalidArgument(format!(
            "address {addr} is outside the network's subnet {subnet}"
        )));
    }
    if addr == subnet.network() {
        return Err(Error::InvalidArgument(format!(
            "address {addr} is the network address of {subnet}"
        )));
    }
    if addr == subnet.broadcast() {
        return Err(Error::InvalidArgument(format!(
            "address {addr} is the broadcast address of {subnet}"
        )));
    }
    if addr == gateway(subnet) {
        return Err(Error::InvalidArgument(format!(
            "address {addr} is the gateway (the bridge's own address)"
        )));
    }
    if let Some((owner, _)) = taken.iter().find(|(_, a)| *a == addr) {
        return Err(Error::InvalidArgument(format!(
            "address {addr} is already leased to machine {owner}"
        )));
    }
    Ok(Ipv4Net::new(addr, subnet.prefix_len()).expect("prefix of a subnet"))
}

fn bad_address(text: &str) -> Error {
    Error::InvalidArgument(format!(
        "address {}: expected an IPv4 address such as 10.0.3.50 or 10.0.3.50/24",
        crate::names::shown(text)
    ))
}

/// The lowest free host address of the subnet after the gateway.
pub fn pick(subnet: &Ipv4Net, taken: &[Ipv4Addr]) -> Result<Ipv4Net> {
    let first = u32::from(gateway(subnet)) + 1;
    let last = u32::from(subnet.broadcast()) - 1;
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|a| !taken.contains(a))
        .map(|a| Ipv4Net::new(a, subnet.prefix_len()).expect("prefix of a subnet"))
        .ok_or_else(|| {
            Error::Failed(format!(
                "network {subnet} has no free address left; remove a machine from it or use a larger subnet"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn subnets_parse_and_bad_ones_say_why() {
        assert_eq!(parse_subnet("10.77.0.0/24").unwrap(), net("10.77.0.0/24"));
        for (bad, why) in [
            ("10.77.0.1/24", "host bits"),
            ("10.0.0.0/31", "prefix"),
            ("10.0.0.0/4", "prefix"),
            ("127.0.0.0/8", "loopback"),
            ("nonsense", "IPv4 network"),
            ("10.0.0.0", "IPv4 network"),
        ] {
            let e = parse_subnet(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn overlaps_with_routes_and_networks_are_refused() {
        let s = net("10.77.0.0/24");
        check_overlaps(&s, &[net("192.0.2.0/24"), net("0.0.0.0/0")], &[]).unwrap();
        let e = check_overlaps(&s, &[net("10.0.0.0/8")], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("route to 10.0.0.0/8"), "{e}");
        let e = check_overlaps(&s, &[], &[("lab".into(), net("10.77.0.128/25"))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("berth network lab"), "{e}");
    }

    #[test]
    fn static_addresses_are_checked() {
        let s = net("10.77.0.0/24");
        let taken = vec![("db".to_string(), Ipv4Addr::new(10, 77, 0, 9))];
        assert_eq!(
            check_static(&s, "10.77.0.50", &taken).unwrap(),
            net("10.77.0.50/24")
        );
        assert_eq!(
            check_static(&s, "10.77.0.50/24", &taken).unwrap(),
            net("10.77.0.50/24")
        );
        for (bad, why) in [
            ("10.78.0.5", "outside"),
            ("10.77.0.0", "network address"),
            ("10.77.0.255", "broadcast"),
            ("10.77.0.1", "gateway"),
            ("10.77.0.9", "leased to machine db"),
            ("10.77.0.5/16", "prefix /24"),
            ("ten", "expected an IPv4 address"),
        ] {
            let e = check_static(&s, bad, &taken).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn pick_takes_the_lowest_free_and_says_when_full() {
        let s = net("10.0.3.0/24");
        assert_eq!(pick(&s, &[]).unwrap(), net("10.0.3.2/24"));
        let taken = [Ipv4Addr::new(10, 0, 3, 2), Ipv4Addr::new(10, 0, 3, 3)];
        assert_eq!(pick(&s, &taken).unwrap(), net("10.0.3.4/24"));
        let tiny = net("10.0.3.0/30");
        assert_eq!(pick(&tiny, &[]).unwrap(), net("10.0.3.2/30"));
        let e = pick(&tiny, &[Ipv4Addr::new(10, 0, 3, 2)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no free address"), "{e}");
    }
}
