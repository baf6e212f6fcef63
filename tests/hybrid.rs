//! berth on a hybrid (cgroup v1 + v2) systemd host: the whole life of a machine, driven
//! only through berthctl, busctl and D-Bus, checked in the cgroup files systemd wrote.

mod common;

use common::{
    CgroupMode, TestHost, assert_no_leftovers, boot_with_berth, interface_members, wait_until,
};
use std::path::Path;
use std::time::Duration;

/// How long a change the daemon makes on its own (a process gone, a state reached) may
/// take to show.
const SHORTLY: Duration = Duration::from_secs(5);

fn scope_file(host: &TestHost, controller: &str, file: &str) -> String {
    host.read(&format!(
        "/sys/fs/cgroup/{controller}/machine.slice/machine-box.scope/{file}"
    ))
    .unwrap_or_else(|e| panic!("{controller}/{file}: {e}"))
    .trim()
    .to_string()
}

fn list_json(host: &TestHost) -> serde_json::Value {
    serde_json::from_str(&host.okw("berthctl --json list")).expect("list --json is JSON")
}

#[test]
fn machine_lifecycle() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "machine_lifecycle") else {
        return;
    };
    host.okw(
        "berthctl create box --template busybox --memory 64M --cpu-shares 256 --tasks-max 32 \
         --cpu-quota 25% --blkio-weight 300",
    );
    let listed = host.okw("berthctl list");
    assert!(
        listed.contains("box") && listed.contains("stopped"),
        "{listed}"
    );
    // A default machine, unprivileged: everything below holds for it.
    assert_eq!(list_json(&host)[0]["unprivileged"], true);
    host.okw("berthctl start box");

    // systemd holds the machine in its scope with the limits, in the v1 files.
    assert_eq!(
        scope_file(&host, "memory", "memory.limit_in_bytes"),
        "67108864"
    );
    assert_eq!(scope_file(&host, "cpu", "cpu.shares"), "256");
    assert_eq!(scope_file(&host, "pids", "pids.max"), "32");
    assert_eq!(scope_file(&host, "cpu", "cpu.cfs_quota_us"), "25000");
    assert_eq!(scope_file(&host, "cpu", "cpu.cfs_period_us"), "100000");
    // systemd writes the weight to blkio.weight, or with BFQ to blkio.bfq.weight on
    // BFQ's own scale (300 becomes 118 there); either way not the default 100/500.
    let blkio = host.path("/sys/fs/cgroup/blkio/machine.slice/machine-box.scope");
    if let Some(f) = ["blkio.bfq.weight", "blkio.weight"]
        .into_iter()
        .find(|f| blkio.join(f).exists())
    {
        let weight = scope_file(&host, "blkio", f);
        assert!(weight != "100" && weight != "500", "{f} = {weight}");
    }
    let show = host.okw(
        "systemctl show machine-box.scope -p Slice -p ActiveState -p BlockIOWeight \
         -p MemoryAccounting -p TasksAccounting -p CPUAccounting",
    );
    for want in [
        "Slice=machine.slice",
        "ActiveState=active",
        "BlockIOWeight=300",
        "MemoryAccounting=yes",
        "TasksAccounting=yes",
        "CPUAccounting=yes",
    ] {
        assert!(show.contains(want), "missing {want} in:\n{show}");
    }

    // systemd-machined knows the machine too.
    let machines = host.okw("machinectl list --no-legend");
    assert!(
        machines
            .lines()
            .any(|l| l.starts_with("box ") && l.contains("container") && l.contains("berth")),
        "{machines}"
    );

    // berthctl's table and JSON agree with what systemd says.
    let listed = host.okw("berthctl list");
    let header = listed.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("STATE"),
        "{listed}"
    );
    let json = list_json(&host);
    let entry = &json.as_array().unwrap()[0];
    assert_eq!(entry["name"], "box");
    assert_eq!(entry["state"], "running");
    let leader = entry["leader"].as_u64().unwrap();
    assert!(leader > 1);
    // Read inside the host: cgroup.procs shows PIDs in the reader's PID namespace.
    let procs = host.okw("cat /sys/fs/cgroup/systemd/machine.slice/machine-box.scope/cgroup.procs");
    assert!(procs.lines().any(|p| p == leader.to_string()), "{procs}");
    let status: serde_json::Value =
        serde_json::from_str(&host.okw("berthctl --json status box")).unwrap();
    assert_eq!(status["unit"], "machine-box.scope");
    assert_eq!(status["template"], "busybox");
    assert_eq!(status["limits"]["MemoryMax"], 67108864);

    // Inside: PID 1 is busybox init, the hostname is the name, the host is invisible.
    assert_eq!(
        host.okw("berthctl exec box -- cat /proc/1/comm").trim(),
        "init"
    );
    assert_eq!(host.okw("berthctl exec box -- hostname").trim(), "box");
    let ps = host.okw("berthctl exec box -- ps -o pid,comm");
    assert!(
        !ps.contains("systemd") && !ps.contains("dbus"),
        "host processes leak:\n{ps}"
    );
    assert!(ps.lines().count() <= 4, "{ps}");
    let mounts = host.okw("berthctl exec box -- cat /proc/mounts");
    // Only the machine's own mounts: no berth state, no host /run. The cgroup
    // hierarchies are mounted in the machine's cgroup namespace (its scope is their
    // root), the controllers read-only: only name=systemd and cgroup2 are its to write.
    assert!(!mounts.contains("/var/lib/berth"), "{mounts}");
    for line in mounts.lines().filter(|l| l.contains("cgroup")) {
        let fields: Vec<&str> = line.split(' ').collect();
        let target = fields[1];
        assert!(target.starts_with("/sys/fs/cgroup"), "{line}");
        let writable = target == "/sys/fs/cgroup/systemd" || target == "/sys/fs/cgroup/unified";
        assert_eq!(fields[3].starts_with("rw"), writable, "{line}");
    }
    // About 45: berth's own, the masks over the host's kernel files, the hierarchies.
    assert!(
        !mounts.contains("/run/dbus") && mounts.lines().count() < 55,
        "{mounts}"
    );
    assert!(mounts.contains("sysfs /sys sysfs ro"), "{mounts}");
    // Every tmpfs is bounded, as nspawn bounds them (the kernel shows size= and
    // nr_inodes= only when they differ from its defaults, from half the RAM).
    let option = |target: &str, key: &str| -> u64 {
        let line = mounts
            .lines()
            .find(|l| l.starts_with(&format!("tmpfs {target} tmpfs ")))
            .unwrap_or_else(|| panic!("no tmpfs on {target}:\n{mounts}"));
        let options = line.split(' ').nth(3).unwrap();
        let value = options
            .split(',')
            .find_map(|o| o.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in {line}"));
        value.trim_end_matches('k').parse().unwrap()
    };
    let ram_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("MemTotal");
    assert_eq!(option("/dev", "size"), 4096);
    assert_eq!(option("/dev", "nr_inodes"), 65536);
    for (target, percent, inodes) in [("/dev/shm", 10, 409600), ("/run", 20, 819200)] {
        assert_eq!(option(target, "nr_inodes"), inodes, "{target}");
        let (size, want) = (option(target, "size"), ram_kib * percent / 100);
        assert!(
            size.abs_diff(want) <= 8,
            "{target}: {size}k is not {percent}% of {ram_kib}k"
        );
    }
    assert_eq!(option("/tmp", "nr_inodes"), 409600);
    let cgroup = host.okw("berthctl exec box -- cat /proc/1/cgroup");
    assert!(
        cgroup.lines().any(|l| l.ends_with(":/")),
        "cgroup namespace: {cgroup}"
    );
    let out = host.sh("berthctl exec box -- sh -c 'echo err >&2; exit 7'");
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "err");
    let out = host.sh("echo hello | berthctl exec box --env FOO=bar -- sh -c 'cat; echo $FOO'");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello\nbar\n",
        "{out:?}"
    );
    let out = host.runw("berthctl exec box -- no-such-command");
    assert_eq!(out.status.code(), Some(127));
    // The exec'd command counts against the machine's limits.
    let out = host.sh("berthctl exec box -- sh -c 'for i in $(seq 40); do sleep 1 & done; wait'");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("can't fork"),
        "forked past TasksMax=32: {out:?}"
    );
    // The shell gave up; its sleeps run out on their own before the machine can fork
    // again. Beside the init, the scope holds the resident exec helper those commands
    // were forked from (src/spawn/resident/), one for all of them.
    let residents = || {
        // Inside the host, where the PIDs cgroup.procs lists are its own.
        host.ok(&[
            "sh",
            "-c",
            "for p in $(cat /sys/fs/cgroup/pids/machine.slice/machine-box.scope/cgroup.procs); do \
             grep -q __exec-helper /proc/$p/cmdline 2>/dev/null && echo $p; done; true",
        ])
        .split_whitespace()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let only_init_and_helper =
        || scope_file(&host, "pids", "pids.current") == "2" && residents().len() == 1;
    assert!(wait_until(
        "the machine's init and its resident exec helper to be its only tasks",
        SHORTLY,
        only_init_and_helper
    ));
    let resident = residents();
    host.okw("berthctl exec box -- true");
    assert_eq!(residents(), resident, "the next exec uses the same helper");
    // It stays outside the machine's PID namespace: nothing inside sees it.
    let inside = host.okw("berthctl exec box -- ps -o args");
    assert!(!inside.contains("exec-helper"), "{inside}");
    // What it forks gets SIGPIPE back (Rust ignores it in the helper; exec keeps that).
    let ignored = host.okw("berthctl exec box -- grep SigIgn /proc/self/status");
    let mask =
        u64::from_str_radix(ignored.split_whitespace().nth(1).expect("a mask"), 16).expect("hex");
    assert_eq!(
        mask & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE ignored: {ignored}"
    );
    // Idle, it leaves (after 10 s), and the machine holds its init alone again.
    assert!(wait_until(
        "the resident exec helper to leave when idle",
        Duration::from_secs(40),
        || scope_file(&host, "pids", "pids.current") == "1" && residents().is_empty()
    ));

    // A command whose caller dies is not left running in the machine.
    let sleeping = || host.okw("berthctl exec box -- ps").contains("sleep 1000");
    let caller = host.sh(
        "SECRET=exec-secret-417 berthctl exec box --env SECRET --env TOKEN=exec-token-9 \
         -- sleep 1000 </dev/null >/dev/null 2>&1 & echo $!",
    );
    let caller = String::from_utf8_lossy(&caller.stdout).trim().to_string();
    assert!(
        wait_until("the command to start", SHORTLY, sleeping),
        "the command never started"
    );
    // The request (environment and all) reaches the helper off its command line: the
    // only command line with a value is the one the user typed, and a bare --env KEY
    // keeps even that clean.
    let everyone = host.okw("ps -eo args");
    assert!(everyone.contains("__exec-helper"), "{everyone}");
    assert!(!everyone.contains("exec-secret-417"), "{everyone}");
    let with_token: Vec<_> = everyone
        .lines()
        .filter(|l| l.contains("exec-token-9"))
        .collect();
    assert!(
        with_token.len() == 1 && with_token[0].starts_with("berthctl exec"),
        "{everyone}"
    );
    let env = host.ok(&[
        "berthctl",
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "tr '\\0' '\\n' < /proc/$(pidof sleep)/environ",
    ]);
    assert!(
        env.contains("SECRET=exec-secret-417") && env.contains("TOKEN=exec-token-9"),
        "{env}"
    );
    host.ok(&["kill", "-9", &caller]);
    assert!(
        wait_until("the command to end", SHORTLY, || !sleeping()),
        "command outlived its caller"
    );

    // Live limits go through systemd and stay for the next start.
    host.okw("berthctl set box --memory 128M --tasks-max 64");
    assert_eq!(
        scope_file(&host, "memory", "memory.limit_in_bytes"),
        "134217728"
    );
    assert_eq!(scope_file(&host, "pids", "pids.max"), "64");
    // A limit the kernel refuses (below what the machine uses) is an error, and the
    // limits in force and on disk stay as they were.
    let out = host.runw("berthctl set box --memory 4096");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("did not take effect"),
        "{err}"
    );
    assert_eq!(
        scope_file(&host, "memory", "memory.limit_in_bytes"),
        "134217728"
    );
    let status = host.okw("berthctl status box");
    assert!(status.contains("MemoryMax=128M"), "{status}");
    let show = host.okw("systemctl show machine-box.scope -p MemoryLimit");
    assert_eq!(
        show.trim(),
        "MemoryLimit=134217728",
        "systemd's view put back"
    );
    // One limit under two names, with two values, is refused.
    let out = host.runw("berthctl set box --memory 1G --limit MemoryLimit=2G");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("two names"), "{err}");

    // A command running through a resident exec helper when berthd restarts: its call
    // ended with berthd, so the command and the helper end too.
    host.sh("berthctl exec box -- sleep 1009 </dev/null >/dev/null 2>&1 &");
    assert!(wait_until("the command to start", SHORTLY, || {
        host.run(&["pgrep", "-f", "^sleep 1009"]).status.success() && residents().len() == 1
    }));
    // berthd restarts; the machine keeps running and is found again.
    host.okw("systemctl restart berthd");
    assert!(wait_until(
        "the command and the resident exec helper to end with berthd",
        SHORTLY,
        || !host.run(&["pgrep", "-f", "^sleep 1009"]).status.success() && residents().is_empty()
    ));
    let json = list_json(&host);
    assert_eq!(json[0]["state"], "running", "{json}");
    assert_eq!(json[0]["leader"].as_u64(), Some(leader));

    host.okw("berthctl stop box");
    assert_eq!(list_json(&host)[0]["state"], "stopped");
    assert!(
        !host
            .path("/sys/fs/cgroup/memory/machine.slice/machine-box.scope")
            .exists()
    );
    let units = host.okw("systemctl list-units --all --no-legend machine-box.scope");
    assert!(units.trim().is_empty(), "scope left behind: {units}");

    // A second start after stop works and gets the stored limits.
    host.okw("berthctl start box");
    assert_eq!(
        scope_file(&host, "memory", "memory.limit_in_bytes"),
        "134217728"
    );
    host.okw("berthctl remove box --force");
    assert_eq!(host.okw("berthctl --json list").trim(), "[]");
    assert!(!host.path("/var/lib/berth/machines/box").exists());
    assert_no_leftovers(&host);
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "bad_input") else {
        return;
    };
    let fails = |argv: &[&str], needle: &str| {
        let out = host.run(argv);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{argv:?} should fail: {err}");
        assert!(err.contains(needle), "{argv:?}: {err:?} lacks {needle:?}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    };
    let long = "a".repeat(65);
    for bad in ["", ".hidden", "a..b", "a/b", long.as_str(), "sp ace", "a_b"] {
        fails(
            &["berthctl", "create", bad, "--template", "busybox"],
            "invalid machine name",
        );
    }
    fails(
        &["berthctl", "create", "x", "--template", "nope"],
        "no template named",
    );
    for (flag, value, needle) in [
        ("--memory", "64Q", "64Q"),
        ("--memory", "0", "MemoryMax"),
        ("--memory", "-5", "MemoryMax"),
        ("--memory", "99999999999T", "too large"),
        ("--tasks-max", "0", "TasksMax"),
        ("--cpu-shares", "1", "CPUShares"),
        ("--cpu-shares", "18446744073709551616", "CPUShares"),
        ("--cpu-quota", "0", "CPUQuota"),
        ("--limit", "Frobnicate=1", "Frobnicate"),
        // systemd does not manage the v1 cpuset controller: refused, not dropped.
        ("--cpus", "0-1", "AllowedCPUs"),
    ] {
        fails(
            &[
                "berthctl",
                "create",
                "x",
                "--template",
                "busybox",
                flag,
                value,
            ],
            needle,
        );
    }
    fails(&["berthctl", "start", "ghost"], "no machine named");
    // exec calls the machine's object without GetMachine: the same words.
    fails(
        &["berthctl", "exec", "ghost", "--", "true"],
        "no machine named \"ghost\" (berthctl list shows the machines)",
    );
    // None of the refused creations left anything behind.
    assert_no_leftovers(&host);

    host.okw("berthctl create x --template busybox");
    fails(
        &["berthctl", "create", "x", "--template", "busybox"],
        "already exists",
    );
    fails(&["berthctl", "stop", "x"], "not running");
    fails(&["berthctl", "set", "x", "--memory", "12X"], "12X");
    host.okw("berthctl start x");
    fails(&["berthctl", "start", "x"], "already running");
    fails(&["berthctl", "remove", "x"], "running");
    fails(&["berthctl", "exec", "x", "--", ""], "no command");
    fails(&["berthctl", "thaw", "x"], "only a frozen machine");
    // Hybrid hosts freeze through the v1 freezer (tests/freeze.rs covers it in depth).
    host.okw("berthctl freeze x");
    fails(&["berthctl", "freeze", "x"], "only a running machine");
    host.okw("berthctl thaw x");
    let out = host.runw(
        "busctl call org.berth.Berth1 /org/berth/Berth1/machine/x org.berth.Berth1.Machine \
         Kill si everyone 15",
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("whom"),
        "{out:?}"
    );

    // A payload that cannot start leaves the machine failed, with no scope behind.
    host.okw("berthctl create broken --template busybox -- /no/such/init");
    fails(&["berthctl", "start", "broken"], "/no/such/init");
    let units = host.okw("systemctl list-units --all --no-legend machine-broken.scope");
    assert!(units.trim().is_empty(), "{units}");
    assert_eq!(
        host.okw(
            "busctl get-property org.berth.Berth1 /org/berth/Berth1/machine/broken \
                  org.berth.Berth1.Machine State"
        )
        .trim(),
        "s \"failed\""
    );

    // kill --whom leader with SIGKILL ends the machine; berthd notices.
    host.okw("berthctl kill x --whom leader --signal KILL");
    wait_for_state(&host, "x", "stopped");
    host.okw("berthctl remove x");
    host.okw("berthctl remove broken");
    assert_no_leftovers(&host);
}

/// The machine's state as `berthctl list --json` tells it.
fn state_of(host: &TestHost, name: &str) -> Option<String> {
    list_json(host)
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .map(|m| m["state"].as_str().unwrap().to_string())
}

fn wait_for_state(host: &TestHost, name: &str, want: &str) {
    let what = format!("machine {name} to be {want}");
    let reached = || state_of(host, name).as_deref() == Some(want);
    assert!(
        wait_until(&what, 2 * SHORTLY, reached),
        "machine {name} never became {want}: {}",
        host.okw("berthctl list")
    );
}

#[test]
fn dbus_api_matches_the_contract() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "dbus_api") else {
        return;
    };
    let create = "busctl call org.berth.Berth1 /org/berth/Berth1/Manager \
                  org.berth.Berth1.Manager CreateMachine ssa{sv}";
    // Errors, as scripts see them through busctl.
    let out = host.runw(&format!("{create} a..b busybox 0"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid machine name"));
    let out = host.runw(&format!(
        "{create} web busybox 2 MemoryMax s 64Q TasksMax t 16"
    ));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("64Q"));

    host.okw(&format!(
        "{create} web busybox 2 MemoryMax t 67108864 TasksMax t 16"
    ));
    let objects = host.okw(
        "busctl call --json=short org.berth.Berth1 /org/berth/Berth1 \
         org.freedesktop.DBus.ObjectManager GetManagedObjects",
    );
    assert!(
        objects.contains("/org/berth/Berth1/machine/web"),
        "{objects}"
    );
    assert!(objects.contains("org.berth.Berth1.Machine"), "{objects}");
    let get = |path: &str, iface: &str, prop: &str| {
        host.okw(&format!(
            "busctl get-property org.berth.Berth1 {path} {iface} {prop}"
        ))
        .trim()
        .to_string()
    };
    let machine = ("/org/berth/Berth1/machine/web", "org.berth.Berth1.Machine");
    let manager = ("/org/berth/Berth1/Manager", "org.berth.Berth1.Manager");
    assert_eq!(get(machine.0, machine.1, "State"), "s \"stopped\"");
    assert_eq!(get(machine.0, machine.1, "Unit"), "s \"machine-web.scope\"");
    assert_eq!(get(manager.0, manager.1, "CgroupMode"), "s \"hybrid\"");
    assert_eq!(get(manager.0, manager.1, "SystemdVersion"), "u 252");

    // The introspection files users install describe the live daemon exactly.
    for (iface, path) in [
        ("org.berth.Berth1.Manager", manager.0),
        ("org.berth.Berth1.Machine", machine.0),
        // web was made from busybox, built on first use.
        (
            "org.berth.Berth1.Template",
            "/org/berth/Berth1/template/busybox",
        ),
        // berthd makes berth0 on its first start.
        (
            "org.berth.Berth1.Network",
            "/org/berth/Berth1/network/berth0",
        ),
    ] {
        let live = host.okw(&format!(
            "busctl introspect --xml-interface org.berth.Berth1 {path}"
        ));
        let live = interface_members(&live, iface).expect("interface in live XML");
        let file = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("dbus/{iface}.xml")),
        )
        .unwrap();
        let file = interface_members(&file, iface).expect("interface in file");
        assert!(!file.is_empty(), "dbus/{iface}.xml declares no members");
        assert_eq!(live, file, "dbus/{iface}.xml differs from the live daemon");
    }

    // install.sh put berthctl's completion and manual page where bash and man look.
    let completion = host
        .read("/usr/local/share/bash-completion/completions/berthctl")
        .unwrap();
    assert!(completion.contains("complete -F _berthctl"), "{completion}");
    let man = host.read("/usr/local/share/man/man1/berthctl.1").unwrap();
    assert!(man.contains(".TH berthctl 1"), "{man}");

    // Mutating calls reach berthd from anyone (the bus policy lets polkit decide), and
    // berthd refuses another user that nothing authorizes (tests/authorization.rs has
    // polkit's side).
    let out = host.runw(&format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups {create} other busybox 0"
    ));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("uid 65534") && stderr.contains("call CreateMachine on machine \"other\""),
        "{out:?}"
    );
    assert!(!host.path("/var/lib/berth/machines/other").exists());
    // ... while reading stays open to everyone.
    let out = host.runw(
        "setpriv --reuid=65534 --regid=65534 --clear-groups busctl call org.berth.Berth1 \
         /org/berth/Berth1/Manager org.berth.Berth1.Manager ListMachines",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"web\""));

    host.okw(&format!(
        "busctl call org.berth.Berth1 {} org.berth.Berth1.Machine Remove",
        machine.0
    ));

    // Names with dashes get systemd's unit escaping and bus label escaping.
    host.okw("berthctl create my-box --template busybox");
    host.okw("berthctl start my-box");
    let status: serde_json::Value =
        serde_json::from_str(&host.okw("berthctl --json status my-box")).unwrap();
    assert_eq!(status["unit"], "machine-my\\x2dbox.scope");
    assert_eq!(
        host.ok(&["systemctl", "is-active", "machine-my\\x2dbox.scope"])
            .trim(),
        "active"
    );
    assert_eq!(
        get("/org/berth/Berth1/machine/my_2dbox", machine.1, "Name"),
        "s \"my-box\""
    );
    assert_eq!(
        host.okw("berthctl exec my-box -- hostname").trim(),
        "my-box"
    );
    host.okw("berthctl remove --force my-box");

    // A PID 1 that ignores the halt signal (sleep has no handler, and PID 1 of a
    // namespace only gets handled signals; without berth's init, which would pass it on)
    // is killed once StopTimeoutUSec has passed.
    host.okw(&format!(
        "{create} stubborn busybox 3 Command as 2 /bin/sleep 1000 StopTimeoutUSec t 1000000 \
         Init b false"
    ));
    host.okw("berthctl start stubborn");
    let started = std::time::Instant::now();
    host.okw("berthctl stop stubborn");
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(900), "{took:?}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    assert!(host.journal("berthd").contains("did not halt in time"));
    host.okw("berthctl remove stubborn");
    assert_no_leftovers(&host);
}

