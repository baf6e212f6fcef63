//! Who may change machines, seen from outside: a real unprivileged user of the test host
//! drives berthctl and the bus while a real polkitd decides. Refused calls must leave no
//! trace; a polkit rule must be enough to let them through; without polkit only root
//! may change anything.

mod common;

use common::{CgroupMode, TestHost, boot_with_berth, wait_until};
use std::process::Output;
use std::time::Duration;

/// polkitd notices a new rules file through inotify; give it this long.
const RULES_RELOAD: Duration = Duration::from_secs(20);
const SHORTLY: Duration = Duration::from_secs(10);

const USER: &str = "tester";

/// Wants a password for one machine only, which it finds by the detail berthd sends.
const ASK_FOR_IDLE: &str = r#"
polkit.addRule(function(action, subject) {
    if (subject.user == "tester" &&
        action.id == "org.berth.Berth1.manage-machines" &&
        action.lookup("org.berth.Berth1.machine") == "idle") {
        return polkit.Result.AUTH_ADMIN;
    }
});
"#;

const GRANT: &str = r#"
polkit.addRule(function(action, subject) {
    if (subject.user == "tester" &&
        (action.id == "org.berth.Berth1.manage-machines" ||
         action.id == "org.berth.Berth1.create-machine" ||
         action.id == "org.berth.Berth1.shell")) {
        return polkit.Result.YES;
    }
});
"#;

/// An ordinary user with a home, made in the host's own /etc (an overlay of this
/// machine's, thrown away with the host). Returns its uid.
fn add_user(host: &TestHost) -> u32 {
    host.ok(&["useradd", "--create-home", USER]);
    host.ok(&["id", "-u", USER]).trim().parse().unwrap()
}

/// Runs `argv` as the test user, with its own groups and no privileges left: what a user
/// logged in on the host would run.
fn as_user_argv(host: &TestHost, argv: &[&str]) -> Output {
    let mut all = vec![
        "setpriv",
        "--reuid",
        USER,
        "--regid",
        USER,
        "--init-groups",
        "--",
    ];
    all.extend(argv);
    host.run(&all)
}

/// `as_user_argv` for a command line whose words need no quoting.
fn as_user(host: &TestHost, cmdline: &str) -> Output {
    as_user_argv(host, &cmdline.split_whitespace().collect::<Vec<_>>())
}

