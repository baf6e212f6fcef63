//! The debootstrap method: a Debian tree made by Debian's own debootstrap, with the
//! packages that let it boot its own systemd inside a machine.
//!
//! debootstrap runs in a mount and PID namespace of its own (`unshare --mount --pid
//! --fork --kill-child`), so the /proc and /sys it mounts in the target vanish with it,
//! and killing it (Cancel, or berthd dying: the parent-death signal) kills every process
//! it started. Its output goes to the journal line by line; the "I: Retrieving/Unpacking/
//! Configuring" lines drive the Progress.

use crate::error::{Error, IoContext, Result};
use crate::jobs::Progress;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use tracing::info;

/// What makes a tree boot as a machine: systemd as /sbin/init (systemd-sysv), the D-Bus
/// system bus its tools need, and `ip`/`ps` to look inside. Added to any --include.
pub const BOOT_PACKAGES: [&str; 4] = ["systemd-sysv", "dbus", "iproute2", "procps"];

const VARIANTS: [&str; 3] = ["minbase", "buildd", "default"];
const SCRIPTS: &str = "/usr/share/debootstrap/scripts";
const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub suite: String,
    pub mirror: String,
    pub variant: String,
    /// Packages beyond the variant's and [`BOOT_PACKAGES`].
    pub include: Vec<String>,
    pub arch: Option<String>,
}

impl Options {
    /// Fills what the caller left out from the host (its release and apt source) and
    /// checks everything before a Job starts.
    pub fn new(
        suite: Option<String>,
        mirror: Option<String>,
        variant: Option<String>,
        include: Vec<String>,
        arch: Option<String>,
    ) -> Result<Options> {
        let suite = match suite {
            Some(s) => s,
            None => host_codename(Path::new("/etc/os-release")).unwrap_or_else(|| "stable".into()),
        };
        word("Suite", &suite, "-.")?;
        if !Path::new(SCRIPTS).join(&suite).exists() {
            return Err(Error::InvalidArgument(format!(
                "debootstrap knows no suite {} (see {SCRIPTS}/ for the ones it does)",
                crate::names::shown(&suite)
            )));
        }
        let mirror = match mirror {
            Some(m) => m,
            None => host_mirror(Path::new("/etc/apt")).unwrap_or_else(|| FALLBACK_MIRROR.into()),
        };
        let scheme_ok = ["http://", "https://", "file:///"]
            .iter()
            .any(|s| mirror.starts_with(s));
        if !scheme_ok || mirror.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::InvalidArgument(format!(
                "Mirror {}: give an http://, https:// or file:/// URL of a Debian archive",
                crate::names::shown(&mirror)
            )));
        }
        let variant = variant.unwrap_or_else(|| "minbase".into());
        if !VARIANTS.contains(&variant.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "Variant {}: use one of {}",
                crate::names::shown(&variant),
                VARIANTS.join(", ")
            )));
        }
        for p in &include {
            word("Include", p, "+-.")?;
        }
        if let Some(a) = &arch {
            word("Architecture", a, "")?;
        }
        Ok(Options {
            suite,
            mirror,
            variant,
            include,
            arch,
        })
    }

    pub fn recorded(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::from([
            ("suite".to_string(), self.suite.clone()),
            ("mirror".to_string(), self.mirror.clone()),
            ("variant".to_string(), self.variant.clone()),
            ("include".to_string(), self.packages().join(",")),
        ]);
        if let Some(a) = &self.arch {
            m.insert("architecture".into(), a.clone());
        }
        m
    }

    fn packages(&self) -> Vec<String> {
        let mut all: Vec<String> = BOOT_PACKAGES.iter().map(|s| s.to_string()).collect();
        for p in &self.include {
            if !all.contains(p) {
                all.push(p.clone());
            }
        }
        all
    }

    fn argv(&self, target: &Path) -> Vec<String> {
        let mut argv = vec![
            "--mount".to_string(),
            "--pid".into(),
            "--fork".into(),
            "--kill-child".into(),
            "--propagation".into(),
            "private".into(),
            "--".into(),
            "debootstrap".into(),
        ];
        if self.variant != "default" {
            argv.push(format!("--variant={}", self.variant));
        }
        argv.push(format!("--include={}", self.packages().join(",")));
        if let Some(a) = &self.arch {
            argv.push(format!("--arch={a}"));
        }
        argv.push(self.suite.clone());
        argv.push(target.display().to_string());
        argv.push(self.mirror.clone());
        argv
    }
}

/// `value` must be a Debian word: lowercase letters, digits and `extra`, starting with
/// a letter or digit, at most 128 bytes; the error says which characters `what` takes.
fn word(what: &str, value: &str, extra: &str) -> Result<()> {
    if is_word(value, extra) {
        return Ok(());
    }
    let others = if extra.is_empty() {
        String::new()
    } else {
        format!(" and {extra:?}")
    };
    Err(Error::InvalidArgument(format!(
        "{what} {}: only lowercase letters, digits{others}, starting with a letter or digit",
        crate::names::shown(value)
    )))
}

