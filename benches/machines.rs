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
//! Figures (issue 9), on a busybox machine, `BERTH_BENCH=exec` (only these):
//! - exec `/bin/true` in a running machine: `berthctl exec` into an unprivileged and a
//!   privileged machine vs `nsenter -t LEADER -a` and `lxc-attach` into an LXC container
//!   on the same busybox tree, 50 in a row per sample, with exec's parts alone, and the
//!   steps of 10 starts.
//!
//! Figures (issue 9), `BERTH_BENCH=start` (only these), on copies of the busybox
//! template's tree, each on a tmpfs of its own (idmappable, as a real host's file system):
//! - start until running: `berthctl start` of a privileged and an unprivileged machine
//!   with `--network none` vs `lxc-start -d` + `lxc-wait -s RUNNING` of the LXC
//!   container, 20 of each, stopped untimed in between;
//! - one-shot `/bin/true`: `berthctl run --rm`, privileged and unprivileged, vs
//!   `systemd-nspawn -q -D ROOTFS /bin/true` and `lxc-execute`, 20 of each;
//! - berthd's own log of those starts and runs, step by step and phase by phase.
//!
//! Figures (issue 9), `BERTH_BENCH=scale` (only these), with 200 and then 1,000 running
//! busybox machines: ListMachines, GetManagedObjects and `berthctl list` against
//! machined's ListMachines with the same machines registered; berthd's and machined's
//! RSS and CPU over 10 idle seconds with 0, 200 and 1,000 machines.
//! `BERTH_BENCH_BINARIES=DIR` installs berthd and berthctl from DIR instead of this
//! build, to measure an older build the same way; `BERTH_BENCH_MACHINES=200` measures
//! with 200 machines only.
//!
//! `BERTH_BENCH=network` runs only the network figures.

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
    let berth = figures[0].median();
    table(title, "berth / this", figures, |f| berth / f.median());
}

/// A Markdown table of `figures`, the last column `ratio` of each, headed `ratio_name`.
fn table(title: &str, ratio_name: &str, figures: &[Figure], ratio: impl Fn(&Figure) -> f64) {
    table_with(title, &[ratio_name.to_string()], figures, |f| {
        vec![ratio(f)]
    });
}

/// A Markdown table of `figures` with a column per peer in `peers` (indices into
/// `figures`): each row's median over that peer's, the form the targets take ("at most
/// 0.8× lxc-start"), so that berth's rows in several settings share one peer.
fn against(title: &str, figures: &[Figure], peers: &[usize]) {
    let heads: Vec<String> = peers
        .iter()
        .map(|&p| format!("/ {}", figures[p].name))
        .collect();
    table_with(title, &heads, figures, |f| {
        peers
            .iter()
            .map(|&p| f.median() / figures[p].median())
            .collect()
    });
}

