//! `sluice run`: load the config, start the daemon, wait for it to end.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice::config::Config;
use sluice::daemon::Signals;
use sluice::topology::Topology;

use super::{LogLevel, Startup, load};

/// The options of `sluice run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file (TOML).
    #[arg(short, long)]
    pub config: PathBuf,
    /// Reload the config when the file changes (as on SIGHUP).
    #[arg(long)]
    pub watch_config: bool,
}

/// Runs the daemon until its sources end or a signal stops it; exit 0 when
/// every pipeline ended without an error.
pub fn main(args: Args, log_level: &LogLevel) -> ExitCode {
    let Args {
        config,
        watch_config,
    } = args;
    // Signals are caught from here on, before the config is loaded and
    // the plugins compiled (seconds with a cold cache): a SIGHUP during
    // start-up must not kill the daemon (its default action).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let installed = runtime
        .block_on(async { Ok::<_, std::io::Error>((Signals::install()?, Signals::hangups()?)) });
    let (signals, mut hangups) = match installed {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install the signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut telemetry = None;
    let startup = Startup {
        log_level,
        telemetry: &mut telemetry,
    };
    let (topology, host) = match load(&config, Some(startup)) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let (tx, requests) = tokio::sync::mpsc::unbounded_channel();
    let hup = tx.clone();
    let reload_sender = tx.clone();
    runtime.spawn(async move {
        while hangups.recv().await.is_some() {
            if hup.send("SIGHUP received").is_err() {
                break;
            }
        }
    });
    let _config_watcher = if watch_config {
        match sluice::wasm::reload::watch_file(&config, move || {
            let _ = tx.send("config file changed");
        }) {
            Ok(w) => Some(w),
            Err(e) => {
                eprintln!("error: cannot watch {}: {e}", config.display());
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let reload_host = host.clone();
    let path = config.clone();
    let reload = sluice::daemon::ConfigReload {
        requests,
        sender: reload_sender,
        rebuild: std::sync::Arc::new(move |running| {
            let (config, source) = Config::load(&path).map_err(|e| e.to_string())?;
            Topology::build(&config, &source, &reload_host, running).map_err(|e| e.to_string())
        }),
    };
    let outcome = runtime.block_on(sluice::daemon::run(
        topology,
        host,
        signals.shutdown(),
        Some(reload),
    ));
    // The last spans and a last collection of the metrics.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    match outcome {
        Ok(outcome) => {
            for summary in &outcome.summaries {
                eprintln!("sluice: {summary}");
            }
            for e in &outcome.errors {
                eprintln!("error: {e:#}");
            }
            if outcome.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