fn is_word(s: &str, extra: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(c))
}

/// The host's release codename (VERSION_CODENAME in os-release).
pub fn host_codename(os_release: &Path) -> Option<String> {
    let text = std::fs::read_to_string(os_release).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// The first Debian archive among the host's apt sources (one-line and deb822 files),
/// skipping security archives, which hold updates only.
pub fn host_mirror(apt_dir: &Path) -> Option<String> {
    let mut files = vec![apt_dir.join("sources.list")];
    if let Ok(entries) = std::fs::read_dir(apt_dir.join("sources.list.d")) {
        let mut more: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let name = file.to_string_lossy();
        let found = if name.ends_with(".sources") {
            deb822_uri(&text)
        } else if name.ends_with(".list") {
            one_line_uri(&text)
        } else {
            None
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn usable(uri: &str) -> bool {
    (uri.starts_with("http://") || uri.starts_with("https://")) && !uri.contains("security")
}

fn one_line_uri(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        if words.next() != Some("deb") {
            return None;
        }
        // Options in brackets ("[arch=amd64 signed-by=...]") come before the URI.
        let mut uri = words.next()?;
        if uri.starts_with('[') {
            while !uri.ends_with(']') {
                uri = words.next()?;
            }
            uri = words.next()?;
        }
        usable(uri).then(|| uri.trim_end_matches('/').to_string())
    })
}

fn deb822_uri(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let enabled = field("Enabled").is_none_or(|v| v != "no");
        let is_deb = field("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        if !(enabled && is_deb) {
            continue;
        }
        if let Some(uri) =
            field("URIs").and_then(|u| u.split_whitespace().find(|u| usable(u)).map(str::to_string))
        {
            return Some(uri.trim_end_matches('/').to_string());
        }
    }
    None
}

/// Counts debootstrap's per-package lines into a Progress. Until the downloads are done
/// the number of packages is a guess by variant; then it is known.
struct Steps<'a> {
    progress: &'a Progress,
    retrieved: u64,
    known: bool,
}

impl Steps<'_> {
    fn line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("I: ") else {
            return;
        };
        let word = rest.split_whitespace().next().unwrap_or("");
        // Lines about files or phases ("Retrieving Packages", "Unpacking required
        // packages...") end with a period or name an index; package lines don't.
        let per_package =
            !rest.ends_with("...") && !rest.contains("Release") && !rest.contains("Packages");
        match word {
            "Retrieving" if per_package => {
                self.retrieved += 1;
                self.progress.add(1);
            }
            "Validating" if per_package => self.progress.add(1),
            "Extracting" | "Unpacking" | "Configuring" if per_package => {
                if !self.known {
                    // Retrieve + validate + extract (some) + unpack + configure.
                    self.progress.set_total(self.retrieved * 9 / 2 + 1);
                    self.known = true;
                }
                let total = self.progress.total();
                if self.progress.done() + 1 < total {
                    self.progress.add(1);
                }
            }
            _ => {}
        }
    }
}

fn guessed_total(opts: &Options) -> u64 {
    let base = match opts.variant.as_str() {
        "minbase" => 90,
        "buildd" => 110,
        _ => 140,
    };
    (base + 20 + 3 * opts.include.len() as u64) * 9 / 2
}

/// Runs debootstrap into `rootfs` (made here) and readies the tree for machines.
pub fn run(opts: &Options, rootfs: &Path, progress: &Progress) -> Result<()> {
    std::fs::create_dir(rootfs).at("cannot create", rootfs)?;
    progress.set_total(guessed_total(opts));
    let (mut reader, writer) =
        std::io::pipe().map_err(|e| Error::failed("cannot make a pipe", e))?;
    let writer2 = writer
        .try_clone()
        .map_err(|e| Error::failed("cannot make a pipe", e))?;
    let mut cmd = Command::new("unshare");
    cmd.args(opts.argv(rootfs))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2);
    // SAFETY: prctl is async-signal-safe; berthd dying must not leave debootstrap
    // writing into a staging directory the next berthd removes.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    info!(
        "debootstrap {} from {} into {}",
        opts.suite,
        opts.mirror,
        rootfs.display()
    );
    let mut child = cmd.spawn().map_err(|e| {
        Error::failed(
            "cannot run debootstrap (is the debootstrap package installed?)",
            e,
        )
    })?;
    drop(cmd);

    let mut steps = Steps {
        progress,
        retrieved: 0,
        known: false,
    };
    let mut pending = Vec::new();
    let mut last_lines: Vec<String> = Vec::new();
    let mut buf = [0u8; 8192];
    let mut cancelled = false;
    loop {
        if progress.is_cancelled() && !cancelled {
            cancelled = true;
            let _ = child.kill();
        }
        let mut fds = [nix::poll::PollFd::new(
            reader.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(250u16)) {
            Ok(0) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::failed("cannot read debootstrap's output", e)),
            Ok(_) => {}
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::failed("cannot read debootstrap's output", e)),
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            if line.is_empty() {
                continue;
            }
            info!("debootstrap: {line}");
            steps.line(&line);
            progress.log(line.clone());
            last_lines.push(line);
            if last_lines.len() > 20 {
                last_lines.remove(0);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| Error::failed("cannot wait for debootstrap", e))?;
    if cancelled {
        return Err(Error::Cancelled("debootstrap".into()));
    }
    if !status.success() {
        let said = last_lines
            .iter()
            .rev()
            .find(|l| l.starts_with("E: "))
            .or(last_lines.last())
            .map(|l| l.trim_start_matches("E: ").to_string())
            .unwrap_or_else(|| "no output".into());
        // unshare passes on how its child ended: 128+N when a signal killed it, and for
        // SIGKILL, which it cannot raise on itself, this line.
        if said.contains("sigprocmask unblock failed") {
            return Err(Error::Failed(format!(
                "debootstrap {} from {} failed (killed by signal 9)",
                opts.suite, opts.mirror
            )));
        }
        let how = match (status.code(), status.signal()) {
            (Some(c), _) if c > 128 => format!("killed by signal {}", c - 128),
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "unknown status".into(),
        };
        return Err(Error::Failed(format!(
            "debootstrap {} from {} failed ({how}): {said}",
            opts.suite, opts.mirror
        )));
    }
    ready_for_machines(rootfs)?;
    progress.set_done(progress.total());
    Ok(())
}

