//! Machine networking in a test host: berth's bridges, veths, leases, dnsmasq, NAT and
//! port forwards, driven through berthctl and checked with the host's own tools (ip, nft,
//! a DNS query, HTTP). All traffic stays in the host's network namespace: a veth
//! "uplink0" with a default route stands in for the outside world.

mod common;

use common::{CgroupMode, TestHost, assert_no_leftovers, boot_with_berth, wait_until};
use std::time::Duration;

const SHORTLY: Duration = Duration::from_secs(10);

/// The outside world as the host sees it: uplink0 at 192.0.2.10/24 with a default route.
fn add_uplink(host: &TestHost) {
    host.okw("ip link add uplink0 type veth peer name uplink0p");
    host.okw("ip link set uplink0p up");
    host.okw("ip addr add 192.0.2.10/24 dev uplink0");
    host.okw("ip link set uplink0 up");
    host.okw("ip route add default via 192.0.2.1 dev uplink0");
    host.okw("ip link set lo up");
    // A firewall of the host's own, which berth must leave alone.
    host.ok(&[
        "nft",
        "add table ip hostfw; add chain ip hostfw input { type filter hook input priority 0; }; \
         add rule ip hostfw input tcp dport 9 counter accept",
    ]);
}

/// What berth must give back once everything is removed: links, routes and the ruleset.
fn network_state(host: &TestHost) -> String {
    // Counters and the state of a bridge's ports move; names, kinds and flags must not.
    let links = host.okw("ip -o link show");
    let links: Vec<String> = links
        .lines()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        // A bridge's carrier follows its ports; it is not something berth leaves.
        .map(|l| l.replace("NO-CARRIER,", ""))
        .collect();
    format!(
        "{}\n--\n{}\n--\n{}",
        links.join("\n"),
        host.okw("ip -4 route show table all")
            .replace(" linkdown", ""),
        host.okw("nft list ruleset")
    )
}

/// A busybox machine that serves `text` over HTTP on port 80 (httpd in the background,
/// so that PID 1, a shell, ends at once on the halt signal).
fn create_web(host: &TestHost, name: &str, text: &str, net_flags: &str) {
    let script = format!(
        "trap 'exit 0' TERM; mkdir -p /tmp/www && echo {text} > /tmp/www/index.html && \
         httpd -p 80 -h /tmp/www; while :; do sleep 1; done"
    );
    let mut argv: Vec<&str> = vec!["berthctl", "create", name, "--template", "busybox"];
    argv.extend(net_flags.split_whitespace());
    argv.extend(["--", "/bin/sh", "-c", &script]);
    host.ok(&argv);
}

/// An HTTP/1.0 GET of / sent with busybox nc (busybox wget's -T crashes in a static
/// build), so the server's answer ends with the connection.
fn get(target: &str, port: u16) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {target} {port}")
}

/// HTTP GET from the host, retried until the server is up.
fn fetch(host: &TestHost, target: &str, port: u16) -> String {
    let mut body = String::new();
    let script = get(target, port).replace("| nc", "| busybox nc");
    let got = wait_until(&format!("{target}:{port} answers"), SHORTLY, || {
        let out = host.sh(&script);
        body = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success() && body.contains("200 OK")
    });
    assert!(got, "{target}:{port} never answered: {body}");
    body
}

fn berth_table(host: &TestHost) -> String {
    host.run(&["nft", "list", "table", "inet", "berth"])
        .stdout
        .iter()
        .map(|b| *b as char)
        .collect()
}

