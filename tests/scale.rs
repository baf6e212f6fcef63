//! berth with a few hundred running machines on one host (issue 9): `berthctl list` and
//! `list --json`, `status` of many names, `network list`, GetManagedObjects and
//! ListMachinesDetailed answer for every machine. berthctl used to ask every machine's
//! properties at once and failed past the bus's 128 pending replies per connection.
//! Nothing here is timed against a limit; benches/machines.rs (BERTH_BENCH=scale)
//! measures. `BERTH_SCALE_MACHINES` changes the number of machines (default 300).

mod common;

use common::{CgroupMode, TestHost, assert_no_leftovers, boot_with_berth};
use std::time::{Duration, Instant};

/// berthctl calls the host runs at once while it makes or removes the machines.
const PARALLEL: usize = 4;
/// Machines on berth0, for the IPV4 column, RX/TX figures and `network list`.
const BRIDGED: [&str; 4] = ["b1", "b2", "b3", "b4"];
/// How long making or removing all of them may take before the host command is killed.
const BULK_LIMIT: Duration = Duration::from_secs(600);

fn machine_count() -> usize {
    match std::env::var("BERTH_SCALE_MACHINES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("BERTH_SCALE_MACHINES={v:?} is not a count")),
        Err(_) => 300,
    }
}

