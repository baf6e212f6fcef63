//! berth's benchmarks against its peers, measured in one run on one test host, in
//! alternation, so that the ratios hold whatever the machine: `make bench` (as root).
//! Prints a Markdown table with the median and p95 of each figure and berth's ratio to
//! each peer; docs/benchmarks.md keeps the results with the machine and date.
//!
//! Figures (issue 6):
//! - create a machine from a cached Debian template, vs `cp -a` of the same tree and
//!   `lxc-copy` of an LXC container holding the same tree;
//! - ephemeral create from a ~200 MB and a ~2 GB template (flat in size);
//! - export and import of a machine as tar.zst, vs `tar -I zstd` of the same tree.
//!
//! Figures (issue 7), first, on busybox machines:
//! - start until running of a bridged machine vs one with `--network none`;
//! - 1 GB over TCP from one machine to another over their bridge vs host to host over
//!   loopback, with the same static program (tests/probe/tcp-copy.c).
//!
//! Figures (issue 9), on a busybox machine:
//! - exec `/bin/true` in a running machine: `berthctl exec` vs `nsenter -t LEADER -a`,
//!   50 in a row per sample.
//!
//! `BERTH_BENCH=network` runs only the network figures, `BERTH_BENCH=exec` only exec.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{CgroupMode, TestHost, boot_with_berth, debian};
use std::time::Duration;

/// Runs of each command; medians of few runs are steady enough for whole-second copies.
const RUNS: usize = 5;