/// A Markdown table of `figures`: median, p95 and the columns `heads`, `ratios` of each.
fn table_with(
    title: &str,
    heads: &[String],
    figures: &[Figure],
    ratios: impl Fn(&Figure) -> Vec<f64>,
) {
    println!("\n### {title}\n");
    println!("| command | median s | p95 s | {} |", heads.join(" | "));
    println!("|---|---|---|{}", "---|".repeat(heads.len()));
    for f in figures {
        let cols: Vec<String> = ratios(f).iter().map(|r| format!("{r:.2}")).collect();
        println!(
            "| {} | {:.3} | {:.3} | {} |",
            f.name,
            f.median(),
            f.p95(),
            cols.join(" | ")
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

/// The busybox template's tree, which every peer of the busybox figures runs on a copy of.
const BUSYBOX_ROOTFS: &str = "/var/lib/berth/templates/busybox/rootfs";

/// The LXC container `bb`, as lxc-create's templates would make it but on the busybox
/// template's tree: LXC's usual confinement (common.conf: capabilities, seccomp, the
/// devices cgroup, proc and sys mounts), as berth confines every machine; a network
/// namespace with only lo, as berth's `--network none` (and no lxc-net needed); the tree's
/// own init, as a berth machine of the template runs it (lxc-execute runs its own
/// lxc-init as PID 1 instead, whatever this says).
const LXC_CONFIG: &str = "\
lxc.include = /usr/share/lxc/config/common.conf
lxc.uts.name = bb
lxc.rootfs.path = dir:/var/lib/lxc/bb/rootfs
lxc.net.0.type = empty
lxc.init.cmd = /sbin/init
";

/// Builds the busybox template (on first use) and makes the LXC container `bb` on a copy
/// of its tree, stopped. Privileged, as LXC's containers made by root are.
fn lxc_busybox(host: &TestHost) {
    host.okw("berthctl create warm --template busybox");
    host.okw("berthctl remove warm");
    host.okw("mkdir -p /var/lib/lxc/bb");
    host.ok(&["cp", "-a", BUSYBOX_ROOTFS, "/var/lib/lxc/bb/rootfs"]);
    std::fs::write(host.path("/var/lib/lxc/bb/config"), LXC_CONFIG).expect("LXC config written");
}

/// Exec of /bin/true into a running busybox machine, 50 in a row per sample (a single
/// one is too short for bash's `time` to tell apart from the noise).
fn exec(host: &TestHost) {
    const EACH: usize = 50;
    // x unprivileged (the default), xp privileged, as LXC's container is.
    for (name, privileged) in [("x", &[][..]), ("xp", &["--private-users", "no"][..])] {
        let mut argv = vec!["berthctl", "create", name, "--template", "busybox"];
        argv.extend(privileged);
        argv.extend(["--", "/bin/sh", "-c", "exec sleep 100000"]);
        host.ok(&argv);
        host.okw(&format!("berthctl start {name}"));
    }
    lxc_busybox(host);
    host.ok(&[
        "bash",
        "-c",
        "lxc-start -n bb -d && lxc-wait -n bb -s RUNNING",
    ]);
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
                "berthctl exec xp -- /bin/true (--private-users no)",
                "",
                &times("berthctl exec xp -- /bin/true"),
                "",
            ),
            (
                "nsenter -t LEADER -a /bin/true",
                "",
                &times(&format!("nsenter -t {leader} -a /bin/true")),
                "",
            ),
            (
                "lxc-attach -n bb -- /bin/true",
                "",
                &times("lxc-attach -n bb -- /bin/true"),
                "",
            ),
        ],
        10,
    );
    against(
        &format!("Exec /bin/true in a running machine ({EACH} in a row)"),
        &figures,
        &[2, 3],
    );
    for f in &figures {
        println!(
            "- {}: {:.2} ms each",
            f.name,
            f.median() * 1000.0 / EACH as f64
        );
    }
    host.okw("lxc-stop -n bb");
    host.okw("berthctl remove --force xp");
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
    // What the resident exec helper saves: one exec right after a start, which starts
    // the helper (and pays the cgroup migration), against one more exec in the same
    // machine a moment later; and what the helper costs while it stays.
    host.okw("berthctl create c --template busybox -- /bin/sleep 100000");
    let cold = alternate_n(
        host,
        &[
            (
                "berthctl exec, the machine's first (a helper joins it)",
                "berthctl start c",
                "berthctl exec c -- /bin/true",
                "",
            ),
            (
                "berthctl exec, the next one (its resident helper forks it)",
                "",
                "berthctl exec c -- /bin/true",
                "berthctl stop c",
            ),
        ],
        10,
    );
    report("One exec, first and next", &cold);
    host.okw("berthctl remove c");
    host.okw("berthctl exec x -- /bin/true");
    let helper = host.okw("pgrep -f -n [_]_exec-helper");
    let rss = host
        .ok(&["cat", &format!("/proc/{}/status", helper.trim())])
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_string()))
        .expect("VmRSS");
    println!("- the resident exec helper's RSS: {rss}");
    host.okw("berthctl remove --force x");

    // The start path, step by step, as berthd logs each start ("start took ...").
    host.ok(&[
        "berthctl",
        "create",
        "st",
        "--template",
        "busybox",
        "--",
        "/bin/sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 1; done",
    ]);
    for _ in 0..10 {
        host.okw("berthctl start st");
        host.okw("berthctl stop st");
    }
    println!("\nStart steps of 10 starts (berthd's log):");
    for line in host
        .journal("berthd")
        .lines()
        .filter(|l| l.contains("machine st: start took"))
    {
        println!("- {}", line.split("start took ").nth(1).unwrap_or(line));
    }
    host.okw("berthctl remove st");
}

