//! Moving a tree's user and group IDs from one user range to another, for machines whose
//! files are shifted on disk (file systems without idmapped mounts): a template copied into
//! a machine, a machine cloned, exported, imported or restored as another.
//!
//! The IDs a tree holds are its files' owners and groups, the named users and groups of
//! its POSIX ACLs, and the root ID of its namespaced (v3) file capabilities. An [`IdMap`]
//! moves all of them alike.

use crate::security::users::UserRange;

/// The ID a user namespace shows for an ID it has no mapping for (the kernel's default
/// overflowuid and overflowgid): `nobody`.
pub const OVERFLOW_ID: u32 = 65534;

/// Maps the IDs in `[from, from + count)` to `[to, to + count)`, or changes nothing (the
/// [`IdMap::IDENTITY`], the default).
///
/// An ID outside the source range becomes [`OVERFLOW_ID`], host `nobody`: it belongs to
/// no user the machine has, and moving it by the range's offset would hand the file to
/// some other range's user (another machine's, or a host user's). The machine sees it as
/// `nobody` and cannot take it over, exactly as it would see that file through an
/// idmapped mount, so a shifted machine and an idmapped one show the same tree; in a
/// machine's own view (an export) it is `nobody` too, as the machine saw it. (Like
/// systemd-nspawn and LXC, which show unmapped IDs as the overflow ID.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    range: Option<Moved>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Moved {
    from: u32,
    to: u32,
    count: u32,
}

impl IdMap {
    /// Every ID stays as it is.
    pub const IDENTITY: IdMap = IdMap { range: None };

    /// `[from, from + count)` to `[to, to + count)`, the rest to [`OVERFLOW_ID`]. Both
    /// ranges must end below `u32::MAX`, which chown reads as "no change"; a count of 0
    /// sends every ID to the overflow ID.
    pub fn new(from: u32, to: u32, count: u32) -> Option<IdMap> {
        let fits = |start: u32| u64::from(start) + u64::from(count) <= u64::from(u32::MAX);
        (fits(from) && fits(to)).then_some(IdMap {
            range: Some(Moved { from, to, count }),
        })
    }

    /// A tree as the machine sees it (its root 0) onto the disk of a machine whose files
    /// are shifted into `range`: what creation did with `shift = base`, for the IDs the
    /// range holds (0..65535 for a picked range).
    pub fn shift(range: UserRange) -> IdMap {
        IdMap::new(0, range.base, range.count).expect("a user range ends below 2^32")
    }

    /// A tree shifted into `range` back to the machine's own view: [`IdMap::shift`]
    /// undone.
    pub fn unshift(range: UserRange) -> IdMap {
        IdMap::new(range.base, 0, range.count).expect("a user range ends below 2^32")
    }

    /// A tree shifted into `from` onto `to`: the IDs both ranges hold move; beyond the
    /// smaller one, IDs are the overflow ID.
    pub fn between(from: UserRange, to: UserRange) -> IdMap {
        IdMap::new(from.base, to.base, from.count.min(to.count))
            .expect("user ranges end below 2^32")
    }

    pub fn is_identity(self) -> bool {
        self.range.is_none()
    }

    /// Where `id` goes.
    pub fn map(self, id: u32) -> u32 {
        match self.range {
            None => id,
            Some(m) if id >= m.from && id - m.from < m.count => m.to + (id - m.from),
            Some(_) => OVERFLOW_ID,
        }
    }

    /// The map back, for the IDs it moves (the overflow ID does not come back).
    pub fn inverse(self) -> IdMap {
        IdMap {
            range: self.range.map(|m| Moved {
                from: m.to,
                to: m.from,
                count: m.count,
            }),
        }
    }

    /// Moves the IDs an extended attribute holds (see [`map_xattr`]).
    pub fn map_xattr(self, key: &[u8], value: &mut [u8]) {
        if !self.is_identity() {
            map_xattr(key, value, |id| self.map(id));
        }
    }
}

const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;
const VFS_CAP_REVISION_MASK: u32 = 0xff00_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;

