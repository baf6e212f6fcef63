//! A bridge's DHCP and DNS server: dnsmasq (as lxc-net runs it), started by systemd as
//! the transient service `berth-dnsmasq-NETWORK.service`. Its leases follow berth's
//! IPAM (one dhcp-host line per machine: MAC, address, name) and it answers the names
//! of the network's machines and of the host; both files are re-read on SIGHUP.

use super::{NetworkConfig, mac_string};
use crate::error::{Error, IoContext, Result};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A machine dnsmasq knows: its eth0's MAC, its lease, its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub mac: [u8; 6],
    pub address: Ipv4Addr,
}

pub fn unit_name(network: &str) -> String {
    format!("berth-dnsmasq-{network}.service")
}

/// Where dnsmasq's files for `network` live under `dir`. dnsmasq re-reads them on
/// SIGHUP after it has dropped root, so `dir` must be one that other users may enter
/// (not berth's private runtime directory); [`write_files`] makes what is missing 0755.
pub fn files_dir(dir: &Path, network: &str) -> PathBuf {
    dir.join(network)
}

/// Where Debian's dnsmasq-base puts the binary (and older layouts).
const DNSMASQ_PATHS: &[&str] = &["/usr/sbin/dnsmasq", "/sbin/dnsmasq", "/usr/bin/dnsmasq"];

/// The user Debian's dnsmasq-base makes for dnsmasq to drop to.
const DNSMASQ_USER: &str = "dnsmasq";

/// How long a lease lasts before the machine renews it.
const LEASE_TIME: &str = "1h";

pub const DHCP_HOSTS: &str = "dhcp-hosts";
pub const HOSTS: &str = "hosts";
/// dnsmasq opens it as root, before it drops privileges, and keeps writing through that
/// descriptor: it needs no owner of its own (checked by the test below).
pub const LEASES: &str = "leases";

/// dnsmasq's argv (argv[0] the binary's absolute path).
pub fn argv(net: &NetworkConfig, files: &Path) -> Result<Vec<String>> {
    let binary = DNSMASQ_PATHS
        .iter()
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| {
            Error::NotSupported(format!(
                "dnsmasq is not installed (looked for {}): install the package dnsmasq-base \
                 for DHCP and DNS on berth's networks",
                DNSMASQ_PATHS.join(", ")
            ))
        })?;
    Ok(argv_for(net, files, binary, &drop_user()))
}

/// The user dnsmasq runs as once it has bound its sockets: its own if the system has
/// one, else nobody (dnsmasq's default, named so the choice shows in the unit).
fn drop_user() -> String {
    match nix::unistd::User::from_name(DNSMASQ_USER) {
        Ok(Some(_)) => DNSMASQ_USER.to_string(),
        _ => "nobody".to_string(),
    }
}

fn argv_for(net: &NetworkConfig, files: &Path, binary: &str, user: &str) -> Vec<String> {
    let file = |name: &str| files.join(name).display().to_string();
    let mut argv = vec![
        binary.to_string(),
        // systemd supervises it: no fork, and its log goes to the unit's journal.
        "--keep-in-foreground".into(),
        "--log-facility=-".into(),
        // None of the host's dnsmasq configuration applies to berth's.
        "--conf-file=/dev/null".into(),
        // The host's /etc/hosts would give a machine 127.0.1.1 for the host's name.
        "--no-hosts".into(),
        // Only this bridge, and never the loopback, where the host's own resolver may
        // listen: --interface alone would add lo.
        "--bind-interfaces".into(),
        format!("--interface={}", net.bridge()),
        "--except-interface=lo".into(),
        format!("--listen-address={}", net.gateway()),
        "--strict-order".into(),
        // Bare names are the machines'; they are answered here and never forwarded.
        "--domain-needed".into(),
        // systemd knows the PID; the default pid file would be shared by every network.
        "--pid-file=".into(),
        format!("--user={user}"),
        format!("--dhcp-hostsfile={}", file(DHCP_HOSTS)),
        format!("--addn-hosts={}", file(HOSTS)),
        format!("--dhcp-leasefile={}", file(LEASES)),
    ];
    if net.dhcp
        && let Some((first, last)) = dhcp_range(net)
    {
        argv.extend([
            format!(
                "--dhcp-range={first},{last},{},{LEASE_TIME}",
                net.subnet.netmask()
            ),
            // The bridge is berth's: a machine asking for an address it had elsewhere
            // is told no at once instead of waiting out a timeout.
            "--dhcp-authoritative".into(),
            "--dhcp-no-override".into(),
        ]);
    }
    argv
}