/// Start until running and a one-shot /bin/true, berth against LXC and systemd-nspawn,
/// all on copies of the busybox template's tree.
fn start(host: &TestHost) {
    // The trees on a tmpfs, not the host's overlayfs: overlayfs cannot be idmapped, so an
    // unprivileged `run --rm` there would copy and chown the template every time instead
    // of taking it idmapped as its overlay's lower layer, as it does on the ext4, xfs,
    // btrfs or tmpfs of a real host. Every peer's tree alike; berthd, which may have
    // been activated already, must see its state directory's new mount.
    host.ok(&[
        "bash",
        "-c",
        "systemctl stop berthd && for d in /var/lib/berth /var/lib/lxc /var/lib/machines; do \
         mkdir -p $d && mount -t tmpfs -o mode=0755 bench $d || exit 1; done",
    ]);
    lxc_busybox(host);
    host.ok(&["cp", "-a", BUSYBOX_ROOTFS, "/var/lib/machines/bb"]);
    host.okw("berthctl create sp --template busybox --network none --private-users no");
    host.okw("berthctl create su --template busybox --network none");
    // `berthctl start` returns once berthd has seen PID 1 exec the init (state running),
    // `lxc-wait -s RUNNING` once LXC's monitor says the same; the stops (busybox init
    // takes 2 s to power off, on either) are untimed.
    let starts = alternate_n(
        host,
        &[
            (
                "berthctl start (--private-users no)",
                "",
                "berthctl start sp",
                "berthctl stop sp",
            ),
            (
                "berthctl start (unprivileged)",
                "",
                "berthctl start su",
                "berthctl stop su",
            ),
            (
                "lxc-start -d + lxc-wait -s RUNNING",
                "",
                "lxc-start -n bb -d && lxc-wait -n bb -s RUNNING",
                "lxc-stop -n bb",
            ),
        ],
        20,
    );
    against("Start until running", &starts, &[2]);

    // Named runs, only so that berthd's log lines below can be told apart.
    let run = |flags: &str| format!("berthctl run --rm --template busybox --network none{flags}");
    let oneshot = alternate_n(
        host,
        &[
            (
                "berthctl run --rm (--private-users no)",
                "",
                &format!("{} --name op{{n}} -- /bin/true", run(" --private-users no")),
                "",
            ),
            (
                "berthctl run --rm (unprivileged)",
                "",
                &format!("{} --name ou{{n}} -- /bin/true", run("")),
                "",
            ),
            (
                "systemd-nspawn -q -D ROOTFS /bin/true",
                "",
                "systemd-nspawn -q -D /var/lib/machines/bb /bin/true",
                "",
            ),
            (
                "lxc-execute -n bb -- /bin/true",
                "",
                "lxc-execute -n bb -- /bin/true",
                "",
            ),
        ],
        20,
    );
    against("One-shot /bin/true in a fresh machine", &oneshot, &[2, 3]);

    start_steps(
        host,
        &[
            ("start, --private-users no", "sp"),
            ("start, unprivileged", "su"),
            ("run --rm, --private-users no", "op"),
            ("run --rm, unprivileged", "ou"),
        ],
    );
    run_phases(
        host,
        &[
            ("run --rm, --private-users no", "op"),
            ("run --rm, unprivileged", "ou"),
        ],
    );
    for m in ["sp", "su"] {
        host.okw(&format!("berthctl remove {m}"));
    }
}