/// The comparison `dbus_api_matches_the_contract` relies on: blind to what XML leaves free
/// and to the order of members, and not to any change of a member.
#[test]
fn interface_comparison_sees_every_member_change() {
    const XML: &str = r#"<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
  <interface name="org.example.Other"><method name="Elsewhere"/></interface>
  <interface name="org.example.I">
    <!-- <method name="Commented"/> -->
    <method name="Kill">
      <arg name="whom" type="s" direction="in"/>
      <arg name="signal" type="i" direction="in"/>
      <arg type="a(ss)" direction="out"/>
    </method>
    <property name="Usage" type="t" access="read">
      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="false"/>
    </property>
    <signal name="Gone"><arg name="name" type="s"/></signal>
    <annotation name="org.example.Flag" value="yes"/>
  </interface>
  <node name="child"/>
</node>"#;
    let members = |xml: &str| interface_members(xml, "org.example.I").expect("interface found");
    let original = members(XML);
    assert_eq!(original.len(), 4, "{original:?}");

    let same = r#"<node><interface name='org.example.I'>
        <annotation value="yes" name="org.example.Flag"></annotation>
        <signal name="Gone"><arg type="s" name="name" direction="out"/></signal>
        <property access="read" type="t" name="Usage"><annotation
          name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="false"/></property>
        <method name="Kill"><arg name="whom" type="s"/><arg direction="in" name="signal"
          type="i"></arg><arg type="a(ss)" direction="out"/></method>
      </interface></node>"#;
    assert_eq!(members(same), original, "only order and spelling differ");

    let changes = [
        ("name=\"Kill\"", "name=\"Kil\""),
        ("type=\"i\"", "type=\"u\""),
        ("name=\"signal\"", "name=\"sig\""),
        (
            "type=\"a(ss)\" direction=\"out\"",
            "type=\"a(ss)\" direction=\"in\"",
        ),
        (
            "<arg name=\"whom\" type=\"s\" direction=\"in\"/>\n      <arg name=\"signal\" type=\"i\" direction=\"in\"/>",
            "<arg name=\"signal\" type=\"i\" direction=\"in\"/>\n      <arg name=\"whom\" type=\"s\" direction=\"in\"/>",
        ),
        ("type=\"t\"", "type=\"u\""),
        ("access=\"read\"", "access=\"readwrite\""),
        ("value=\"false\"", "value=\"const\""),
        ("value=\"yes\"", "value=\"no\""),
        (
            "<arg name=\"name\" type=\"s\"/>",
            "<arg name=\"name\" type=\"o\"/>",
        ),
        (
            "<signal name=\"Gone\">",
            "<signal name=\"Gone\"><arg type=\"b\"/>",
        ),
        (
            "<!-- <method name=\"Commented\"/> -->",
            "<method name=\"Commented\"/>",
        ),
    ];
    for (from, to) in changes {
        assert!(XML.contains(from), "{from} is in the sample");
        let changed = XML.replacen(from, to, 1);
        assert_ne!(members(&changed), original, "{from} -> {to} goes unnoticed");
    }
    assert_eq!(interface_members(XML, "org.example.Missing"), None);
}

