//! A Debian machine boots its own systemd as PID 1 under berth, on hybrid and unified
//! hosts, privileged and in a user namespace of its own: it reaches running (or
//! degraded), its units live below its scope in the host's cgroup tree, it changed
//! nothing of the host's kernel state, and `berthctl stop` powers it off without the
//! SIGKILL fallback. Unprivileged machines run with their files shifted by chown (the
//! test host's overlay, on hybrid) and on an idmapped rootfs (state on a tmpfs, on
//! unified).

mod common;

use common::{CgroupMode, TestHost, assert_no_leftovers, boot_with_berth, debian, wait_until};
use std::time::{Duration, Instant};

/// How long a machine's systemd may take to settle; it takes a few seconds here.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const NAME: &str = "web";

/// Who the machine's root is on the host.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Root {
    /// The host's root.
    Privileged,
    /// A picked range; its files shifted by chown (berth's state on the host's overlay).
    Chown,
    /// A picked range; its rootfs idmapped (berth's state on a tmpfs).
    Idmap,
}

#[test]
fn debian_boots_systemd_on_hybrid() {
    boots_systemd(
        CgroupMode::Hybrid,
        Root::Privileged,
        "debian_boots_systemd_on_hybrid",
    );
}

#[test]
fn debian_boots_systemd_on_hybrid_unprivileged() {
    boots_systemd(
        CgroupMode::Hybrid,
        Root::Chown,
        "debian_boots_systemd_on_hybrid_unprivileged",
    );
}

#[test]
fn debian_boots_systemd_on_unified() {
    boots_systemd(
        CgroupMode::Unified,
        Root::Privileged,
        "debian_boots_systemd_on_unified",
    );
}

#[test]
fn debian_boots_systemd_on_unified_unprivileged_idmapped() {
    boots_systemd(
        CgroupMode::Unified,
        Root::Idmap,
        "debian_boots_systemd_on_unified_unprivileged_idmapped",
    );
}

/// `berthctl exec web -- ARGV...`, its stdout trimmed; panics unless it exits 0.
fn inside(host: &TestHost, argv: &[&str]) -> String {
    let mut all = vec!["berthctl", "exec", NAME, "--"];
    all.extend_from_slice(argv);
    host.ok(&all).trim().to_string()
}

