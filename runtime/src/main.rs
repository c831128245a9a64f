//! The `sluice` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::config::Config;
use sluice::daemon::Signals;
use sluice::plugin::PluginHost;
use sluice::topology::Topology;
use tracing_subscriber::EnvFilter;

/// sluice: stream processing with WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the pipelines of a config file until their sources end, or until
    /// SIGINT/SIGTERM (then drain in-flight batches, flush sinks, exit 0).
    Run {
        /// The config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
        /// Reload the config when the file changes (as on SIGHUP).
        #[arg(long)]
        watch_config: bool,
    },
    /// Check a config file: parse it, resolve every name, compile every plugin and
    /// configure one instance of each stage. Starts nothing.
    Validate {
        /// The config file (TOML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Print a component's world, exports and imports, and whether this daemon
    /// can run it (compile, link, processor world, `configure`). Exit 0 if it
    /// can, 1 if not.
    Check {
        /// The component (`.wasm`).
        file: PathBuf,
        /// A setting passed to `configure`, as NAME=VALUE; repeatable.
        #[arg(long = "config", value_name = "NAME=VALUE", value_parser = parse_setting)]
        config: Vec<(String, String)>,
    },
}

fn parse_setting(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got `{s}`"))
}

/// Exit code of a config error (as sysexits' EX_USAGE is 64, but `2` is what
/// clap and most daemons use for bad usage).
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Plugin {
            command: PluginCommand::Check { file, mut config },
        } => {
            let host = match PluginHost::new() {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("error: cannot start the WebAssembly engine: {e:#}");
                    return ExitCode::FAILURE;
                }
            };
            config.sort();
            let report = sluice::inspect::check(&host, &file, &config);
            print!("{}", report.text);
            if report.runnable {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Validate { config } => match load(&config) {
            Ok((topology, _)) => {
                eprintln!(
                    "{}: ok ({} pipeline(s), {} sink(s))",
                    config.display(),
                    topology.pipelines.len(),
                    topology.sinks.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Run {
            config,
            watch_config,
        } => {
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
            let installed = runtime.block_on(async {
                Ok::<_, std::io::Error>((Signals::install()?, Signals::hangups()?))
            });
            let (signals, mut hangups) = match installed {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: cannot install the signal handlers: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let (topology, host) = match load(&config) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let (tx, requests) = tokio::sync::mpsc::unbounded_channel();
            let hup = tx.clone();
            runtime.spawn(async move {
                while hangups.recv().await.is_some() {
                    if hup.send("SIGHUP received").is_err() {
                        break;
                    }
                }
            });
            let _config_watcher = if watch_config {
                match sluice::reload::watch_file(&config, move || {
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
                rebuild: std::sync::Arc::new(move |running| {
                    let (config, source) = Config::load(&path).map_err(|e| e.to_string())?;
                    Topology::build(&config, &source, &reload_host, running)
                        .map_err(|e| e.to_string())
                }),
            };
            let outcome = runtime.block_on(sluice::daemon::run(
                topology,
                host,
                signals.shutdown(),
                Some(reload),
            ));
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
    }
}

/// Parses and builds the config; on error prints it and gives the exit code.
fn load(path: &Path) -> Result<(Topology, PluginHost), ExitCode> {
    let (config, source) = Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    let host = PluginHost::new()
        .map_err(|e| {
            eprintln!("error: cannot start the WebAssembly engine: {e:#}");
            ExitCode::FAILURE
        })?
        .with_compile_cache(&sluice::config::state_dir(&config, &source));
    let topology = Topology::build(&config, &source, &host, &[]).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })?;
    Ok((topology, host))
}

/// Logs to stderr, one line per event (journald-friendly), no colours unless
/// stderr is a terminal; level from `RUST_LOG` (default `info`).
fn init_logging() {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