/// Moves the IDs an attribute holds along with the file owners: the named users and
/// groups of a POSIX ACL (`system.posix_acl_access`, `_default`), and the root ID of a
/// namespaced (v3) file capability, which says in which user namespace's root the
/// capabilities hold. A v2 capability names no ID and holds in every namespace; it is
/// kept as it is, and so is a value too malformed to read.
fn map_xattr(key: &[u8], value: &mut [u8], map: impl Fn(u32) -> u32) {
    let move_id = |bytes: &mut [u8]| {
        let id = u32::from_le_bytes(bytes.try_into().expect("4 bytes"));
        bytes.copy_from_slice(&map(id).to_le_bytes());
    };
    match key {
        b"system.posix_acl_access" | b"system.posix_acl_default" => {
            // A u32 version, then entries of u16 tag, u16 perm, u32 id (little endian).
            if value.len() < 4 || !(value.len() - 4).is_multiple_of(8) {
                return;
            }
            for entry in value[4..].chunks_exact_mut(8) {
                let tag = u16::from_le_bytes([entry[0], entry[1]]);
                if tag == ACL_USER || tag == ACL_GROUP {
                    move_id(&mut entry[4..8]);
                }
            }
        }
        b"security.capability" if value.len() == 24 => {
            let magic = u32::from_le_bytes(value[0..4].try_into().expect("4 bytes"));
            if magic & VFS_CAP_REVISION_MASK == VFS_CAP_REVISION_3 {
                move_id(&mut value[20..24]);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A POSIX ACL value with a named user and a named group.
    fn acl(user: u32, group: u32) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 6u16, u32::MAX),
            (ACL_USER, 4, user),
            (0x04, 4, u32::MAX),
            (ACL_GROUP, 4, group),
            (0x10, 6, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    /// A file capability value: v3 with a root ID, else v2.
    fn cap(root: Option<u32>) -> Vec<u8> {
        let magic: u32 = if root.is_some() {
            0x0300_0000
        } else {
            0x0200_0000
        };
        let mut v = (magic | 1).to_le_bytes().to_vec();
        v.extend_from_slice(&(1u32 << 13).to_le_bytes());
        v.extend_from_slice(&[0; 12]);
        if let Some(root) = root {
            v.extend_from_slice(&root.to_le_bytes());
        }
        v
    }

    const PICKED: UserRange = UserRange {
        base: 524_288,
        count: 65536,
    };

    #[test]
    fn shift_keeps_what_creation_did_for_the_range() {
        let m = IdMap::shift(PICKED);
        for id in [0, 1, 1000, 65534, 65535] {
            assert_eq!(m.map(id), 524_288 + id, "{id}");
        }
        assert_eq!(m.map(65536), OVERFLOW_ID, "beyond the range: nobody");
        assert_eq!(m.map(u32::MAX - 1), OVERFLOW_ID);
        for id in [0, 7, 65535] {
            assert_eq!(m.inverse().map(m.map(id)), id, "round trip of {id}");
        }
        assert_eq!(IdMap::unshift(PICKED), m.inverse());
        let un = IdMap::unshift(PICKED);
        assert_eq!(un.map(524_287), OVERFLOW_ID, "below the range");
        assert_eq!(un.map(0), OVERFLOW_ID, "host root is not the machine's");
        assert_eq!(un.map(524_288 + 65536), OVERFLOW_ID, "above it");
    }

    #[test]
    fn identity_moves_nothing() {
        let m = IdMap::default();
        assert!(m.is_identity() && m.inverse().is_identity());
        for id in [0, 65534, 70_000, u32::MAX] {
            assert_eq!(m.map(id), id);
        }
        let mut v = acl(1, 2);
        m.map_xattr(b"system.posix_acl_access", &mut v);
        assert_eq!(v, acl(1, 2));
    }

    #[test]
    fn between_ranges_moves_what_both_hold() {
        let small = UserRange {
            base: 1_000_000,
            count: 1000,
        };
        let m = IdMap::between(PICKED, small);
        assert_eq!(m.map(524_288), 1_000_000);
        assert_eq!(m.map(524_288 + 999), 1_000_999);
        assert_eq!(
            m.map(524_288 + 1000),
            OVERFLOW_ID,
            "the target has no such ID"
        );
        assert_eq!(m.map(0), OVERFLOW_ID);
        let same = IdMap::between(PICKED, PICKED);
        assert_eq!(same.map(524_300), 524_300);
        assert_eq!(
            same.map(5),
            OVERFLOW_ID,
            "even onto itself, strays are nobody"
        );
    }

    #[test]
    fn ranges_must_end_below_the_no_change_id() {
        assert!(IdMap::new(0, u32::MAX - 10, 10).is_some());
        assert!(IdMap::new(0, u32::MAX - 10, 11).is_none());
        assert!(IdMap::new(u32::MAX - 1, 0, 2).is_none());
        let none = IdMap::new(5, 10, 0).unwrap();
        assert_eq!(none.map(5), OVERFLOW_ID);
    }

    #[test]
    fn acls_and_namespaced_capabilities_move() {
        let m = IdMap::shift(PICKED);
        let mut a = acl(1234, 5678);
        m.map_xattr(b"system.posix_acl_default", &mut a);
        assert_eq!(a, acl(524_288 + 1234, 524_288 + 5678));
        let mut stray = acl(100_000, 5);
        m.map_xattr(b"system.posix_acl_access", &mut stray);
        assert_eq!(
            stray,
            acl(OVERFLOW_ID, 524_293),
            "a stray named user is nobody"
        );
        m.inverse().map_xattr(b"system.posix_acl_default", &mut a);
        assert_eq!(a, acl(1234, 5678), "and back");

        let mut v3 = cap(Some(0));
        m.map_xattr(b"security.capability", &mut v3);
        assert_eq!(v3, cap(Some(524_288)));
        m.inverse().map_xattr(b"security.capability", &mut v3);
        assert_eq!(v3, cap(Some(0)));
        let mut v2 = cap(None);
        m.map_xattr(b"security.capability", &mut v2);
        assert_eq!(v2, cap(None), "a v2 capability names no ID");
    }

    #[test]
    fn other_and_malformed_attributes_are_left_alone() {
        let m = IdMap::shift(PICKED);
        let mut v = b"user value".to_vec();
        m.map_xattr(b"user.x", &mut v);
        assert_eq!(v, b"user value");
        let mut short = vec![2, 0, 0, 0, 1];
        m.map_xattr(b"system.posix_acl_access", &mut short);
        assert_eq!(short, [2, 0, 0, 0, 1]);
        let mut undefined = acl(1, 2);
        let mut fourth = undefined.clone();
        // Entries without an ID (owner, other, mask) keep their u32::MAX.
        m.map_xattr(b"system.posix_acl_access", &mut undefined);
        fourth[4 + 8 + 4..4 + 8 + 8].copy_from_slice(&524_289u32.to_le_bytes());
        fourth[4 + 24 + 4..4 + 24 + 8].copy_from_slice(&524_290u32.to_le_bytes());
        assert_eq!(undefined, fourth, "only named entries move");
        let mut odd_cap = cap(Some(0));
        odd_cap.push(0);
        let before = odd_cap.clone();
        m.map_xattr(b"security.capability", &mut odd_cap);
        assert_eq!(odd_cap, before, "not a capability's size");
    }
}
