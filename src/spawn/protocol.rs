//! Typed messages between berthd and its spawn helper, one JSON object per line.

use crate::security::Confinement;
use crate::security::users::Users;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;

/// Everything PID 1 needs to become the machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpawnRequest {
    pub name: String,
    pub hostname: String,
    pub rootfs: PathBuf,
    /// argv of PID 1; argv[0] is a path inside the machine.
    pub command: Vec<String>,
    /// KEY=VALUE pairs added to the default environment.
    pub environment: Vec<String>,
    /// Size of the /tmp tmpfs in bytes; None lets the kernel pick (half of RAM).
    pub tmp_size: Option<u64>,
    /// Host paths PID 1 binds into its root, each target resolved there again.
    #[serde(default)]
    pub binds: Vec<super::binds::Bind>,
    pub confinement: Confinement,
    /// The machine's own user namespace; None runs it privileged.
    pub users: Option<Users>,
    /// The machine's ID (crate::machine_id), passed to its init as `container_uuid`.
    pub machine_id: Option<String>,
    /// `rootfs` is the read-only base of an overlay whose writes vanish with the machine
    /// (ephemeral machines; idmapped through the machine's user namespace when it has
    /// one).
    #[serde(default)]
    pub overlay: bool,
    /// `host` keeps the host's network namespace; otherwise PID 1 gets its own (with only
    /// a loopback until berthd moves a bridged machine's eth0 in before Go).
    #[serde(default)]
    pub network: crate::net::NetMode,
    /// What the machine's /etc/resolv.conf should say (its gateway's dnsmasq, or the
    /// host's own for `host`); written after pivot_root, so inside its root, unless
    /// the machine manages its own (the file is a symlink, as systemd-resolved makes).
    #[serde(default)]
    pub resolv_conf: Option<String>,
    /// berth's own PID 1 (src/spawn/init.rs) reaps and forwards signals, and `command`
    /// runs as PID 2.
    #[serde(default)]
    pub init: bool,
    /// /dev/console, and PID 1's stdio unless `stdio_fds` says otherwise, are the slave
    /// of a pty berthd keeps the master of (passed to the helper at CONSOLE_FD); else
    /// stdin is /dev/null, stdout and stderr berthd's, and /dev/console a bind of
    /// /dev/null.
    #[serde(default)]
    pub console: bool,
    /// Where PID 1 takes its stdin, stdout and stderr from instead of /dev/null and
    /// berthd's journal: descriptors of the spawn helper (a one-shot run's caller's, put
    /// there by launch::spawn).
    #[serde(default)]
    pub stdio_fds: Option<[i32; 3]>,
    /// A descriptor of the spawn helper on which berth's init writes the command's exit
    /// status (one byte) before it exits: berthd is not PID 1's parent (systemd reaps it)
    /// and a scope keeps no exit status. Only with `init`.
    #[serde(default)]
    pub status_fd: Option<i32>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum DaemonMsg {
    Spawn(Box<SpawnRequest>),
    /// The scope exists and holds PID 1: go on.
    Go,
    /// Give up: kill PID 1.
    Abort,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum HelperMsg {
    Spawned { pid: u32 },
    Running,
    Failed { message: String },
}

/// What the exec helper needs; sent as JSON on a pipe of its own, never in its argv
/// (readable by every user in /proc/PID/cmdline).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub leader: u32,
    pub argv: Vec<String>,
    pub environment: Vec<String>,
    pub confinement: Confinement,
    /// OpenShell: the command runs on a pty opened inside the machine, as a user of the
    /// machine's own; the helper answers on its request socket ([`ShellReply`]).
    #[serde(default)]
    pub shell: Option<ShellRequest>,
    /// Stay in the machine as its resident exec helper (src/spawn/resident/): run each
    /// [`ResidentCommand`] that comes on the control socket at RESIDENT_CONTROL_FD, until
    /// berthd closes it or the machine's leader ends. `argv` and `environment` are unused.
    #[serde(default)]
    pub resident: bool,
}

