//! A machine's own /etc/passwd and /etc/group, read by the exec helper after it chrooted
//! into the machine (OpenShell's user). Parsed here rather than through NSS: NSS would
//! load the host's modules and configuration into a process that lives in the machine.

/// One /etc/passwd entry, as far as starting a login needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// The shell of an account whose entry names none, as login(1) has it.
const DEFAULT_SHELL: &str = "/bin/sh";

/// `user` in the text of an /etc/passwd: by name, else (if it is a number) by uid. A
/// number no entry has is still a user, as `su` and `setpriv` allow: its own group,
/// home `/` and the default shell. An empty `user` is root, and root is there even in
/// a machine without the file.
pub fn find_user(passwd: &str, user: &str) -> Option<Account> {
    let user = if user.is_empty() { "root" } else { user };
    let entries = || passwd.lines().filter_map(parse_passwd_line);
    if let Some(a) = entries().find(|a| a.name == user) {
        return Some(a);
    }
    if user == "root" && !entries().any(|a| a.uid == 0) {
        return Some(Account {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
            shell: DEFAULT_SHELL.into(),
        });
    }
    let uid: u32 = user.parse().ok()?;
    Some(entries().find(|a| a.uid == uid).unwrap_or_else(|| Account {
        name: user.to_string(),
        uid,
        gid: uid,
        home: "/".into(),
        shell: DEFAULT_SHELL.into(),
    }))
}

fn parse_passwd_line(line: &str) -> Option<Account> {
    // NIS compat lines (+, -) name no local user.
    if line.starts_with(['#', '+', '-']) {
        return None;
    }
    let f: Vec<&str> = line.split(':').collect();
    if f.len() < 7 || f[0].is_empty() {
        return None;
    }
    let shell = if f[6].is_empty() { DEFAULT_SHELL } else { f[6] };
    Some(Account {
        name: f[0].to_string(),
        uid: f[2].parse().ok()?,
        gid: f[3].parse().ok()?,
        home: f[5].to_string(),
        shell: shell.to_string(),
    })
}

/// The groups `account` belongs to by the text of an /etc/group: its primary group first,
/// then every group that lists its name as a member, each once.
pub fn groups_of(group: &str, account: &Account) -> Vec<u32> {
    let mut gids = vec![account.gid];
    for line in group.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || line.starts_with(['#', '+', '-']) {
            continue;
        }
        let Ok(gid) = f[2].parse::<u32>() else {
            continue;
        };
        if f[3].split(',').any(|m| m.trim() == account.name) && !gids.contains(&gid) {
            gids.push(gid);
        }
    }
    gids
}

/// The gid of group `name` in the text of an /etc/group.
pub fn group_id(group: &str, name: &str) -> Option<u32> {
    group.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 3 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/ash
# a comment
daemon:x:1:1:daemon:/usr/sbin:/sbin/nologin
www-data:x:33:33:www-data:/var/www:
broken:x:notanumber:1::/:/bin/sh
short:x:5
+nisuser::::::
";

    #[test]
    fn users_by_name_and_by_uid() {
        let root = find_user(PASSWD, "root").unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        assert_eq!(root.shell, "/bin/ash");
        assert_eq!(find_user(PASSWD, "").unwrap().name, "root");
        let www = find_user(PASSWD, "www-data").unwrap();
        assert_eq!((www.uid, www.gid), (33, 33));
        assert_eq!(www.shell, "/bin/sh", "an empty shell is the default one");
        assert_eq!(find_user(PASSWD, "33").unwrap().name, "www-data");
        let unnamed = find_user(PASSWD, "4242").unwrap();
        assert_eq!((unnamed.uid, unnamed.gid), (4242, 4242));
        assert_eq!(unnamed.home, "/");
    }

    #[test]
    fn missing_and_malformed_users_are_not_found() {
        for user in ["bob", "broken", "short", "nisuser", "+nisuser", "-1", "x:0"] {
            assert_eq!(find_user(PASSWD, user), None, "{user}");
        }
        assert_eq!(find_user("", "bob"), None);
        assert_eq!(find_user("", "root").unwrap().home, "/root");
    }

    #[test]
    fn supplementary_groups_come_from_the_member_lists() {
        let group = "\
root:x:0:
tty:x:5:
wheel:x:10:root,www-data
www-data:x:33:
adm:x:4:syslog, www-data
bad:x:nope:www-data
";
        let www = find_user(PASSWD, "www-data").unwrap();
        assert_eq!(groups_of(group, &www), [33, 10, 4]);
        let root = find_user(PASSWD, "root").unwrap();
        assert_eq!(groups_of(group, &root), [0, 10]);
        assert_eq!(group_id(group, "tty"), Some(5));
        assert_eq!(group_id(group, "nobody"), None);
    }
}
