//! Typed messages between berthd and its spawn helper, one JSON object per line.

use crate::security::Confinement;
use crate::security::users::Users;
use serde::{Deserialize, Serialize};
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
    pub confinement: Confinement,
    /// The machine's own user namespace; None runs it privileged.
    pub users: Option<Users>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum DaemonMsg {
    Spawn(SpawnRequest),
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
}

/// The environment every process berth starts in a machine begins with; systemd and
/// other inits look at `container` to know where they run.
pub fn base_environment() -> Vec<String> {
    vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "container=berth".into(),
        "HOME=/root".into(),
        "TERM=linux".into(),
    ]
}

/// Base environment with `extra` entries overriding same-named ones.
pub fn merge_environment(extra: &[String]) -> Vec<String> {
    let mut env = base_environment();
    for e in extra {
        let key = e.split('=').next().unwrap_or(e);
        env.retain(|b| b.split('=').next() != Some(key));
        env.push(e.clone());
    }
    env
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
            confinement: Confinement::new(&Settings::default()).unwrap(),
            users: None,
        };
        let line = serde_json::to_string(&DaemonMsg::Spawn(req.clone())).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(
            serde_json::from_str::<DaemonMsg>(&line).unwrap(),
            DaemonMsg::Spawn(req)
        );
        let m = HelperMsg::Failed {
            message: "x\ny".into(),
        };
        let line = serde_json::to_string(&m).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<HelperMsg>(&line).unwrap(), m);
    }

    #[test]
    fn extra_environment_overrides_base() {
        let env = merge_environment(&["PATH=/bin".into(), "FOO=1".into()]);
        assert!(env.contains(&"PATH=/bin".to_string()));
        assert!(env.contains(&"FOO=1".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        assert!(env.contains(&"container=berth".to_string()));
    }
}
