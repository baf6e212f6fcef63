//! A machine's root is not the host's root: from inside real machines, in both cgroup
//! modes, what a default machine is refused — capabilities, system calls, devices,
//! kernel files — and that a machine's own settings change exactly what they say.
//!
//! The test hosts share this machine's kernel and clock, so every refusal is probed in a
//! way that does nothing where the refusal fails: tests/probe/syscall-probe.c calls with
//! arguments the kernel rejects on its own (and says which errno came back), the clock is
//! "set" to the time it has, a block device is read, never written.

mod common;

use common::{CgroupMode, TestHost, boot_with_berth};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The probe, built once per test binary as a static executable: busybox machines have no
/// libc to load a dynamic one with.
fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("syscall-probe");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/syscall-probe.c");
        let status = std::process::Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("gcc runs (scripts/deps.sh installs it)");
        assert!(status.success(), "building {}", src.display());
        out
    })
}

/// Creates a busybox machine with `flags`, puts the probe in it and starts it.
fn machine(host: &TestHost, name: &str, flags: &str) {
    host.okw(&format!(
        "berthctl create {name} --template busybox {flags}"
    ));
    let target = host.path(&format!(
        "/var/lib/berth/machines/{name}/rootfs/bin/syscall-probe"
    ));
    std::fs::copy(probe(), &target).expect("probe copied into the machine");
    host.okw(&format!("berthctl start {name}"));
}

/// `field` of /proc/PID/status inside the machine (PID 1, or the exec'd command itself).
fn status_field(host: &TestHost, name: &str, pid: &str, field: &str) -> String {
    let status = host.okw(&format!("berthctl exec {name} -- cat /proc/{pid}/status"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"))
        .trim()
        .to_string()
}

/// A shell script run inside machine `name`; its stdout (it must succeed).
fn sh_in(host: &TestHost, name: &str, script: &str) -> String {
    host.ok(&["berthctl", "exec", name, "--", "sh", "-c", script])
}

fn probe_in(host: &TestHost, name: &str, calls: &[&str]) -> Vec<String> {
    let mut argv = vec!["berthctl", "exec", name, "--", "/bin/syscall-probe"];
    argv.extend(calls);
    host.ok(&argv).lines().map(str::to_string).collect()
}

/// Every call refused with EPERM.
fn assert_refused(host: &TestHost, name: &str, calls: &[&str]) {
    let results = probe_in(host, name, calls);
    for (call, result) in calls.iter().zip(&results) {
        assert_eq!(result, &format!("{call}: EPERM"), "{results:?}");
    }
    assert_eq!(results.len(), calls.len(), "{results:?}");
}

fn own_bounding_set() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd in /proc/self/status");
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// The first disk of the machine hosting the tests, as "MAJOR MINOR".
fn a_host_disk() -> String {
    let partitions = std::fs::read_to_string("/proc/partitions").unwrap();
    let line = partitions
        .lines()
        .skip(2)
        .find(|l| !l.trim().is_empty())
        .expect("this machine has a disk");
    let fields: Vec<_> = line.split_whitespace().collect();
    format!("{} {}", fields[0], fields[1])
}

/// What a machine is refused, privileged or not, checked in machine `name` (running).
fn assert_contained(host: &TestHost, name: &str) {
    // The documented bounding set and a filter, for PID 1 and for what exec runs. A
    // machine cannot have what the host's own bounding set lacks (this VM has no
    // CAP_SYS_RESOURCE), so the expected set is the default within ours.
    let default = berth::security::caps::bounding_set(&[], &[]).unwrap();
    let expected = format!(
        "{:016x}",
        berth::security::caps::mask(&default) & own_bounding_set()
    );
    for pid in ["1", "self"] {
        assert_eq!(status_field(host, name, pid, "CapBnd"), expected, "{pid}");
        assert_eq!(status_field(host, name, pid, "Seccomp"), "2", "{pid}");
    }
    for dropped in [16, 17, 25, 33] {
        // SYS_MODULE, SYS_RAWIO, SYS_TIME, MAC_ADMIN
        let bnd = u64::from_str_radix(&expected, 16).unwrap();
        assert_eq!(bnd & (1 << dropped), 0, "capability {dropped} is kept");
    }

    assert_refused(
        host,
        name,
        &[
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "kexec_file_load",
            "swapon",
            "swapoff",
            "open_by_handle_at",
            "clock_settime",
            "settimeofday",
            "iopl",
            "ioperm",
            "keyctl",
            "bpf",
            "perf_event_open",
            "acct",
        ],
    );
    // Setting the clock, the way a user would: to the time it already has.
    let out = host.sh(&format!(
        "berthctl exec {name} -- sh -c 'date -s \"$(date \"+%Y-%m-%d %H:%M:%S\")\"'"
    ));
    // busybox's date says so but exits 0 all the same.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("can't set date: Operation not permitted"),
        "date -s worked: {out:?}"
    );
    // A module: busybox's insmod hands the kernel a file that is no module.
    let out = host.runw(&format!("berthctl exec {name} -- insmod /bin/busybox"));
    assert!(!out.status.success(), "{out:?}");

    // A host disk: the node can be made (CAP_MKNOD, privileged) but not opened
    // (DevicePolicy=closed); in a user namespace it cannot even be made.
    let disk = a_host_disk();
    let out = host.sh(&format!(
        "berthctl exec {name} -- sh -c 'mknod /dev/hostdisk b {disk} && \
         dd if=/dev/hostdisk of=/dev/null bs=512 count=1'"
    ));
    assert!(
        !out.status.success(),
        "read the host's disk {disk}: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not permitted"),
        "{out:?}"
    );
    let show = host.okw(&format!(
        "systemctl show machine-{name}.scope -p DevicePolicy -p DeviceAllow"
    ));
    assert!(show.contains("DevicePolicy=closed"), "{show}");
    assert!(
        show.contains("/dev/null rwm") && show.contains("char-pts rw"),
        "{show}"
    );

    // Kernel files about the whole host are empty or read-only.
    for file in ["kallsyms", "keys", "timer_list", "kcore"] {
        if Path::new("/proc").join(file).exists() {
            let size = host.okw(&format!("berthctl exec {name} -- wc -c /proc/{file}"));
            assert!(size.trim().starts_with('0'), "/proc/{file}: {size}");
        }
    }
    let firmware = host.okw(&format!("berthctl exec {name} -- ls -A /sys/firmware"));
    assert!(firmware.trim().is_empty(), "/sys/firmware: {firmware}");
    // Opened for writing, never written.
    let out = host.sh(&format!(
        "berthctl exec {name} -- sh -c ': > /proc/sysrq-trigger'"
    ));
    assert!(
        !out.status.success(),
        "/proc/sysrq-trigger is writable: {out:?}"
    );
    let out = host.sh(&format!(
        "berthctl exec {name} -- sh -c ': > /proc/bus/berth-probe'"
    ));
    assert!(!out.status.success(), "/proc/bus is writable: {out:?}");

    // The host's processes are not there to ptrace.
    let berthd = host.okw("pidof berthd");
    let out = host.runw(&format!(
        "berthctl exec {name} -- ls /proc/{}",
        berthd.trim()
    ));
    assert!(!out.status.success(), "berthd is visible inside: {out:?}");
}

