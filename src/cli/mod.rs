//! `berthctl`: the command-line client of berthd.

mod args;
mod commands;
mod copy;
mod error;
mod export;
mod network;
mod output;
mod parse;
mod progress;
mod run;
mod snapshot;
mod template;
pub mod terminal;
mod wait;

use std::io;

use clap::Parser;

pub use args::{Cli, Command, NetworkCommand, TemplateCommand};
pub use error::CliError;

use commands::Session;

/// Entry point of the `berthctl` binary; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    // `run` passes the command's status on: its own failures need a code of their own.
    let runs = matches!(cli.command, Command::Run(_));
    match run(cli) {
        Ok(code) => code,
        // The reader went away (`berthctl list | head -1`); nothing is left to tell anyone.
        Err(CliError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe && !runs => 0,
        Err(e) => {
            eprintln!("berthctl: {e}");
            if runs {
                run::EXIT_RUN_FAILED
            } else {
                e.exit_code()
            }
        }
    }
}

/// Runs one parsed command line; `Ok` carries the exit code (exec passes the command's on).
pub fn run(cli: Cli) -> Result<i32, CliError> {
    // These two describe berthctl itself and need no daemon.
    match &cli.command {
        Command::Completions(args) => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(args.shell, &mut cmd, "berthctl", &mut io::stdout());
            return Ok(0);
        }
        Command::Manpage => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command()).render(&mut io::stdout())?;
            return Ok(0);
        }
        _ => {}
    }
    let address = cli.bus_address.clone().or_else(|| {
        std::env::var("BERTH_BUS_ADDRESS")
            .ok()
            .filter(|a| !a.is_empty())
    });
    // A state or timeout that makes no sense is told before any bus is touched.
    let wait = match &cli.command {
        Command::Wait(args) => Some(wait::Target::parse(args)?),
        Command::Run(args) => {
            run::check(args)?;
            None
        }
        _ => None,
    };
    // One connection and a handful of calls: a multi-threaded runtime would only add
    // start-up cost.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let json = cli.json || cli.command.json();
        let session = Session::connect(address.as_deref(), json).await?;
        match &cli.command {
            Command::Create(args) => session.create(args).await,
            Command::Start(m) => session.start(&m.name).await,
            Command::Stop(m) => session.stop(&m.name).await,
            Command::Restart(m) => session.restart(&m.name).await,
            Command::Freeze(m) => session.freeze(&m.name, true).await,
            Command::Thaw(m) => session.freeze(&m.name, false).await,
            Command::Enable(m) => session.autostart(&m.name, true).await,
            Command::Disable(m) => session.autostart(&m.name, false).await,
            Command::Kill(args) => session.kill(args).await,
            Command::Remove(args) => session.remove(args).await,
            Command::List(_) => session.list().await,
            Command::Status(args) => session.status(&args.name).await,
            Command::Rename(args) => session.rename(&args.name, &args.new_name).await,
            Command::Wait(args) => {
                let target = wait.as_ref().expect("parsed above");
                session.wait(&args.name, target).await
            }
            Command::Exec(args) => session.exec(args).await,
            Command::Run(args) => session.run(args).await,
            Command::Set(args) => session.set(args).await,
            Command::Export(args) => session.export(args).await,
            Command::CopyTo(args) => session.copy_to(args).await,
            Command::CopyFrom(args) => session.copy_from(args).await,
            Command::Import(args) => session.import(args).await,
            Command::Clone(args) => session.clone_machine(args).await,
            Command::Snapshot(args) => session.snapshot(args).await,
            Command::Snapshots(args) => session.snapshots(&args.machine).await,
            Command::Restore(args) => session.restore(args).await,
            Command::SnapshotRemove(args) => session.snapshot_remove(args).await,
            Command::Template(TemplateCommand::Build(args)) => session.template_build(args).await,
            Command::Template(TemplateCommand::List(_)) => session.template_list().await,
            Command::Template(TemplateCommand::Remove(t)) => session.template_remove(&t.name).await,
            Command::Network(NetworkCommand::List(_)) => session.network_list().await,
            Command::Network(NetworkCommand::Create(args)) => session.network_create(args).await,
            Command::Network(NetworkCommand::Remove(n)) => session.network_remove(&n.name).await,
            Command::Completions(_) | Command::Manpage => unreachable!("answered above"),
        }
    })
}
