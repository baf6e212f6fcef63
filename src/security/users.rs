//! User namespaces for unprivileged machines: which host IDs a machine's users are.
//!
//! A machine with `PrivateUsers` runs in its own user namespace in which IDs 0..COUNT
//! are host IDs BASE..BASE+COUNT: its root is root over its own namespaces and files, and
//! nobody on the host. `pick` chooses a free 65,536-ID range the way systemd-nspawn's
//! `-U` does (64K-aligned, from 0x80000 up, clear of every other machine's range, of the
//! host's own users and of the ranges /etc/subuid and /etc/subgid give to users);
//! `BASE:COUNT` takes a range the host's administrator delegated to root in /etc/subuid
//! and /etc/subgid, as LXC does. The range is kept with the machine. A new machine gets
//! `pick` unless its creator says otherwise; `no` makes a privileged one.

use crate::names::shown;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// A machine's IDs on the host: 0..count inside are base..base+count outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRange {
    pub base: u32,
    pub count: u32,
}

/// How the machine's root filesystem shows its files as owned by the machine's users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ownership {
    /// An idmapped mount: the files stay owned by 0.. on disk, as in the template.
    Idmap,
    /// The files were chowned by BASE when the machine was made (file systems that
    /// cannot idmap, like overlayfs).
    Chown,
}

/// A machine's user namespace as stored in its config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Users {
    #[serde(flatten)]
    pub range: UserRange,
    pub ownership: Ownership,
}

/// What a creation asks for (`PrivateUsers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Request {
    /// Privileged: the machine's root is the host's uid 0 (`PrivateUsers` "no").
    No,
    /// A free range, picked: the default for a new machine, as Debian machines booting
    /// their own systemd run in one as well as any other.
    #[default]
    Pick,
    Range(UserRange),
}

/// Size of a picked range: 16 bits of IDs, what a Linux system inside expects.
pub const PICK_COUNT: u32 = 65536;
const PICK_FIRST: u32 = 0x0008_0000;
const PICK_LAST: u32 = 0x6fff_0000;

/// Who delegated IDs in /etc/subuid and /etc/subgid for berth's machines.
const DELEGATE: &str = "root";

impl UserRange {
    fn end(self) -> u64 {
        u64::from(self.base) + u64::from(self.count)
    }

    pub fn overlaps(self, other: UserRange) -> bool {
        u64::from(self.base) < other.end() && u64::from(other.base) < self.end()
    }

    fn contains(self, other: UserRange) -> bool {
        self.base <= other.base && other.end() <= self.end()
    }

    /// The line for /proc/PID/uid_map and gid_map.
    pub fn map_line(self) -> String {
        format!("0 {} {}\n", self.base, self.count)
    }
}

impl fmt::Display for UserRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.base, self.count)
    }
}

impl std::str::FromStr for Request {
    type Err = String;

    fn from_str(s: &str) -> Result<Request, String> {
        let bad = || {
            format!(
                "PrivateUsers {}: expected \"no\", \"pick\" or BASE:COUNT like \"524288:65536\"",
                shown(s)
            )
        };
        match s {
            "no" => return Ok(Request::No),
            "pick" => return Ok(Request::Pick),
            _ => {}
        }
        let (base, count) = s.split_once(':').ok_or_else(bad)?;
        let base: u32 = base.parse().map_err(|_| bad())?;
        let count: u32 = count.parse().map_err(|_| bad())?;
        if base == 0 {
            return Err(format!(
                "PrivateUsers {}: a range from 0 would make the machine's root the host's",
                shown(s)
            ));
        }
        if count == 0 || u64::from(base) + u64::from(count) > u64::from(u32::MAX) {
            return Err(format!(
                "PrivateUsers {}: the range must hold at least one ID and end below 2^32",
                shown(s)
            ));
        }
        Ok(Request::Range(UserRange { base, count }))
    }
}

/// The ranges /etc/subuid or /etc/subgid give, per user name.
pub fn read_subids(path: &Path) -> Vec<(String, UserRange)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut f = line.trim().split(':');
            let (owner, base, count) = (f.next()?, f.next()?, f.next()?);
            Some((
                owner.to_string(),
                UserRange {
                    base: base.parse().ok()?,
                    count: count.parse().ok()?,
                },
            ))
        })
        .collect()
}

/// What the host already uses, that no picked range may touch.
pub struct Taken {
    /// Other machines' ranges.
    pub machines: Vec<UserRange>,
    /// /etc/subuid entries.
    pub subuid: Vec<(String, UserRange)>,
    /// /etc/subgid entries.
    pub subgid: Vec<(String, UserRange)>,
    /// IDs of the host's users and groups.
    pub host_ids: Vec<u32>,
}

