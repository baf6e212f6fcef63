//! The `inet berth` nftables table: NAT for berth's networks and port forwards to
//! machines. It is always rebuilt whole from [`Rules`], in one transaction, so it can
//! never hold a rule for a machine or network that is gone; no other table is touched.

use super::{PortForward, Proto};
use crate::error::{Error, Result};
use ipnet::Ipv4Net;
use nftables::batch::Batch;
use nftables::expr::{CT, Payload, PayloadField, Prefix};
use nftables::expr::{Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, NAT, NATFamily, Operator, Statement};
use nftables::types::{NfChainType, NfFamily, NfHook};
use std::borrow::Cow;
use std::net::Ipv4Addr;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

pub const TABLE: &str = "berth";

/// Everything the table holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub networks: Vec<NetworkRules>,
    pub forwards: Vec<Forward>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.forwards.is_empty()
    }
}

/// A berth network's part: masquerade when `nat`, and the masquerade of connections from
/// the host's loopback that a forward sends out of its bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub nat: bool,
}

/// One port forward of a running machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    pub machine: String,
    pub forward: PortForward,
    pub address: Ipv4Addr,
    pub bridge: String,
}

/// Where nft may be; PATH is searched last, as berthd's may be bare under systemd.
const NFT_PATHS: &[&str] = &["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"];

/// nft's limit for a rule comment (NFTNL_UDATA_COMMENT_MAXLEN).
const COMMENT_MAX: usize = 128;

/// The priorities nft calls dstnat and srcnat.
const DSTNAT: i32 = -100;
const SRCNAT: i32 = 100;

/// Replaces the table with `rules` (deletes it when they are empty).
pub async fn apply(rules: &Rules) -> Result<()> {
    let payload = serde_json::to_string(&batch(rules))
        .map_err(|e| Error::Failed(format!("cannot encode the nftables batch: {e}")))?;
    let nft = nft_binary();
    let mut child = tokio::process::Command::new(&nft)
        .args(["-j", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::Failed(format!(
                "cannot run {nft} to update the table inet {TABLE} (is the nftables package installed?): {e}"
            ))
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A write error shows up as nft's own failure below, with its message.
    let _ = stdin.write_all(payload.as_bytes()).await;
    drop(stdin);
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| Error::Failed(format!("cannot wait for {nft}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    Err(Error::Failed(format!(
        "nft could not replace the table inet {TABLE} ({}): {}",
        out.status,
        if stderr.is_empty() {
            "no message".to_string()
        } else {
            stderr.join("; ")
        }
    )))
}

fn nft_binary() -> String {
    NFT_PATHS
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map_or("nft", |p| p)
        .to_string()
}

/// The whole transaction `nft -j -f -` runs for `rules`. It starts by adding and then
/// deleting the table, so it never fails on a table that is or is not there, and
/// everything that follows starts from nothing: applying twice gives the same table.
pub fn batch(rules: &Rules) -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(table());
    b.delete(table());
    if rules.is_empty() {
        return b.to_nftables();
    }
    b.add(table());
    for (name, hook, prio) in [
        ("prerouting", NfHook::Prerouting, DSTNAT),
        ("output", NfHook::Output, DSTNAT),
        ("postrouting", NfHook::Postrouting, SRCNAT),
    ] {
        b.add(NfListObject::Chain(Chain {
            family: NfFamily::INet,
            table: TABLE.into(),
            name: name.into(),
            _type: Some(NfChainType::NAT),
            hook: Some(hook),
            prio: Some(prio),
            ..Chain::default()
        }));
    }
    // The same DNAT twice: prerouting sees connections from outside and from the
    // machines, output the host's own, to any of its addresses including 127.0.0.1.
    for chain in ["prerouting", "output"] {
        for f in &rules.forwards {
            b.add(rule(
                chain,
                forward(f),
                format!("machine {} {}", f.machine, f.forward),
            ));
        }
    }
    for n in &rules.networks {
        if n.nat {
            b.add(rule(
                "postrouting",
                vec![
                    ip_match("saddr", Operator::EQ, prefix(n.subnet)),
                    ip_match("daddr", Operator::NEQ, prefix(n.subnet)),
                    Statement::Masquerade(None),
                ],
                format!("network {} nat", n.bridge),
            ));
        }
        // A machine that connects to a forward of a machine on its own bridge gets the
        // reply straight over the bridge, from an address it did not call, unless the
        // connection leaves with the gateway's address.
        b.add(rule(
            "postrouting",
            vec![
                ip_match("saddr", Operator::EQ, prefix(n.subnet)),
                ip_match("daddr", Operator::EQ, prefix(n.subnet)),
                Statement::Match(Match {
                    left: Expression::Named(NamedExpression::CT(CT {
                        key: "status".into(),
                        family: None,
                        dir: None,
                    })),
                    right: Expression::String("dnat".into()),
                    op: Operator::IN,
                }),
                Statement::Masquerade(None),
            ],
            format!("network {} forwards between its machines", n.bridge),
        ));
        // A forward from the host's loopback would leave with 127.0.0.1 as its source,
        // which the machine can't answer: it leaves with the bridge's address instead.
        b.add(rule(
            "postrouting",
            vec![
                ip_match(
                    "saddr",
                    Operator::EQ,
                    prefix(Ipv4Net::new(Ipv4Addr::LOCALHOST, 8).expect("/8")),
                ),
                Statement::Match(Match {
                    left: Expression::Named(NamedExpression::Meta(Meta {
                        key: MetaKey::Oifname,
                    })),
                    right: Expression::String(n.bridge.clone().into()),
                    op: Operator::EQ,
                }),
                Statement::Masquerade(None),
            ],
            format!("network {} forwards from the host's loopback", n.bridge),
        ));
    }
    b.to_nftables()
}

