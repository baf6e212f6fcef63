use clap::{
    Arg, ArgAction, ArgGroup, ArgMatches, Args, FromArgMatches, Parser, Subcommand, value_parser,
};

use crate::api::KillWho;
use crate::limits::{self, Flag, Limit};
use crate::net::PortForward;

use super::parse::{KeyValue, parse_bind, parse_env, parse_key_value, parse_port, parse_signal};

#[derive(Debug, Parser)]
#[command(
    name = "berthctl",
    version,
    about = "Manage berth machines (system containers) through berthd",
    after_help = "berthctl talks to berthd (org.berth.Berth1) on the system bus. Each running \
        machine is a transient systemd scope, machine-NAME.scope."
)]
pub struct Cli {
    /// Print JSON instead of text (list, status, create)
    #[arg(long)]
    pub json: bool,

    /// Talk to berthd on this D-Bus address instead of the system bus (also
    /// $BERTH_BUS_ADDRESS); meant for tests
    #[arg(long, global = true, hide = true, value_name = "ADDR")]
    pub bus_address: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a machine from a template (it is left stopped); unprivileged, in a user
    /// namespace of its own, unless --private-users no
    #[command(after_help = "Examples:\n  \
        berthctl create web --template busybox --memory 512M --cpu-shares 256\n  \
        berthctl create box -t busybox --hostname box -- /bin/sh -c 'exec sleep infinity'\n  \
        berthctl create old -t busybox --private-users no\n  \
        berthctl create www -t deb --network bridge --bridge lab --port tcp:8080:80\n  \
        berthctl create tool -t deb --network host\n  \
        berthctl create db -t deb --bind /srv/db:/var/lib/db --bind-ro /etc/ssl --tmp-size 32M\n  \
        berthctl create job -t busybox --halt-signal TERM --stop-timeout 30s -- /bin/sh /job.sh\n\n\
        A bind's source must exist on the host; its target is made inside when missing (a \
        directory, or an empty file for a file) and may not lead out of the machine's root \
        through a symbolic link. In an unprivileged machine the host's owners of a bound \
        tree show as nobody: make it writable for the machine's IDs to write there.")]
    Create(Box<CreateArgs>),
    /// Start a machine
    Start(NameArg),
    /// Stop a machine
    Stop(NameArg),
    /// Stop a machine and start it again
    Restart(NameArg),
    /// Freeze all processes of a running machine (needs the unified cgroup hierarchy)
    Freeze(NameArg),
    /// Thaw a frozen machine
    Thaw(NameArg),
    /// Start a machine whenever the host boots (berthd.service must be enabled)
    Enable(NameArg),
    /// Stop starting a machine at boot
    Disable(NameArg),
    /// Send a signal to a machine's processes
    Kill(KillArgs),
    /// Remove a stopped machine and its root filesystem
    Remove(RemoveArgs),
    /// List machines
    List(JsonArg),
    /// Show machines' state, limits and resource use
    #[command(
        after_help = "Several names are read in one call; --json then prints an array of \
        what one name prints."
    )]
    Status(StatusArgs),
    /// Run a command in a one-shot machine from a template, attached to this terminal;
    /// the machine is removed when it ends
    #[command(
        after_help = "The exit status is the command's (128+N when killed by signal N, \
        127 when it cannot be executed). When berthctl cannot run it at all (a bad flag, an \
        unknown template, berthd refusing) it says why in one line and exits 125. Ctrl-C, \
        SIGTERM and SIGHUP are passed on to the command; if berthctl is killed, the machine \
        goes with it. With -t the command gets a terminal of its own, and the keys reach it \
        directly. Flags other than --rm, -t and --name are create's.\n\n\
        Examples:\n  berthctl run --rm --template busybox -- uname -a\n  \
        berthctl run --rm --template deb --memory 256M -- sh -c 'apt-get --version'\n  \
        echo hi | berthctl run --rm --template busybox -- cat"
    )]
    Run(Box<RunArgs>),
    /// Run a command inside a running machine, attached to this terminal
    #[command(
        after_help = "The exit status is the command's (128+N when killed by signal N).\n\n\
        Example:\n  berthctl exec web -- ps aux"
    )]
    Exec(ExecArgs),
    /// Attach this terminal to a running machine's console (its PID 1's); one at a time
    #[command(
        after_help = "Detach with Ctrl-] three times within a second; the machine runs on, \
        and `berthctl console` attaches again. The last few KiB the console said are shown \
        first. Only one client may be attached: to watch while another is, use \
        `berthctl logs -f`.\n\n\
        Example:\n  berthctl console web"
    )]
    Console(NameArg),
    /// Show a machine's recent console output and berthd's lines about it
    #[command(
        after_help = "The log is bounded (the last 128-256 KiB) and kept until the machine \
        is removed, also while it is stopped. berthd's own lines begin with `-- berthd:`.\n\n\
        Examples:\n  berthctl logs web\n  berthctl logs -f -n 20 web"
    )]
    Logs(LogsArgs),
    /// Open a shell (or run a command) on a terminal inside a running machine
    #[command(
        after_help = "With no command, the user's login shell from the machine's own /etc/passwd.\n\
        The exit status is the shell's (128+N when killed by signal N).\n\n\
        Examples:\n  berthctl shell web\n  berthctl shell web --user www-data -- id"
    )]
    Shell(ShellArgs),
    /// Change a machine's resource limits (applied live and kept) or its network (while
    /// it is stopped)
    #[command(
        after_help = "Examples:\n  berthctl set web --memory 1G --cpu-quota 50%\n  \
        berthctl set web --network bridge --bridge lab --port 8080:80"
    )]
    Set(SetArgs),
    /// Copy a stopped machine into a new one (privileged or unprivileged as the source is)
    #[command(
        after_help = "Examples:\n  berthctl clone web web2\n  berthctl clone web scratch --ephemeral"
    )]
    Clone(CloneArgs),
    /// Take a snapshot of a stopped machine's files
    #[command(after_help = "Example:\n  berthctl snapshot web before-upgrade --comment \"pre 13\"")]
    Snapshot(SnapshotArgs),
    /// List a machine's snapshots
    Snapshots(SnapshotsArgs),
    /// Put a snapshot back over its stopped machine, or into a new machine with --as
    Restore(RestoreArgs),
    /// Remove a snapshot
    #[command(name = "snapshot-remove")]
    SnapshotRemove(SnapshotRefArgs),
    /// Rename a stopped machine; its files, snapshots, unit, autostart and lease follow,
    /// and its hostname when it was the old name
    #[command(after_help = "Example:\n  berthctl rename web www")]
    Rename(RenameArgs),
    /// Copy a file or tree into a machine (running or stopped), owners kept
    #[command(
        after_help = "Like cp -r: a destination ending in / or naming a directory receives the \
        source under its own name. Paths in the machine are absolute and resolved inside it.\n\n\
        Examples:\n  berthctl copy-to web ./index.html /var/www/\n  berthctl copy-to web ./site /srv/site"
    )]
    CopyTo(CopyToArgs),
    /// Copy a file or tree out of a machine (running or stopped), owners kept
    #[command(
        after_help = "Like cp -r: a destination ending in / or naming a directory receives the \
        source under its own name.\n\nExample:\n  berthctl copy-from web /etc/hostname ./"
    )]
    CopyFrom(CopyFromArgs),
    /// Wait until a machine is in a state (or gone), as lxc-wait does
    #[command(
        after_help = "STATE is one of stopped, starting, running, stopping, frozen, failed, \
        broken, or gone (the machine no longer exists). Exit 0 once it is, 1 on timeout.\n\n\
        Examples:\n  berthctl wait web running --timeout 10s\n  berthctl wait web stopped"
    )]
    Wait(WaitArgs),
    /// Write a stopped machine to a tar archive (FILE or - for stdout)
    #[command(
        after_help = "The format follows FILE's name (.tar, .tar.gz, .tar.xz, .tar.zst) \
        unless --format says it; stdout gets tar.zst.\n\nExamples:\n  \
        berthctl export web web.tar.zst\n  berthctl export web - --rootfs-only --format tar | tar -t"
    )]
    Export(ExportArgs),
    /// Make a machine from a tar archive (FILE or - for stdin): a berth export, or any rootfs
    #[command(after_help = "Example:\n  berthctl import web.tar.zst web-copy")]
    Import(ImportArgs),
    /// Build, list and remove templates (the root filesystems machines are made from)
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Create, list and remove networks (bridges with DHCP, DNS and NAT for machines)
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(
        after_help = "Example:\n  berthctl completions bash > /etc/bash_completion.d/berthctl"
    )]
    Completions(CompletionsArgs),
    /// Print the berthctl(1) manual page (roff)
    #[command(after_help = "Example:\n  berthctl manpage | man -l -")]
    Manpage,
}

