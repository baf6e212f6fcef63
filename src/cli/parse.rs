//! Turning command-line words into what the D-Bus calls take.

use std::collections::HashMap;

use zbus::zvariant::{Array, Value};

use super::args::{CreateArgs, LimitArgs, MachineArgs, NetworkArgs, NetworkCreateArgs, RunArgs};
use super::error::CliError;
use crate::net::PortForward;

/// One `KEY=VALUE` word, split at the first `=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl KeyValue {
    /// The `KEY=VALUE` form an environment block wants.
    pub fn joined(&self) -> String {
        format!("{}={}", self.key, self.value)
    }
}

pub fn parse_key_value(word: &str) -> Result<KeyValue, String> {
    match word.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok(KeyValue {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
        Some(_) => Err("the key before '=' is empty".into()),
        None => Err("expected KEY=VALUE".into()),
    }
}

/// `KEY=VALUE`, or a bare `KEY` whose value comes from berthctl's own environment (as
/// `docker run -e KEY` does), so a secret need not be on any command line.
pub fn parse_env(word: &str) -> Result<KeyValue, String> {
    let kv = if word.contains('=') {
        parse_key_value(word)?
    } else if word.is_empty() {
        return Err("expected KEY=VALUE or the name of a variable to pass on".into());
    } else {
        let value = std::env::var(word).map_err(|_| {
            format!("{word} is not set in berthctl's environment (give KEY=VALUE, or set it)")
        })?;
        KeyValue {
            key: word.to_owned(),
            value,
        }
    };
    // A NUL could not survive the trip into the machine's environ.
    if kv.value.contains('\0') || kv.key.contains('\0') {
        return Err("environment entries cannot contain NUL".into());
    }
    Ok(kv)
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// A signal's name as `kill -l` gives it with SIG in front (SIGTERM, SIGRTMIN+3), or its
/// number when it has none.
pub fn signal_name(n: i32) -> String {
    if let Some((name, _)) = SIGNALS.iter().find(|(_, known)| *known == n) {
        return format!("SIG{name}");
    }
    let (rtmin, rtmax) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    match n {
        n if n == rtmin => "SIGRTMIN".into(),
        n if (rtmin..=rtmax).contains(&n) => format!("SIGRTMIN+{}", n - rtmin),
        n => n.to_string(),
    }
}

/// Parses a signal as `kill(1)` and `systemctl kill` spell it: TERM, SIGTERM, sigterm,
/// RTMIN+3, SIGRTMAX-1 or a plain number.
pub fn parse_signal(word: &str) -> Result<i32, String> {
    let rtmin = libc::SIGRTMIN();
    let rtmax = libc::SIGRTMAX();
    let bad = || format!("'{word}' is not a signal name (TERM, SIGKILL, RTMIN+3) or number");

    if let Ok(n) = word.parse::<i32>() {
        return if (1..=rtmax).contains(&n) {
            Ok(n)
        } else {
            Err(format!("signal number {n} is out of range 1-{rtmax}"))
        };
    }

    let upper = word.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = SIGNALS.iter().find(|(known, _)| *known == name) {
        return Ok(n);
    }

    let (base, rest, sign) = if let Some(rest) = name.strip_prefix("RTMIN") {
        (rtmin, rest, 1)
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        (rtmax, rest, -1)
    } else {
        return Err(bad());
    };
    let offset = match rest {
        "" => 0,
        _ => {
            let digits = if sign > 0 {
                rest.strip_prefix('+')
            } else {
                rest.strip_prefix('-')
            };
            digits
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<i32>().ok())
                .ok_or_else(bad)?
        }
    };
    let n = base + sign * offset;
    if (rtmin..=rtmax).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "'{word}' is outside the real-time signals ({} of them)",
            rtmax - rtmin + 1
        ))
    }
}

/// A `--bind` word: SOURCE or SOURCE:TARGET (TARGET the same path as SOURCE when left
/// out, as systemd-nspawn's --bind takes it). berthd checks the paths themselves.
pub fn parse_bind(word: &str) -> Result<(String, String), String> {
    let (source, target) = word.split_once(':').unwrap_or((word, word));
    if source.is_empty() || target.is_empty() {
        return Err(format!("'{word}' is not SOURCE[:TARGET]"));
    }
    Ok((source.to_string(), target.to_string()))
}