/// What a fresh Debian tree needs before it is a template: no machine identity of its
/// own (each machine gets one at create), and no downloaded packages kept.
fn ready_for_machines(rootfs: &Path) -> Result<()> {
    let id = rootfs.join("etc/machine-id");
    if id.exists() {
        std::fs::write(&id, b"").at("cannot empty", &id)?;
    }
    let debs = rootfs.join("var/cache/apt/archives");
    if let Ok(entries) = std::fs::read_dir(&debs) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "deb") {
                std::fs::remove_file(e.path()).at("cannot remove", e.path())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_read_from_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\n\
                      Types: deb-src\nURIs: http://src.example/debian\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian/\nSuites: bookworm\n";
        assert_eq!(
            deb822_uri(deb822).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let list = "# comment\ndeb-src http://x/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] https://mirror.example/debian bookworm main\n";
        assert_eq!(
            one_line_uri(list).as_deref(),
            Some("https://mirror.example/debian")
        );
        assert_eq!(one_line_uri("deb http://security.debian.org/ x main"), None);
    }

    #[test]
    fn options_are_checked_before_any_work() {
        let ok = Options::new(
            Some("bookworm".into()),
            Some("http://deb.debian.org/debian".into()),
            None,
            vec!["vim".into(), "systemd-sysv".into()],
            None,
        );
        if !Path::new(SCRIPTS).join("bookworm").exists() {
            return; // debootstrap not installed where the unit tests run
        }
        let ok = ok.unwrap();
        assert_eq!(ok.variant, "minbase");
        let argv = ok.argv(Path::new("/t"));
        assert!(argv.contains(&"--include=systemd-sysv,dbus,iproute2,procps,vim".to_string()));
        assert_eq!(
            &argv[argv.len() - 3..],
            ["bookworm", "/t", "http://deb.debian.org/debian"]
        );

        let e = |r: Result<Options>| r.unwrap_err().to_string();
        let m = Some("http://x/debian".to_string());
        assert!(
            e(Options::new(
                Some("narnia".into()),
                m.clone(),
                None,
                vec![],
                None
            ))
            .contains("no suite \"narnia\"")
        );
        assert!(
            e(Options::new(
                Some("../x".into()),
                m.clone(),
                None,
                vec![],
                None
            ))
            .contains("Suite")
        );
        assert!(
            e(Options::new(
                None,
                Some("ftp://x".into()),
                None,
                vec![],
                None
            ))
            .contains("Mirror")
        );
        assert!(
            e(Options::new(
                None,
                m.clone(),
                Some("huge".into()),
                vec![],
                None
            ))
            .contains("Variant")
        );
        assert!(
            e(Options::new(
                None,
                m.clone(),
                None,
                vec!["a;rm".into()],
                None
            ))
            .contains("Include")
        );
        assert!(
            e(Options::new(None, m, None, vec![], Some("x 86".into()))).contains("Architecture")
        );
    }

    #[test]
    fn steps_count_packages_and_never_finish_early() {
        let p = Progress::new();
        let mut s = Steps {
            progress: &p,
            retrieved: 0,
            known: false,
        };
        for l in [
            "I: Retrieving InRelease",
            "I: Retrieving Packages",
            "I: Validating Packages",
            "I: Retrieving libc6 2.36-9",
            "I: Validating libc6 2.36-9",
            "I: Retrieving bash 5.2",
            "I: Validating bash 5.2",
        ] {
            s.line(l);
        }
        assert_eq!(p.done(), 4);
        s.line("I: Extracting libc6...");
        s.line("I: Extracting libc6");
        assert_eq!(p.total(), 10);
        for _ in 0..20 {
            s.line("I: Configuring bash...");
            s.line("I: Configuring bash");
        }
        assert!(p.done() < p.total(), "only success completes it");
    }
}