/// What a machine may do beyond its namespaces; names as systemd-nspawn takes them.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Security")]
pub struct SecurityArgs {
    /// Keep a capability the default bounding set drops, e.g. CAP_SYS_TIME (repeatable,
    /// or comma-separated)
    #[arg(long = "capability", value_name = "CAP", value_delimiter = ',')]
    pub capabilities: Vec<String>,

    /// Drop a capability from the bounding set, e.g. CAP_MKNOD (repeatable)
    #[arg(long = "drop-capability", value_name = "CAP", value_delimiter = ',')]
    pub drop_capabilities: Vec<String>,

    /// The machine's own user namespace: "pick" a free range of 65536 host IDs (the
    /// default), a delegated range BASE:COUNT from /etc/subuid and /etc/subgid, or "no"
    /// for a privileged machine whose root is the host's
    #[arg(long = "private-users", value_name = "no|pick|BASE:COUNT")]
    pub private_users: Option<String>,

    /// Change the system call filter: NAME allows a denied call, ~NAME denies one more,
    /// @GROUP names a group, e.g. bpf or ~ptrace (repeatable)
    #[arg(
        long = "system-call-filter",
        value_name = "FILTER",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    pub system_call_filter: Vec<String>,
}

/// How a machine reaches the network; shared by `create` and `set`. Values go to berthd
/// as given (it picks bridge mode when --bridge, --address or --port come without
/// --network), except port forwards, parsed here so a typo fails before any call.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Network")]
pub struct NetworkArgs {
    /// none (loopback only, the default), bridge (a veth on a berth network) or host (the
    /// host's own network)
    #[arg(long, value_name = "MODE", value_parser = ["none", "bridge", "host"])]
    pub network: Option<String>,