impl Taken {
    /// Reads the host's users, groups and delegations from `etc`.
    pub fn read(etc: &Path, machines: Vec<UserRange>) -> Taken {
        let mut host_ids = Vec::new();
        for file in ["passwd", "group"] {
            let text = std::fs::read_to_string(etc.join(file)).unwrap_or_default();
            host_ids.extend(
                text.lines()
                    .filter_map(|l| l.split(':').nth(2)?.parse::<u32>().ok()),
            );
        }
        Taken {
            machines,
            subuid: read_subids(&etc.join("subuid")),
            subgid: read_subids(&etc.join("subgid")),
            host_ids,
        }
    }

    fn clear(&self, r: UserRange) -> bool {
        !self.machines.iter().any(|m| m.overlaps(r))
            && !self
                .subuid
                .iter()
                .chain(&self.subgid)
                .any(|(_, s)| s.overlaps(r))
            && !self
                .host_ids
                .iter()
                .any(|&id| r.overlaps(UserRange { base: id, count: 1 }))
    }

    /// The lowest free 64K-aligned range, as nspawn picks.
    pub fn pick(&self) -> Result<UserRange, String> {
        (PICK_FIRST..=PICK_LAST)
            .step_by(PICK_COUNT as usize)
            .map(|base| UserRange {
                base,
                count: PICK_COUNT,
            })
            .find(|r| self.clear(*r))
            .ok_or_else(|| "no free range of 65536 IDs is left for another machine".to_string())
    }

    /// A range asked for by BASE:COUNT: delegated to root in both /etc/subuid and
    /// /etc/subgid, and no other machine's.
    pub fn check(&self, r: UserRange) -> Result<UserRange, String> {
        for (file, entries) in [("/etc/subuid", &self.subuid), ("/etc/subgid", &self.subgid)] {
            let delegated = entries
                .iter()
                .any(|(owner, s)| owner == DELEGATE && s.contains(r));
            if !delegated {
                return Err(format!(
                    "PrivateUsers {r}: not delegated to {DELEGATE} in {file} (add a line like \
                     \"{DELEGATE}:{}:{}\", or use \"pick\")",
                    r.base, r.count
                ));
            }
        }
        if let Some(m) = self.machines.iter().find(|m| m.overlaps(r)) {
            return Err(format!(
                "PrivateUsers {r}: overlaps {m}, the range of another machine"
            ));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(base: u32, count: u32) -> UserRange {
        UserRange { base, count }
    }

    #[test]
    fn requests_parse() {
        assert_eq!("no".parse(), Ok(Request::No));
        assert_eq!("pick".parse(), Ok(Request::Pick));
        assert_eq!(
            "524288:65536".parse(),
            Ok(Request::Range(range(524288, 65536)))
        );
        for bad in ["yes", "1:", ":5", "0:65536", "5:0", "4294967295:2", "a:b"] {
            assert!(bad.parse::<Request>().is_err(), "{bad}");
        }
        assert!("0:10".parse::<Request>().unwrap_err().contains("host's"));
        // A creation that does not say is unprivileged.
        assert_eq!(Request::default(), Request::Pick);
    }

    #[test]
    fn picks_the_lowest_clear_range() {
        let taken = Taken {
            machines: vec![range(0x80000, 65536)],
            subuid: vec![("alice".into(), range(0x90000, 65536))],
            subgid: vec![],
            host_ids: vec![0, 1000, 0xa0005],
        };
        assert_eq!(taken.pick().unwrap(), range(0xb0000, 65536));
        let none = Taken {
            machines: vec![],
            subuid: vec![],
            subgid: vec![],
            host_ids: vec![],
        };
        assert_eq!(none.pick().unwrap(), range(0x80000, 65536));
    }

    #[test]
    fn asked_ranges_must_be_delegated_and_free() {
        let dir = std::env::temp_dir().join(format!("berth-subid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (subuid, subgid) = (dir.join("subuid"), dir.join("subgid"));
        std::fs::write(&subuid, "alice:100000:65536\nroot:1000000:1000000\n").unwrap();
        std::fs::write(&subgid, "root:1000000:500000\n").unwrap();
        let taken = Taken {
            machines: vec![range(1_100_000, 10)],
            subuid: read_subids(&subuid),
            subgid: read_subids(&subgid),
            host_ids: vec![],
        };
        assert!(taken.check(range(1_000_000, 65536)).is_ok());
        let e = taken.check(range(1_400_000, 200_000)).unwrap_err();
        assert!(e.contains("subgid"), "{e}");
        let e = taken.check(range(100_000, 10)).unwrap_err();
        assert!(e.contains("subuid") && e.contains("root:100000:10"), "{e}");
        let e = taken.check(range(1_099_990, 20)).unwrap_err();
        assert!(e.contains("another machine"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn users_are_stored_flat() {
        let u = Users {
            range: range(524288, 65536),
            ownership: Ownership::Idmap,
        };
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Doc {
            users: Users,
        }
        let text = toml::to_string(&Doc { users: u }).unwrap();
        assert!(
            text.contains("base = 524288") && text.contains("ownership = \"idmap\""),
            "{text}"
        );
        assert_eq!(toml::from_str::<Doc>(&text).unwrap().users, u);
        assert_eq!(range(5, 2).map_line(), "0 5 2\n");
    }
}