/// The subnet's hosts after the gateway; None when the gateway is its only one.
fn dhcp_range(net: &NetworkConfig) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let first = Ipv4Addr::from(u32::from(net.gateway()) + 1);
    let last = Ipv4Addr::from(u32::from(net.subnet.broadcast()).checked_sub(1)?);
    (first <= last && net.subnet.contains(&first)).then_some((first, last))
}

/// Writes the hosts files dnsmasq reads (atomically), before a start or a SIGHUP.
pub fn write_files(
    files: &Path,
    net: &NetworkConfig,
    host_name: &str,
    leases: &[Lease],
) -> Result<()> {
    make_dirs(files)?;
    write_atomic(files, DHCP_HOSTS, &dhcp_hosts(leases))?;
    write_atomic(files, HOSTS, &hosts(net, host_name, leases))
}

/// `MAC,ADDRESS,NAME` per machine (dnsmasq's dhcp-host syntax): each machine always
/// gets its own lease and name.
pub fn dhcp_hosts(leases: &[Lease]) -> String {
    leases
        .iter()
        .map(|l| format!("{},{},{}\n", mac_string(&l.mac), l.address, l.name))
        .collect()
}

/// `ADDRESS NAME` per machine and the gateway under the host's name, so machines find
/// each other and the host by name.
pub fn hosts(net: &NetworkConfig, host_name: &str, leases: &[Lease]) -> String {
    let mut text = String::new();
    let host_name = host_name.trim();
    if !host_name.is_empty() && !host_name.contains(char::is_whitespace) {
        text.push_str(&format!("{} {host_name}\n", net.gateway()));
    }
    for l in leases {
        text.push_str(&format!("{} {}\n", l.address, l.name));
    }
    text
}

/// Makes `dir` and whatever of its parents is missing, each 0755 whatever the umask,
/// so that dnsmasq's user can reach the files.
fn make_dirs(dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("cannot create", d, e)),
        }
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .at("cannot set the mode of", d)?;
    }
    Ok(())
}