fn bridged_machines_talk(mode: CgroupMode, test: &str) {
    let Some(host) = boot_with_berth(mode, test) else {
        return;
    };
    add_uplink(&host);
    let before = network_state(&host);
    let hostfw = host.okw("nft list table ip hostfw");

    // berth0 exists by default.
    let list = host.okw("berthctl network list");
    assert!(
        list.contains("berth0") && list.contains("10.0.3.0/24"),
        "{list}"
    );
    host.okw("berthctl network create lab --subnet 10.77.0.0/24");
    let link = host.okw("ip -o addr show dev lab");
    assert!(link.contains("10.77.0.1/24"), "{link}");

    create_web(
        &host,
        "web",
        "hello-from-web",
        "--network bridge --bridge lab --address 10.77.0.50/24 --port tcp:8080:80",
    );
    create_web(&host, "db", "hello-from-db", "--bridge lab");
    host.okw("berthctl start web");
    host.okw("berthctl start db");

    // Addresses, the gateway, and each other, by address and by name.
    let addr = host.shell_ok("web", "ip -4 -o addr show dev eth0");
    assert!(addr.contains("10.77.0.50/24"), "{addr}");
    host.shell_ok("web", "ping -c1 -W2 10.77.0.1");
    let db_ip = host.okw("berthctl status db");
    assert!(
        db_ip.contains("10.77.0.2"),
        "db got the lowest free lease: {db_ip}"
    );
    assert!(fetch_in(&host, "web", "10.77.0.2").contains("hello-from-db"));
    assert!(fetch_in(&host, "web", "db").contains("hello-from-db"));
    assert!(fetch_in(&host, "db", "web").contains("hello-from-web"));
    let resolv = host.shell_ok("db", "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.77.0.1"), "{resolv}");

    // The forward answers on the host's loopback and on its outside address.
    assert!(fetch(&host, "127.0.0.1", 8080).contains("hello-from-web"));
    assert!(fetch(&host, "192.0.2.10", 8080).contains("hello-from-web"));

    // list and status show the address, the link and counters that match ip -s link.
    let listed = host.okw("berthctl list");
    assert!(
        listed.contains("IPV4") && listed.contains("10.77.0.50"),
        "{listed}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&host.okw("berthctl --json status web")).expect("status JSON");
    let veth = status["host_interface"].as_str().expect("host_interface");
    assert_eq!(veth, "vb-web");
    let ip_json: serde_json::Value =
        serde_json::from_str(&host.ok(&["ip", "-j", "-s", "link", "show", veth])).unwrap();
    let rx = ip_json[0]["stats64"]["rx"]["bytes"].as_u64().unwrap();
    let shown_rx = status["rx_bytes"].as_u64().expect("rx_bytes");
    // Nothing is sent meanwhile but a stray ARP or two.
    assert!(
        shown_rx <= rx && rx - shown_rx < 1000 && rx > 0,
        "status rx {shown_rx}, ip -s link rx {rx}"
    );
    let bridge_of = host.okw("ip -o link show vb-web");
    assert!(bridge_of.contains("master lab"), "{bridge_of}");

    // The table holds the forward and NAT; the host's own table is as it was.
    assert_eq!(
        host.okw("nft list tables"),
        "table ip hostfw\ntable inet berth\n"
    );
    assert_eq!(host.okw("nft list table ip hostfw"), hostfw);
    let table = berth_table(&host);
    assert!(
        table.contains("dport 8080")
            && table.contains("10.77.0.50")
            && table.contains("masquerade"),
        "{table}"
    );

    // A restarted berthd finds its machines and keeps their forwards.
    host.okw("systemctl restart berthd");
    host.okw("berthctl list");
    assert!(berth_table(&host).contains("dport 8080"));
    assert!(fetch(&host, "127.0.0.1", 8080).contains("hello-from-web"));

    // Stopping a machine takes its veth and forwards away; removing it its lease.
    host.okw("berthctl stop web");
    assert!(!host.run(&["ip", "link", "show", "vb-web"]).status.success());
    assert!(!berth_table(&host).contains("dport 8080"));
    host.okw("berthctl remove web");
    host.okw("berthctl remove --force db");
    assert!(wait_until("db's veth is gone", SHORTLY, || {
        !host.run(&["ip", "link", "show", "vb-db"]).status.success()
    }));
    let hosts = host.read("/run/berth-dns/lab/hosts").unwrap_or_default();
    assert!(!hosts.contains("10.77.0.50"), "lease kept: {hosts}");

    host.okw("berthctl network remove lab");
    host.okw("berthctl network remove berth0");
    assert_no_leftovers(&host);
    assert_eq!(
        network_state(&host),
        before,
        "berth left network state behind"
    );
}

/// HTTP GET inside a machine, retried until the server answers; `target` is an
/// address or a name, resolved by the machine's own resolver (berth's DNS).
fn fetch_in(host: &TestHost, machine: &str, target: &str) -> String {
    let mut body = String::new();
    let got = wait_until(&format!("{target} answers in {machine}"), SHORTLY, || {
        let out = host.shell(machine, &get(target, 80));
        body = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success() && body.contains("200 OK")
    });
    assert!(got, "{target} never answered in {machine}: {body}");
    body
}

#[test]
fn bridged_machines_talk_hybrid() {
    bridged_machines_talk(CgroupMode::Hybrid, "bridged_machines_talk_hybrid");
}

#[test]
fn bridged_machines_talk_unified() {
    bridged_machines_talk(CgroupMode::Unified, "bridged_machines_talk_unified");
}