/// berthd → the resident exec helper: one datagram per command on the control socket,
/// carrying the command's stdin, stdout, stderr and the write end of its reply socket
/// as SCM_RIGHTS, in that order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResidentCommand {
    pub argv: Vec<String>,
    pub environment: Vec<String>,
    pub confinement: Confinement,
}

/// The resident exec helper → berthd: `Ready` or `Failed` once on the control socket
/// when it has joined the machine (or could not); `Started` then `Exited` as JSON lines
/// on a command's reply socket. A reply socket that ends before `Started` means the
/// command never ran.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum ResidentMsg {
    Ready,
    Failed {
        message: String,
    },
    Started,
    /// The command's exit status, 128+N when signal N ended it.
    Exited {
        status: i32,
    },
}

/// The shell mode of the exec helper: with no argv it starts `user`'s login shell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShellRequest {
    /// A name or uid in the machine's /etc/passwd; empty is root.
    pub user: String,
}

/// The exec helper's answer in shell mode, one JSON line on its request socket; `Ready`
/// carries the pty's master as SCM_RIGHTS. Sent before the command runs, so a caller
/// learns of a missing user from OpenShell's reply.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum ShellReply {
    /// The command runs on the pty at `pty_path` (inside the machine).
    Ready {
        pty_path: String,
    },
    NoUser {
        user: String,
    },
    Failed {
        message: String,
    },
}

/// How berth names itself to what runs in a machine: `$container` and
/// /run/host/container-manager (systemd's container interface).
pub const CONTAINER_MANAGER: &str = "berth";

/// The environment every process berth starts in a machine begins with; systemd and
/// other inits look at `container` to know where they run.
pub fn base_environment() -> Vec<String> {
    vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        format!("container={CONTAINER_MANAGER}"),
        "HOME=/root".into(),
        "TERM=linux".into(),
    ]
}

/// What PID 1 gets on top of the base environment, before the machine's own entries
/// (which may override them):
/// - `container_uuid`: the machine's ID as a UUID, as nspawn passes it; systemd takes it
///   for /etc/machine-id only when that file is empty.
///
/// A machine's /dev/console is a pty berthd holds the master of (`berthctl console`), so
/// its systemd runs console-getty.service on it, as under nspawn.
pub fn pid1_environment(machine_id: Option<&str>) -> Vec<String> {
    machine_id
        .and_then(crate::machine_id::as_uuid)
        .map(|u| format!("container_uuid={u}"))
        .into_iter()
        .collect()
}

/// Base environment with `extra` entries added. Each entry replaces every earlier one of
/// its name, base or extra, and stands where it was given: the result is what pushing the
/// entries one by one and dropping same-named earlier ones gives, in two linear passes
/// (one map from name to the index of its last entry), so a huge environment cannot make
/// a start quadratic.
pub fn merge_environment(extra: &[String]) -> Vec<String> {
    let base = base_environment();
    let all = || base.iter().chain(extra).enumerate();
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(base.len() + extra.len());
    for (i, entry) in all() {
        last.insert(entry_name(entry), i);
    }
    all()
        .filter(|(i, entry)| last[entry_name(entry)] == *i)
        .map(|(_, entry)| entry.clone())
        .collect()
}

/// The NAME of a NAME=VALUE entry (the whole entry if it has no `=`).
fn entry_name(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(name, _)| name)
}