    /// The berth network a bridged machine joins (default berth0)
    #[arg(long, value_name = "NETWORK")]
    pub bridge: Option<String>,

    /// A fixed IPv4 address with the network's prefix, e.g. 10.77.0.50/24 (default: the
    /// next free one)
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub address: Option<String>,

    /// Forward a host port to the machine: PROTO:HOST:MACHINE (tcp or udp),
    /// HOST:MACHINE (tcp) or PORT (the same on both sides); repeatable
    #[arg(long = "port", value_name = "PROTO:HOST:MACHINE", value_parser = parse_port)]
    pub ports: Vec<PortForward>,
}

impl NetworkArgs {
    /// Argument ids of the network flags, for `set`'s "at least one" group.
    pub const IDS: [&'static str; 4] = ["network", "bridge", "address", "ports"];

    pub fn given(&self) -> bool {
        self.network.is_some()
            || self.bridge.is_some()
            || self.address.is_some()
            || !self.ports.is_empty()
    }
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// List networks: name, subnet, gateway, bridge, NAT, DHCP and the machines on each
    List(JsonArg),
    /// Create a network: a bridge of the same name with the subnet's first address, DHCP
    /// and DNS on it, NAT out of the host's default route
    #[command(after_help = "Examples:\n  \
        berthctl network create lab --subnet 10.77.0.0/24\n  \
        berthctl network create isolated --subnet 10.78.0.0/24 --no-nat --no-dhcp")]
    Create(NetworkCreateArgs),
    /// Remove a network (refused while a running machine is on it)
    Remove(NetworkNameArg),
}

#[derive(Debug, Args)]
pub struct NetworkNameArg {
    /// Network name
    pub name: String,
}

#[derive(Debug, Args)]
pub struct NetworkCreateArgs {
    /// Network name (also its bridge's name on the host)
    pub name: String,