#[test]
fn bad_network_input_is_refused_and_leaves_nothing() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "bad_network_input") else {
        return;
    };
    add_uplink(&host);
    host.okw("berthctl network list");
    let after_default = network_state(&host);

    // Networks.
    let e = host.failsw("berthctl network create out --subnet 192.0.2.0/25");
    assert!(e.contains("overlaps the host's route"), "{e}");
    let e = host.failsw("berthctl network create half --subnet 10.0.3.128/25");
    assert!(e.contains("berth network berth0"), "{e}");
    let e = host.failsw("berthctl network create uplink0 --subnet 10.88.0.0/24");
    assert!(e.contains("not berth's"), "{e}");
    let e = host.failsw("berthctl network create a-very-long-name --subnet 10.88.0.0/24");
    assert!(e.contains("at most 15"), "{e}");
    let e = host.failsw("berthctl network create lab --subnet 10.88.0.1/24");
    assert!(e.contains("host bits"), "{e}");
    assert_eq!(
        network_state(&host),
        after_default,
        "a refused network left something"
    );

    // Addresses and ports.
    host.okw("berthctl network create lab --subnet 10.77.0.0/24");
    create_web(
        &host,
        "a",
        "a",
        "--bridge lab --address 10.77.0.9 --port tcp:8080:80",
    );
    for (flags, why) in [
        ("--bridge lab --address 10.78.0.5", "outside"),
        (
            "--bridge lab --address 10.77.0.9",
            "already leased to machine a",
        ),
        ("--bridge lab --address 10.77.0.1", "gateway"),
        ("--bridge lab --address 10.77.0.255", "broadcast"),
        (
            "--bridge lab --port tcp:8080:80",
            "already forwarded to machine a",
        ),
        ("--bridge lab --port tcp:0:80", "port 0"),
        ("--bridge lab --port tcp:70000:80", "70000"),
        ("--bridge nonet", "no network named"),
        ("--network none --port tcp:81:80", "need Network bridge"),
    ] {
        let mut argv = vec!["berthctl", "create", "b", "--template", "busybox"];
        argv.extend(flags.split_whitespace());
        let out = host.run(&argv);
        assert!(!out.status.success(), "{flags} was accepted");
        // berthctl's own refusals are one line; clap's usage errors add a hint below.
        let e = String::from_utf8_lossy(&out.stderr);
        let first = e.lines().next().unwrap_or_default();
        assert!(first.contains(why), "{flags}: {e}");
    }
    let listed = host.okw("berthctl list");
    assert!(
        !listed.contains(" b "),
        "a refused machine exists: {listed}"
    );

    // A host port some process holds: refused at create, and at start when it was
    // taken after the create. A failed start leaves no veth and no rule.
    host.ok(&[
        "systemd-run",
        "--unit=holder",
        "busybox",
        "nc",
        "-l",
        "-p",
        "9090",
    ]);
    assert!(wait_until("the holder listens", SHORTLY, || {
        host.okw("ss -Htln").contains(":9090")
    }));
    let e = host.failsw("berthctl create b --template busybox --bridge lab --port tcp:9090:80");
    assert!(e.contains("in use"), "{e}");
    create_web(&host, "c", "c", "--bridge lab --port tcp:9191:80");
    host.ok(&[
        "systemd-run",
        "--unit=holder2",
        "busybox",
        "nc",
        "-l",
        "-p",
        "9191",
    ]);
    assert!(wait_until("the second holder listens", SHORTLY, || {
        host.okw("ss -Htln").contains(":9191")
    }));
    let e = host.failsw("berthctl start c");
    assert!(e.contains("in use"), "{e}");
    assert!(!host.run(&["ip", "link", "show", "vb-c"]).status.success());
    assert!(!berth_table(&host).contains("9191"));
    host.okw("systemctl stop holder holder2");

    // A network in use by a running machine stays; a stopped machine on a removed
    // network is refused at start, with what to do.
    host.okw("berthctl start a");
    let e = host.failsw("berthctl network remove lab");
    assert!(e.contains("in use by running machine a"), "{e}");
    host.okw("berthctl stop a");
    host.okw("berthctl network remove lab");
    let e = host.failsw("berthctl start a");
    assert!(e.contains("no longer exists"), "{e}");
    assert!(!host.run(&["ip", "link", "show", "vb-a"]).status.success());
    // Moved to a network that exists, it starts.
    host.okw("berthctl set a --bridge berth0");
    host.okw("berthctl start a");
    let addr = host.shell_ok("a", "ip -4 -o addr show dev eth0");
    assert!(addr.contains("10.0.3."), "{addr}");
    host.okw("berthctl remove --force a");
    host.okw("berthctl remove c");
    assert_no_leftovers(&host);
    assert_eq!(network_state(&host), after_default);
}