/// Which of `columns` (heading, machine name without its trailing digits) `machine`
/// belongs to.
fn column_of(columns: &[(&str, &str)], machine: &str) -> Option<usize> {
    let stem = machine.trim_end_matches(|c: char| c.is_ascii_digit());
    columns.iter().position(|c| c.1 == stem)
}

/// Samples in ms by row and column, rows in the order first seen, printed as medians.
struct Breakdown {
    columns: usize,
    rows: Vec<(String, Vec<Vec<f64>>)>,
}

impl Breakdown {
    fn new(columns: usize) -> Breakdown {
        Breakdown {
            columns,
            rows: Vec::new(),
        }
    }

    fn add(&mut self, row: &str, column: usize, ms: f64) {
        let i = match self.rows.iter().position(|r| r.0 == row) {
            Some(i) => i,
            None => {
                self.rows
                    .push((row.to_string(), vec![Vec::new(); self.columns]));
                self.rows.len() - 1
            }
        };
        self.rows[i].1[column].push(ms);
    }

    /// Each heading of `columns` with its number of samples (the first row's).
    fn print(&self, title: &str, what: &str, columns: &[(&str, &str)]) {
        println!("\n### {title}\n");
        let heads: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let n = self.rows.first().map_or(0, |r| r.1[i].len());
                format!("{} ({n})", c.0)
            })
            .collect();
        println!("| {what} | {} |", heads.join(" | "));
        println!("|---|{}", "---|".repeat(columns.len()));
        for (row, samples) in &self.rows {
            let cells: Vec<String> = samples
                .iter()
                .map(|s| {
                    if s.is_empty() {
                        return "-".to_string();
                    }
                    let f = Figure {
                        name: String::new(),
                        samples: s.clone(),
                    };
                    format!("{:.1}", f.median())
                })
                .collect();
            println!("| {row} | {} |", cells.join(" | "));
        }
    }
}

/// Medians of each step of berthd's starts (its `machine NAME: start took T ms: STEP MS,
/// ...` lines), one column per (heading, machine name without its trailing digits).
fn start_steps(host: &TestHost, columns: &[(&str, &str)]) {
    let log = host.ok(&["journalctl", "-u", "berthd", "-o", "cat", "--no-pager"]);
    let mut steps = Breakdown::new(columns.len());
    for line in log.lines() {
        let Some((machine, rest)) = line
            .strip_prefix("machine ")
            .and_then(|l| l.split_once(": start took "))
        else {
            continue;
        };
        let (Some(col), Some((total, parts))) =
            (column_of(columns, machine), rest.split_once(" ms: "))
        else {
            continue;
        };
        steps.add("total", col, total.parse().unwrap_or(f64::NAN));
        // A step's name may hold ", " itself ("mounts, pivot_root, exec 7.0"): a piece
        // without a number at its end is the start of the next step's name.
        let mut name = String::new();
        for piece in parts.split(", ") {
            match piece.rsplit_once(' ').map(|(n, v)| (n, v.parse::<f64>())) {
                Some((n, Ok(ms))) => {
                    name.push_str(n);
                    steps.add(&name, col, ms);
                    name.clear();
                }
                _ => {
                    name.push_str(piece);
                    name.push_str(", ");
                }
            }
        }
    }
    steps.print("berthd's start steps, median ms", "step", columns);
}