fn as_user_ok(host: &TestHost, cmdline: &str) -> String {
    let out = as_user(host, cmdline);
    assert!(out.status.success(), "{cmdline} as {USER}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The call fails, and berthctl says why in one line naming the caller and `action`
/// (for the given polkit message, `said`).
fn assert_refused(host: &TestHost, cmdline: &str, uid: u32, said: &str) {
    let out = as_user(host, cmdline);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{cmdline}: {out:?}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{cmdline}: not one line: {stderr}"
    );
    assert!(stderr.starts_with("berthctl: "), "{cmdline}: {stderr}");
    assert!(
        stderr.contains(&format!("uid {uid}")) && stderr.contains(said),
        "{cmdline}: {stderr}"
    );
}

/// Waits until polkitd grants the user `action` for its own process (pkcheck), as it would
/// for berthd: the rules that grant it are loaded.
fn wait_until_granted(host: &TestHost, action: &str) {
    let pkcheck = format!("exec pkcheck --action-id {action} --process $$");
    let answered = || as_user_argv(host, &["sh", "-c", &pkcheck]).status.success();
    assert!(
        wait_until("polkitd to load the new rules", RULES_RELOAD, answered),
        "{}",
        host.journal("polkit")
    );
}

fn state(host: &TestHost, name: &str) -> String {
    let status: serde_json::Value =
        serde_json::from_str(&host.okw(&format!("berthctl --json status {name}"))).unwrap();
    status["state"].as_str().unwrap().to_string()
}

fn scope_active(host: &TestHost, name: &str) -> bool {
    host.runw(&format!("systemctl is-active --quiet machine-{name}.scope"))
        .status
        .success()
}

fn start_polkit(host: &TestHost) {
    host.okw("systemctl start polkit.service");
}

/// Root makes `box` (running) and `idle` (stopped) for the user to try its hand on.
fn machines_of_root(host: &TestHost) {
    host.okw("berthctl create box --template busybox --memory 64M");
    host.okw("berthctl start box");
    host.okw("berthctl create idle --template busybox");
}

/// Every change the user may try on root's machines and on a new one, refused with the
/// polkit action it needed; then nothing changed.
fn assert_every_change_refused(host: &TestHost, uid: u32, said: impl Fn(&str) -> String) {
    let config = "/var/lib/berth/machines/box/config.toml";
    let before = host.read(config).unwrap();

    let manage = said("org.berth.Berth1.manage-machines");
    assert_refused(
        host,
        "berthctl create other --template busybox",
        uid,
        &said("org.berth.Berth1.create-machine"),
    );
    assert_refused(host, "berthctl start idle", uid, &manage);
    assert_refused(host, "berthctl stop box", uid, &manage);
    assert_refused(host, "berthctl restart box", uid, &manage);
    assert_refused(
        host,
        "berthctl kill box --signal KILL --whom all",
        uid,
        &manage,
    );
    assert_refused(host, "berthctl set box --memory 32M", uid, &manage);
    assert_refused(host, "berthctl enable box", uid, &manage);
    assert_refused(host, "berthctl remove idle", uid, &manage);
    assert_refused(host, "berthctl remove --force box", uid, &manage);
    assert_refused(
        host,
        "berthctl exec box -- touch /pwned",
        uid,
        &said("org.berth.Berth1.shell"),
    );
    assert_refused(
        host,
        "berthctl shell box -- touch /pwned",
        uid,
        &said("org.berth.Berth1.shell"),
    );

    // No trace: no new machine, files or scope; the old ones as they were.
    assert!(!host.path("/var/lib/berth/machines/other").exists());
    let leftovers: Vec<_> = std::fs::read_dir(host.path("/var/lib/berth/machines"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "box" && n != "idle")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!scope_active(host, "other"));
    assert!(!scope_active(host, "idle"));
    assert_eq!(state(host, "idle"), "stopped");
    assert_eq!(state(host, "box"), "running");
    assert!(scope_active(host, "box"));
    assert_eq!(host.read(config).unwrap(), before);
    assert!(
        !host
            .path("/var/lib/berth/machines/box/rootfs/pwned")
            .exists()
    );
    let listed = host.okw("berthctl list");
    assert!(!listed.contains("other"), "{listed}");
}

#[test]
fn polkit_decides_for_other_users() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "polkit_decides_for_other_users") else {
        return;
    };
    let uid = add_user(&host);
    start_polkit(&host);
    machines_of_root(&host);

    // Reading is open to all.
    let listed = as_user_ok(&host, "berthctl list");
    assert!(
        listed.contains("box") && listed.contains("idle"),
        "{listed}"
    );
    let status = as_user_ok(&host, "berthctl status box");
    assert!(status.contains("running"), "{status}");

    // Changing is not, while no rule says so: polkit's default for a user without an
    // active session is no.
    assert_every_change_refused(&host, uid, |action| {
        format!("polkit does not grant it action {action}")
    });
    // On the bus, it is berthd's own refusal that scripts see.
    let out = as_user(
        &host,
        "dbus-send --system --print-reply --dest=org.berth.Berth1 \
         /org/berth/Berth1/machine/idle org.berth.Berth1.Machine.Start",
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("org.berth.Berth1.Error.AccessDenied"),
        "{out:?}"
    );

    // A rule that wants a password: berthctl lets polkit ask for it only on a terminal
    // (where, in this host without logind, no agent can ask either).
    let ask = host.path("/etc/polkit-1/rules.d/40-berth-ask.rules");
    std::fs::write(&ask, ASK_FOR_IDLE).unwrap();
    // pkcheck may not pass details (the machine) as this user, so wait on berthd's own
    // answer: a refusal either way.
    let wants_password = "without authenticating for polkit action \
                          org.berth.Berth1.manage-machines, which the call did not allow";
    let asks = || {
        let out = as_user(&host, "berthctl start idle");
        String::from_utf8_lossy(&out.stderr).contains(wants_password)
    };
    assert!(wait_until(
        "polkitd to load the new rules",
        RULES_RELOAD,
        asks
    ));
    assert_refused(&host, "berthctl start idle", uid, wants_password);
    let out = as_user_argv(
        &host,
        &["script", "-qec", "berthctl start idle", "/dev/null"],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        said.contains("no polkit agent of its session could ask"),
        "{said}"
    );
    assert_eq!(state(&host, "idle"), "stopped");
    std::fs::remove_file(&ask).unwrap();

    // A rule granting the actions to the user: polkitd picks it up on its own.
    std::fs::write(
        host.path("/etc/polkit-1/rules.d/50-berth-tester.rules"),
        GRANT,
    )
    .unwrap();
    wait_until_granted(&host, "org.berth.Berth1.shell");

    // Now the same user may do all of it, on root's machines and its own.
    as_user_ok(
        &host,
        "berthctl create other --template busybox --memory 64M",
    );
    as_user_ok(&host, "berthctl start other");
    assert!(scope_active(&host, "other"));
    as_user_ok(&host, "berthctl set other --memory 32M");
    let limit = host.okw("systemctl show -p MemoryLimit machine-other.scope");
    assert_eq!(limit.trim(), "MemoryLimit=33554432");
    assert_eq!(
        as_user_ok(&host, "berthctl exec other -- hostname").trim(),
        "other"
    );
    assert_eq!(
        as_user_ok(&host, "berthctl shell other -- hostname").trim(),
        "other"
    );
    as_user_ok(&host, "berthctl restart other");
    as_user_ok(&host, "berthctl stop other");
    as_user_ok(&host, "berthctl remove other");
    assert!(!host.path("/var/lib/berth/machines/other").exists());

    as_user_ok(&host, "berthctl start idle");
    as_user_ok(&host, "berthctl stop box");
    as_user_ok(&host, "berthctl remove --force idle");
    as_user_ok(&host, "berthctl remove box");
    let listed = host.okw("berthctl list");
    assert!(listed.contains("No machines"), "{listed}");
    assert!(!scope_active(&host, "box") && !scope_active(&host, "idle"));
}

#[test]
fn without_polkit_only_root_may_change() {
    let Some(host) = boot_with_berth(CgroupMode::Hybrid, "without_polkit_only_root_may_change")
    else {
        return;
    };
    let uid = add_user(&host);
    // polkit installed but not able to run: the bus cannot activate it.
    host.okw("systemctl mask --now polkit.service");
    machines_of_root(&host);

    let said = |_: &str| "polkit is not running, so only root may".to_string();
    assert_every_change_refused(&host, uid, said);
    let listed = as_user_ok(&host, "berthctl list");
    assert!(listed.contains("box"), "{listed}");

    // polkit not installed at all: no service answers to its name.
    host.okw("rm /usr/share/dbus-1/system-services/org.freedesktop.PolicyKit1.service");
    host.okw("systemctl reload dbus");
    assert_refused(&host, "berthctl stop box", uid, &said(""));
    assert_eq!(state(&host, "box"), "running");

    // Root needs no polkit.
    host.okw("berthctl stop box");
    host.okw("berthctl remove box");
    host.okw("berthctl remove idle");
    assert!(wait_until("box's scope to go", SHORTLY, || !scope_active(
        &host, "box"
    )));
}