/// Seconds `script` takes inside the host, timed by the host's bash (no nsenter cost).
fn timed(host: &TestHost, script: &str) -> f64 {
    let wrapped = format!("TIMEFORMAT=%3R; time {{ {script} ; }} >/dev/null 2>/tmp/bench.err");
    let out = host.run_for(
        Duration::from_secs(600),
        &["bash", "-c", &format!("{wrapped}; echo $? >/tmp/bench.rc")],
    );
    let rc = host.read("/tmp/bench.rc").unwrap_or_default();
    assert_eq!(
        rc.trim(),
        "0",
        "benchmark command failed: {script}\n{}",
        host.read("/tmp/bench.err").unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no time from: {}", String::from_utf8_lossy(&out.stderr)))
}

struct Figure {
    name: String,
    samples: Vec<f64>,
}

impl Figure {
    fn sorted(&self) -> Vec<f64> {
        let mut s = self.samples.clone();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        s
    }
    fn median(&self) -> f64 {
        let s = self.sorted();
        s[s.len() / 2]
    }
    fn p95(&self) -> f64 {
        let s = self.sorted();
        s[((s.len() as f64 * 0.95).ceil() as usize).min(s.len()) - 1]
    }
}

/// Runs each (name, setup, command, cleanup) RUNS times, alternating between them.
fn alternate(host: &TestHost, cases: &[(&str, &str, &str, &str)]) -> Vec<Figure> {
    alternate_n(host, cases, RUNS)
}

/// `alternate` with `runs` runs of each, for figures quick enough to sample more.
fn alternate_n(host: &TestHost, cases: &[(&str, &str, &str, &str)], runs: usize) -> Vec<Figure> {
    let mut figures: Vec<Figure> = cases
        .iter()
        .map(|c| Figure {
            name: c.0.to_string(),
            samples: Vec::new(),
        })
        .collect();
    for run in 0..runs {
        for (i, (_, setup, cmd, cleanup)) in cases.iter().enumerate() {
            let n = run.to_string();
            if !setup.is_empty() {
                host.ok(&["bash", "-c", &setup.replace("{n}", &n)]);
            }
            // The page cache holds the source for every peer alike.
            host.ok(&["sync"]);
            figures[i]
                .samples
                .push(timed(host, &cmd.replace("{n}", &n)));
            if !cleanup.is_empty() {
                host.ok(&["bash", "-c", &cleanup.replace("{n}", &n)]);
            }
        }
    }
    figures
}

fn report(title: &str, figures: &[Figure]) {
    println!("\n### {title}\n");
    println!("| command | median s | p95 s | berth / this |");
    println!("|---|---|---|---|");
    let berth = figures[0].median();
    for f in figures {
        println!(
            "| {} | {:.3} | {:.3} | {:.2} |",
            f.name,
            f.median(),
            f.p95(),
            berth / f.median()
        );
    }
}

/// tests/probe/tcp-copy.c built static, once.
fn tcp_copy() -> std::path::PathBuf {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("tcp-copy");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/tcp-copy.c");
    let built = std::process::Command::new("gcc")
        .args(["-O2", "-static", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc runs");
    assert!(built.success(), "gcc could not build {}", src.display());
    out
}

fn network(host: &TestHost) {
    let start = |name: &str, flags: &str| {
        host.okw(&format!(
            "berthctl create {name} --template busybox {flags}"
        ));
    };
    start("sb", "--network bridge");
    start("sn", "--network none");
    let starts = alternate_n(
        host,
        &[
            (
                "berthctl start, --network bridge",
                "",
                "berthctl start sb",
                "berthctl stop sb",
            ),
            (
                "berthctl start, --network none",
                "",
                "berthctl start sn",
                "berthctl stop sn",
            ),
        ],
        20,
    );
    report("Start until running: bridged vs no network", &starts);

    let program = tcp_copy();
    let bytes = 1_000_000_000u64;
    host.ok(&[
        "berthctl",
        "create",
        "rx",
        "--template",
        "busybox",
        "--network",
        "bridge",
        "--",
        "/bin/sh",
        "-c",
        "while :; do /bin/tcp-copy listen 5001; done",
    ]);
    host.ok(&[
        "berthctl",
        "create",
        "tx",
        "--template",
        "busybox",
        "--network",
        "bridge",
        "--",
        "/bin/sh",
        "-c",
        "exec sleep 100000",
    ]);
    for m in ["rx", "tx"] {
        let dest = host.path(&format!("/var/lib/berth/machines/{m}/rootfs/bin/tcp-copy"));
        std::fs::copy(&program, dest).expect("tcp-copy goes into the machine");
        host.okw(&format!("berthctl start {m}"));
    }
    std::fs::copy(&program, host.path("/usr/local/bin/tcp-copy")).expect("tcp-copy on the host");
    host.ok(&[
        "systemd-run",
        "--unit=sink",
        "sh",
        "-c",
        "while :; do /usr/local/bin/tcp-copy listen 5002; done",
    ]);
    let status: serde_json::Value =
        serde_json::from_str(&host.okw("berthctl --json status rx")).expect("status JSON");
    let rx = status["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("rx has an address")
        .to_string();
    // The listeners need a moment to be there.
    std::thread::sleep(Duration::from_millis(500));
    let copies = alternate(
        host,
        &[
            (
                "1 GB machine → machine over the bridge",
                "",
                &format!("berthctl exec tx -- /bin/tcp-copy send {rx} 5001 {bytes}"),
                "",
            ),
            (
                "1 GB host → host over loopback",
                "",
                &format!("/usr/local/bin/tcp-copy send 127.0.0.1 5002 {bytes}"),
                "",
            ),
        ],
    );
    report("TCP throughput: bridge vs loopback", &copies);
    for f in &copies {
        println!("- {}: {:.0} MB/s", f.name, bytes as f64 / 1e6 / f.median());
    }
    host.okw("systemctl stop sink");
    for m in ["sb", "sn", "rx", "tx"] {
        host.okw(&format!("berthctl remove --force {m}"));
    }
}

/// Exec of /bin/true into a running busybox machine, 50 in a row per sample (a single
/// one is too short for bash's `time` to tell apart from the noise).
fn exec(host: &TestHost) {
    const EACH: usize = 50;
    host.ok(&[
        "berthctl",
        "create",
        "x",
        "--template",
        "busybox",
        "--",
        "/bin/sh",
        "-c",
        "exec sleep 100000",
    ]);
    host.okw("berthctl start x");
    let leader = host
        .okw("busctl get-property org.berth.Berth1 /org/berth/Berth1/machine/x org.berth.Berth1.Machine Leader")
        .split_whitespace()
        .nth(1)
        .expect("a leader")
        .to_string();
    let times = |cmd: &str| format!("for i in $(seq {EACH}); do {cmd}; done");
    let figures = alternate_n(
        host,
        &[
            (
                "berthctl exec x -- /bin/true",
                "",
                &times("berthctl exec x -- /bin/true"),
                "",
            ),
            (
                "nsenter -t LEADER -a /bin/true",
                "",
                &times(&format!("nsenter -t {leader} -a /bin/true")),
                "",
            ),
        ],
        10,
    );
    report(
        &format!("Exec /bin/true in a running machine ({EACH} in a row)"),
        &figures,
    );
    for f in &figures {
        println!(
            "- {}: {:.2} ms each",
            f.name,
            f.median() * 1000.0 / EACH as f64
        );
    }
    // Where exec's time goes, each part alone, the same way: the client's start, one
    // call over the bus (busctl's start included), and the cgroup join every command
    // makes (what nsenter does not: it leaves the command in the caller's cgroup), as a
    // shell that moves itself into the scope against one that does not.
    let scope = if host.mode() == CgroupMode::Unified {
        "/sys/fs/cgroup/machine.slice/machine-x.scope"
    } else {
        "/sys/fs/cgroup/systemd/machine.slice/machine-x.scope"
    };
    let parts = alternate_n(
        host,
        &[
            ("berthctl --version", "", &times("berthctl --version"), ""),
            (
                "busctl call GetMachine",
                "",
                &times(
                    "busctl call org.berth.Berth1 /org/berth/Berth1/Manager org.berth.Berth1.Manager GetMachine s x >/dev/null",
                ),
                "",
            ),
            (
                "sh: join the scope's cgroup",
                "",
                &times(&format!("sh -c 'echo $$ > {scope}/cgroup.procs'")),
                "",
            ),
            ("sh: nothing", "", &times("sh -c :"), ""),
        ],
        5,
    );
    println!("\nExec's parts, {EACH} in a row, medians:");
    for f in &parts {
        println!(
            "- {}: {:.2} ms each",
            f.name,
            f.median() * 1000.0 / EACH as f64
        );
    }
    host.okw("berthctl remove --force x");
}

fn main() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "bench") else {
        return;
    };
    if std::env::var("BERTH_BENCH").is_ok_and(|b| b == "exec") {
        exec(&host);
        return;
    }
    network(&host);
    if std::env::var("BERTH_BENCH").is_ok_and(|b| b == "network") {
        return;
    }
    debian::debian_template(&host, "deb");
    let tree = "/var/lib/berth/templates/deb/rootfs";
    let size = host.okw(&format!("du -sm {tree}"));
    println!(
        "# berth benchmarks\n\nDebian {} template: {} MB",
        debian::SUITE,
        size.split_whitespace().next().unwrap_or("?")
    );

    // An LXC container holding the same tree, for lxc-copy.
    host.ok(&["bash", "-c", &format!(
        "mkdir -p /var/lib/lxc/base && cp -a {tree} /var/lib/lxc/base/rootfs && \
         printf 'lxc.uts.name = base\\nlxc.rootfs.path = dir:/var/lib/lxc/base/rootfs\\n' > /var/lib/lxc/base/config"
    )]);
    let create = alternate(
        &host,
        &[
            (
                "berthctl create --template deb",
                "",
                "berthctl create c{n} --template deb",
                "berthctl remove c{n}",
            ),
            (
                "cp -a",
                "",
                &format!("cp -a {tree} /var/tmp/cp{{n}}"),
                "rm -rf /var/tmp/cp{n}",
            ),
            (
                "lxc-copy",
                "",
                "lxc-copy -n base -N l{n}",
                "lxc-destroy -n l{n}",
            ),
        ],
    );
    report("Create a machine from a cached template", &create);

    // A template ten times the size: the Debian tree plus 1.8 GB of data.
    host.ok(&["bash", "-c", &format!(
        "cp -a {tree} /var/tmp/big && head -c 1800M /dev/urandom > /var/tmp/big/var/blob && \
         berthctl template build big --method directory --source /var/tmp/big --no-progress && rm -rf /var/tmp/big"
    )]);
    let ephemeral = alternate(
        &host,
        &[
            (
                "create --ephemeral, 200 MB template",
                "",
                "berthctl create e{n} --template deb --ephemeral",
                "berthctl remove e{n}",
            ),
            (
                "create --ephemeral, 2 GB template",
                "",
                "berthctl create f{n} --template big --ephemeral",
                "berthctl remove f{n}",
            ),
        ],
    );
    report("Ephemeral create: flat in template size", &ephemeral);

    // Export and import of a stopped machine as tar.zst, against GNU tar with zstd
    // of the same tree.
    host.okw("berthctl create ex --template deb");
    let mtree = "/var/lib/berth/machines/ex/rootfs";
    let export = alternate(
        &host,
        &[
            (
                "berthctl export (tar.zst)",
                "",
                "berthctl export ex /var/tmp/ex{n}.tar.zst --no-progress",
                "rm -f /var/tmp/ex{n}.tar.zst",
            ),
            (
                "tar -I zstd -c",
                "",
                &format!(
                    "tar --xattrs --numeric-owner -I zstd -cf /var/tmp/gt{{n}}.tar.zst -C {mtree} ."
                ),
                "rm -f /var/tmp/gt{n}.tar.zst",
            ),
        ],
    );
    report("Export a machine", &export);
    host.okw("berthctl export ex /var/tmp/ex.tar.zst --no-progress");
    host.ok(&[
        "bash",
        "-c",
        &format!("tar --xattrs --numeric-owner -I zstd -cf /var/tmp/gt.tar.zst -C {mtree} ."),
    ]);
    let import = alternate(
        &host,
        &[
            (
                "berthctl import (tar.zst)",
                "",
                "berthctl import /var/tmp/ex.tar.zst im{n} --no-progress",
                "berthctl remove im{n}",
            ),
            (
                "tar -I zstd -x",
                "mkdir /var/tmp/gx{n}",
                "tar --xattrs --numeric-owner -I zstd -xpf /var/tmp/gt.tar.zst -C /var/tmp/gx{n}",
                "rm -rf /var/tmp/gx{n}",
            ),
        ],
    );
    report("Import a machine", &import);
}