/// Medians of the phases of berthd's one-shot runs, from the times of its log lines
/// about each: what `run --rm` spends besides the start itself.
fn run_phases(host: &TestHost, columns: &[(&str, &str)]) {
    const EVENTS: [(&str, &str); 5] = [
        ("created", ": created from template"),
        ("started", ": start took"),
        ("its command ended", ": the command ended"),
        ("stopped (scope gone)", ": stopped"),
        ("removed", ": removed"),
    ];
    let log = host.ok(&[
        "journalctl",
        "-u",
        "berthd",
        "-o",
        "short-unix",
        "--no-pager",
    ]);
    let mut seen: Vec<(String, [Option<f64>; EVENTS.len()])> = Vec::new();
    for line in log.lines() {
        // "SECONDS.MICROS HOST berthd[PID]: machine NAME: what"
        let Some((Ok(at), msg)) = line
            .split_once(' ')
            .and_then(|(t, rest)| Some((t.parse::<f64>(), rest.split_once("]: machine ")?.1)))
        else {
            continue;
        };
        let Some((machine, _)) = msg.split_once(": ") else {
            continue;
        };
        if column_of(columns, machine).is_none() {
            continue;
        }
        let Some(e) = EVENTS.iter().position(|e| msg.contains(e.1)) else {
            continue;
        };
        let i = match seen.iter().position(|s| s.0 == machine) {
            Some(i) => i,
            None => {
                seen.push((machine.to_string(), [None; EVENTS.len()]));
                seen.len() - 1
            }
        };
        seen[i].1[e] = Some(at);
    }
    let mut phases = Breakdown::new(columns.len());
    for (machine, at) in &seen {
        let col = column_of(columns, machine).expect("kept above");
        if let (Some(first), Some(last)) = (at[0], at[EVENTS.len() - 1]) {
            phases.add("created → removed", col, (last - first) * 1000.0);
        }
        for w in 1..EVENTS.len() {
            if let (Some(from), Some(to)) = (at[w - 1], at[w]) {
                let row = format!("{} → {}", EVENTS[w - 1].0, EVENTS[w].0);
                phases.add(&row, col, (to - from) * 1000.0);
            }
        }
    }
    phases.print(
        "berthd's one-shot runs, median ms between its log lines",
        "phase",
        columns,
    );
}

/// VmRSS (KiB) and CPU time (utime + stime, in clock ticks) of the process named `name`.
fn process_use(host: &TestHost, name: &str) -> (u64, u64) {
    let pid = host.okw(&format!("pidof -s {name}")).trim().to_string();
    let status = host.ok(&["cat", &format!("/proc/{pid}/status")]);
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    let stat = host.ok(&["cat", &format!("/proc/{pid}/stat")]);
    // Fields after the command name, which may hold spaces: utime and stime are 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat")
        .1
        .split_whitespace()
        .collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    (rss, ticks)
}

/// RSS of berthd and machined, and the CPU each used over 10 idle seconds.
fn idle(host: &TestHost, machines: usize) {
    // Both are started by D-Bus activation (and machined exits when idle with nothing
    // registered): ask each something first.
    // Any call wakes berthd; not berthctl list, which an older build fails with many.
    host.runw("busctl call org.berth.Berth1 /org/berth/Berth1/Manager org.berth.Berth1.Manager ListMachines");
    host.okw(
        "busctl call org.freedesktop.machine1 /org/freedesktop/machine1 \
         org.freedesktop.machine1.Manager ListMachines",
    );
    let before: Vec<(u64, u64)> = ["berthd", "systemd-machined"]
        .iter()
        .map(|p| process_use(host, p))
        .collect();
    std::thread::sleep(Duration::from_secs(10));
    for (name, (_, ticks0)) in ["berthd", "systemd-machined"].iter().zip(&before) {
        let (rss, ticks) = process_use(host, name);
        println!(
            "| {name} | {machines} | {:.1} | {} |",
            rss as f64 / 1024.0,
            ticks - ticks0
        );
    }
}