#[test]
fn autostart_starts_machines_once_per_boot() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "autostart") else {
        return;
    };
    // Concurrent creations on a fresh host share the one template build.
    let out = host.sh(
        "pids=; for i in 1 2 3 4; do berthctl create c$i --template busybox & pids=\"$pids $!\"; done; \
         rc=0; for p in $pids; do wait $p || rc=1; done; exit $rc",
    );
    assert!(out.status.success(), "{out:?}");
    for i in 1..=4 {
        host.okw(&format!("berthctl remove c{i}"));
    }

    host.okw("berthctl create auto --template busybox --autostart");
    host.okw("berthctl create manual --template busybox");
    let status: serde_json::Value =
        serde_json::from_str(&host.okw("berthctl --json status auto")).unwrap();
    assert_eq!(status["autostart"], true);

    // What a crash mid-create or mid-build would leave is cleared when berthd starts.
    host.okw(
        "mkdir -p /var/lib/berth/machines/.ghost.create-1/rootfs \
         /var/lib/berth/templates/.busybox.build-1/rootfs",
    );

    // A restart of berthd is not a boot: machines stay as they were.
    host.okw("systemctl restart berthd");
    assert!(
        !host
            .path("/var/lib/berth/machines/.ghost.create-1")
            .exists()
    );
    assert!(
        !host
            .path("/var/lib/berth/templates/.busybox.build-1")
            .exists()
    );
    assert!(
        host.path("/var/lib/berth/templates/busybox/rootfs/bin/busybox")
            .exists()
    );
    assert_eq!(list_json(&host)[0]["state"], "stopped");

    // A boot empties /run, and with it berth's marker.
    host.okw("rm /run/berth/autostart-done");
    host.okw("systemctl restart berthd");
    wait_for_state(&host, "auto", "running");
    assert_eq!(state_of(&host, "manual").as_deref(), Some("stopped"));

    host.okw("berthctl disable auto");
    let status: serde_json::Value =
        serde_json::from_str(&host.okw("berthctl --json status auto")).unwrap();
    assert_eq!(status["autostart"], false);
    host.okw("berthctl enable manual");
    let config = host
        .read("/var/lib/berth/machines/manual/config.toml")
        .unwrap();
    assert!(config.contains("autostart = true"), "{config}");

    host.okw("berthctl remove --force auto");
    host.okw("berthctl remove manual");
    assert_no_leftovers(&host);
}