/// A `--port` word, parsed as berthd will (so "0" or "70000" fails here, before any call).
/// clap already quotes the word, so berthd's "port forward WORD: " prefix is dropped.
pub fn parse_port(word: &str) -> Result<PortForward, String> {
    word.parse::<PortForward>().map_err(|e| {
        let text = e.to_string();
        match text.strip_prefix("port forward ") {
            Some(rest) => rest
                .split_once(": ")
                .map_or(text.clone(), |(_, why)| why.to_owned()),
            None => text,
        }
    })
}

/// The network keys of CreateMachine and SetNetwork (Network, Bridge, Address,
/// PortForwards `a(sqq)`), only those given: SetNetwork keeps what is left out.
pub fn network_dict(args: &NetworkArgs) -> HashMap<&'static str, Value<'_>> {
    let mut options = HashMap::new();
    if let Some(mode) = &args.network {
        options.insert("Network", Value::from(mode.as_str()));
    }
    if let Some(bridge) = &args.bridge {
        options.insert("Bridge", Value::from(bridge.as_str()));
    }
    if let Some(address) = &args.address {
        options.insert("Address", Value::from(address.as_str()));
    }
    if !args.ports.is_empty() {
        let ports: Vec<(&str, u16, u16)> = args
            .ports
            .iter()
            .map(|p| (p.proto.as_str(), p.host_port, p.machine_port))
            .collect();
        options.insert("PortForwards", Value::from(ports));
    }
    options
}

/// The `a{sv}` for CreateNetwork: Subnet, Nat and Dhcp, only those given, so berthd's
/// defaults stay its own.
pub fn network_create_options(args: &NetworkCreateArgs) -> HashMap<&'static str, Value<'_>> {
    let mut options = HashMap::new();
    if let Some(subnet) = &args.subnet {
        options.insert("Subnet", Value::from(subnet.as_str()));
    }
    if args.no_nat {
        options.insert("Nat", Value::Bool(false));
    }
    if let Some(dhcp) = args.dhcp() {
        options.insert("Dhcp", Value::Bool(dhcp));
    }
    options
}

/// Pairs each given limit flag with its D-Bus key, in flag order then `--limit` order.
///
/// A key given twice is refused rather than silently letting one win, since
/// `--memory 1G --limit MemoryMax=2G` is almost certainly a mistake.
pub fn limit_pairs(limits: &LimitArgs) -> Result<Vec<(&str, &str)>, CliError> {
    let mut pairs: Vec<(&str, &str)> = limits
        .flags
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    for kv in &limits.limit {
        if pairs.iter().any(|(key, _)| *key == kv.key) {
            return Err(CliError::Usage(format!("limit {} is given twice", kv.key)));
        }
        pairs.push((kv.key.as_str(), kv.value.as_str()));
    }
    Ok(pairs)
}

/// The `a{sv}` for SetLimits: every value a string, exactly as typed.
pub fn limits_dict(limits: &LimitArgs) -> Result<HashMap<&str, Value<'_>>, CliError> {
    Ok(limit_pairs(limits)?
        .into_iter()
        .map(|(key, value)| (key, Value::from(value)))
        .collect())
}

/// The `a{sv}` for CreateMachine: Hostname, Command, Environment, security, network and
/// the limits.
pub fn create_options(args: &CreateArgs) -> Result<HashMap<&str, Value<'_>>, CliError> {
    let mut options = HashMap::new();
    if !args.command.is_empty() {
        options.insert(
            "Command",
            string_array(args.command.iter().map(String::as_str)),
        );
    }
    if args.autostart {
        options.insert("Autostart", Value::Bool(true));
    }
    if args.ephemeral {
        options.insert("Ephemeral", Value::Bool(true));
    }
    if args.init || args.no_init {
        options.insert("Init", Value::Bool(args.init));
    }
    machine_options(&args.settings, options)
}

/// RunMachine's options: create's, from the same flags. With `-t`, the command learns
/// what terminal is at the other end of its pty from berthctl's own TERM (as with
/// `docker run -t`) unless `--env` says.
pub fn run_options(args: &RunArgs) -> Result<HashMap<&str, Value<'_>>, CliError> {
    let mut options = machine_options(&args.settings, HashMap::new())?;
    let env = &args.settings.env;
    if args.tty
        && !env.iter().any(|kv| kv.key == "TERM")
        && let Ok(term) = std::env::var("TERM")
    {
        let mut env: Vec<String> = env.iter().map(KeyValue::joined).collect();
        env.push(format!("TERM={term}"));
        options.insert("Environment", Value::from(env));
    }
    Ok(options)
}