/// A sysctl of the machine running the tests (outside every test host).
fn sysctl(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{key}"))
        .unwrap_or_else(|e| panic!("{key}: {e}"))
        .trim()
        .to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// Everything that helps to see why a machine's boot went wrong.
fn diagnostics(host: &TestHost) -> String {
    let mut s = String::new();
    for argv in [
        &["systemctl", "--failed", "--no-pager"][..],
        &["systemctl", "list-jobs", "--no-pager"][..],
        &["journalctl", "-b", "--no-pager", "-n", "150"][..],
    ] {
        let mut all = vec!["berthctl", "exec", NAME, "--"];
        all.extend_from_slice(argv);
        let out = host.run(&all);
        s.push_str(&format!(
            "--- {} ---\n{}{}\n",
            argv.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    s.push_str("--- berthd ---\n");
    s.push_str(&host.journal("berthd"));
    s
}

/// Waits for the machine's systemd to finish booting; returns its state.
fn wait_for_boot(host: &TestHost) -> String {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        // --wait fails at once while systemd's private socket is not there yet.
        let out = host.run(&[
            "berthctl",
            "exec",
            NAME,
            "--",
            "systemctl",
            "is-system-running",
            "--wait",
        ]);
        let state = text(&out.stdout);
        if !matches!(state.as_str(), "" | "offline" | "initializing" | "starting")
            || Instant::now() >= deadline
        {
            return state;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn boots_systemd(mode: CgroupMode, root: Root, test: &str) {
    let Some(host) = boot_with_berth(mode, test) else {
        return;
    };
    let unprivileged = root != Root::Privileged;
    if root == Root::Idmap {
        host.ok(&[
            "sh",
            "-c",
            "systemctl stop berthd && mkdir -p /var/lib/berth && \
             mount -t tmpfs -o mode=0700 berth-state /var/lib/berth && systemctl start berthd",
        ]);
    }
    debian::debian_template(&host, "deb");
    // Unprivileged is the default; a privileged machine is asked for.
    let mut create = vec!["berthctl", "create", NAME, "--template", "deb"];
    if !unprivileged {
        create.extend(["--private-users", "no"]);
    }
    host.ok(&create);
    let users = host.okw(&format!(
        "busctl get-property org.berth.Berth1 /org/berth/Berth1/machine/{NAME} \
         org.berth.Berth1.Machine PrivateUsers"
    ));
    assert_eq!(users.trim() == "s \"no\"", !unprivileged, "{users}");
    if unprivileged {
        let config = host.read(&format!("/var/lib/berth/machines/{NAME}/config.toml"));
        let ownership = if root == Root::Idmap {
            "idmap"
        } else {
            "chown"
        };
        let config = config.unwrap();
        assert!(
            config.contains(&format!("ownership = \"{ownership}\"")),
            "{config}"
        );
    }

    // Kernel-wide values the machine's sysctl.d would change (Debian's systemd sets
    // these), as this machine has them.
    let sysctls: Vec<(&str, String)> = [
        "kernel/pid_max",
        "fs/protected_regular",
        "fs/protected_fifos",
    ]
    .into_iter()
    .map(|k| (k, sysctl(k)))
    .collect();

    let started = Instant::now();
    host.ok(&["berthctl", "start", NAME]);
    let state = wait_for_boot(&host);
    let booted = started.elapsed();
    if state != "running" && state != "degraded" {
        panic!(
            "{test}: the machine's systemd says {state:?} after {booted:.1?}\n{}",
            diagnostics(&host)
        );
    }
    let failed = inside(
        &host,
        &[
            "systemctl",
            "--failed",
            "--no-legend",
            "--plain",
            "--no-pager",
        ],
    );
    eprintln!(
        "{test}: {state} after {booted:.2?}; failed units: {}",
        if failed.is_empty() { "none" } else { &failed }
    );

    // PID 1 is the machine's systemd, told what it runs in.
    assert_eq!(inside(&host, &["cat", "/proc/1/comm"]), "systemd");
    let environ = inside(&host, &["sh", "-c", "tr '\\0' '\\n' </proc/1/environ"]);
    assert!(environ.lines().any(|l| l == "container=berth"), "{environ}");
    let uuid = environ
        .lines()
        .find_map(|l| l.strip_prefix("container_uuid="))
        .unwrap_or_else(|| panic!("no container_uuid in PID 1's environment:\n{environ}"))
        .to_string();
    let machine_id = inside(&host, &["cat", "/etc/machine-id"]);
    assert_eq!(uuid.replace('-', ""), machine_id, "one id for the machine");
    let registered = host.okw("machinectl show web -p Id");
    assert_eq!(registered.trim(), format!("Id={machine_id}"));
    assert_eq!(inside(&host, &["cat", "/run/systemd/container"]), "berth");
    assert_eq!(
        inside(&host, &["cat", "/run/host/container-manager"]),
        "berth"
    );
    assert_eq!(inside(&host, &["cat", "/run/host/container-uuid"]), uuid);
    assert_eq!(
        inside(&host, &["cat", "/run/host/os-release"]),
        host.okw("cat /etc/os-release").trim()
    );
    let out = host.run(&[
        "berthctl",
        "exec",
        NAME,
        "--",
        "touch",
        "/run/host/os-release",
    ]);
    assert!(!out.status.success(), "/run/host is read-only");
    let virt = inside(&host, &["systemd-detect-virt"]);
    assert_eq!(virt, "container-other");

    // The machine's own units are below its scope in the host's tree.
    let scope = match mode {
        CgroupMode::Unified => "/sys/fs/cgroup/machine.slice/machine-web.scope".to_string(),
        _ => "/sys/fs/cgroup/systemd/machine.slice/machine-web.scope".to_string(),
    };
    for unit in ["init.scope", "system.slice/systemd-journald.service"] {
        let dir = format!("{scope}/{unit}");
        assert!(host.path(&dir).is_dir(), "{dir} missing on the host");
    }
    if mode == CgroupMode::Hybrid {
        // systemd inside tracks its units in the unified hierarchy too.
        let dir = "/sys/fs/cgroup/unified/machine.slice/machine-web.scope/init.scope";
        assert!(host.path(dir).is_dir(), "{dir} missing on the host");
    }
    let cgls = host.okw("systemd-cgls --no-pager -u machine-web.scope");
    assert!(cgls.contains("systemd-journald"), "{cgls}");
    // The scope itself holds no process any more, only its sub-cgroups do: on cgroup v2
    // that is what lets the machine's systemd enable controllers below it. (Read inside
    // the host: cgroup.procs shows PIDs of the reader's namespace.)
    let v2_scope = match mode {
        CgroupMode::Unified => scope.clone(),
        _ => "/sys/fs/cgroup/unified/machine.slice/machine-web.scope".to_string(),
    };
    let own = host.okw(&format!("cat {v2_scope}/cgroup.procs"));
    assert!(own.trim().is_empty(), "processes left in the scope: {own}");
    // Inside, its scope is the root of its cgroup tree; PID 1 has moved to init.scope.
    let cgroup = inside(&host, &["cat", "/proc/1/cgroup"]);
    assert!(
        cgroup
            .lines()
            .any(|l| l.starts_with("0::/init.scope") || l.ends_with("name=systemd:/init.scope")),
        "{cgroup}"
    );

    // The machine changed nothing host-wide. Its systemd-sysctl runs (/proc/sys/net is
    // the machine's own, and writable) but cannot set the kernel-wide values its
    // sysctl.d asks for; the other units that would change the kernel are skipped.
    for (key, before) in &sysctls {
        assert_eq!(
            &sysctl(key),
            before,
            "the machine changed {key} on the host"
        );
    }
    let out = host.run(&[
        "berthctl",
        "exec",
        NAME,
        "--",
        "sh",
        "-c",
        "echo 4194304 >/proc/sys/kernel/pid_max",
    ]);
    assert!(!out.status.success(), "kernel sysctls are read-only");
    for unit in [
        "systemd-binfmt.service",
        "systemd-modules-load.service",
        "proc-sys-fs-binfmt_misc.automount",
    ] {
        let show = inside(
            &host,
            &[
                "systemctl",
                "show",
                "-p",
                "ConditionResult",
                "-p",
                "ActiveState",
                unit,
            ],
        );
        assert!(
            show.contains("ConditionResult=no") && show.contains("ActiveState=inactive"),
            "{unit} ran in the machine:\n{show}"
        );
    }
    // Controllers the host's systemd manages stay out of the machine's reach.
    if mode == CgroupMode::Hybrid {
        let out = host.run(&[
            "berthctl",
            "exec",
            NAME,
            "--",
            "mkdir",
            "/sys/fs/cgroup/memory/escape",
        ]);
        assert!(!out.status.success(), "the memory hierarchy is read-only");
    }
    if unprivileged {
        let base = host.okw(&format!("stat -c %u {scope}"));
        assert_ne!(base.trim(), "0", "the scope belongs to the machine's root");
        // ... but not its limits, which stay the host's.
        let limit = match mode {
            CgroupMode::Unified => "/sys/fs/cgroup/cgroup.max.depth",
            _ => "/sys/fs/cgroup/unified/cgroup.max.depth",
        };
        let out = host.run(&[
            "berthctl",
            "exec",
            NAME,
            "--",
            "sh",
            "-c",
            &format!("cat {limit} >{limit}"),
        ]);
        assert!(!out.status.success(), "wrote {limit}: {out:?}");
    }

    // Still settled a while later (a unit failing late, as a getty restarting on a
    // console it cannot use would, shows here).
    if let Some(left) = Duration::from_secs(3).checked_sub(started.elapsed()) {
        std::thread::sleep(left);
    }
    let state = inside(&host, &["systemctl", "is-system-running"]);
    let failed = inside(
        &host,
        &[
            "systemctl",
            "--failed",
            "--no-legend",
            "--plain",
            "--no-pager",
        ],
    );
    assert!(
        state == "running" || state == "degraded",
        "{test}: {state}\n{}",
        diagnostics(&host)
    );
    eprintln!(
        "{test}: still {state} after {:.2?}; failed units: {}",
        started.elapsed(),
        if failed.is_empty() { "none" } else { &failed }
    );

    // The console is a terminal: systemd's boot messages are in its log, and
    // console-getty runs on it, as under nspawn.
    let mut log = String::new();
    assert!(
        wait_until("a login prompt on the console", BOOT_TIMEOUT, || {
            log = host.ok(&["berthctl", "logs", "-n", "1000", NAME]);
            log.contains("login:")
        }),
        "{test}: the console says:\n{log}\n{}",
        diagnostics(&host)
    );
    assert_eq!(
        inside(&host, &["systemctl", "is-active", "console-getty.service"]),
        "active"
    );

    // berthd restarts; the machine, whose leader now sits in its own init.scope, is
    // found again.
    let leader = |host: &TestHost| {
        let list: serde_json::Value =
            serde_json::from_str(&host.okw("berthctl --json list")).unwrap();
        (list[0]["state"].clone(), list[0]["leader"].clone())
    };
    let before = leader(&host);
    assert_eq!(before.0, "running");
    host.okw("systemctl restart berthd");
    assert_eq!(leader(&host), before);
    // Its console came back from systemd's store.
    assert!(
        host.ok(&["berthctl", "logs", "-n", "5", NAME])
            .contains("-- berthd: berthd restarted; console taken back"),
        "{}",
        host.journal("berthd")
    );

    // Stop: systemd powers off on SIGRTMIN+3, with no SIGKILL from berth.
    let stopping = Instant::now();
    host.ok(&["berthctl", "stop", NAME]);
    let stopped = stopping.elapsed();
    let journal = host.journal("berthd");
    assert!(
        !journal.contains("did not halt in time"),
        "{test}: berth had to kill the machine:\n{journal}"
    );
    eprintln!("{test}: stopped in {stopped:.2?}");
    host.ok(&["berthctl", "remove", NAME]);
    assert_no_leftovers(&host);
}