fn table() -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        handle: None,
    })
}

fn rule(
    chain: &'static str,
    expr: Vec<Statement<'static>>,
    comment: String,
) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: chain.into(),
        expr: Cow::Owned(expr),
        comment: Some(truncate(comment, COMMENT_MAX).into()),
        ..Rule::default()
    })
}

/// `meta nfproto ipv4 fib daddr type local PROTO dport HOST dnat ip to ADDRESS:PORT`:
/// the table is inet, and an IPv6 connection to the port is not the machine's.
fn forward(f: &Forward) -> Vec<Statement<'static>> {
    let proto = match f.forward.proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    vec![
        Statement::Match(Match {
            left: Expression::Named(NamedExpression::Meta(Meta {
                key: MetaKey::Nfproto,
            })),
            right: Expression::String("ipv4".into()),
            op: Operator::EQ,
        }),
        Statement::Match(Match {
            left: Expression::Named(NamedExpression::Fib(Fib {
                result: FibResult::Type,
                flags: [FibFlag::Daddr].into_iter().collect(),
            })),
            right: Expression::String("local".into()),
            op: Operator::EQ,
        }),
        Statement::Match(Match {
            left: payload(proto, "dport"),
            right: Expression::Number(f.forward.host_port.into()),
            op: Operator::EQ,
        }),
        Statement::DNAT(Some(NAT {
            addr: Some(Expression::String(f.address.to_string().into())),
            family: Some(NATFamily::IP),
            port: Some(Expression::Number(f.forward.machine_port.into())),
            flags: None,
        })),
    ]
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn ip_match(field: &'static str, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left: payload("ip", field),
        right,
        op,
    })
}

