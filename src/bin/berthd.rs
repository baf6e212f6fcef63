//! berthd: the berth system service. Also the spawn and exec helpers when re-executed
//! with their hidden first argument, so one installed binary is all berth needs.

use berth::daemon::{Daemon, Host};
use berth::paths::{DEFAULT_CONFIG, Paths};
use berth::spawn::{
    EXEC_HELPER_ARG, RESIDENT_CONTROL_FD, SPAWN_HELPER_ARG, SPAWN_HELPER_FIRST_CLOSED_FD,
};
use berth::sys::process::{close_fds_from, raise_nofile, restore_nofile};
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "berthd",
    version,
    about = "berth machine manager service (org.berth.Berth1)"
)]
struct Args {
    /// Configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// State directory (machines, templates); overrides the config file.
    #[arg(long, env = "BERTH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Runtime directory; overrides the config file.
    #[arg(long, env = "BERTH_RUNTIME_DIR")]
    runtime_dir: Option<PathBuf>,
}

fn main() {
    // The helpers must stay single-threaded: dispatch before any runtime exists.
    match std::env::args().nth(1).as_deref() {
        Some(SPAWN_HELPER_ARG) => {
            // What berthd passed on purpose sits below; the helper sorts those out.
            close_fds_from(SPAWN_HELPER_FIRST_CLOSED_FD as u32);
            restore_nofile();
            std::process::exit(berth::spawn::helper::main())
        }
        Some(EXEC_HELPER_ARG) => {
            // A resident helper's control socket sits right above; exec::main closes it
            // for every other helper.
            close_fds_from(RESIDENT_CONTROL_FD as u32 + 1);
            restore_nofile();
            std::process::exit(berth::spawn::exec::main())
        }
        _ => {}
    }
    let args = Args::parse();
    // SAFETY: no thread exists yet.
    unsafe { berth::console::fdstore::receive() };
    init_logging();
    // One pidfd per running machine: without this, machine 1,000 or so fails with EMFILE.
    match raise_nofile() {
        Ok(n) => tracing::debug!("open descriptors: up to {n}"),
        Err(e) => tracing::warn!("cannot raise the limit of open descriptors: {e}"),
    }
    let mut paths = match Paths::load(&args.config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("berthd: {e}");
            std::process::exit(1);
        }
    };
    if let Some(d) = args.state_dir {
        paths.state_dir = d;
    }
    if let Some(d) = args.runtime_dir {
        paths.runtime_dir = d;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(paths)) {
        tracing::error!("{e}");
        eprintln!("berthd: {e}");
        std::process::exit(1);
    }
}

async fn run(paths: Paths) -> Result<(), String> {
    // Served from the builder on: only then does zbus wait until its dispatcher listens
    // before going on. With a plain connection the dispatcher starts in the background,
    // and a busy host could see the call that D-Bus-activated berthd delivered (right
    // after the name is taken) before anything listened, and lost: a client hanging.
    let conn = zbus::connection::Builder::system()
        .map_err(|e| e.to_string())?
        .serve_at(berth::dbus::ROOT_PATH, zbus::fdo::ObjectManager)
        .map_err(|e| e.to_string())?
        .build()
        .await
        .map_err(|e| format!("cannot connect to the system bus: {e}"))?;
    let systemd = Arc::new(
        berth::systemd::Bus::new(&conn)
            .await
            .map_err(|e| e.to_string())?,
    );
    let host = Host::detect(systemd.as_ref())
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let daemon = Daemon::new(
        paths,
        host,
        systemd,
        Arc::new(berth::spawn::Helpers::default()),
        Arc::new(berth::net::Kernel),
        tx,
    )
    .await
    .map_err(|e| e.to_string())?;
    berth::dbus::serve(&conn, daemon.clone(), rx)
        .await
        .map_err(|e| e.to_string())?;
    daemon.autostart_once_per_boot();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!("berthd ready on {}", berth::dbus::BUS_NAME);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    // Machines live in their own scopes and keep running; a restarted berthd finds them.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("berthd stopping; machines keep running");
    Ok(())
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd stderr is already the journal, but the native protocol keeps
    // fields (machine=...) searchable with journalctl.
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .init();
        return;
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
}