/// `options` with the CreateMachine options `args` give.
fn machine_options<'a>(
    args: &'a MachineArgs,
    mut options: HashMap<&'a str, Value<'a>>,
) -> Result<HashMap<&'a str, Value<'a>>, CliError> {
    if let Some(hostname) = &args.hostname {
        options.insert("Hostname", Value::from(hostname.as_str()));
    }
    if !args.env.is_empty() {
        let env: Vec<String> = args.env.iter().map(KeyValue::joined).collect();
        options.insert("Environment", Value::from(env));
    }
    let binds: Vec<(&str, &str, bool)> = args
        .bind
        .iter()
        .map(|b| (b, false))
        .chain(args.bind_ro.iter().map(|b| (b, true)))
        .map(|((source, target), ro)| (source.as_str(), target.as_str(), ro))
        .collect();
    if !binds.is_empty() {
        options.insert("Binds", Value::from(binds));
    }
    if let Some(size) = &args.tmp_size {
        options.insert("TmpSize", Value::from(size.as_str()));
    }
    if let Some(size) = &args.disk_quota {
        options.insert("DiskQuota", Value::from(size.as_str()));
    }
    if let Some(signal) = args.halt_signal {
        options.insert("HaltSignal", Value::I32(signal));
    }
    if let Some(timeout) = args.stop_timeout {
        let usec = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
        options.insert("StopTimeoutUSec", Value::U64(usec));
    }
    let security = &args.security;
    if let Some(users) = &security.private_users {
        options.insert("PrivateUsers", Value::from(users.as_str()));
    }
    for (key, list) in [
        ("Capabilities", &security.capabilities),
        ("DropCapabilities", &security.drop_capabilities),
        ("SystemCallFilter", &security.system_call_filter),
    ] {
        if !list.is_empty() {
            options.insert(key, string_array(list.iter().map(String::as_str)));
        }
    }
    options.extend(network_dict(&args.network));
    for (key, value) in limit_pairs(&args.limits)? {
        if options.contains_key(key) {
            return Err(CliError::Usage(format!(
                "--limit {key}=... clashes with another option"
            )));
        }
        options.insert(key, Value::from(value));
    }
    Ok(options)
}