    /// IPv4 subnet in CIDR notation (default: the first free 10.0.N.0/24)
    #[arg(long, value_name = "CIDR")]
    pub subnet: Option<String>,

    /// Do not masquerade the subnet out of the host's default route
    #[arg(long)]
    pub no_nat: bool,

    /// Hand out addresses over DHCP (the default)
    #[arg(long, overrides_with = "no_dhcp")]
    pub dhcp: bool,

    /// No DHCP server on the bridge; berth still puts each machine's address on its eth0,
    /// and DNS is served either way
    #[arg(long, overrides_with = "dhcp")]
    pub no_dhcp: bool,

    #[command(flatten)]
    pub json: JsonArg,
}

impl NetworkCreateArgs {
    /// The DHCP choice if one was made; the last of --dhcp and --no-dhcp counts.
    pub fn dhcp(&self) -> Option<bool> {
        if self.no_dhcp {
            Some(false)
        } else if self.dhcp {
            Some(true)
        } else {
            None
        }
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Machine name
    pub name: String,
    /// Where to write it; - for stdout
    pub file: std::path::PathBuf,
    /// tar, tar.gz, tar.xz or tar.zst
    #[arg(long)]
    pub format: Option<String>,
    /// The root filesystem alone (what tar and machinectl import-tar take), without
    /// berth's settings
    #[arg(long)]
    pub rootfs_only: bool,
    #[command(flatten)]
    pub follow: FollowArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The archive; - for stdin (its compression is told by its content)
    pub file: std::path::PathBuf,
    /// The new machine's name
    pub name: String,
    #[command(flatten)]
    pub follow: FollowArgs,
}

#[derive(Debug, Args)]
pub struct CloneArgs {
    /// The machine to copy (stopped)
    pub source: String,
    /// The new machine's name
    pub name: String,
    /// Remove the copy when it stops
    #[arg(long)]
    pub ephemeral: bool,
}

#[derive(Debug, Args)]
pub struct CopyToArgs {
    /// Machine name
    pub name: String,
    /// The file or directory here
    pub source: std::path::PathBuf,
    /// Where it goes inside the machine (absolute); the source's path when left out
    pub destination: Option<String>,
    #[command(flatten)]
    pub follow: FollowArgs,
}

#[derive(Debug, Args)]
pub struct CopyFromArgs {
    /// Machine name
    pub name: String,
    /// The file or directory inside the machine (absolute)
    pub source: String,
    /// Where it goes here; the source's path when left out
    pub destination: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub follow: FollowArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Machine name
    pub name: String,
    /// Number of lines to show from the end (0: none, only what follows with -f)
    #[arg(short = 'n', long, default_value_t = 100, value_name = "LINES")]
    pub lines: u64,
    /// Keep showing new output until interrupted or the machine is removed
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    /// The machine (stopped)
    pub name: String,
    /// Its new name
    pub new_name: String,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Machine name
    pub name: String,
    /// The state to wait for (checked before berthd is asked)
    pub state: String,
    /// Give up after this long, e.g. 10s, 500ms, 2m (default: wait forever)
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Machine name
    pub machine: String,
    /// Snapshot name
    pub snapshot: String,
    /// A note kept with the snapshot
    #[arg(long, default_value = "")]
    pub comment: String,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Machine name
    pub machine: String,
    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
pub struct SnapshotRefArgs {
    /// Machine name
    pub machine: String,
    /// Snapshot name
    pub snapshot: String,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Machine name
    pub machine: String,
    /// Snapshot name
    pub snapshot: String,
    /// Make a new machine of this name from the snapshot instead
    #[arg(long = "as", value_name = "NEW")]
    pub new_machine: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Build a template; a progress bar follows the build, Ctrl-C cancels it
    #[command(after_help = "Examples:\n  \
        berthctl template build deb --method debootstrap --suite bookworm --include vim,curl\n  \
        berthctl template build fromtar --method tar --file rootfs.tar.zst\n  \
        berthctl template build golden --method directory --source /srv/golden")]
    Build(TemplateBuildArgs),
    /// List templates: name, method, state, size, created
    List(JsonArg),
    /// Remove a template (machines made from it keep their own copies)
    Remove(TemplateNameArg),
}

#[derive(Debug, Args)]
pub struct TemplateNameArg {
    /// Template name
    pub name: String,
}

#[derive(Debug, Args)]
pub struct TemplateBuildArgs {
    /// Template name
    pub name: String,