/// Whether `name` can name an environment variable: letters, digits and underscores, not
/// starting with a digit, as POSIX's portable names and systemd's Environment= have it.
pub fn env_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name before '=' is empty".into());
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("the name {name:?} starts with a digit"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "the name {name:?} is not only ASCII letters, digits and underscores"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::Settings;

    #[test]
    fn messages_round_trip() {
        let req = SpawnRequest {
            name: "box".into(),
            hostname: "box".into(),
            rootfs: "/var/lib/berth/machines/box/rootfs".into(),
            command: vec!["/sbin/init".into()],
            environment: vec![],
            tmp_size: Some(1 << 20),
            binds: Vec::new(),
            confinement: Confinement::new(&Settings::default()).unwrap(),
            users: None,
            machine_id: Some("0123456789abcdef0123456789abcdef".into()),
            overlay: true,
            network: crate::net::NetMode::Bridge,
            resolv_conf: Some("nameserver 10.0.3.1\n".into()),
            init: true,
            console: true,
            stdio_fds: Some([3, 4, 5]),
            status_fd: Some(6),
        };
        let line = serde_json::to_string(&DaemonMsg::Spawn(Box::new(req.clone()))).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(
            serde_json::from_str::<DaemonMsg>(&line).unwrap(),
            DaemonMsg::Spawn(Box::new(req))
        );
        let m = HelperMsg::Failed {
            message: "x\ny".into(),
        };
        let line = serde_json::to_string(&m).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<HelperMsg>(&line).unwrap(), m);
    }

    #[test]
    fn shell_requests_and_replies_round_trip() {
        let req = ExecRequest {
            leader: 42,
            argv: vec![],
            environment: vec!["TERM=vt100".into()],
            confinement: Confinement::new(&Settings::default()).unwrap(),
            shell: Some(ShellRequest {
                user: "www-data".into(),
            }),
            resident: false,
        };
        let text = serde_json::to_string(&req).unwrap();
        assert_eq!(serde_json::from_str::<ExecRequest>(&text).unwrap(), req);
        // An Execute request from before shells has no `shell`.
        let mut plain: serde_json::Value = serde_json::from_str(&text).unwrap();
        plain.as_object_mut().unwrap().remove("shell");
        let plain: ExecRequest = serde_json::from_value(plain).unwrap();
        assert_eq!(plain.shell, None);
        for reply in [
            ShellReply::Ready {
                pty_path: "/dev/pts/0".into(),
            },
            ShellReply::NoUser { user: "bob".into() },
            ShellReply::Failed {
                message: "a\nb".into(),
            },
        ] {
            let line = serde_json::to_string(&reply).unwrap();
            assert!(!line.contains('\n'), "one line: {line}");
            assert_eq!(serde_json::from_str::<ShellReply>(&line).unwrap(), reply);
        }
    }

    #[test]
    fn extra_environment_overrides_base() {
        let env = merge_environment(&["PATH=/bin".into(), "FOO=1".into()]);
        assert!(env.contains(&"PATH=/bin".to_string()));
        assert!(env.contains(&"FOO=1".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        assert!(env.contains(&"container=berth".to_string()));
    }

    #[test]
    fn later_entries_win_and_stand_where_they_were_given() {
        let extra: Vec<String> = ["A=1", "HOME=/home", "B=1", "A=2", "A=3", "C=", "B=2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            merge_environment(&extra),
            [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "container=berth",
                "TERM=linux",
                "HOME=/home",
                "A=3",
                "C=",
                "B=2",
            ]
        );
        assert_eq!(merge_environment(&[]), base_environment());
        // Only the name decides: a value holding '=' is still one entry of its name.
        assert_eq!(
            merge_environment(&["X=a=b".into(), "X=c".into()])
                .last()
                .unwrap(),
            "X=c"
        );
    }

    #[test]
    fn pid1_gets_the_machine_id() {
        let env = pid1_environment(Some("0123456789abcdef0123456789abcdef"));
        assert_eq!(env, ["container_uuid=01234567-89ab-cdef-0123-456789abcdef"]);
        assert!(pid1_environment(None).is_empty());
        assert!(pid1_environment(Some("not-an-id")).is_empty());
    }

    #[test]
    fn environment_names() {
        for good in ["A", "_", "a_1", "PATH", "x9"] {
            assert_eq!(env_name(good), Ok(()), "{good}");
        }
        for bad in ["", "1", "1A", "A B", "A-B", "A.B", "Ä", "A\tB"] {
            assert!(env_name(bad).is_err(), "{bad:?}");
        }
    }
}
