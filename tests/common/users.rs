//! Unprivileged machines on a test host, whose /var/lib/berth is on the host's overlay
//! root: a file system without idmapped mounts, so their files are shifted on disk into
//! their user range (`ownership = "chown"`).

use super::TestHost;
use std::os::unix::fs::MetadataExt;

/// The host IDs a machine's users are: (base, count), from its PrivateUsers property.
pub fn user_range(host: &TestHost, name: &str) -> (u32, u32) {
    let out = host.okw(&format!(
        "busctl get-property org.berth.Berth1 /org/berth/Berth1/machine/{name} \
         org.berth.Berth1.Machine PrivateUsers"
    ));
    let range = out
        .trim()
        .strip_prefix("s \"")
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{name}: PrivateUsers {out:?}"));
    let (base, count) = range
        .split_once(':')
        .unwrap_or_else(|| panic!("{name} is privileged: {range:?}"));
    (base.parse().unwrap(), count.parse().unwrap())
}

/// Checks that the stopped machine `name` is unprivileged with its files shifted into a
/// range of its own (none of `others`): its tree, including `owned` (a path inside and
/// the machine's own uid:gid for it), is owned by its range on the host; it starts, its
/// root is 0 inside and what that root makes is the range's base on the host. Leaves it
/// stopped; returns the range's base.
pub fn assert_in_own_range(
    host: &TestHost,
    name: &str,
    others: &[u32],
    owned: (&str, u32, u32),
) -> u32 {
    let (base, count) = user_range(host, name);
    assert_eq!(count, 65536, "{name}: a picked range");
    assert!(!others.contains(&base), "{name}: {base} is another's range");
    let config = host
        .read(&format!("/var/lib/berth/machines/{name}/config.toml"))
        .unwrap();
    assert!(config.contains("ownership = \"chown\""), "{config}");
    let rootfs = host.path(&format!("/var/lib/berth/machines/{name}/rootfs"));
    let ids = |rel: &str| {
        let m = std::fs::symlink_metadata(rootfs.join(rel))
            .unwrap_or_else(|e| panic!("{name}: {rel}: {e}"));
        (m.uid(), m.gid())
    };
    for rel in ["", "bin", "bin/busybox", "etc/hostname", "etc/machine-id"] {
        assert_eq!(ids(rel), (base, base), "{name}: /{rel} on the host");
    }
    let (path, uid, gid) = owned;
    assert_eq!(
        ids(path.trim_start_matches('/')),
        (base + uid, base + gid),
        "{name}: {path} on the host"
    );
    host.okw(&format!("berthctl start {name}"));
    assert_eq!(
        host.okw(&format!("berthctl exec {name} -- id -u")).trim(),
        "0"
    );
    let inside = host.okw(&format!("berthctl exec {name} -- stat -c %u:%g {path}"));
    assert_eq!(
        inside.trim(),
        format!("{uid}:{gid}"),
        "{name}: {path} inside"
    );
    host.okw(&format!("berthctl exec {name} -- touch /made-inside"));
    assert_eq!(
        ids("made-inside"),
        (base, base),
        "{name}: root's file on the host"
    );
    host.okw(&format!("berthctl exec {name} -- rm /made-inside"));
    host.okw(&format!("berthctl stop {name}"));
    base
}