    /// How to build it
    #[arg(long, value_parser = ["busybox", "debootstrap", "tar", "directory"])]
    pub method: String,

    /// debootstrap: the Debian release (default: the host's)
    #[arg(long, help_heading = "debootstrap")]
    pub suite: Option<String>,

    /// debootstrap: the archive URL (default: the host's own apt source)
    #[arg(long, value_name = "URL", help_heading = "debootstrap")]
    pub mirror: Option<String>,

    /// debootstrap: minbase (default), buildd or default
    #[arg(long, help_heading = "debootstrap")]
    pub variant: Option<String>,

    /// debootstrap: more packages, comma-separated (systemd-sysv, dbus, iproute2 and
    /// procps are always in)
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PKG,...",
        help_heading = "debootstrap"
    )]
    pub include: Vec<String>,

    /// debootstrap: the architecture (default: the host's)
    #[arg(long, help_heading = "debootstrap")]
    pub arch: Option<String>,

    /// tar: the archive (plain, gzip, xz or zstd, told by its content); - reads stdin
    #[arg(long, value_name = "FILE", help_heading = "tar")]
    pub file: Option<std::path::PathBuf>,

    /// directory: the tree to copy (/proc, /sys, /dev, /run and /tmp come empty)
    #[arg(long, value_name = "DIR", help_heading = "directory")]
    pub source: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub follow: FollowArgs,
}

/// How a long command shows its Job.
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Print only the result, no progress bar (also when stderr is not a terminal)
    #[arg(long)]
    pub no_progress: bool,

    /// Print the work's own output as it comes (debootstrap's)
    #[arg(long, short)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// Machine name
    pub name: String,
}

impl Command {
    /// Whether the verb itself was given `--json` (it may also come before the verb).
    pub fn json(&self) -> bool {
        match self {
            Command::Create(args) => args.json.json,
            Command::List(args) => args.json,
            Command::Status(args) => args.json.json,
            Command::Template(TemplateCommand::List(args)) => args.json,
            Command::Snapshots(args) => args.json.json,
            Command::Network(NetworkCommand::List(args)) => args.json,
            Command::Network(NetworkCommand::Create(args)) => args.json.json,
            _ => false,
        }
    }
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine names
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,

    #[command(flatten)]
    pub json: JsonArg,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the new machine
    pub name: String,

    /// Template providing the root filesystem
    #[arg(short, long, value_name = "TEMPLATE")]
    pub template: String,

    /// Start the machine whenever the host boots (see `berthctl enable`)
    #[arg(long)]
    pub autostart: bool,

    /// Remove the machine, files and all, as soon as it stops; it runs on an overlay of
    /// the template, nothing copied (a copy when it is unprivileged and the template's
    /// file system cannot idmap)
    #[arg(long)]
    pub ephemeral: bool,

    /// Run CMD as PID 2 under berth's own PID 1, which reaps orphans and passes signals
    /// on (the default with a CMD)
    #[arg(long, overrides_with = "no_init")]
    pub init: bool,

    /// Run CMD itself as PID 1
    #[arg(long, overrides_with = "init")]
    pub no_init: bool,

    #[command(flatten)]
    pub json: JsonArg,

    // Last of the flags: its groups set the help heading of what follows them.
    #[command(flatten)]
    pub settings: MachineArgs,

    /// PID 1 of the machine and its arguments, instead of the root filesystem's /sbin/init
    #[arg(last = true, value_name = "CMD", help_heading = None::<&str>)]
    pub command: Vec<String>,
}