/// Temp file and rename: dnsmasq, re-reading on SIGHUP, never sees half a file.
fn write_atomic(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&temp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    write().at("cannot write", &temp)?;
    std::fs::rename(&temp, &path).at("cannot rename into place", &temp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    fn net(subnet: &str, dhcp: bool) -> NetworkConfig {
        NetworkConfig {
            name: "brt0".into(),
            subnet: subnet.parse().unwrap(),
            nat: true,
            dhcp,
            created_at: 0,
        }
    }

    fn leases() -> Vec<Lease> {
        vec![
            Lease {
                name: "web".into(),
                mac: [0x02, 0, 0, 0, 0, 0x05],
                address: "10.99.0.5".parse().unwrap(),
            },
            Lease {
                name: "db.lab".into(),
                mac: [0x02, 0xab, 0xcd, 0xef, 0x01, 0x23],
                address: "10.99.0.77".parse().unwrap(),
            },
        ]
    }

    #[test]
    fn argv_binds_the_bridge_only_and_names_the_files() {
        let argv = argv_for(
            &net("10.99.0.0/24", true),
            Path::new("/run/berth-net/brt0"),
            "/usr/sbin/dnsmasq",
            "dnsmasq",
        );
        assert_eq!(argv[0], "/usr/sbin/dnsmasq");
        for want in [
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-hosts",
            "--bind-interfaces",
            "--interface=brt0",
            "--except-interface=lo",
            "--listen-address=10.99.0.1",
            "--strict-order",
            "--user=dnsmasq",
            "--dhcp-hostsfile=/run/berth-net/brt0/dhcp-hosts",
            "--addn-hosts=/run/berth-net/brt0/hosts",
            "--dhcp-leasefile=/run/berth-net/brt0/leases",
            "--dhcp-range=10.99.0.2,10.99.0.254,255.255.255.0,1h",
            "--dhcp-authoritative",
            "--dhcp-no-override",
        ] {
            assert!(argv.iter().any(|a| a == want), "{want} not in {argv:?}");
        }
    }

    #[test]
    fn no_dhcp_no_range() {
        let argv = argv_for(&net("10.99.0.0/24", false), Path::new("/x"), "/d", "nobody");
        assert!(
            !argv.iter().any(|a| a.starts_with("--dhcp-range")),
            "{argv:?}"
        );
        assert!(
            !argv.iter().any(|a| a == "--dhcp-authoritative"),
            "{argv:?}"
        );
        // The leases file is named either way: DNS alone still reads the hosts files.
        assert!(
            argv.iter().any(|a| a == "--addn-hosts=/x/hosts"),
            "{argv:?}"
        );
    }

    #[test]
    fn ranges_leave_out_the_gateway_and_the_broadcast() {
        let r = |s: &str| dhcp_range(&net(s, true)).map(|(a, b)| format!("{a}-{b}"));
        assert_eq!(r("10.99.0.0/30").as_deref(), Some("10.99.0.2-10.99.0.2"));
        assert_eq!(r("10.0.0.0/8").as_deref(), Some("10.0.0.2-10.255.255.254"));
        assert_eq!(r("10.99.0.0/31"), None);
        let argv = argv_for(&net("172.20.0.0/16", true), Path::new("/x"), "/d", "u");
        assert!(
            argv.iter()
                .any(|a| a == "--dhcp-range=172.20.0.2,172.20.255.254,255.255.0.0,1h"),
            "{argv:?}"
        );
    }

    #[test]
    fn argv_finds_dnsmasq_or_names_the_package() {
        match argv(&net("10.99.0.0/24", true), Path::new("/x")) {
            Ok(argv) => assert!(argv[0].starts_with('/') && argv[0].ends_with("/dnsmasq")),
            Err(e) => assert!(e.to_string().contains("dnsmasq-base"), "{e}"),
        }
    }

    #[test]
    fn files_content() {
        let n = net("10.99.0.0/24", true);
        assert_eq!(
            dhcp_hosts(&leases()),
            "02:00:00:00:00:05,10.99.0.5,web\n02:ab:cd:ef:01:23,10.99.0.77,db.lab\n"
        );
        assert_eq!(
            hosts(&n, "myhost", &leases()),
            "10.99.0.1 myhost\n10.99.0.5 web\n10.99.0.77 db.lab\n"
        );
        assert_eq!(hosts(&n, "", &[]), "");
        assert_eq!(dhcp_hosts(&[]), "");
    }

    /// A directory under /tmp that every user may enter, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(what: &str) -> TempDir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            TempDir(
                std::env::temp_dir().join(format!("berth-test-{what}-{}-{n}", std::process::id())),
            )
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn write_files_replaces_them_readable_by_all() {
        let tmp = TempDir::new("dnsmasq-files");
        let files = tmp.0.join("a/b");
        let n = net("10.99.0.0/24", true);
        write_files(&files, &n, "h", &leases()).unwrap();
        write_files(&files, &n, "h", &leases()[..1]).unwrap();
        let read = |f: &str| std::fs::read_to_string(files.join(f)).unwrap();
        assert_eq!(read(DHCP_HOSTS), "02:00:00:00:00:05,10.99.0.5,web\n");
        assert_eq!(read(HOSTS), "10.99.0.1 h\n10.99.0.5 web\n");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&files), 0o755);
        assert_eq!(mode(&tmp.0.join("a")), 0o755);
        assert_eq!(mode(&files.join(HOSTS)), 0o644);
        let names: Vec<_> = std::fs::read_dir(&files)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "no temp file left: {names:?}");
    }

    /// Kills and reaps a child when the test ends, however it ends.
    struct Reaped(Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn run(cmd: &mut Command) -> String {
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{cmd:?}: {text}");
        text
    }

    fn ip(args: &str) {
        run(Command::new("ip").args(args.split_whitespace()));
    }

    /// An A query for `name`, as a resolver sends it.
    fn dns_query(id: u16, name: &str) -> Vec<u8> {
        let mut q = Vec::new();
        q.extend(id.to_be_bytes());
        q.extend([0x01, 0x00]); // recursion desired
        q.extend([0, 1, 0, 0, 0, 0, 0, 0]); // one question
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend(label.as_bytes());
        }
        q.extend([0, 0, 1, 0, 1]); // root, type A, class IN
        q
    }

    /// The addresses of the A records in a reply to [`dns_query`].
    fn dns_answers(id: u16, reply: &[u8]) -> Vec<Ipv4Addr> {
        assert_eq!(reply[..2], id.to_be_bytes());
        let answers = u16::from_be_bytes([reply[6], reply[7]]);
        // Skip the header and the question (name, type, class).
        let mut at = 12;
        while reply[at] != 0 {
            at += reply[at] as usize + 1;
        }
        at += 5;
        let mut found = Vec::new();
        for _ in 0..answers {
            // The name: a pointer to the question, or labels.
            if reply[at] & 0xc0 == 0xc0 {
                at += 2;
            } else {
                while reply[at] != 0 {
                    at += reply[at] as usize + 1;
                }
                at += 1;
            }
            let rtype = u16::from_be_bytes([reply[at], reply[at + 1]]);
            let len = u16::from_be_bytes([reply[at + 8], reply[at + 9]]) as usize;
            at += 10;
            if rtype == 1 && len == 4 {
                found.push(Ipv4Addr::new(
                    reply[at],
                    reply[at + 1],
                    reply[at + 2],
                    reply[at + 3],
                ));
            }
            at += len;
        }
        found
    }

    /// Asks `server` for `name` until it answers (dnsmasq may still be starting).
    fn resolve(server: Ipv4Addr, name: &str) -> Vec<Ipv4Addr> {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 512];
        for id in 1u16.. {
            sock.send_to(&dns_query(id, name), (server, 53)).unwrap();
            // ECONNREFUSED (nothing bound yet) and timeouts both mean: again.
            if let Ok(n) = sock.recv(&mut buf)
                && u16::from_be_bytes([buf[0], buf[1]]) == id
            {
                return dns_answers(id, &buf[..n]);
            }
            assert!(
                Instant::now() < deadline,
                "{server} never answered for {name}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        unreachable!()
    }

    #[test]
    fn dnsmasq_serves_names_and_leases_in_a_fresh_netns() {
        if !Path::new("/usr/sbin/dnsmasq").exists() {
            println!("skipped: dnsmasq is not installed");
            return;
        }
        crate::net::testns::in_fresh_netns(|| {
            let tmp = TempDir::new("dnsmasq");
            let files = tmp.0.join("brt0");
            let n = net("10.99.0.0/24", true);
            ip("link set lo up");
            ip("link add brt0 type bridge");
            ip("addr add 10.99.0.1/24 dev brt0");
            ip("link set brt0 up");
            write_files(&files, &n, "thehost", &leases()).unwrap();
            let argv = argv(&n, &files).unwrap();
            run(Command::new(&argv[0]).args(&argv[1..]).arg("--test"));
            let _dnsmasq = Reaped(
                Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            let gw = n.gateway();
            assert_eq!(resolve(gw, "web"), [Ipv4Addr::new(10, 99, 0, 5)]);
            assert_eq!(resolve(gw, "thehost"), [gw]);

            // A new machine: the files are rewritten and dnsmasq told by SIGHUP.
            let mut more = leases();
            more.push(Lease {
                name: "late".into(),
                mac: [0x02, 0, 0, 0, 0, 0x09],
                address: "10.99.0.9".parse().unwrap(),
            });
            write_files(&files, &n, "thehost", &more).unwrap();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(_dnsmasq.0.id() as i32),
                nix::sys::signal::Signal::SIGHUP,
            )
            .unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while resolve(gw, "late").is_empty() {
                assert!(Instant::now() < deadline, "SIGHUP did not bring in 'late'");
                std::thread::sleep(Duration::from_millis(100));
            }

            if !Path::new("/bin/busybox").exists() {
                println!("DHCP part skipped: /bin/busybox is not installed");
                return;
            }
            // A machine: a network namespace of its own behind a veth on the bridge, its
            // eth0 with the MAC of db.lab's lease.
            let holder = Reaped(unsafe {
                use std::os::unix::process::CommandExt;
                Command::new("sleep")
                    .arg("60")
                    .pre_exec(|| {
                        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(std::io::Error::from)
                    })
                    .spawn()
                    .unwrap()
            });
            let pid = holder.0.id();
            let lease = &leases()[1];
            ip(&format!(
                "link add vbt-host type veth peer name vbt-m address {} netns {pid}",
                mac_string(&lease.mac)
            ));
            ip("link set vbt-host master brt0 up");
            let in_machine = |program: &str, args: &[&str]| {
                let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
                let mut cmd = Command::new(program);
                cmd.args(args);
                unsafe {
                    use std::os::unix::process::CommandExt;
                    cmd.pre_exec(move || {
                        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(std::io::Error::from)
                    });
                }
                run(&mut cmd)
            };
            in_machine("ip", &["link", "set", "vbt-m", "up"]);
            let out = in_machine(
                "/bin/busybox",
                &[
                    "udhcpc",
                    "-i",
                    "vbt-m",
                    "-n",
                    "-q",
                    "-f",
                    "-s",
                    "/bin/true",
                    "-t",
                    "10",
                    "-T",
                    "1",
                ],
            );
            assert!(
                out.contains(&format!("lease of {} obtained", lease.address)),
                "{out}"
            );
            // dnsmasq, no longer root, kept the lease in its file.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let kept = std::fs::read_to_string(files.join(LEASES)).unwrap_or_default();
                if kept.contains(&lease.address.to_string()) {
                    break;
                }
                assert!(Instant::now() < deadline, "no lease in the file: {kept:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
}
