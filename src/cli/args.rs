use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::api::KillWho;

use super::parse::{KeyValue, parse_env, parse_key_value, parse_signal};

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
    /// Create a machine from a template (it is left stopped)
    #[command(after_help = "Examples:\n  \
        berthctl create web --template busybox --memory 512M --cpu-shares 256\n  \
        berthctl create box -t busybox --hostname box -- /bin/sh -c 'exec sleep infinity'")]
    Create(CreateArgs),
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
    /// Show a machine's state, limits and resource use
    Status(StatusArgs),
    /// Run a command inside a running machine, attached to this terminal
    #[command(
        after_help = "The exit status is the command's (128+N when killed by signal N).\n\n\
        Example:\n  berthctl exec web -- ps aux"
    )]
    Exec(ExecArgs),
    /// Change a machine's resource limits (applied live and kept)
    #[command(after_help = "Example:\n  berthctl set web --memory 1G --cpu-quota 50%")]
    Set(SetArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(
        after_help = "Example:\n  berthctl completions bash > /etc/bash_completion.d/berthctl"
    )]
    Completions(CompletionsArgs),
    /// Print the berthctl(1) manual page (roff)
    #[command(after_help = "Example:\n  berthctl manpage | man -l -")]
    Manpage,
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
    /// Machine name
    pub name: String,

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

    /// Hostname inside the machine (default: the machine name)
    #[arg(long, value_name = "HOSTNAME")]
    pub hostname: Option<String>,

    /// Environment variable for the machine's init (repeatable); a bare KEY passes on
    /// this shell's value
    #[arg(short, long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env)]
    pub env: Vec<KeyValue>,

    /// Start the machine whenever the host boots (see `berthctl enable`)
    #[arg(long)]
    pub autostart: bool,

    /// Remove the machine, files and all, as soon as it stops
    #[arg(long)]
    pub ephemeral: bool,

    #[command(flatten)]
    pub json: JsonArg,

    /// PID 1 of the machine and its arguments, instead of the root filesystem's /sbin/init
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Limit flags shared by `create` and `set`; values go to berthd untouched, which parses
/// and validates them, so both verbs accept exactly what the daemon accepts. Values may
/// start with '-' so that "--memory -5" reaches berthd and gets its explanation rather
/// than a clap usage error.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Resource limits")]
pub struct LimitArgs {
    /// Memory ceiling [MemoryMax], e.g. 512M, 2G
    #[arg(long, allow_hyphen_values = true, value_name = "SIZE")]
    pub memory: Option<String>,

    /// CPU shares, relative to other machines [CPUShares], e.g. 256
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub cpu_shares: Option<String>,

    /// CPU weight, relative to other machines [CPUWeight], e.g. 100
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub cpu_weight: Option<String>,

    /// Maximum number of processes and threads [TasksMax]
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub tasks_max: Option<String>,

    /// CPU time as a percentage of one CPU [CPUQuota], e.g. 25%
    #[arg(long, allow_hyphen_values = true, value_name = "PCT")]
    pub cpu_quota: Option<String>,

    /// CPUs the machine may run on [AllowedCPUs], e.g. 0-1,3
    #[arg(long, allow_hyphen_values = true, value_name = "LIST")]
    pub cpus: Option<String>,

    /// IO weight [IOWeight]
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub io_weight: Option<String>,

    /// Block IO weight, cgroup v1 [BlockIOWeight]
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    pub blkio_weight: Option<String>,

    /// Any limit by its D-Bus name, e.g. MemoryLimit=1G (repeatable)
    #[arg(long = "limit", allow_hyphen_values = true, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub limit: Vec<KeyValue>,
}

impl LimitArgs {
    /// Argument ids of every limit flag, for `set`'s "at least one" group.
    pub const IDS: [&'static str; 9] = [
        "memory",
        "cpu_shares",
        "cpu_weight",
        "tasks_max",
        "cpu_quota",
        "cpus",
        "io_weight",
        "blkio_weight",
        "limit",
    ];
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
#[command(
    group(ArgGroup::new("any_limit").args(LimitArgs::IDS).required(true).multiple(true)),
    override_usage = "berthctl set <NAME> <LIMIT OPTIONS>..."
)]
pub struct SetArgs {
    /// Machine name
    pub name: String,

    #[command(flatten)]
    pub limits: LimitArgs,
}