/// `run --rm`: a one-shot machine. Its flags beyond `--rm`, `-t` and `--name` are
/// create's, parsed by the same code.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Remove the machine, files and all, when the command ends (required: only
    /// one-shot runs exist)
    #[arg(long)]
    pub rm: bool,

    /// Give the command a terminal of its own (a pty, its controlling terminal) and
    /// relay this one to it in raw mode, its window size following
    #[arg(short = 't', long)]
    pub tty: bool,

    /// The machine's name (default: run- and six random letters and digits)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Template providing the root filesystem
    #[arg(long, value_name = "TEMPLATE")]
    pub template: String,

    // Last of the flags: its groups set the help heading of what follows them.
    #[command(flatten)]
    pub settings: MachineArgs,

    /// Command and its arguments (put them after `--`)
    #[arg(
        required = true,
        trailing_var_arg = true,
        value_name = "CMD",
        help_heading = None::<&str>
    )]
    pub command: Vec<String>,
}

/// What a machine is made with, shared by `create` and `run`: its environment, binds,
/// /tmp, stop, security, network and limits.
#[derive(Debug, Args)]
pub struct MachineArgs {
    /// Hostname inside the machine (default: the machine name)
    #[arg(long, value_name = "HOSTNAME")]
    pub hostname: Option<String>,

    /// Environment variable for the machine's init or command (repeatable); a bare KEY
    /// passes on this shell's value
    #[arg(short, long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env)]
    pub env: Vec<KeyValue>,

    /// Bind a host directory or file into the machine, read-write (repeatable); TARGET
    /// defaults to SOURCE
    #[arg(long, value_name = "SOURCE[:TARGET]", value_parser = parse_bind)]
    pub bind: Vec<(String, String)>,

    /// Bind a host directory or file into the machine, read-only (repeatable)
    #[arg(long, value_name = "SOURCE[:TARGET]", value_parser = parse_bind)]
    pub bind_ro: Vec<(String, String)>,

    /// Size of the machine's /tmp tmpfs, e.g. 32M, 1G (default: half of the host's RAM)
    #[arg(long, value_name = "SIZE")]
    pub tmp_size: Option<String>,

    /// How much disk the machine's files may take, e.g. 2G (a project quota: needs
    /// /var/lib/berth on ext4 or XFS mounted with prjquota)
    #[arg(long, value_name = "SIZE")]
    pub disk_quota: Option<String>,

    /// Signal that asks PID 1 to shut down on stop (default: by init: RTMIN+3 for
    /// systemd, USR2 for busybox init, else TERM)
    #[arg(long, value_name = "SIG", value_parser = parse_signal)]
    pub halt_signal: Option<i32>,

    /// How long stop waits for PID 1 before killing the machine, e.g. 30s, 2m (at most 1h)
    #[arg(long, value_name = "DURATION", value_parser = super::wait::parse_duration)]
    pub stop_timeout: Option<std::time::Duration>,

    // After the plain flags: each group sets the help heading of what follows it.
    #[command(flatten)]
    pub security: SecurityArgs,

    #[command(flatten)]
    pub network: NetworkArgs,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Limit flags shared by `create` and `set`, one per limit of [`limits::TABLE`] that has
/// a flag, plus `--limit KEY=VALUE` for any limit; values go to berthd untouched, which
/// parses and validates them, so both verbs accept exactly what the daemon accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitArgs {
    /// (D-Bus key, value) of each limit flag given, in [`limits::by_rank`] order.
    pub flags: Vec<(&'static str, String)>,
    /// `--limit` words, in command-line order.
    pub limit: Vec<KeyValue>,
}

impl LimitArgs {
    /// The id of `--limit`; each limit flag's id is its D-Bus key.
    const LIMIT: &'static str = "limit";

    /// The limits that have a flag, in the order `--help` lists them.
    fn flagged() -> impl Iterator<Item = (&'static Limit, &'static Flag)> {
        limits::by_rank()
            .into_iter()
            .filter_map(|limit| Some((limit, limit.flag.as_ref()?)))
    }

    /// Argument ids of every limit flag, for `set`'s "at least one" group.
    pub fn ids() -> Vec<&'static str> {
        Self::flagged()
            .map(|(limit, _)| limit.key)
            .chain([Self::LIMIT])
            .collect()
    }

    /// The value given with the flag of a limit.
    pub fn flag(&self, key: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(given, _)| *given == key)
            .map(|(_, value)| value.as_str())
    }
}