/// Makes running busybox machines s{from}..s{to-1}, a few berthctl calls at a time.
fn make_machines(host: &TestHost, from: usize, to: usize) {
    if from >= to {
        return;
    }
    let names: Vec<String> = (from..to).map(|i| format!("s{i:04}")).collect();
    let create = "berthctl create \"$0\" --template busybox --ephemeral -- /bin/sleep 1000000 \
                  >/dev/null && berthctl start \"$0\"";
    let script = format!(
        "printf '%s\\n' {} | xargs -n 1 -P 4 bash -c '{create}'",
        names.join(" ")
    );
    let out = host.run_for(Duration::from_secs(1800), &["bash", "-c", &script]);
    assert!(out.status.success(), "making machines: {out:?}");
}

fn scale(host: &TestHost) {
    println!("\n### Idle: RSS and CPU\n");
    println!("| process | machines | RSS MiB | CPU ticks in 10 s idle |");
    println!("|---|---|---|---|");
    idle(host, 0);
    // The busybox template, built on first use, before any timing.
    host.okw("berthctl create warm --template busybox");
    host.okw("berthctl remove warm");
    let mut made = 0;
    let mut tables = Vec::new();
    // BERTH_BENCH_MACHINES=200 stops at 200 (an older berthd runs out of descriptors
    // short of 1,000).
    let counts: Vec<usize> = std::env::var("BERTH_BENCH_MACHINES")
        .unwrap_or_else(|_| "200,1000".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("BERTH_BENCH_MACHINES: counts, comma-separated")
        })
        .collect();
    for count in counts {
        make_machines(host, made, count);
        made = count;
        let listed = host.okw("machinectl list --no-legend");
        assert_eq!(listed.lines().count(), count, "machined lists them all");
        idle(host, count);
        // An older berthctl may fail here (issue 9): told, and left out of the timings.
        let list = host.runw("berthctl list");
        let list_works = list.status.success();
        if !list_works {
            println!(
                "\n`berthctl list` with {count} machines fails: {}",
                String::from_utf8_lossy(&list.stderr).trim()
            );
        }
        let cases: Vec<(&str, &str, &str, &str)> = [
            (
                "ListMachines",
                "",
                "busctl call org.berth.Berth1 /org/berth/Berth1/Manager \
                     org.berth.Berth1.Manager ListMachines",
                "",
            ),
            (
                "GetManagedObjects",
                "",
                "busctl call org.berth.Berth1 /org/berth/Berth1 \
                     org.freedesktop.DBus.ObjectManager GetManagedObjects",
                "",
            ),
            ("berthctl list", "", "berthctl list", ""),
            (
                "machined ListMachines",
                "",
                "busctl call org.freedesktop.machine1 /org/freedesktop/machine1 \
                     org.freedesktop.machine1.Manager ListMachines",
                "",
            ),
        ]
        .into_iter()
        .filter(|c| list_works || c.0 != "berthctl list")
        .collect();
        let figures = alternate_n(host, &cases, 20);
        tables.push((count, figures));
    }
    for (count, figures) in &tables {
        // Each against machined's ListMachines, the last row.
        let peer = figures.last().expect("machined's row").median();
        table(
            &format!("{count} running machines"),
            "/ machined ListMachines",
            figures,
            |f| f.median() / peer,
        );
    }
    // The machines go with the host.
}

fn main() {
    let bench = std::env::var("BERTH_BENCH").unwrap_or_default();
    let host = match std::env::var("BERTH_BENCH_BINARIES") {
        Ok(dir) if !dir.is_empty() => Some(
            TestHost::boot(CgroupMode::Hybrid, std::path::Path::new(&dir))
                .unwrap_or_else(|e| panic!("test host boots: {e}")),
        ),
        _ => boot_with_berth(CgroupMode::Hybrid, "bench"),
    };
    let Some(host) = host else {
        return;
    };
    if bench == "exec" {
        exec(&host);
        return;
    }
    if bench == "scale" {
        scale(&host);
        return;
    }
    if bench == "start" {
        start(&host);
        return;
    }
    network(&host);
    if bench == "network" {
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