#[test]
fn dhcp_gives_the_berth_lease() {
    let Some(host) = boot_with_berth(CgroupMode::Unified, "dhcp_gives_the_berth_lease") else {
        return;
    };
    host.ok(&[
        "berthctl",
        "create",
        "dh",
        "--template",
        "busybox",
        "--network",
        "bridge",
        "--",
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 1; done",
    ]);
    host.okw("berthctl start dh");
    let status = host.okw("berthctl status dh");
    assert!(status.contains("10.0.3.2"), "{status}");
    // Drop the address berth set, then ask dnsmasq for one: the same comes back.
    host.shell_ok("dh", "ip addr flush dev eth0");
    let out = host.shell_ok("dh", "udhcpc -i eth0 -n -q -f -t 5 -s /bin/true 2>&1");
    assert!(out.contains("10.0.3.2"), "udhcpc: {out}");
    let leases = host
        .read("/run/berth-dns/berth0/leases")
        .unwrap_or_default();
    assert!(leases.contains("10.0.3.2"), "dnsmasq's leases: {leases}");
    host.okw("berthctl remove --force dh");
    assert_no_leftovers(&host);
}

#[test]
fn host_network_shares_the_hosts_links() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "host_network") else {
        return;
    };
    add_uplink(&host);
    host.ok(&[
        "berthctl",
        "create",
        "h",
        "--template",
        "busybox",
        "--network",
        "host",
        "--",
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 1; done",
    ]);
    host.okw("berthctl start h");
    let dev = host.shell_ok("h", "cat /proc/net/dev");
    assert!(dev.contains("uplink0"), "{dev}");
    // Its root can't change the host's network.
    let out = host.shell("h", "ip link set uplink0 down");
    assert!(
        !out.status.success(),
        "a host-network machine took uplink0 down"
    );
    assert!(host.okw("ip -o link show uplink0").contains("UP"));
    host.okw("berthctl remove --force h");

    // The default: a loopback of its own, up.
    host.ok(&[
        "berthctl",
        "create",
        "n",
        "--template",
        "busybox",
        "--",
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 1; done",
    ]);
    host.okw("berthctl start n");
    let dev = host.shell_ok("n", "cat /proc/net/dev");
    assert!(!dev.contains("uplink0") && dev.contains("lo:"), "{dev}");
    host.shell_ok("n", "ping -c1 -W2 127.0.0.1");
    host.okw("berthctl remove --force n");
    assert_no_leftovers(&host);
}

#[test]
fn debian_dhcp_client_gets_its_berth_lease() {
    let Some(host) = boot_with_berth(CgroupMode::Unified, "debian_dhcp") else {
        return;
    };
    common::debian::debian_template(&host, "deb");
    host.okw("berthctl create deb1 --template deb --network bridge");
    host.okw("berthctl start deb1");
    let booted = wait_until("deb1's systemd is up", Duration::from_secs(90), || {
        let out = host.run(&[
            "berthctl",
            "exec",
            "deb1",
            "--",
            "systemctl",
            "is-system-running",
        ]);
        let state = String::from_utf8_lossy(&out.stdout);
        matches!(state.trim(), "running" | "degraded")
    });
    assert!(booted, "deb1 did not boot");
    // Its own systemd-networkd asks for an address over DHCP, as a Debian installed on
    // a network with DHCP does.
    host.shell_ok("deb1",
        "printf '[Match]\\nName=eth0\\n[Network]\\nDHCP=ipv4\\n' > /etc/systemd/network/80-eth0.network && \
         systemctl enable --now systemd-networkd",
    );
    let mac = host.shell_ok("deb1", "cat /sys/class/net/eth0/address");
    let mut leases = String::new();
    let leased = wait_until("dnsmasq leases deb1 its address", SHORTLY * 3, || {
        leases = host
            .read("/run/berth-dns/berth0/leases")
            .unwrap_or_default();
        leases.contains(mac.trim()) && leases.contains("10.0.3.2")
    });
    assert!(leased, "dnsmasq's leases: {leases}");
    let mut link = String::new();
    let dhcp = wait_until("networkd shows its DHCP address", SHORTLY * 3, || {
        link = host
            .shell("deb1", "networkctl status eth0 --no-pager")
            .stdout
            .iter()
            .map(|b| *b as char)
            .collect();
        link.contains("10.0.3.2")
    });
    assert!(dhcp, "networkctl status eth0:\n{link}");
    host.okw("berthctl remove --force deb1");
    assert_no_leftovers(&host);
}