#[test]
fn ephemeral_machines_go_away_when_they_stop() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "ephemeral") else {
        return;
    };
    let gone = |name: &str| {
        wait_until(&format!("machine {name} to go"), SHORTLY, || {
            !host.okw("berthctl list").contains(name)
                && !host
                    .path(&format!("/var/lib/berth/machines/{name}"))
                    .exists()
        })
    };
    host.okw("berthctl create eph --template busybox --ephemeral");
    host.okw("berthctl start eph");
    let status: serde_json::Value =
        serde_json::from_str(&host.okw("berthctl --json status eph")).unwrap();
    assert_eq!(status["ephemeral"], true);
    let out = host.runw("berthctl restart eph");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ephemeral"),
        "{out:?}"
    );
    host.okw("berthctl stop eph");
    assert!(gone("eph"), "stopped ephemeral machine still there");

    // One whose PID 1 just exits goes away by itself.
    host.okw("berthctl create once --template busybox --ephemeral -- /bin/true");
    host.okw("berthctl start once");
    assert!(gone("once"), "exited ephemeral machine still there");

    // A kept machine with the same name can come right after.
    host.okw("berthctl create eph --template busybox");
    host.okw("berthctl start eph");
    host.okw("berthctl stop eph");
    assert!(host.okw("berthctl list").contains("eph"));
    let path = host.okw(
        "busctl get-property org.berth.Berth1 /org/berth/Berth1/machine/eph \
         org.berth.Berth1.Machine Name",
    );
    assert_eq!(path.trim(), "s \"eph\"");
    host.okw("berthctl remove eph");
    assert_no_leftovers(&host);
}