/// "Memory ceiling [MemoryMax], e.g. 512M, 2G": the limit's name in brackets tells
/// which `--limit` key and which `status` entry the flag stands for.
fn flag_help(limit: &Limit, flag: &Flag) -> String {
    match flag.example {
        Some(example) => format!("{} [{}], e.g. {example}", flag.help, limit.key),
        None => format!("{} [{}]", flag.help, limit.key),
    }
}

// By hand rather than derived, so the flags come from the table. Values may start with
// '-' so that "--memory -5" reaches berthd and gets its explanation rather than a clap
// usage error.
impl Args for LimitArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let cmd = cmd.next_help_heading("Resource limits");
        let cmd = Self::flagged().fold(cmd, |cmd, (limit, flag)| {
            cmd.arg(
                Arg::new(limit.key)
                    .long(flag.long)
                    .value_name(flag.value_name)
                    .help(flag_help(limit, flag))
                    .allow_hyphen_values(true)
                    .action(ArgAction::Set)
                    .value_parser(value_parser!(String)),
            )
        });
        cmd.arg(
            Arg::new(Self::LIMIT)
                .long("limit")
                .value_name("KEY=VALUE")
                .help("Any limit by its D-Bus name, e.g. MemoryLimit=1G (repeatable)")
                .allow_hyphen_values(true)
                .action(ArgAction::Append)
                .value_parser(parse_key_value),
        )
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for LimitArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut args = LimitArgs::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        for (limit, _) in Self::flagged() {
            if let Some(value) = matches.get_one::<String>(limit.key) {
                self.flags.retain(|(key, _)| *key != limit.key);
                self.flags.push((limit.key, value.clone()));
            }
        }
        if let Some(words) = matches.get_many::<KeyValue>(Self::LIMIT) {
            self.limit = words.cloned().collect();
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Machine name
    pub name: String,

    /// Signal by name (TERM, SIGKILL, RTMIN+3) or number
    #[arg(short, long, value_name = "SIG", default_value = "TERM", value_parser = parse_signal)]
    pub signal: i32,

    /// Signal only the machine's init (leader) or every process in it (all)
    #[arg(long, value_enum, default_value_t = KillWho::All)]
    pub whom: KillWho,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Machine name
    pub name: String,

    /// Stop the machine first if it is running
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Machine name
    pub name: String,

    /// Environment variable for the command (repeatable); a bare KEY passes on this
    /// shell's value without putting it on the command line
    #[arg(short, long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env)]
    pub env: Vec<KeyValue>,

    /// Command and its arguments (put them after `--`)
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Machine name
    pub name: String,

    /// User to run as: a name or uid in the machine's own /etc/passwd
    #[arg(short, long, default_value = "root")]
    pub user: String,

    /// Environment variable for the shell (repeatable); a bare KEY passes on this
    /// shell's value without putting it on the command line
    #[arg(short, long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env)]
    pub env: Vec<KeyValue>,

    /// Command and its arguments (put them after `--`); none: the user's login shell
    #[arg(trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Limit flags go to SetLimits, network flags to SetNetwork; at least one of either.
#[derive(Debug, Args)]
#[command(
    group(
        ArgGroup::new("any_change")
            .args(
                LimitArgs::ids()
                    .into_iter()
                    .chain(NetworkArgs::IDS)
                    .chain(["disk_quota"])
            )
            .required(true)
            .multiple(true)
    ),
    override_usage = "berthctl set <NAME> [LIMIT OPTIONS]... [NETWORK OPTIONS]... [--disk-quota SIZE]"
)]
pub struct SetArgs {
    /// Machine name
    pub name: String,

    /// How much disk the machine's files may take, e.g. 2G, or `none`; the first quota of
    /// a machine is given while it is stopped
    #[arg(long, value_name = "SIZE", value_parser = parse_disk_quota)]
    pub disk_quota: Option<u64>,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub network: NetworkArgs,
}

impl SetArgs {
    pub fn has_limits(&self) -> bool {
        !self.limits.flags.is_empty() || !self.limits.limit.is_empty()
    }
}
/// A disk quota in bytes from "2G", "1048576" or "none" (0: no quota).
fn parse_disk_quota(s: &str) -> Result<u64, String> {
    match s {
        "none" | "0" => Ok(0),
        _ => crate::limits::parse_size(s).map_err(|e| format!("{s}: {e}")),
    }
}