fn prefix(net: Ipv4Net) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(net.network().to_string().into())),
        len: net.prefix_len().into(),
    }))
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn sample() -> Rules {
        Rules {
            networks: vec![
                NetworkRules {
                    bridge: "berth0".into(),
                    subnet: "10.0.3.0/24".parse().unwrap(),
                    nat: true,
                },
                NetworkRules {
                    bridge: "lab".into(),
                    subnet: "10.77.0.0/16".parse().unwrap(),
                    nat: false,
                },
            ],
            forwards: vec![
                Forward {
                    machine: "web".into(),
                    forward: "tcp:8080:80".parse().unwrap(),
                    address: "10.0.3.5".parse().unwrap(),
                    bridge: "berth0".into(),
                },
                Forward {
                    machine: "dns".into(),
                    forward: "udp:5353:53".parse().unwrap(),
                    address: "10.77.0.9".parse().unwrap(),
                    bridge: "lab".into(),
                },
            ],
        }
    }

    fn commands(rules: &Rules) -> Vec<Value> {
        let v = serde_json::to_value(batch(rules)).unwrap();
        v["nftables"].as_array().unwrap().clone()
    }

    fn rules_of<'a>(cmds: &'a [Value], chain: &str) -> Vec<&'a Value> {
        cmds.iter()
            .filter_map(|c| c["add"].get("rule"))
            .filter(|r| r["chain"] == chain)
            .collect()
    }

    #[test]
    fn empty_rules_only_delete_the_table() {
        let cmds = commands(&Rules::default());
        let table = json!({"family": "inet", "name": "berth"});
        assert_eq!(
            cmds,
            vec![
                json!({"add": {"table": table}}),
                json!({"delete": {"table": table}})
            ]
        );
    }

    #[test]
    fn the_table_is_replaced_whole() {
        let cmds = commands(&sample());
        let table = json!({"table": {"family": "inet", "name": "berth"}});
        assert_eq!(cmds[0], json!({"add": table}));
        assert_eq!(cmds[1], json!({"delete": table}));
        assert_eq!(cmds[2], json!({"add": table}));
        for c in &cmds {
            let obj = c.get("add").or(c.get("delete")).unwrap();
            let (_, o) = obj.as_object().unwrap().iter().next().unwrap();
            let name = o.get("table").or(o.get("name")).unwrap();
            assert_eq!(name, "berth", "{c}");
        }
        let chains: Vec<(&str, &str, i64)> = cmds
            .iter()
            .filter_map(|c| c["add"].get("chain"))
            .map(|c| {
                assert_eq!(c["type"], "nat");
                (
                    c["name"].as_str().unwrap(),
                    c["hook"].as_str().unwrap(),
                    c["prio"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            chains,
            [
                ("prerouting", "prerouting", -100),
                ("output", "output", -100),
                ("postrouting", "postrouting", 100)
            ]
        );
    }

    #[test]
    fn forwards_dnat_in_prerouting_and_output() {
        let cmds = commands(&sample());
        for chain in ["prerouting", "output"] {
            let rules = rules_of(&cmds, chain);
            assert_eq!(rules.len(), 2, "{chain}");
            assert_eq!(rules[0]["comment"], "machine web tcp:8080:80");
            let expr = rules[0]["expr"].as_array().unwrap();
            assert_eq!(
                expr[1]["match"],
                json!({"left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local", "op": "=="})
            );
            assert_eq!(
                expr[2]["match"],
                json!({"left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8080, "op": "=="})
            );
            assert_eq!(
                expr[3],
                json!({"dnat": {"addr": "10.0.3.5", "family": "ip", "port": 80}})
            );
            let udp = rules[1]["expr"].as_array().unwrap();
            assert_eq!(udp[2]["match"]["left"]["payload"]["protocol"], "udp");
            assert_eq!(udp[2]["match"]["right"], 5353);
            assert_eq!(udp[3]["dnat"]["addr"], "10.77.0.9");
            assert_eq!(udp[3]["dnat"]["port"], 53);
        }
    }

    #[test]
    fn networks_masquerade() {
        let cmds = commands(&sample());
        let post = rules_of(&cmds, "postrouting");
        let comments: Vec<&str> = post
            .iter()
            .map(|r| r["comment"].as_str().unwrap())
            .collect();
        assert_eq!(
            comments,
            [
                "network berth0 nat",
                "network berth0 forwards between its machines",
                "network berth0 forwards from the host's loopback",
                "network lab forwards between its machines",
                "network lab forwards from the host's loopback",
            ]
        );
        let nat = post[0]["expr"].as_array().unwrap();
        let subnet = json!({"prefix": {"addr": "10.0.3.0", "len": 24}});
        assert_eq!(nat[0]["match"]["left"]["payload"]["field"], "saddr");
        assert_eq!(nat[0]["match"]["right"], subnet);
        assert_eq!(nat[1]["match"]["op"], "!=");
        assert_eq!(nat[1]["match"]["right"], subnet);
        assert_eq!(nat[2], json!({"masquerade": null}));
        let lo = post[4]["expr"].as_array().unwrap();
        assert_eq!(
            lo[0]["match"]["right"],
            json!({"prefix": {"addr": "127.0.0.0", "len": 8}})
        );
        assert_eq!(
            lo[1]["match"],
            json!({"left": {"meta": {"key": "oifname"}}, "right": "lab", "op": "=="})
        );
    }

    #[test]
    fn long_comments_are_cut_on_a_character() {
        let s = truncate("é".repeat(100), COMMENT_MAX);
        assert!(s.len() <= COMMENT_MAX && s.chars().all(|c| c == 'é'), "{s}");
        assert_eq!(truncate("short".into(), COMMENT_MAX), "short");
    }

    fn nft_json(args: &[&str]) -> Value {
        let out = std::process::Command::new(nft_binary())
            .arg("-j")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn nft(script: &str) {
        let out = std::process::Command::new(nft_binary())
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(script.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
    }

    /// The ruleset's tables and, for `inet berth`, each rule as (chain, comment).
    fn listed() -> (Vec<String>, Vec<(String, String)>) {
        let v = nft_json(&["list", "ruleset"]);
        let mut tables = Vec::new();
        let mut rules = Vec::new();
        for o in v["nftables"].as_array().unwrap() {
            if let Some(t) = o.get("table") {
                tables.push(format!(
                    "{} {}",
                    t["family"].as_str().unwrap(),
                    t["name"].as_str().unwrap()
                ));
            }
            if let Some(r) = o.get("rule")
                && r["table"] == "berth"
            {
                rules.push((
                    r["chain"].as_str().unwrap().to_string(),
                    r["comment"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
        (tables, rules)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn apply_in_a_fresh_netns() {
        crate::net::testns::in_fresh_netns(|| {
            nft(
                "table ip other {\n chain c {\n type filter hook input priority 0; policy accept;\n counter\n }\n}\n",
            );
            let before = nft_json(&["list", "table", "ip", "other"]);

            // Deleting a table that is not there is fine.
            block_on(apply(&Rules::default())).unwrap();
            assert_eq!(listed().0, ["ip other"]);

            block_on(apply(&sample())).unwrap();
            let (tables, first) = listed();
            assert_eq!(tables, ["ip other", "inet berth"]);
            let count = |chain: &str| first.iter().filter(|(c, _)| c == chain).count();
            assert_eq!(
                (count("prerouting"), count("output"), count("postrouting")),
                (2, 2, 5)
            );
            assert!(
                first.contains(&("output".into(), "machine dns udp:5353:53".into())),
                "{first:?}"
            );

            // Again, and again with one forward less: replaced, never added to.
            block_on(apply(&sample())).unwrap();
            assert_eq!(listed().1, first);
            let mut fewer = sample();
            fewer.forwards.pop();
            block_on(apply(&fewer)).unwrap();
            let (_, second) = listed();
            assert_eq!(second.len(), first.len() - 2);
            assert!(!second.iter().any(|(_, c)| c.contains("dns")), "{second:?}");

            // nft reads the rules back as the brief's text, not something else.
            let text = std::process::Command::new(nft_binary())
                .args(["list", "table", "inet", "berth"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&text.stdout);
            for want in [
                "fib daddr type local tcp dport 8080 dnat ip to 10.0.3.5:80",
                "ip saddr 10.0.3.0/24 ip daddr != 10.0.3.0/24 masquerade",
                "ip saddr 127.0.0.0/8 oifname \"lab\" masquerade",
            ] {
                assert!(text.contains(want), "{want} not in:\n{text}");
            }

            block_on(apply(&Rules::default())).unwrap();
            assert_eq!(listed().0, ["ip other"]);
            assert_eq!(nft_json(&["list", "table", "ip", "other"]), before);
        });
    }

    #[test]
    fn nft_errors_carry_its_message() {
        crate::net::testns::in_fresh_netns(|| {
            let mut bad = sample();
            bad.networks[0].bridge = "x".repeat(40); // longer than an interface name
            let e = block_on(apply(&bad)).unwrap_err().to_string();
            assert!(
                e.starts_with("nft could not replace the table inet berth"),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");
            println!("{e}");
        });
    }
}
