//! The words of berth's D-Bus contract (design/api.md) that both ends must spell the
//! same: bus name, object paths, interface names, and the enums that travel as strings.
//! berthd, berthctl and the tests all take them from here.

/// Well-known bus name owned by `berthd`.
pub const BUS_NAME: &str = "org.berth.Berth1";
/// Object carrying the ObjectManager interface for frontends.
pub const ROOT_PATH: &str = "/org/berth/Berth1";
pub const MANAGER_PATH: &str = "/org/berth/Berth1/Manager";
/// Machine objects live below this path, one label per machine (see `names`).
pub const MACHINE_PATH_PREFIX: &str = "/org/berth/Berth1/machine";
/// Template objects, one label per template, escaped as machine names are.
pub const TEMPLATE_PATH_PREFIX: &str = "/org/berth/Berth1/template";
/// Job objects, one per long operation under way, by number.
pub const JOB_PATH_PREFIX: &str = "/org/berth/Berth1/job";
/// Network objects, one label per network.
pub const NETWORK_PATH_PREFIX: &str = "/org/berth/Berth1/network";
pub const MANAGER_INTERFACE: &str = "org.berth.Berth1.Manager";
pub const MACHINE_INTERFACE: &str = "org.berth.Berth1.Machine";
pub const TEMPLATE_INTERFACE: &str = "org.berth.Berth1.Template";
pub const JOB_INTERFACE: &str = "org.berth.Berth1.Job";
pub const NETWORK_INTERFACE: &str = "org.berth.Berth1.Network";

/// What a live figure property reads when it is not known (machine stopped, accounting
/// off), as systemd itself reports unknown figures.
pub const UNKNOWN_FIGURE: u64 = u64::MAX;

/// The Machine properties read live (from the scope's cgroup files and the veth)
/// rather than kept: never signalled, and [`UNKNOWN_FIGURE`] when not known.
pub const LIVE_FIGURES: [&str; 7] = [
    "CPUUsageNSec",
    "MemoryCurrent",
    "TasksCurrent",
    "IOReadBytes",
    "IOWriteBytes",
    "RxBytes",
    "TxBytes",
];

/// Which processes of a machine Kill() signals; `whom` on the wire, as machined's KillWho.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KillWho {
    /// The machine's PID 1 only.
    Leader,
    /// Every process in the machine's scope.
    All,
}

impl KillWho {
    pub fn as_str(self) -> &'static str {
        match self {
            KillWho::Leader => "leader",
            KillWho::All => "all",
        }
    }
}

impl std::str::FromStr for KillWho {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "leader" => Ok(KillWho::Leader),
            "all" => Ok(KillWho::All),
            other => Err(format!("whom must be \"leader\" or \"all\", not {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_who_round_trips() {
        for who in [KillWho::Leader, KillWho::All] {
            assert_eq!(who.as_str().parse::<KillWho>(), Ok(who));
        }
        assert!(
            "everyone"
                .parse::<KillWho>()
                .unwrap_err()
                .contains("everyone")
        );
    }
}