/// `script` run by bash in the host, which must exit 0, with a limit for bulk work.
fn bulk(host: &TestHost, script: &str) {
    host.ok_for(BULK_LIMIT, &["bash", "-c", script]);
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn many_running_machines(mode: CgroupMode, test: &str) {
    let Some(host) = boot_with_berth(mode, test) else {
        return;
    };
    let count = machine_count();
    // A figure this host counts for every scope (property, status key), as systemd
    // does: tasks on hybrid hosts, CPU time on the unified test host (whose cpu.stat is
    // there without controllers; it has no pids or memory controller).
    let counted = match mode {
        CgroupMode::Unified => ("CPUUsageNSec", "cpu_usage_nsec"),
        _ => ("TasksCurrent", "tasks_current"),
    };
    let plain: Vec<String> = (1..=count).map(|i| format!("m{i:04}")).collect();
    let mut all: Vec<String> = plain.clone();
    all.extend(BRIDGED.iter().map(|b| b.to_string()));
    let started = Instant::now();

    // The first one alone builds the busybox template that the others copy.
    let create = "berthctl create \"$0\" --template busybox -- /bin/sleep 1000000 >/dev/null \
                  && berthctl start \"$0\"";
    bulk(&host, &format!("bash -c '{create}' {}", plain[0]));
    bulk(
        &host,
        &format!(
            "printf '%s\\n' {} | xargs -n 1 -P {PARALLEL} bash -c '{create}'",
            plain[1..].join(" ")
        ),
    );
    for b in BRIDGED {
        host.okw(&format!(
            "berthctl create {b} --template busybox --network bridge -- /bin/sleep 1000000"
        ));
        host.okw(&format!("berthctl start {b}"));
    }
    eprintln!(
        "{} machines made and started in {:.1?}",
        all.len(),
        started.elapsed()
    );

    // berthd holds a pidfd per running machine, so it raised its limit of descriptors
    // past the usual 1024; what runs in a machine is back to 1024 (select() needs it).
    let soft = |pid: &str| -> u64 {
        let limits = host.ok(&["cat", &format!("/proc/{pid}/limits")]);
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Max open files");
        line.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    let berthd = host.okw("pidof berthd").trim().to_string();
    assert!(
        soft(&berthd) > 1024,
        "berthd's soft limit: {}",
        soft(&berthd)
    );
    let leader = json(&host.okw(&format!("berthctl status {} --json", plain[0])))["leader"]
        .as_u64()
        .expect("a leader")
        .to_string();
    assert_eq!(soft(&leader), 1024);

    // The table: every machine on a line of its own, each column where its header is.
    let listed = host.okw("berthctl list");
    let mut lines = listed.lines();
    let header = lines.next().expect("a header line");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), all.len(), "{listed}");
    let state_at = header.find("STATE").expect("STATE column");
    let ipv4_at = header.find("IPV4").expect("IPV4 column");
    for (row, name) in rows.iter().zip(sorted(&all)) {
        assert!(row.starts_with(&format!("{name} ")), "{row} is not {name}");
        assert!(row[state_at..].starts_with("running "), "{row}");
        let ipv4 = &row[ipv4_at..];
        if BRIDGED.contains(&name.as_str()) {
            assert!(ipv4.starts_with("10.0.3."), "{row}");
        } else {
            assert!(ipv4.starts_with("- "), "{row}");
        }
    }

    // --json: the same shape as with one machine.
    let listed = json(&host.okw("berthctl list --json"));
    let listed = listed.as_array().expect("an array");
    assert_eq!(listed.len(), all.len());
    for (entry, name) in listed.iter().zip(sorted(&all)) {
        let keys: Vec<&str> = entry
            .as_object()
            .expect("an object per machine")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "ipv4",
                "leader",
                "name",
                "path",
                "state",
                "template",
                "unit",
                "unprivileged"
            ],
            "{entry}"
        );
        assert_eq!(entry["name"], name.as_str());
        assert_eq!(entry["state"], "running", "{entry}");
        assert!(entry["leader"].as_u64().is_some_and(|p| p > 1), "{entry}");
        assert_eq!(entry["unit"], format!("machine-{name}.scope"));
        assert_eq!(entry["template"], "busybox");
        assert_eq!(entry["unprivileged"], true);
        assert_eq!(
            entry["ipv4"].is_string(),
            BRIDGED.contains(&name.as_str()),
            "{entry}"
        );
    }

    // status of every machine at once, in the order asked.
    let mut argv = vec!["berthctl", "status"];
    argv.extend(all.iter().map(String::as_str));
    let text = host.ok(&argv);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("Name:"))
        .map(str::trim)
        .collect();
    assert_eq!(names, all.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        text.matches("\nState:          running\n").count(),
        all.len()
    );
    argv.push("--json");
    let statuses = json(&host.ok(&argv));
    let statuses = statuses.as_array().expect("an array for several names");
    assert_eq!(statuses.len(), all.len());
    for (status, name) in statuses.iter().zip(&all) {
        assert_eq!(status["name"], name.as_str());
        assert_eq!(status["state"], "running");
        assert!(
            status[counted.1].as_u64().is_some_and(|n| n >= 1),
            "{status}"
        );
        assert_eq!(
            status["rx_bytes"].is_u64(),
            BRIDGED.contains(&name.as_str()),
            "{status}"
        );
    }
    // A name that is not there is told, and does not hide the others.
    let out = host.run(&["berthctl", "status", &all[0], "nosuch", &all[1]]);
    assert!(!out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!("Name:           {}\n", all[0]))
            && shown.contains(&format!("Name:           {}\n", all[1])),
        "{shown}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nosuch"),
        "{out:?}"
    );

    let networks = host.okw("berthctl network list");
    assert!(
        networks.contains(&format!("{} machines", BRIDGED.len())),
        "{networks}"
    );

    // A frontend's first read: every object, with its properties and live figures.
    let objects = json(&host.okw(
        "busctl call --json=short org.berth.Berth1 /org/berth/Berth1 \
         org.freedesktop.DBus.ObjectManager GetManagedObjects",
    ));
    let objects = objects["data"][0].as_object().expect("a{oa{sa{sv}}}");
    let machines: Vec<&serde_json::Value> = objects
        .iter()
        .filter(|(path, _)| path.starts_with("/org/berth/Berth1/machine/"))
        .map(|(_, ifaces)| &ifaces["org.berth.Berth1.Machine"])
        .collect();
    assert_eq!(machines.len(), all.len());
    for m in &machines {
        assert_eq!(m["State"]["data"], "running", "{m}");
        assert!(m[counted.0]["data"].as_u64().is_some_and(|n| n >= 1), "{m}");
    }

    // The batch call, open to anyone as the other reads are.
    let detailed = json(&host.okw(
        "setpriv --reuid=65534 --regid=65534 --clear-groups busctl call --json=short \
         org.berth.Berth1 /org/berth/Berth1/Manager org.berth.Berth1.Manager \
         ListMachinesDetailed asas 0 2 State TasksCurrent",
    ));
    let detailed = detailed["data"][0].as_array().expect("a(soa{sv})");
    assert_eq!(detailed.len(), all.len());
    for entry in detailed {
        let props = entry[2].as_object().expect("a{sv}");
        assert_eq!(props.len(), 2, "{entry}");
        assert_eq!(props["State"]["data"], "running", "{entry}");
    }
    let out = host.runw(
        "busctl call org.berth.Berth1 /org/berth/Berth1/Manager org.berth.Berth1.Manager \
         ListMachinesDetailed asas 0 1 Nonsense",
    );
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Nonsense"),
        "{out:?}"
    );
    eprintln!("checks done at {:.1?}", started.elapsed());

    bulk(
        &host,
        &format!(
            "printf '%s\\n' {} | xargs -n 1 -P {PARALLEL} berthctl remove --force",
            all.join(" ")
        ),
    );
    eprintln!("all removed at {:.1?}", started.elapsed());
    assert_eq!(host.okw("berthctl list").trim(), "No machines.");
    assert_no_leftovers(&host);
}

fn sorted(names: &[String]) -> Vec<String> {
    let mut sorted = names.to_vec();
    sorted.sort();
    sorted
}

#[test]
fn many_running_machines_hybrid() {
    many_running_machines(CgroupMode::Hybrid, "many_running_machines_hybrid");
}

#[test]
fn many_running_machines_unified() {
    many_running_machines(CgroupMode::Unified, "many_running_machines_unified");
}