/// A default machine is unprivileged and contained; a privileged one, asked for with
/// `--private-users no`, is contained all the same.
fn default_machine_is_contained(mode: CgroupMode, test: &str) {
    let Some(host) = boot_with_berth(mode, test) else {
        return;
    };
    let uid_map = |name: &str| -> Vec<String> {
        host.okw(&format!("berthctl exec {name} -- cat /proc/self/uid_map"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let private_users = |name: &str| {
        host.okw(&format!(
            "busctl get-property org.berth.Berth1 /org/berth/Berth1/machine/{name} \
             org.berth.Berth1.Machine PrivateUsers"
        ))
        .trim()
        .to_string()
    };
    machine(&host, "box", "");
    let map = uid_map("box");
    assert_ne!(
        map,
        ["0", "0", "4294967295"],
        "a default machine is privileged"
    );
    assert_eq!(map, ["0", "524288", "65536"], "a picked range");
    assert_eq!(private_users("box"), "s \"524288:65536\"");
    assert_contained(&host, "box");

    // Privileged, its limits are systemd's as for any other.
    machine(&host, "privileged", "--private-users no --tasks-max 32");
    assert_eq!(uid_map("privileged"), ["0", "0", "4294967295"]);
    let tasks = host.okw("systemctl show machine-privileged.scope -p TasksMax");
    assert_eq!(tasks.trim(), "TasksMax=32");
    assert_eq!(private_users("privileged"), "s \"no\"");
    assert_contained(&host, "privileged");

    for name in ["box", "privileged"] {
        host.okw(&format!("berthctl stop {name}"));
        host.okw(&format!("berthctl remove {name}"));
    }
}

fn settings_change_exactly_what_they_say(mode: CgroupMode, test: &str) {
    let Some(host) = boot_with_berth(mode, test) else {
        return;
    };
    // Privileged: in a user namespace mknod of a device is refused whatever the bounding
    // set, so only a privileged machine shows that dropping CAP_MKNOD took.
    machine(
        &host,
        "tuned",
        "--drop-capability CAP_MKNOD,CAP_NET_RAW --system-call-filter bpf \
         --system-call-filter ~ptrace --private-users no",
    );
    let bnd = u64::from_str_radix(&status_field(&host, "tuned", "1", "CapBnd"), 16).unwrap();
    assert_eq!(bnd & (1 << 27), 0, "CAP_MKNOD dropped");
    assert_eq!(bnd & (1 << 13), 0, "CAP_NET_RAW dropped");
    assert_ne!(bnd & (1 << 21), 0, "CAP_SYS_ADMIN kept");
    let results = probe_in(&host, "tuned", &["bpf", "ptrace", "kexec_load"]);
    assert_ne!(results[0], "bpf: EPERM", "bpf allowed: {results:?}");
    assert_eq!(results[1], "ptrace: EPERM", "{results:?}");
    assert_eq!(results[2], "kexec_load: EPERM", "{results:?}");
    let out = host.runw("berthctl exec tuned -- mknod /tmp/null c 1 3");
    assert!(!out.status.success(), "mknod without CAP_MKNOD: {out:?}");
    host.okw("berthctl stop tuned");
    host.okw("berthctl remove tuned");

    // Bad names are refused at create, by name, and leave nothing.
    for (flags, named) in [
        ("--capability CAP_TELEPORT", "CAP_TELEPORT"),
        ("--system-call-filter ~teleport", "teleport"),
    ] {
        let out = host.runw(&format!("berthctl create bad --template busybox {flags}"));
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named) && err.lines().count() == 1, "{err}");
        assert!(!host.path("/var/lib/berth/machines/bad").exists());
    }
}

#[test]
fn hybrid_default_machine_is_contained() {
    default_machine_is_contained(CgroupMode::Hybrid, "hybrid_default_machine_is_contained");
}

#[test]
fn unified_default_machine_is_contained() {
    default_machine_is_contained(CgroupMode::Unified, "unified_default_machine_is_contained");
}

#[test]
fn hybrid_settings_change_exactly_what_they_say() {
    settings_change_exactly_what_they_say(
        CgroupMode::Hybrid,
        "hybrid_settings_change_exactly_what_they_say",
    );
}

/// An unprivileged machine: root inside, nobody outside. `on_tmpfs` puts berth's state
/// on a tmpfs first, where the rootfs is idmapped; the test host's own root is an
/// overlay, where berth shifts the files by chown instead.
fn unprivileged_machine_is_root_only_inside(mode: CgroupMode, test: &str, on_tmpfs: bool) {
    let Some(host) = boot_with_berth(mode, test) else {
        return;
    };
    if on_tmpfs {
        host.ok(&[
            "sh",
            "-c",
            "systemctl stop berthd && mkdir -p /var/lib/berth && \
             mount -t tmpfs -o mode=0700 berth-state /var/lib/berth && systemctl start berthd",
        ]);
    }
    machine(&host, "un", "--private-users pick");
    let config = host.read("/var/lib/berth/machines/un/config.toml").unwrap();
    let ownership = if on_tmpfs { "idmap" } else { "chown" };
    assert!(
        config.contains(&format!("ownership = \"{ownership}\"")),
        "{config}"
    );
    let range = host.okw(
        "busctl get-property org.berth.Berth1 /org/berth/Berth1/machine/un \
         org.berth.Berth1.Machine PrivateUsers",
    );
    assert_eq!(range.trim(), "s \"524288:65536\"", "the first free range");
    let list = host.okw("berthctl list");
    let row = list.lines().find(|l| l.starts_with("un ")).expect("listed");
    assert!(
        list.contains("UNPRIVILEGED") && row.contains(" yes "),
        "{list}"
    );

    // Its processes are the range on the host, root inside.
    let uid_map = host.okw("berthctl exec un -- cat /proc/self/uid_map");
    assert_eq!(
        uid_map.split_whitespace().collect::<Vec<_>>(),
        ["0", "524288", "65536"]
    );
    let leader = host.okw("berthctl --json status un");
    let leader: serde_json::Value = serde_json::from_str(&leader).unwrap();
    let leader = leader["leader"].as_u64().expect("a leader");
    let owner = host.okw(&format!("ps -o uid= -p {leader}"));
    assert_eq!(owner.trim(), "524288", "PID 1 on the host");
    assert_eq!(host.okw("berthctl exec un -- id -u").trim(), "0");

    // Root things inside still work: its files, its ports.
    let out = sh_in(
        &host,
        "un",
        "touch /root/f && chown 1000:1000 /root/f && stat -c %u:%g /root/f",
    );
    assert_eq!(out.trim(), "1000:1000");
    let out = sh_in(&host, "un", "httpd -p 80 && netstat -ltn");
    assert!(out.contains(":80 "), "bound port 80: {out}");

    // A host file whose owner is not the machine's: nobody, and unreadable.
    let secret = host.path("/var/lib/berth/machines/un/rootfs/host-secret");
    std::fs::write(&secret, "secret\n").unwrap();
    std::os::unix::fs::chown(&secret, Some(70000), Some(70000)).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let owner = host.okw("berthctl exec un -- stat -c %u /host-secret");
    assert_eq!(owner.trim(), "65534", "shows as nobody");
    let out = host.runw("berthctl exec un -- cat /host-secret");
    assert!(
        !out.status.success(),
        "root inside read a host file: {out:?}"
    );

    // Its sysfs is read-only for good, and another one is refused.
    for script in [
        "mount -o remount,rw /sys",
        "mkdir -p /tmp/s && mount -t sysfs sysfs /tmp/s",
    ] {
        let out = host.ok(&[
            "berthctl",
            "exec",
            "un",
            "--",
            "sh",
            "-c",
            &format!("{script}; echo rc=$?"),
        ]);
        assert!(!out.contains("rc=0"), "{script}: {out}");
    }
    // A proc of its own (it may mount one, as systemd inside does) shows the kernel's
    // secrets no more than the masked one: symbol addresses zeroed, timers closed.
    let out = sh_in(
        &host,
        "un",
        "mkdir -p /tmp/p && mount -t proc proc /tmp/p && \
         head -3 /tmp/p/kallsyms | cut -d' ' -f1 | sort -u; \
         cat /tmp/p/timer_list >/dev/null 2>&1 && echo timers-readable; true",
    );
    assert!(
        !out.contains("timers-readable")
            && !out.trim().is_empty()
            && out.lines().all(|l| l.chars().all(|c| c == '0')),
        "{out}"
    );
    // Kernel settings stay the host's, even written back unchanged.
    let out = host
        .sh("berthctl exec un -- sh -c 'cat /proc/sys/kernel/printk > /proc/sys/kernel/printk'");
    assert!(!out.status.success(), "wrote a kernel sysctl: {out:?}");
    // Its own scope's cgroup files are not its to write.
    let out = host.sh("berthctl exec un -- sh -c 'mkdir -p /tmp/cg && \
         (mount -t cgroup2 none /tmp/cg || mount -t cgroup -o pids none /tmp/cg) && \
         for f in /tmp/cg/pids.max /tmp/cg/cgroup.max.depth; do \
           [ -e $f ] && cat $f > $f && exit 0; done; exit 1'");
    assert!(!out.status.success(), "wrote its scope's limits: {out:?}");

    host.okw("berthctl stop un");
    host.okw("berthctl remove un");

    // A range of one's own choosing must be delegated to root, as LXC wants it.
    let ask = "berthctl create delegated --template busybox --private-users 1000000:65536";
    let out = host.runw(ask);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("/etc/subuid"),
        "{err}"
    );
    assert!(!host.path("/var/lib/berth/machines/delegated").exists());
    host.ok(&[
        "sh",
        "-c",
        "echo root:1000000:65536 >> /etc/subuid && echo root:1000000:65536 >> /etc/subgid",
    ]);
    host.okw(ask);
    let range = host.okw(
        "busctl get-property org.berth.Berth1 /org/berth/Berth1/machine/delegated \
         org.berth.Berth1.Machine PrivateUsers",
    );
    assert_eq!(range.trim(), "s \"1000000:65536\"");
    host.okw("berthctl remove delegated");
}

#[test]
fn hybrid_unprivileged_machine_is_root_only_inside() {
    unprivileged_machine_is_root_only_inside(
        CgroupMode::Hybrid,
        "hybrid_unprivileged_machine_is_root_only_inside",
        false,
    );
}

#[test]
fn unified_unprivileged_machine_on_idmapped_root() {
    unprivileged_machine_is_root_only_inside(
        CgroupMode::Unified,
        "unified_unprivileged_machine_on_idmapped_root",
        true,
    );
}