/// An ephemeral machine is unprivileged by default and still costs no copy where its
/// template can be idmapped: an overlay on the template, the lower layer idmapped through
/// the machine's user namespace, its writes in its own memory. Where it cannot (the test
/// host's overlayfs root) the machine gets a shifted copy instead, as before.
#[test]
fn unprivileged_ephemeral_machines_run_on_an_idmapped_overlay() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "ephemeral_idmapped_overlay") else {
        return;
    };
    let gone = |name: &str| {
        wait_until(&format!("machine {name} to go"), SHORTLY, || {
            !list_json(&host)
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == name)
                && !host
                    .path(&format!("/var/lib/berth/machines/{name}"))
                    .exists()
        })
    };
    let config = |name: &str| {
        host.read(&format!("/var/lib/berth/machines/{name}/config.toml"))
            .unwrap()
    };
    let uid_map = |name: &str| -> Vec<String> {
        host.okw(&format!("berthctl exec {name} -- cat /proc/self/uid_map"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };

    // On the host's overlayfs: a copy, its files shifted into the machine's range.
    host.okw("berthctl create copied --template busybox --ephemeral");
    let cfg = config("copied");
    assert!(
        cfg.contains("ownership = \"chown\"") && !cfg.contains("base = \""),
        "{cfg}"
    );
    let busybox = host.path("/var/lib/berth/machines/copied/rootfs/bin/busybox");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&busybox).unwrap());
    assert_eq!(owner, 524288, "shifted on disk");
    host.okw("berthctl start copied");
    assert_eq!(uid_map("copied"), ["0", "524288", "65536"]);
    assert_eq!(
        host.okw("berthctl exec copied -- stat -c %u /bin/busybox")
            .trim(),
        "0"
    );
    host.okw("berthctl stop copied");
    assert!(gone("copied"), "stopped ephemeral machine still there");

    // berth's state on a tmpfs, which can idmap: an overlay, nothing copied.
    host.ok(&[
        "sh",
        "-c",
        "systemctl stop berthd && mkdir -p /var/lib/berth && \
         mount -t tmpfs -o mode=0700 berth-state /var/lib/berth && systemctl start berthd",
    ]);
    host.okw("berthctl create eph --template busybox --ephemeral");
    assert!(
        !host.path("/var/lib/berth/machines/eph/rootfs").exists(),
        "nothing copied"
    );
    let cfg = config("eph");
    assert!(
        cfg.contains("ownership = \"idmap\"") && cfg.contains("base = \""),
        "{cfg}"
    );
    host.okw("berthctl start eph");
    assert_eq!(uid_map("eph"), ["0", "524288", "65536"]);
    let leader: serde_json::Value =
        serde_json::from_str(&host.okw("berthctl --json status eph")).unwrap();
    let leader = leader["leader"].as_u64().expect("a leader");
    assert_eq!(
        host.okw(&format!("ps -o uid= -p {leader}")).trim(),
        "524288",
        "PID 1 on the host"
    );
    // Its files are root's inside, its own hostname and ID are on top, and its root
    // changes anything: files, owners, whole directories (whiteouts and opaque
    // directories, kept in the overlay's user.* attributes).
    let out = host.ok(&[
        "berthctl",
        "exec",
        "eph",
        "--",
        "sh",
        "-c",
        "stat -c %u:%g /bin/busybox /etc; cat /etc/hostname; \
         echo x > /etc/motd && rm /bin/ls && touch /root/f && chown 1000:1000 /root/f && \
         stat -c %u:%g /root/f && rm -rf /etc && mkdir /etc && ls -A /etc | wc -l && \
         ls /bin/ls 2>/dev/null || echo no-ls",
    ]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0:0", "0:0", "eph", "1000:1000", "0", "no-ls"],
        "{out}"
    );
    // The template is as it was, owned by 0 on disk.
    let template = host.path("/var/lib/berth/templates/busybox/rootfs");
    assert!(template.join("bin/ls").exists() && template.join("etc").is_dir());
    assert!(!template.join("etc/motd").exists());
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::symlink_metadata(template.join("bin/busybox")).unwrap(),
    );
    assert_eq!(owner, 0, "the template is never shifted");
    // A second one from the same template sees none of the first one's writes.
    host.okw("berthctl create eph2 --template busybox --ephemeral");
    host.okw("berthctl start eph2");
    assert_eq!(uid_map("eph2"), ["0", "589824", "65536"]);
    assert_eq!(
        host.ok(&[
            "berthctl",
            "exec",
            "eph2",
            "--",
            "sh",
            "-c",
            "ls /bin/ls; cat /etc/hostname"
        ]),
        "/bin/ls\neph2\n"
    );
    // Privileged on request, still an overlay.
    host.okw("berthctl create priv --template busybox --ephemeral --private-users no");
    host.okw("berthctl start priv");
    assert_eq!(uid_map("priv"), ["0", "0", "4294967295"]);
    host.okw("berthctl exec priv -- rm /bin/ls");
    assert!(template.join("bin/ls").exists());
    for name in ["eph", "eph2", "priv"] {
        host.okw(&format!("berthctl stop {name}"));
        assert!(gone(name), "stopped ephemeral machine {name} still there");
    }
    assert!(template.join("bin/ls").exists());
    assert_no_leftovers(&host);
}