fn string_array<'a>(items: impl Iterator<Item = &'a str>) -> Value<'a> {
    Value::Array(Array::from(items.collect::<Vec<_>>()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command, NetworkCommand};
    use clap::Parser;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn key_value_splits_at_first_equals() {
        assert_eq!(parse_key_value("A=b=c"), Ok(kv("A", "b=c")));
        assert_eq!(parse_key_value("MemoryMax="), Ok(kv("MemoryMax", "")));
        assert!(parse_key_value("=x").is_err());
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_env("PATH=/bin").is_ok());
        // A bare name passes on berthctl's own value; HOME is set wherever tests run.
        let home = parse_env("HOME").unwrap();
        assert_eq!(home.value, std::env::var("HOME").unwrap());
        assert!(
            parse_env("BERTH_SURELY_UNSET_VARIABLE")
                .unwrap_err()
                .contains("not set")
        );
        assert_eq!(kv("X", "1").joined(), "X=1");
    }

    #[test]
    fn signal_names_go_back_into_parse_signal() {
        for n in [
            libc::SIGTERM,
            libc::SIGUSR2,
            libc::SIGRTMIN() + 3,
            libc::SIGRTMIN(),
        ] {
            assert_eq!(parse_signal(&signal_name(n)), Ok(n));
        }
        assert_eq!(signal_name(libc::SIGTERM), "SIGTERM");
        assert_eq!(signal_name(libc::SIGRTMIN() + 3), "SIGRTMIN+3");
    }

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(parse_signal("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("SIGKILL"), Ok(libc::SIGKILL));
        assert_eq!(parse_signal("sighup"), Ok(libc::SIGHUP));
        assert_eq!(parse_signal("usr1"), Ok(libc::SIGUSR1));
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("RTMIN"), Ok(libc::SIGRTMIN()));
        assert_eq!(parse_signal("RTMIN+3"), Ok(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("SIGRTMIN+3"), Ok(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("RTMAX-1"), Ok(libc::SIGRTMAX() - 1));
        assert_eq!(parse_signal("RTMAX"), Ok(libc::SIGRTMAX()));
    }

    #[test]
    fn bad_signals() {
        for word in [
            "",
            "0",
            "-1",
            "65",
            "TERMINATE",
            "RTMIN-1",
            "RTMAX+1",
            "RTMIN+",
            "RTMIN+x",
            "RTMIN+99",
            "SIG",
        ] {
            assert!(parse_signal(word).is_err(), "{word:?} should be refused");
        }
    }

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("berthctl").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    #[test]
    fn create_options_carry_strings_as_typed() {
        let Command::Create(args) = parse(&[
            "create",
            "web",
            "--template",
            "debian",
            "--hostname",
            "www",
            "--memory",
            "64M",
            "--cpu-shares",
            "256",
            "--cpu-quota",
            "25%",
            "--cpus",
            "0-1",
            "--tasks-max",
            "32",
            "--cpu-weight",
            "100",
            "--io-weight",
            "200",
            "--blkio-weight",
            "300",
            "--limit",
            "MemoryLimit=1G",
            "--env",
            "A=1",
            "-e",
            "B=x=y",
            "--",
            "/bin/sh",
            "-c",
            "sleep 1",
        ]) else {
            panic!("not create")
        };
        assert_eq!(args.name, "web");
        assert_eq!(args.template, "debian");
        let options = create_options(&args).unwrap();
        let expect_str = |key: &str, value: &str| {
            assert_eq!(options.get(key), Some(&Value::from(value)), "{key}");
        };
        expect_str("Hostname", "www");
        expect_str("MemoryMax", "64M");
        expect_str("CPUShares", "256");
        expect_str("CPUQuota", "25%");
        expect_str("AllowedCPUs", "0-1");
        expect_str("TasksMax", "32");
        expect_str("CPUWeight", "100");
        expect_str("IOWeight", "200");
        expect_str("BlockIOWeight", "300");
        expect_str("MemoryLimit", "1G");
        assert_eq!(
            options.get("Command"),
            Some(&Value::from(vec!["/bin/sh", "-c", "sleep 1"]))
        );
        assert_eq!(
            options.get("Environment"),
            Some(&Value::from(vec!["A=1", "B=x=y"]))
        );
        assert_eq!(options.len(), 12);
        assert_eq!(
            options["Command"].value_signature().to_string(),
            "as",
            "Command must be an array of strings"
        );
    }

    #[test]
    fn security_flags_become_string_arrays() {
        let Command::Create(args) = parse(&[
            "create",
            "web",
            "-t",
            "busybox",
            "--capability",
            "CAP_SYS_TIME,CAP_SYSLOG",
            "--drop-capability",
            "CAP_MKNOD",
            "--system-call-filter",
            "~ptrace",
            "--system-call-filter",
            "bpf",
        ]) else {
            panic!("not create")
        };
        let options = create_options(&args).unwrap();
        assert_eq!(
            options["Capabilities"],
            Value::from(vec!["CAP_SYS_TIME", "CAP_SYSLOG"])
        );
        assert_eq!(options["DropCapabilities"], Value::from(vec!["CAP_MKNOD"]));
        assert_eq!(
            options["SystemCallFilter"],
            Value::from(vec!["~ptrace", "bpf"])
        );
    }

    #[test]
    fn binds_tmp_size_halt_signal_and_stop_timeout_are_sent() {
        let Command::Create(args) = parse(&[
            "create",
            "db",
            "-t",
            "deb",
            "--bind",
            "/srv/db:/var/lib/db",
            "--bind-ro",
            "/etc/ssl",
            "--tmp-size",
            "32M",
            "--halt-signal",
            "SIGTERM",
            "--stop-timeout",
            "30s",
        ]) else {
            panic!("not create")
        };
        let options = create_options(&args).unwrap();
        assert_eq!(
            options["Binds"],
            Value::from(vec![
                ("/srv/db", "/var/lib/db", false),
                ("/etc/ssl", "/etc/ssl", true)
            ])
        );
        assert_eq!(options["TmpSize"], Value::from("32M"));
        assert_eq!(options["HaltSignal"], Value::I32(libc::SIGTERM));
        assert_eq!(options["StopTimeoutUSec"], Value::U64(30_000_000));
        assert!(parse_bind(":/x").is_err());
        assert!(parse_bind("/x:").is_err());
    }

    #[test]
    fn init_flags_are_sent_only_when_given_and_the_last_wins() {
        let init = |extra: &[&str]| {
            let mut argv = vec!["create", "web", "-t", "busybox"];
            argv.extend(extra);
            let Command::Create(args) = parse(&argv) else {
                panic!("not create")
            };
            create_options(&args)
                .unwrap()
                .get("Init")
                .map(|v| v == &Value::Bool(true))
        };
        assert_eq!(init(&[]), None);
        assert_eq!(init(&["--init"]), Some(true));
        assert_eq!(init(&["--no-init"]), Some(false));
        assert_eq!(init(&["--init", "--no-init"]), Some(false));
        assert_eq!(init(&["--no-init", "--init"]), Some(true));
    }

    #[test]
    fn create_options_omit_what_was_not_given() {
        let Command::Create(args) = parse(&["create", "web", "-t", "busybox"]) else {
            panic!("not create")
        };
        assert!(create_options(&args).unwrap().is_empty());
    }

    #[test]
    fn duplicate_limits_are_refused() {
        let Command::Set(args) =
            parse(&["set", "web", "--memory", "1G", "--limit", "MemoryMax=2G"])
        else {
            panic!("not set")
        };
        let err = limits_dict(&args.limits).unwrap_err();
        assert_eq!(err.exit_code(), 2);

        let Command::Create(args) = parse(&[
            "create",
            "web",
            "-t",
            "debian",
            "--hostname",
            "a",
            "--limit",
            "Hostname=b",
        ]) else {
            panic!("not create")
        };
        assert!(create_options(&args).is_err());
    }

    #[test]
    fn set_limits_dict() {
        let Command::Set(args) = parse(&["set", "web", "--tasks-max", "infinity", "--cpus", "2"])
        else {
            panic!("not set")
        };
        let dict = limits_dict(&args.limits).unwrap();
        assert_eq!(dict.len(), 2);
        assert_eq!(dict["TasksMax"], Value::from("infinity"));
        assert_eq!(dict["AllowedCPUs"], Value::from("2"));
    }

    #[test]
    fn limit_values_may_look_like_flags() {
        let Command::Set(args) = parse(&["set", "web", "--memory", "-5", "--limit", "-x=1"]) else {
            panic!("not set")
        };
        assert_eq!(args.limits.flag("MemoryMax"), Some("-5"));
        assert_eq!(args.limits.limit, [kv("-x", "1")]);
    }

    #[test]
    fn set_needs_a_limit() {
        let err = Cli::try_parse_from(["berthctl", "set", "web"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn exec_takes_the_command_verbatim() {
        for words in [
            &["exec", "web", "--", "ls", "-l", "--all"][..],
            &["exec", "web", "ls", "-l", "--all"][..],
        ] {
            let Command::Exec(args) = parse(words) else {
                panic!("not exec")
            };
            assert_eq!(args.command, ["ls", "-l", "--all"]);
        }
        let Command::Exec(args) = parse(&["exec", "-e", "A=1", "web", "--", "env"]) else {
            panic!("not exec")
        };
        assert_eq!(args.env, [kv("A", "1")]);
        assert!(Cli::try_parse_from(["berthctl", "exec", "web"]).is_err());
    }

    #[test]
    fn run_takes_creates_flags_and_the_command_verbatim() {
        let Command::Run(args) = parse(&[
            "run",
            "--rm",
            "--template",
            "busybox",
            "--memory",
            "64M",
            "-e",
            "A=1",
            "--network",
            "host",
            "--bind-ro",
            "/etc:/x",
            "--",
            "sh",
            "-c",
            "exit 3",
        ]) else {
            panic!("not run")
        };
        assert!(args.rm);
        assert_eq!(args.name, None);
        assert_eq!(args.template, "busybox");
        assert_eq!(args.command, ["sh", "-c", "exit 3"]);
        let options = run_options(&args).unwrap();
        assert_eq!(options["MemoryMax"], Value::from("64M"));
        assert_eq!(options["Environment"], Value::from(vec!["A=1".to_string()]));
        assert_eq!(options["Network"], Value::from("host"));
        assert_eq!(options["Binds"], Value::from(vec![("/etc", "/x", true)]));
        // berthd sets these itself for a run.
        for key in ["Command", "Ephemeral", "Init", "Autostart"] {
            assert!(!options.contains_key(key), "{key}");
        }

        let Command::Run(args) = parse(&["run", "--name", "x", "--template", "b", "ls", "-l"])
        else {
            panic!("not run")
        };
        assert!(!args.rm && !args.tty);
        assert_eq!(args.name.as_deref(), Some("x"));
        assert_eq!(args.command, ["ls", "-l"]);
        assert!(run_options(&args).unwrap().is_empty());

        // -t passes berthctl's TERM on, unless --env names one.
        let Command::Run(args) = parse(&["run", "-t", "--template", "b", "-e", "TERM=dumb", "vi"])
        else {
            panic!("not run")
        };
        assert!(args.tty);
        assert_eq!(
            run_options(&args).unwrap()["Environment"],
            Value::from(vec!["TERM=dumb".to_string()])
        );

        // A command is needed; create's own flags are not run's.
        assert!(Cli::try_parse_from(["berthctl", "run", "--rm", "--template", "b"]).is_err());
        for flag in [
            "--autostart",
            "--ephemeral",
            "--init",
            "--no-init",
            "--json",
        ] {
            let words = [
                "berthctl",
                "run",
                "--rm",
                "--template",
                "b",
                flag,
                "--",
                "true",
            ];
            assert!(Cli::try_parse_from(words).is_err(), "{flag}");
        }
    }

    #[test]
    fn kill_defaults() {
        let Command::Kill(args) = parse(&["kill", "web"]) else {
            panic!("not kill")
        };
        assert_eq!(args.signal, libc::SIGTERM);
        assert_eq!(args.whom.as_str(), "all");
        let Command::Kill(args) = parse(&["kill", "web", "-s", "KILL", "--whom", "leader"]) else {
            panic!("not kill")
        };
        assert_eq!(args.signal, libc::SIGKILL);
        assert_eq!(args.whom.as_str(), "leader");
    }

    #[test]
    fn json_goes_before_or_after_the_verb() {
        let cli = Cli::try_parse_from(["berthctl", "list", "--json"]).unwrap();
        assert!(cli.command.json());
        let cli = Cli::try_parse_from(["berthctl", "status", "web", "--json"]).unwrap();
        assert!(cli.command.json());
        let cli = Cli::try_parse_from(["berthctl", "--json", "status", "web"]).unwrap();
        assert!(cli.json && !cli.command.json());
        assert!(Cli::try_parse_from(["berthctl", "start", "web", "--json"]).is_err());
    }

    /// Every limit with a flag is a clap argument of `create` and `set` as its table
    /// entry says, counts for `set`'s "at least one limit", and reaches the a{sv} under
    /// its D-Bus key; every limit also goes through `--limit`.
    #[test]
    fn every_table_flag_is_an_argument() {
        use clap::CommandFactory;
        let cli = Cli::command();
        for verb in ["create", "set"] {
            let sub = cli.find_subcommand(verb).unwrap();
            let any_limit: Vec<String> = sub
                .get_groups()
                .find(|g| g.get_id() == "any_change")
                .map(|g| g.get_args().map(|id| id.to_string()).collect())
                .unwrap_or_default();
            for limit in crate::limits::TABLE {
                let context = format!("{verb} {}", limit.key);
                let Some(flag) = &limit.flag else {
                    assert!(
                        sub.get_arguments().all(|a| a.get_id() != limit.key),
                        "{context}"
                    );
                    continue;
                };
                let arg = sub
                    .get_arguments()
                    .find(|a| a.get_long() == Some(flag.long))
                    .unwrap_or_else(|| panic!("{context}: no --{}", flag.long));
                assert_eq!(arg.get_id(), limit.key, "{context}");
                assert_eq!(
                    arg.get_value_names().unwrap_or_default(),
                    [flag.value_name],
                    "{context}"
                );
                let help = arg.get_help().unwrap().to_string();
                assert!(help.starts_with(flag.help), "{context}: {help}");
                assert!(help.contains(&format!("[{}]", limit.key)), "{context}");
                assert!(arg.is_allow_hyphen_values_set(), "{context}");
                assert_eq!(arg.get_help_heading(), Some("Resource limits"), "{context}");
                if verb == "set" {
                    assert!(any_limit.contains(&limit.key.to_owned()), "{context}");
                }

                let long = format!("--{}", flag.long);
                let words = match verb {
                    "create" => vec![verb, "web", "-t", "busybox", &long, "-7"],
                    _ => vec![verb, "web", &long, "-7"],
                };
                let limits = match parse(&words) {
                    Command::Create(args) => args.settings.limits,
                    Command::Set(args) => args.limits,
                    _ => panic!("{context}"),
                };
                assert_eq!(limits.flag(limit.key), Some("-7"), "{context}");
                let dict = limits_dict(&limits).unwrap();
                assert_eq!(dict.len(), 1, "{context}");
                assert_eq!(dict[limit.key], Value::from("-7"), "{context}");
            }
            if verb == "set" {
                assert!(any_limit.contains(&"limit".to_owned()));
            }
        }
        for limit in crate::limits::TABLE {
            let word = format!("{}=1", limit.key);
            let Command::Set(args) = parse(&["set", "web", "--limit", &word]) else {
                panic!("not set")
            };
            assert_eq!(
                limits_dict(&args.limits).unwrap()[limit.key],
                Value::from("1")
            );
        }
    }

    #[test]
    fn limit_flags_read_with_their_values() {
        let Command::Set(args) = parse(&["set", "web", "--cpus", "1", "--memory", "1G"]) else {
            panic!("not set")
        };
        assert_eq!(
            args.limits.flags,
            [
                ("MemoryMax", "1G".to_owned()),
                ("AllowedCPUs", "1".to_owned())
            ]
        );
        assert!(args.limits.limit.is_empty());
        // Spaces folded: the column width follows the longest flag.
        let help = Cli::try_parse_from(["berthctl", "set", "--help"])
            .unwrap_err()
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            help.contains(
                "Resource limits: --memory <SIZE> Memory ceiling [MemoryMax], e.g. 512M, 2G "
            ),
            "{help}"
        );
        assert!(
            help.contains("--blkio-weight <N> Block IO weight, cgroup v1 [BlockIOWeight] "),
            "{help}"
        );
    }

    fn port(proto: &str, host: u16, machine: u16) -> Value<'static> {
        Value::from(vec![(proto.to_owned(), host, machine)])
    }

    #[test]
    fn port_flags_become_port_forwards() {
        let Command::Create(args) = parse(&[
            "create",
            "web",
            "--template",
            "deb",
            "--network",
            "bridge",
            "--bridge",
            "lab",
            "--address",
            "10.77.0.50/24",
            "--port",
            "tcp:8080:80",
            "--port",
            "udp:5353:53",
            "--port",
            "2222:22",
            "--port",
            "443",
        ]) else {
            panic!("not create")
        };
        let options = create_options(&args).unwrap();
        assert_eq!(options["Network"], Value::from("bridge"));
        assert_eq!(options["Bridge"], Value::from("lab"));
        assert_eq!(options["Address"], Value::from("10.77.0.50/24"));
        let ports = &options["PortForwards"];
        assert_eq!(ports.value_signature().to_string(), "a(sqq)");
        assert_eq!(
            *ports,
            Value::from(vec![
                ("tcp".to_owned(), 8080u16, 80u16),
                ("udp".to_owned(), 5353, 53),
                ("tcp".to_owned(), 2222, 22),
                ("tcp".to_owned(), 443, 443),
            ])
        );
        assert_eq!(options.len(), 4);
    }

    #[test]
    fn network_flags_pass_only_what_is_given() {
        let Command::Create(args) = parse(&["create", "tool", "-t", "deb", "--network", "host"])
        else {
            panic!("not create")
        };
        let options = create_options(&args).unwrap();
        assert_eq!(options.len(), 1);
        assert_eq!(options["Network"], Value::from("host"));
        // --port alone: berthd takes it to mean bridge mode on berth0.
        let Command::Create(args) = parse(&["create", "web", "-t", "deb", "--port", "80"]) else {
            panic!("not create")
        };
        let options = create_options(&args).unwrap();
        assert_eq!(options.len(), 1);
        assert_eq!(options["PortForwards"], port("tcp", 80, 80));
        assert!(
            Cli::try_parse_from(["berthctl", "create", "w", "-t", "d", "--network", "nat"])
                .is_err()
        );
    }

    #[test]
    fn bad_ports_fail_in_one_line() {
        for (word, why) in [
            ("0", "host port 0 is not between 1 and 65535"),
            ("tcp:70000:80", "host port 70000 is not between 1 and 65535"),
            ("8080:0", "machine port 0 is not between 1 and 65535"),
            ("sctp:1:2", "expected tcp or udp"),
            ("http", "is not a port number"),
            ("1:2:3:4", "expected PROTO:HOSTPORT:MACHINEPORT"),
        ] {
            let err = parse_port(word).unwrap_err();
            assert!(err.contains(why), "{word}: {err}");
            assert!(!err.contains('\n'), "{word}: {err}");
            let err = Cli::try_parse_from(["berthctl", "create", "w", "-t", "d", "--port", word])
                .unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{word}"
            );
            let first = err.to_string().lines().next().unwrap().to_owned();
            assert!(first.contains(why) && first.contains("--port"), "{first}");
        }
        // Valid on `set` too, and refused there the same way.
        assert!(Cli::try_parse_from(["berthctl", "set", "w", "--port", "70000"]).is_err());
    }

    #[test]
    fn set_takes_network_flags_limits_or_both() {
        let Command::Set(args) = parse(&[
            "set",
            "web",
            "--network",
            "bridge",
            "--bridge",
            "lab",
            "--port",
            "udp:5353:53",
        ]) else {
            panic!("not set")
        };
        assert!(args.network.given() && !args.has_limits());
        let dict = network_dict(&args.network);
        assert_eq!(dict.len(), 3);
        assert_eq!(dict["Bridge"], Value::from("lab"));
        assert_eq!(dict["PortForwards"], port("udp", 5353, 53));

        let Command::Set(args) =
            parse(&["set", "web", "--address", "10.0.3.9/24", "--memory", "1G"])
        else {
            panic!("not set")
        };
        assert!(args.network.given() && args.has_limits());
        assert_eq!(
            network_dict(&args.network)["Address"],
            Value::from("10.0.3.9/24")
        );
        assert_eq!(
            limits_dict(&args.limits).unwrap()["MemoryMax"],
            Value::from("1G")
        );

        let Command::Set(args) = parse(&["set", "web", "--memory", "1G"]) else {
            panic!("not set")
        };
        assert!(!args.network.given() && args.has_limits());
    }

    #[test]
    fn network_subcommands() {
        let cli = Cli::try_parse_from(["berthctl", "network", "list", "--json"]).unwrap();
        assert!(cli.command.json());
        assert!(matches!(
            cli.command,
            Command::Network(NetworkCommand::List(_))
        ));

        let Command::Network(NetworkCommand::Create(args)) =
            parse(&["network", "create", "lab", "--subnet", "10.77.0.0/24"])
        else {
            panic!("not network create")
        };
        assert_eq!(args.name, "lab");
        let options = network_create_options(&args);
        assert_eq!(options.len(), 1, "defaults are berthd's");
        assert_eq!(options["Subnet"], Value::from("10.77.0.0/24"));

        let Command::Network(NetworkCommand::Create(args)) = parse(&[
            "network",
            "create",
            "lab",
            "--no-nat",
            "--dhcp",
            "--no-dhcp",
        ]) else {
            panic!("not network create")
        };
        let options = network_create_options(&args);
        assert_eq!(options["Nat"], Value::Bool(false));
        assert_eq!(options["Dhcp"], Value::Bool(false), "the last one counts");
        let Command::Network(NetworkCommand::Create(args)) =
            parse(&["network", "create", "lab", "--no-dhcp", "--dhcp"])
        else {
            panic!("not network create")
        };
        assert_eq!(network_create_options(&args)["Dhcp"], Value::Bool(true));
        assert!(!network_create_options(&args).contains_key("Nat"));

        let Command::Network(NetworkCommand::Remove(args)) = parse(&["network", "remove", "lab"])
        else {
            panic!("not network remove")
        };
        assert_eq!(args.name, "lab");
        assert!(Cli::try_parse_from(["berthctl", "network", "remove"]).is_err());
        assert!(Cli::try_parse_from(["berthctl", "network", "create", "lab", "--nat"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