/// The directory is the machine: a broken config shows the machine as broken (with why),
/// a missing runtime file does not hide a running machine, and neither costs data.
#[test]
fn tampered_state_is_shown_and_nothing_is_lost() {
    let Some(host) = boot_with_berth(
        CgroupMode::Hybrid,
        "tampered_state_is_shown_and_nothing_is_lost",
    ) else {
        return;
    };
    host.okw("berthctl create runs --template busybox");
    host.okw("berthctl create garbled --template busybox");
    host.okw("berthctl create claims --template busybox");
    host.okw("berthctl start runs");
    let leader = host.okw("cat /run/berth/machines/runs.json");
    host.ok(&[
        "sh",
        "-c",
        "rm /run/berth/machines/runs.json && \
         echo 'name = [' > /var/lib/berth/machines/garbled/config.toml && \
         sed -i 's/^name = \"claims\"/name = \"runs\"/' /var/lib/berth/machines/claims/config.toml && \
         mkdir /var/lib/berth/machines/bare",
    ]);
    host.okw("systemctl restart berthd");

    let list = host.okw("berthctl list");
    let state = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("{name} not listed:\n{list}"))
    };
    assert_eq!(state("runs"), "running", "{list}");
    for broken in ["garbled", "claims", "bare"] {
        assert_eq!(state(broken), "broken", "{list}");
    }
    assert_eq!(
        host.okw("cat /run/berth/machines/runs.json"),
        leader,
        "re-adopted"
    );
    let status = host.okw("berthctl status claims");
    assert!(
        status.contains("Problem:") && status.contains("\"runs\""),
        "{status}"
    );
    let out = host.runw("berthctl start garbled");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("broken") && err.lines().count() == 1,
        "{err}"
    );

    // Removing "runs" removes runs, not the directory that claimed its name.
    host.okw("berthctl remove --force runs");
    assert!(
        host.path("/var/lib/berth/machines/claims/rootfs/bin/busybox")
            .exists()
    );
    for broken in ["garbled", "claims", "bare"] {
        host.okw(&format!("berthctl remove {broken}"));
    }
    assert_no_leftovers(&host);
}
